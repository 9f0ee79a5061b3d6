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


def _units_and_edges(
    inputs: list[list[int]], candidate: list[bool], glue: list[int]
) -> tuple[list[int], list[bool], list[list[int]]]:
    """Glue each candidate getitem to its candidate producer, and link the units.
    Returns (the unit of each node, whether each unit is a candidate, each
    unit's predecessors)."""
    unit_of: list[int] = []
    unit_candidate: list[bool] = []
    preds: list[list[int]] = []
    for i, ins in enumerate(inputs):
        is_cand = candidate[i]
        producer = glue[i]
        if is_cand and producer >= 0 and unit_candidate[unit_of[producer]]:
            unit_of.append(unit_of[producer])  # its only input is the producer: no new edge
            continue
        unit_of.append(len(unit_candidate))
        unit_candidate.append(is_cand)
        unit_preds = [unit_of[j] for j in ins]
        if unit_preds == ins:
            # Its inputs are units of their own: share the list (on large graphs,
            # every long-lived small object costs a cache miss to make and to free).
            unit_preds = ins
        elif len(unit_preds) > 2:
            unit_preds = list(dict.fromkeys(unit_preds))  # two getitems of one producer
        elif len(unit_preds) == 2 and unit_preds[0] == unit_preds[1]:
            unit_preds.pop()
        preds.append(unit_preds)
    return unit_of, unit_candidate, preds


def assign_levels(preds: list[list[int]], candidate: list[bool]) -> list[int]:
    """Levels for candidate units (see module docstring); -1 for the others.

    Units are in topological order and `preds` lists each one's predecessors;
    both sweeps walk these lists only (the backward one pushes each unit's
    bound to its predecessors instead of reading successor lists), so large
    graphs cost no more memory traffic than the edges themselves. Comparisons
    are written out: a ``max`` call per edge costs more than the edge.
    """
    n = len(candidate)
    # A candidate's level; for a non-candidate, the highest level of a candidate
    # that reaches it (forward), then the lowest level of a candidate it reaches.
    value = [_NO_LEVEL] * n
    for u in range(n):
        if candidate[u]:
            lv = 0
            for p in preds[u]:
                v = value[p] if candidate[p] else value[p] + 1
                if v > lv:
                    lv = v
            value[u] = lv
        else:
            r = _NO_LEVEL
            for p in preds[u]:
                v = value[p]
                if v > r:
                    r = v
            value[u] = r

    # bound[u] = 2 * (lowest level u may rise to, given its users) + (0 when a
    # candidate user sits at that level, else 1): one min keeps both facts.
    none = 2 * _UNBOUNDED + 1
    bound = [none] * n
    for u in range(n - 1, -1, -1):  # every user of u has pushed its bound already
        key = bound[u]
        if candidate[u]:
            lv = key >> 1
            if not key & 1 and lv > value[u]:
                value[u] = lv  # join the region of the user
            mine = 2 * value[u]
            for p in preds[u]:
                if mine < bound[p]:
                    bound[p] = mine
        else:
            reach = key >> 1 if key != none else _UNBOUNDED
            value[u] = reach
            to_candidate = 2 * (reach - 1) + 1  # a path through u raises the level
            to_other = 2 * reach + 1
            for p in preds[u]:
                mine = to_candidate if candidate[p] else to_other
                if mine < bound[p]:
                    bound[p] = mine
    return [v if c else _NO_LEVEL for v, c in zip(value, candidate)]


def convex_regions(
    inputs: list[list[int]], candidate: list[bool], glue: list[int]
) -> list[list[int]]:
    """Convex regions of candidate nodes, as node indices in order, ordered by level.

    Nodes are numbered in topological order; `inputs` lists each node's inputs,
    and `glue` each getitem's producer (-1 for other nodes).
    """
    unit_of, unit_candidate, preds = _units_and_edges(inputs, candidate, glue)
    level = assign_levels(preds, unit_candidate)
    by_level: dict[int, list[int]] = {}
    for i, u in enumerate(unit_of):
        if unit_candidate[u]:
            by_level.setdefault(level[u], []).append(i)
    return [by_level[lv] for lv in sorted(by_level)]


def find_convex_regions(
    nodes: Sequence[torch.fx.Node], is_candidate: Callable[[torch.fx.Node], bool]
) -> list[list[torch.fx.Node]]:
    """Convex regions of candidate nodes, each in graph order, ordered by level.

    `nodes` must be in topological order (an FX graph's node order is).
    """
    index: dict[torch.fx.Node, int] = {}
    inputs: list[list[int]] = []
    glue: list[int] = []
    for i, node in enumerate(nodes):
        index[node] = i
        inputs.append([j for arg in node.all_input_nodes if (j := index.get(arg)) is not None])
        producer = node.args[0] if node.args else None
        is_getitem = node.op == "call_function" and node.target is operator.getitem
        glue.append(
            index.get(producer, -1) if is_getitem and isinstance(producer, torch.fx.Node) else -1
        )  # type: ignore[arg-type]
    candidate = [is_candidate(n) for n in nodes]
    return [[nodes[i] for i in region] for region in convex_regions(inputs, candidate, glue)]
