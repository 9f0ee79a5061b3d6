"""Nodes the partitioner handles explicitly: control-flow bodies, asserts,
size computations, and determinism whatever the hash seed."""

import json
import subprocess
import sys

import torch
from torch._higher_order_ops.map import map as control_map
from torch.export import Dim

import fxdelegate
from fxdelegate.partitioner import RejectReason, partition_graph
from fxdelegate.partitioner.op_support import CONTROL_FLOW_OPS
from fxdelegate.passes import AnchorSymbolicSizesPass, prepare_program


def _prepared(model, args, dynamic_shapes=None):
    ep = prepare_program(torch.export.export(model, args, dynamic_shapes=dynamic_shapes))
    AnchorSymbolicSizesPass()(ep.graph_module)
    return ep


class WithCond(torch.nn.Module):
    def forward(self, x):
        y = x * 2
        z = torch.cond(y.sum() > 0, lambda t: t.sin() + 1, lambda t: t.cos() - 1, (y,))
        return z * 3


class WithMap(torch.nn.Module):
    def forward(self, xs, y):
        h = xs + 1
        out = control_map(lambda x, y: x.relu() * y, h, y)
        return out.sum(0) - y


def _check_hop(model, args, hop_name, body_op):
    ep = _prepared(model, args)
    gm = ep.graph_module
    body_nodes = {
        n
        for _, m in gm.named_children()
        if isinstance(m, torch.fx.GraphModule)
        for n in m.graph.nodes
    }
    assert body_nodes
    hop = next(n for n in gm.graph.nodes if n.op == "call_function" and hop_name in str(n.target))

    # Inside a region: control flow whose body holds only supported ops is delegated whole
    # (map only where AOTInductor compiles it: torch >= 2.13).
    inside = fxdelegate.lower(torch.export.export(model, args), backend="reference")
    if hop.target.name() in CONTROL_FLOW_OPS:
        (region,) = partition_graph(gm).partitions
        assert hop in region.nodes
        assert not body_nodes & set(region.nodes)  # bodies travel as subgraphs, never split
        assert [n for n in inside.exported_program.graph.nodes if hop_name in str(n.target)] == []
    else:
        reasons = {r.node: r for r in partition_graph(gm).rejected}
        assert reasons[hop].reason is RejectReason.UNSUPPORTED

    # Across a boundary: an excluded op in the body keeps the HOP in the executor,
    # with regions on both sides of it.
    result = partition_graph(gm, exclude_ops=[body_op])
    reasons = {r.node: r for r in result.rejected}
    assert (
        reasons[hop].reason is RejectReason.EXCLUDED and "its body runs" in reasons[hop].explain()
    )
    for user in hop.users:  # its projections stay with it
        assert reasons[user].reason is RejectReason.PRODUCER_IN_EXECUTOR
    assert not body_nodes & {n for p in result.partitions for n in p.nodes}
    assert len(result.partitions) == 2
    across = fxdelegate.lower(
        torch.export.export(model, args), backend="reference", exclude_ops=[body_op]
    )
    return inside, across


def test_cond_inside_a_region_and_across_a_boundary():
    for prog in _check_hop(WithCond(), (torch.randn(4),), "cond", "aten.sin"):
        for x in (torch.ones(4), -torch.ones(4), torch.randn(4)):
            torch.testing.assert_close(prog(x), WithCond()(x))


def test_map_inside_a_region_and_across_a_boundary():
    for prog in _check_hop(WithMap(), (torch.randn(3, 4), torch.randn(4)), "map_impl", "aten.relu"):
        xs, y = torch.randn(3, 4), torch.randn(4)
        torch.testing.assert_close(prog(xs, y), WithMap()(xs, y))


class WithAsserts(torch.nn.Module):
    def forward(self, x, k):
        n = k.item()
        torch._check(n >= 1)
        torch._check(n <= 8)
        y = (x * 2).reshape(x.shape[0] * 3)
        return y[:n].sum(), y.relu()


