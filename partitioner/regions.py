"""Grouping candidate nodes into convex regions in time linear in the graph.

Every candidate node gets an integer *level* such that

* levels never decrease along an edge between two candidates, and
* any path that leaves the candidates (through an executor node) and comes
  back to a candidate strictly increases the level.

Then the candidates of one level form a convex set: a path that left the set
and came back would either pass an executor node, which raises the level, or
stay among candidates, whose levels are squeezed between the two equal ends.
Regions are ordered by level, so fusing all of them at once cannot create a
cycle through the executor.

The region count is also the smallest possible. Take a chain of candidates
c1 ~> c2 ~> ... ~> ck, where each step passes through an executor node. No
two of its members may share a region, so any valid partition needs at least
k regions. The forward sweep gives each candidate exactly the length of the
longest such chain that ends in it, so it uses no more levels than that.

Levels are assigned in two linear sweeps. The forward sweep gives each
candidate the lowest legal level (as soon as possible). The backward sweep
raises a candidate to the level of one of its candidate users whenever the
constraints from its users allow it. A value computed early then joins the
region that consumes it, instead of crossing a region boundary.

``getitem`` nodes are glued to their producer before any of this: a
multi-output op and its projections form one unit and are never separated.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence

import torch

_NO_LEVEL = -1
_UNBOUNDED = 1 << 60


def _build_units(
    nodes: Sequence[torch.fx.Node], is_candidate: Callable[[torch.fx.Node], bool]
) -> tuple[list[list[int]], list[int], list[bool]]:
    """Glue candidate getitems to their producer. Returns (units, unit_of_node, unit_is_candidate)."""
    index = {node: i for i, node in enumerate(nodes)}
    unit_of = [0] * len(nodes)
    units: list[list[int]] = []
    unit_candidate: list[bool] = []
    for i, node in enumerate(nodes):
        candidate = is_candidate(node)
        if candidate and node.target is operator.getitem and node.op == "call_function":
            producer = node.args[0]
            j = index.get(producer) if isinstance(producer, torch.fx.Node) else None
            if j is not None and unit_candidate[unit_of[j]]:
                unit_of[i] = unit_of[j]
                units[unit_of[j]].append(i)
                continue
        unit_of[i] = len(units)
        units.append([i])
        unit_candidate.append(candidate)
    return units, unit_of, unit_candidate


def _unit_edges(
    nodes: Sequence[torch.fx.Node], units: list[list[int]], unit_of: list[int]
) -> tuple[list[list[int]], list[list[int]]]:
    index = {node: i for i, node in enumerate(nodes)}
    preds: list[list[int]] = [[] for _ in units]
    succs: list[list[int]] = [[] for _ in units]
    for u, members in enumerate(units):
        seen: set[int] = set()
        for i in members:
            for arg in nodes[i].all_input_nodes:
                j = index.get(arg)
                if j is None:
                    continue
                p = unit_of[j]
                if p != u and p not in seen:
                    seen.add(p)
                    preds[u].append(p)
                    succs[p].append(u)
    return preds, succs


def assign_levels(
    preds: list[list[int]], succs: list[list[int]], candidate: list[bool]
) -> list[int]:
    """Levels for candidate units (see module docstring); -1 for the others."""
    n = len(candidate)
    level = [_NO_LEVEL] * n
    # reach[u] for a non-candidate: the highest level of a candidate that reaches u.
    reach = [_NO_LEVEL] * n
    for u in range(n):
        if candidate[u]:
            lv = 0
            for p in preds[u]:
                lv = max(lv, level[p] if candidate[p] else reach[p] + 1)
            level[u] = lv
        else:
            r = _NO_LEVEL
            for p in preds[u]:
                r = max(r, level[p] if candidate[p] else reach[p])
            reach[u] = r

    # reach_back[u] for a non-candidate: the lowest level of a candidate reachable from u.
    reach_back = [_UNBOUNDED] * n
    for u in range(n - 1, -1, -1):
        if candidate[u]:
            bound = _UNBOUNDED
            user_levels = []
            for s in succs[u]:
                if candidate[s]:
                    bound = min(bound, level[s])
                    user_levels.append(level[s])
                else:
                    bound = min(bound, reach_back[s] - 1)
            if bound > level[u] and bound in user_levels:
                level[u] = bound
        else:
            r = _UNBOUNDED
            for s in succs[u]:
                r = min(r, level[s] if candidate[s] else reach_back[s])
            reach_back[u] = r
    return level


def find_convex_regions(
    nodes: Sequence[torch.fx.Node], is_candidate: Callable[[torch.fx.Node], bool]
) -> list[list[torch.fx.Node]]:
    """Convex regions of candidate nodes, each in graph order, ordered by level.

    `nodes` must be in topological order (an FX graph's node order is).
    """
    units, unit_of, candidate = _build_units(nodes, is_candidate)
    preds, succs = _unit_edges(nodes, units, unit_of)
    level = assign_levels(preds, succs, candidate)
    by_level: dict[int, list[int]] = {}
    for u, members in enumerate(units):
        if candidate[u]:
            by_level.setdefault(level[u], []).extend(members)
    return [[nodes[i] for i in sorted(by_level[lv])] for lv in sorted(by_level)]
