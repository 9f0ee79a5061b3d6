"""The partitioner on graphs with wide fan-out and long skip edges, and the
index-based sweep behind it."""

import operator

import pytest
import torch

from fxdelegate.errors import InvalidArgumentError
from fxdelegate.partitioner import partition_graph
from fxdelegate.partitioner.regions import find_convex_regions
from graph_checks import (
    VAL,
    RejectNames,
    is_convex,
    random_hub_dag,
    random_rejections,
    separated_chain_length,
    to_networkx,
)


def _check(gm, support):
    result = partition_graph(gm, support)
    g = to_networkx(gm.graph)
    rejected = {r.node for r in result.rejected}
    candidates = {n for n in gm.graph.nodes if n.op == "call_function" and n not in rejected}
    for p in result.partitions:
        assert is_convex(g, set(p.nodes)), p.name
    assert {n for p in result.partitions for n in p.nodes} == candidates
    assert len(result.partitions) == separated_chain_length(g, candidates)
    return result


def test_hub_graphs_get_convex_regions_of_the_minimal_count():
    for seed in range(4):
        gm = random_hub_dag(160, seed=seed, width=8, hubs=3)
        assert max(len(n.users) for n in gm.graph.nodes) > 15  # wide fan-out
        _check(gm, RejectNames(random_rejections(gm, 0.15, seed=seed)))


def test_the_node_predicate_entry_matches_the_partitioner():
    gm = random_hub_dag(300, seed=7)
    support = RejectNames(random_rejections(gm, 0.15, seed=7))
    result = partition_graph(gm, support)
    rejected = {r.node for r in result.rejected}
    regions = find_convex_regions(
        list(gm.graph.nodes), lambda n: n.op == "call_function" and n not in rejected
    )
    assert regions == [list(p.nodes) for p in result.partitions]


def test_many_inputs_and_repeated_producers_make_one_edge_each():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    x.meta["val"] = VAL
    split = graph.call_function(torch.ops.aten.var_mean.correction, (x, [0]), name="split")
    split.meta["val"] = (VAL, VAL)
    items = []
    for k in range(2):
        item = graph.call_function(operator.getitem, (split, k), name=f"item{k}")
        item.meta["val"] = VAL
        items.append(item)
    values = [
        graph.call_function(torch.ops.aten.relu.default, (x,), name=f"r{i}") for i in range(12)
    ]
    for v in values:
        v.meta["val"] = VAL
    cut = graph.call_function(torch.ops.aten.neg.default, (values[0],), name="cut")
    cut.meta["val"] = VAL
    # One node reading both projections of one producer, twelve values and the executor's.
    wide = graph.call_function(torch.ops.aten.cat.default, ([*items, *values, cut],), name="wide")
    wide.meta["val"] = VAL
    graph.output((wide,))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    result = _check(gm, RejectNames({"cut"}))
    first, last = ([n.name for n in p.nodes] for p in result.partitions)
    assert first == ["r0"]  # `cut` reads it and `wide` reads `cut`
    assert {"split", "item0", "item1", "wide"} <= set(last)


def test_a_graph_out_of_order_is_refused_by_name():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    first = graph.call_function(torch.ops.aten.relu.default, (x,), name="first")
    second = graph.call_function(torch.ops.aten.relu.default, (first,), name="second")
    graph.output((second,))
    for node in (x, first, second):
        node.meta["val"] = VAL
    first.prepend(second)  # `second` now comes before its input
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    with pytest.raises(InvalidArgumentError, match=r"second reads first.*topological order"):
        partition_graph(gm)
