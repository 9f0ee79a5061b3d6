"""A stable, in-place topological sort of an FX graph.

Graph surgery (putting a delegate call where its region's first node was)
can leave a node before one of its inputs. This restores a topological order
while keeping every node as close to its original position as dependencies
allow, and keeps node identities (unlike rebuilding the graph).
"""

from __future__ import annotations

import heapq
import itertools

import torch


def stable_topological_sort(graph: torch.fx.Graph) -> bool:
    """Reorder `graph` in place; returns whether anything moved."""
    nodes = list(graph.nodes)
    position = {node: i for i, node in enumerate(nodes)}
    pending = {node: len(node.all_input_nodes) for node in nodes}
    ready = [(position[n], n.name) for n in nodes if pending[n] == 0]
    heapq.heapify(ready)
    by_name = {n.name: n for n in nodes}
    order: list[torch.fx.Node] = []
    while ready:
        _, name = heapq.heappop(ready)
        node = by_name[name]
        order.append(node)
        for user in node.users:
            pending[user] -= 1
            if pending[user] == 0:
                heapq.heappush(ready, (position[user], user.name))
    if len(order) != len(nodes):
        stuck = [n.name for n in nodes if pending[n] > 0][:5]
        raise RuntimeError(f"graph has a cycle through {stuck}")
    if order == nodes:
        return False
    for prev, node in itertools.pairwise(order):
        if node.prev is not prev:
            prev.append(node)
    return True
