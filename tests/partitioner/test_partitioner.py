import operator

import pytest
import torch
from torch.fx.passes.utils.fuser_utils import validate_partition

from fxdelegate.errors import InvalidArgumentError
from fxdelegate.partitioner import RejectReason, partition_graph, propose_partitions
from fxdelegate.passes import AnchorSymbolicSizesPass, prepare_program
from graph_checks import RejectNames, is_convex, random_dag, to_networkx
from models import SkipEdges


def _prepared(model, *args, dynamic_shapes=None):
    ep = prepare_program(torch.export.export(model, args, dynamic_shapes=dynamic_shapes))
    AnchorSymbolicSizesPass()(ep.graph_module)
    return ep.graph_module


def _names(partitions):
    return [[n.name for n in p.nodes] for p in partitions]


def test_skip_edge_around_excluded_op_stays_convex():
    gm = _prepared(SkipEdges(), torch.randn(3))
    result = partition_graph(gm, exclude_ops=["aten.gelu"])
    g = to_networkx(gm.graph)
    assert len(result.partitions) == 2
    for p in result.partitions:
        assert validate_partition(list(p.nodes))
        assert is_convex(g, set(p.nodes))
    # the multiply after gelu can never share a region with the multiply before it
    first, second = _names(result.partitions)
    assert first[0] == "mul" and "mul_1" in second
    (rejected,) = result.rejected
    assert rejected.node.name == "gelu" and rejected.reason is RejectReason.EXCLUDED


def test_every_supported_node_in_exactly_one_region_and_reasons_for_the_rest():
    gm = _prepared(SkipEdges(), torch.randn(3))
    result = partition_graph(gm, exclude_ops=["aten.gelu.default"])
    placed = [n for p in result.partitions for n in p.nodes]
    assert len(placed) == len(set(placed))
    compute = [n for n in gm.graph.nodes if n.op == "call_function"]
    rejected = {r.node for r in result.rejected}
    assert set(placed) | rejected == set(compute)
    assert not set(placed) & rejected


def test_deterministic_names_and_membership():
    runs = [
        _names(
            propose_partitions(_prepared(SkipEdges(), torch.randn(3)), exclude_ops=["aten.gelu"])
        )
        for _ in range(3)
    ]
    assert runs[0] == runs[1] == runs[2]
    parts = propose_partitions(_prepared(SkipEdges(), torch.randn(3)), exclude_ops=["aten.gelu"])
    assert [p.name for p in parts] == ["region_0", "region_1"]


def test_min_partition_size_leaves_small_regions_with_a_reason():
    gm = _prepared(SkipEdges(), torch.randn(3))
    result = partition_graph(gm, exclude_ops=["aten.gelu"], min_partition_size=3)
    assert all(p.size >= 3 for p in result.partitions)
    too_small = [r for r in result.rejected if r.reason is RejectReason.TOO_SMALL]
    assert too_small and "< 3" in too_small[0].explain()


def test_custom_operator_support_plugs_in():
    gm = _prepared(SkipEdges(), torch.randn(3))
    result = partition_graph(gm, RejectNames({"add"}))
    assert "add" not in {n.name for p in result.partitions for n in p.nodes}
    (r,) = [r for r in result.rejected if r.node.name == "add"]
    assert r.reason is RejectReason.UNSUPPORTED


def test_support_predicate_that_raises_is_a_rejection_not_a_crash():
    class Broken(RejectNames):
        def is_node_supported(self, submodules, node):
            if node.name == "add":
                raise RuntimeError("boom")
            return True

    result = partition_graph(_prepared(SkipEdges(), torch.randn(3)), Broken(()))
    (r,) = [r for r in result.rejected if r.node.name == "add"]
    assert "boom" in r.explain()


class MultiOut(torch.nn.Module):
    def forward(self, x):
        a, b = torch.ops.aten.var_mean.correction(x, [0], correction=0)
        return torch.relu(a) + b, x.sum()


