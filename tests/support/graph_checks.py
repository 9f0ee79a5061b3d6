"""Independent checks and generators for partition tests."""

from __future__ import annotations

import random

import networkx as nx
import torch
from torch.fx.passes.operator_support import OperatorSupportBase

VAL = torch.empty(1)


def to_networkx(graph: torch.fx.Graph) -> nx.DiGraph:
    g = nx.DiGraph()
    for node in graph.nodes:
        g.add_node(node)
        for arg in node.all_input_nodes:
            g.add_edge(arg, node)
    return g


def is_convex(g: nx.DiGraph, members: set) -> bool:
    """No node outside `members` lies on a path between two members."""
    below: set = set()
    above: set = set()
    for m in members:
        below |= nx.descendants(g, m)
        above |= nx.ancestors(g, m)
    return not ((below & above) - members)


def separated_chain_length(g: nx.DiGraph, candidates: set) -> int:
    """Longest chain of candidates where each consecutive pair is joined by a path
    through a non-candidate: a lower bound on the regions of any convex partition."""
    order = list(nx.topological_sort(g))
    desc = {v: nx.descendants(g, v) for v in g}
    longest: dict = {}
    for v in order:
        if v not in candidates:
            continue
        best = 1
        for u in candidates:
            if u in longest and v in desc[u]:
                between = desc[u] & nx.ancestors(g, v)
                if any(x not in candidates for x in between):
                    best = max(best, longest[u] + 1)
        longest[v] = best
    return max(longest.values(), default=0)


class RejectNames(OperatorSupportBase):
    """Supports every call_function except the named nodes."""

    def __init__(self, names):
        self.names = set(names)

    def is_node_supported(self, submodules, node):
        return node.op == "call_function" and node.name not in self.names


def random_dag(
    num_nodes: int, seed: int, max_inputs: int = 3, skip: float = 0.3, width: int = 8
) -> torch.fx.GraphModule:
    """Layered random DAG of aten ops with long skip edges; every value is a tensor."""
    rng = random.Random(seed)
    graph = torch.fx.Graph()
    values = []
    for i in range(2):
        p = graph.placeholder(f"in{i}")
        p.meta["val"] = VAL
        values.append(p)
    ops = [torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor, torch.ops.aten.sub.Tensor]
    for i in range(num_nodes):
        k = rng.randint(1, max_inputs)
        args = []
        for _ in range(k):
            if rng.random() < skip:
                args.append(rng.choice(values))  # anywhere earlier: long skip edges
            else:
                args.append(rng.choice(values[-width:]))
        if k == 1:
            node = graph.call_function(torch.ops.aten.neg.default, (args[0],), name=f"n{i}")
        else:
            node = args[0]
            for j, a in enumerate(args[1:]):
                target = ops[(i + j) % len(ops)]
                node = graph.call_function(target, (node, a))
                node.meta["val"] = VAL
                values.append(node)
            continue
        node.meta["val"] = VAL
        values.append(node)
    sinks = [v for v in values if not v.users and v.op != "placeholder"]
    graph.output(tuple(sinks) or (values[-1],))
    return torch.fx.GraphModule(torch.nn.Module(), graph)


def random_layered_dag(
    num_nodes: int, seed: int, *, width: int = 16, skip: float = 0.2
) -> torch.fx.GraphModule:
    """Layers of `width` aten ops; each reads one or two values from the layer
    before and, with probability `skip`, one from any earlier layer (long skip
    edges: merging naively along them would create cycles)."""
    rng = random.Random(seed)

    def second_input(layer, earlier):
        if rng.random() < skip:
            return rng.choice(earlier)
        return rng.choice(layer) if rng.random() < 0.5 else None

    return _layered_dag(num_nodes, rng, width, second_input)


def random_hub_dag(
    num_nodes: int,
    seed: int,
    *,
    width: int = 16,
    hubs: int = 8,
    hub_reads: float = 0.3,
    skip: float = 0.1,
) -> torch.fx.GraphModule:
    """Layers of `width` aten ops with wide fan-out over long distances: a few
    *hub* values (weights, a shared mask, a running state) are read by many
    nodes across the whole graph. Each op reads one value from the layer before
    and, with probability `hub_reads`, one of the `hubs` current hubs (else, with
    probability `skip`, any earlier value). Now and then a hub is replaced by a
    value of the newest layer, so every hub's users span many layers."""
    rng = random.Random(seed)
    pool: list[torch.fx.Node] = []

    def second_input(layer, earlier):
        roll = rng.random()
        if roll < hub_reads:
            return rng.choice(pool)
        return rng.choice(earlier) if roll < hub_reads + skip else None

    def after_layer(layer):
        if not pool:  # the inputs: the first hubs
            pool.extend(rng.choice(layer) for _ in range(hubs))
        elif rng.random() < 0.02:
            pool[rng.randrange(hubs)] = rng.choice(layer)

    return _layered_dag(num_nodes, rng, width, second_input, after_layer)


def _layered_dag(num_nodes, rng, width, second_input, after_layer=None) -> torch.fx.GraphModule:
    """`num_nodes` relu/add/mul/sub nodes in layers of `width`: each reads a value
    of the layer before and `second_input(layer, earlier)` (None: relu);
    `after_layer` sees the inputs, then each new layer."""
    graph = torch.fx.Graph()
    layer = []
    for i in range(width):
        p = graph.placeholder(f"in{i}")
        p.meta["val"] = VAL
        layer.append(p)
    earlier = list(layer)
    if after_layer is not None:
        after_layer(layer)
    binary = [torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor, torch.ops.aten.sub.Tensor]
    made = 0
    while made < num_nodes:
        nxt = []
        for _ in range(min(width, num_nodes - made)):
            a = rng.choice(layer)
            b = second_input(layer, earlier)
            if b is None:
                node = graph.call_function(torch.ops.aten.relu.default, (a,))
            else:
                node = graph.call_function(rng.choice(binary), (a, b))
            node.meta["val"] = VAL
            nxt.append(node)
            made += 1
        if after_layer is not None:
            after_layer(nxt)
        earlier.extend(nxt)
        layer = nxt
    sinks = [n for n in earlier if not n.users and n.op != "placeholder"]
    graph.output(tuple(sinks))
    return torch.fx.GraphModule(torch.nn.Module(), graph)


def random_rejections(gm: torch.fx.GraphModule, fraction: float, seed: int) -> set[str]:
    rng = random.Random(seed * 7919 + 1)
    return {n.name for n in gm.graph.nodes if n.op == "call_function" and rng.random() < fraction}