def test_runtime_asserts_and_size_ops_stay_in_the_executor_without_splitting():
    b = Dim("b", min=2, max=64)
    args = (torch.randn(4, 3), torch.tensor(5))
    ep = _prepared(WithAsserts(), args, dynamic_shapes=({0: b}, None))
    result = partition_graph(ep.graph_module)
    reasons = {r.node.name: r for r in result.rejected}
    asserts = [r for r in result.rejected if "_assert_scalar" in str(r.node.target)]
    assert len(asserts) >= 2
    assert all(r.reason is RejectReason.NO_TENSOR_OUTPUT for r in asserts)
    assert any(r.reason is RejectReason.SYMBOLIC_SCALAR for r in result.rejected)
    assert any(r.reason is RejectReason.DATA_DEPENDENT for r in result.rejected), reasons
    # mul, reshape (reading a size) and relu stay together in one region
    (first,) = [p for p in result.partitions if any(n.name.startswith("mul") for n in p.nodes)]
    assert {"relu"} <= {n.name for n in first.nodes}
    prog = fxdelegate.lower(
        torch.export.export(WithAsserts(), args, dynamic_shapes=({0: b}, None)), backend="reference"
    )
    for rows, k in ((3, 1), (6, 8)):
        x, kk = torch.randn(rows, 3), torch.tensor(k)
        torch.testing.assert_close(prog(x, kk), WithAsserts()(x, kk))


class EmptyReductions(torch.nn.Module):
    def forward(self, empty, x):
        var, mean = torch.var_mean(empty, unbiased=False)
        return mean + var, x.relu() * 2, empty[:, :0].sum(0)


def test_zero_element_tensors_stay_in_the_executor():
    """Nothing to compute, and inductor's var_mean gives a mean of 0 where eager gives
    NaN (found by the OpInfo sweep): ops on or into empty tensors run eagerly."""
    args = (torch.empty(0, 3), torch.randn(4, 3))
    result = partition_graph(_prepared(EmptyReductions(), args).graph_module)
    empty = {r.node.name for r in result.rejected if r.reason is RejectReason.EMPTY}
    assert {"var_mean"} <= empty, [(r.node.name, r.explain()) for r in result.rejected]
    aten = torch.ops.aten
    delegated = {n.target for p in result.partitions for n in p.nodes}
    assert delegated == {aten.add.Tensor, aten.relu.default, aten.mul.Tensor}  # none empty
    prog = fxdelegate.lower(torch.export.export(EmptyReductions(), args), backend="reference")
    for got, want in zip(prog(*args), EmptyReductions()(*args)):
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


DETERMINISM = """
import json, sys
sys.path.insert(0, "tests/support")
import torch
from fxdelegate.partitioner import propose_partitions
from fxdelegate.passes import prepare_program
from fxdelegate.demo import DemoModel, export_demo
from graph_checks import RejectNames, random_layered_dag, random_rejections
torch.manual_seed(0)
gm = random_layered_dag(600, seed=5)
parts = propose_partitions(gm, RejectNames(random_rejections(gm, 0.15, seed=5)))
demo = propose_partitions(prepare_program(export_demo(DemoModel())).graph_module, exclude_ops=["aten.gelu"])
print(json.dumps([[p.name, [n.name for n in p.nodes]] for p in parts + demo]))
"""


def test_same_regions_whatever_the_hash_seed():
    outputs = set()
    for seed in ("0", "1", "12345"):
        result = subprocess.run(
            [sys.executable, "-c", DETERMINISM],
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            cwd=str(__import__("pathlib").Path(__file__).parents[2]),
        )
        assert result.returncode == 0, result.stderr
        outputs.add(result.stdout)
        assert len(json.loads(result.stdout)) > 10
    assert len(outputs) == 1


class BatchNormUpdate(torch.nn.Module):
    def forward(self, x, weight, bias, mean, var):
        out = torch.ops.aten._batch_norm_with_update(x, weight, bias, mean, var, 0.5, 1e-5)[0]
        return out.relu()


def test_a_value_whose_fake_metadata_is_wrong_never_enters_a_region():
    """torch 2.13's fake kernel says the functional batch norm returns its running
    statistics in float32; for bfloat16 inputs the CPU kernel returns bfloat16. A
    region compiled from the fake metadata would read them as float32 (the OpInfo
    sweep found running statistics of 7.7e31): the readers stay in the executor."""
    bf16 = torch.bfloat16
    x, weight, bias, mean = (torch.randn(*s, dtype=bf16) for s in ((4, 3), (3,), (3,), (3,)))
    args = (x, weight, bias, mean, torch.rand(3, dtype=bf16))
    prog = fxdelegate.lower(torch.export.export(BatchNormUpdate(), args), backend="reference")
    reasons = {op.node: op.reason for op in prog.summary.executor_ops}
    copies = [r for name, r in reasons.items() if name.startswith("_to_copy")]
    assert len(copies) == 2 and all(
        r.startswith("reads a value whose fake metadata is wrong") and "float32" in r
        for r in copies
    ), reasons
    assert any("relu" in op for p in prog.partitions for op in p.ops)  # the rest is delegated
    got, want = [t.clone() for t in args], [t.clone() for t in args]
    torch.testing.assert_close(prog(*got), BatchNormUpdate()(*want), rtol=0, atol=0)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the running statistics too