def test_getitems_go_with_their_producer():
    gm = _prepared(MultiOut(), torch.randn(4, 3))
    (p,) = [p for p in propose_partitions(gm) if any("var_mean" in n.name for n in p.nodes)]
    producer = next(n for n in p.nodes if "var_mean" in n.name)
    getitems = [u for u in producer.users]
    assert getitems and all(u.target is operator.getitem for u in getitems)
    assert set(getitems) <= set(p.nodes)
    assert p.size == len(p.nodes) - len(getitems)

    # excluded producer: its getitems stay with it, with their own reason
    result = partition_graph(gm, exclude_ops=["aten.var_mean"])
    reasons = {r.node.name: r.reason for r in result.rejected}
    assert reasons[producer.name] is RejectReason.EXCLUDED
    assert all(reasons[g.name] is RejectReason.PRODUCER_IN_EXECUTOR for g in getitems)


class DynamicView(torch.nn.Module):
    def forward(self, x):
        y = torch.relu(x) * 2
        y = y.reshape(y.shape[0], -1)
        return y.sum(1), y.nonzero()


def test_size_nodes_and_data_dependent_ops_stay_out_without_splitting_regions():
    b = torch.export.Dim("b", min=2, max=32)
    gm = _prepared(DynamicView(), torch.randn(4, 3, 2), dynamic_shapes=({0: b},))
    result = partition_graph(gm)
    reasons = {r.node.name: r.reason for r in result.rejected}
    assert any(reason is RejectReason.SYMBOLIC_SCALAR for reason in reasons.values())
    assert reasons["nonzero"] is RejectReason.DATA_DEPENDENT
    # relu, mul, reshape and sum are one region even though reshape reads a size
    (region,) = [p for p in result.partitions if any(n.name == "relu" for n in p.nodes)]
    assert {"relu", "mul", "reshape", "sum_1"} <= {n.name for n in region.nodes}


def test_bad_arguments():
    gm = _prepared(SkipEdges(), torch.randn(3))
    with pytest.raises(InvalidArgumentError, match="min_partition_size"):
        partition_graph(gm, min_partition_size=0)
    with pytest.raises(InvalidArgumentError, match="OperatorSupportBase"):
        partition_graph(gm, support=lambda n: True)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="GraphModule"):
        partition_graph(gm.graph)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(20))
def test_random_dags_are_partitioned_convexly(seed):
    gm = random_dag(120, seed)
    compute = [n for n in gm.graph.nodes if n.op == "call_function"]
    rejected_names = {n.name for i, n in enumerate(compute) if (i * 7 + seed) % 6 == 0}
    result = partition_graph(gm, RejectNames(rejected_names))
    g = to_networkx(gm.graph)
    placed = [n for p in result.partitions for n in p.nodes]
    assert len(placed) == len(set(placed))
    assert {n.name for n in placed} == {n.name for n in compute} - rejected_names
    for p in result.partitions:
        assert is_convex(g, set(p.nodes)), p.name
        assert validate_partition(list(p.nodes))


class TorchLevel(torch.nn.Module):
    def forward(self, x):
        return torch.relu(x) + 1


def test_a_graph_without_values_is_refused_with_what_to_run():
    gm = torch.fx.symbolic_trace(TorchLevel())  # no meta["val"] anywhere
    with pytest.raises(
        InvalidArgumentError,
        match=r"2 call_function node\(s\) have no meta\['val'\] \(relu, add\).*FakeTensorProp",
    ):
        propose_partitions(gm)


def test_an_empty_result_from_a_torch_level_graph_says_why():
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    gm = torch.fx.symbolic_trace(TorchLevel())
    FakeTensorProp(gm).propagate(torch.randn(3))
    with pytest.warns(
        UserWarning, match="no partitions: all 2 compute node.*relu: .*not an ATen operator"
    ):
        assert propose_partitions(gm) == []
    # the same ops as ATen ops partition
    aten = _prepared(TorchLevel(), torch.randn(3))
    assert _names(propose_partitions(aten)) == [["relu", "add"]]
