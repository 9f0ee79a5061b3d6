"""Property-based tests of the partitioner on random DAGs and random support sets.

Checked for every generated case: each region is convex (torch's
validate_partition and an independent networkx reachability check), every
candidate is in exactly one region, no rejected node is in a region,
min_partition_size holds, fusing all regions leaves a graph that still sorts
topologically, and the region count is the proven minimum (the longest chain
of candidates that each pass through the executor), hence never more than
CapabilityBasedPartitioner's. 2,000 examples in CI (CI=true), 300 locally.
"""

import operator

import networkx as nx
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
from torch.fx.passes.utils.fuser_utils import fuse_by_partitions, validate_partition

from fxdelegate.partitioner import RejectReason, partition_graph
from graph_checks import VAL, RejectNames, is_convex, separated_chain_length, to_networkx

BINARY = [torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor, torch.ops.aten.sub.Tensor]


@st.composite
def graphs(draw):
    """A random DAG: unary/binary ops with arbitrary (long) skip edges, some
    multi-output ops read through getitem, and a random set of rejected nodes."""
    n = draw(st.integers(min_value=1, max_value=40))
    graph = torch.fx.Graph()
    values = []
    for i in range(draw(st.integers(1, 3))):
        p = graph.placeholder(f"in{i}")
        p.meta["val"] = VAL
        values.append(p)
    rejected = set()
    for i in range(n):
        kind = draw(st.sampled_from(["unary", "binary", "binary", "multi"]))
        a = values[draw(st.integers(0, len(values) - 1))]
        if kind == "unary":
            node = graph.call_function(torch.ops.aten.relu.default, (a,), name=f"n{i}")
        elif kind == "binary":
            b = values[draw(st.integers(0, len(values) - 1))]
            node = graph.call_function(BINARY[i % 3], (a, b), name=f"n{i}")
        else:
            node = graph.call_function(torch.ops.aten.var_mean.correction, (a, [0]), name=f"n{i}")
            node.meta["val"] = (VAL, VAL)
            if draw(st.booleans()):
                rejected.add(node.name)
            for k in range(2):
                item = graph.call_function(operator.getitem, (node, k), name=f"n{i}_{k}")
                item.meta["val"] = VAL
                values.append(item)
            continue
        node.meta["val"] = VAL
        values.append(node)
        if draw(st.floats(0, 1)) < 0.25:
            rejected.add(node.name)
    sinks = [v for v in values if not v.users and v.op != "placeholder"]
    graph.output(tuple(sinks) or (values[-1],))
    min_size = draw(st.integers(1, 3))
    return torch.fx.GraphModule(torch.nn.Module(), graph), rejected, min_size


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_partition_properties(case):
    gm, rejected_names, min_size = case
    support = RejectNames(rejected_names)
    result = partition_graph(gm, support, min_partition_size=min_size)
    g = to_networkx(gm.graph)
    compute = [n for n in gm.graph.nodes if n.op == "call_function"]

    placed = [n for p in result.partitions for n in p.nodes]
    assert len(placed) == len(set(placed)), "a node is in two regions"
    rejected = {r.node: r for r in result.rejected}
    assert set(placed) | set(rejected) == set(compute) and not set(placed) & set(rejected)

    for p in result.partitions:
        assert p.size >= min_size
        members = set(p.nodes)
        assert validate_partition(list(p.nodes)), p.name
        assert is_convex(g, members), p.name
        for node in p.nodes:
            producer = node.args[0] if node.target is operator.getitem else node
            assert producer.name not in rejected_names
            if node.target is operator.getitem:
                assert node.args[0] in members, "getitem separated from its producer"

    # Candidates (before the size filter) = supported nodes and the getitems of supported producers.
    candidates = {
        n
        for n in compute
        if (n.args[0] if n.target is operator.getitem else n).name not in rejected_names
    }
    too_small = {n for n, r in rejected.items() if r.reason is RejectReason.TOO_SMALL}
    assert too_small <= candidates
    assert {n for n in placed} | too_small == candidates

    if min_size == 1:
        lower_bound = separated_chain_length(g, candidates)
        assert len(result.partitions) == lower_bound
        cbp = CapabilityBasedPartitioner(
            gm, support, allows_single_node_partition=True
        ).propose_partitions()
        assert len(result.partitions) <= len([p for p in cbp if p.nodes])

    if result.partitions:
        fused = fuse_by_partitions(gm, [dict.fromkeys(p.nodes) for p in result.partitions])
        fused.graph.lint()  # fused graph still sorts topologically
        assert nx.is_directed_acyclic_graph(to_networkx(fused.graph))
