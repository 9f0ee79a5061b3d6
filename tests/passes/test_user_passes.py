"""Passes of the user's own inside `fxdelegate.lower`: where they run, what they
see, and the report."""

import pytest
import torch
from torch.export import Dim
from torch.fx.passes.infra.pass_base import PassBase, PassResult

import fxdelegate
from example_passes import (
    FuseRMSNorm,
    GeluBlock,
    NormBlock,
    RMSNorm,
    RouteGeluToKernel,
    decompose_gelu,
)
from fxdelegate.passes import get_context


def _with(where, pass_, *, after=False):
    pipeline = fxdelegate.default_pipeline()
    (pipeline.insert_after if after else pipeline.insert_before)(where, pass_)
    return pipeline


def test_a_pass_before_partitioning_changes_the_regions_and_the_report_says_so():
    torch.manual_seed(0)
    model = NormBlock().eval()
    ep = torch.export.export(model, (torch.randn(4, 16),), dynamic_shapes=({0: Dim("b")},))
    plain = fxdelegate.lower(ep, backend="reference")
    fused = fxdelegate.lower(ep, backend="reference", pipeline=_with("tag_regions", FuseRMSNorm()))
    # Without the pass, RMSNorm's ops join the linears in one region; the fused
    # kernel stays in the executor and splits it in two.
    assert [r.name for r in plain.partitions] == ["region_0"]
    assert [r.name for r in fused.partitions] == ["region_0", "region_1"]
    assert "aten.rsqrt.default" in plain.partitions[0].ops
    assert all("aten.rsqrt.default" not in r.ops for r in fused.partitions)
    report = fused.report()
    kernel_row = next(line for line in report.splitlines() if "fxdelegate_test.rms_norm" in line)
    assert "not supported by the backend" in kernel_row
    passes = report.split("User passes (in the order they ran)")[1].splitlines()
    assert passes[1].split() == ["pass", "ran", "graph", "checked", "after", "it"]
    assert passes[2].split()[:4] == ["fuse_rms_norm", "before", "tag_regions", "modified"]
    assert "lint, values, regions, weights, signature, outputs" in passes[2]
    assert "User passes" not in plain.report()
    for batch in (1, 4, 9):
        x = torch.randn(batch, 16)
        torch.testing.assert_close(fused(x), model(x))


def test_a_decomposition_before_partitioning_merges_regions():
    torch.manual_seed(0)
    model = GeluBlock().eval()
    ep = torch.export.export(model, (torch.randn(4, 16),))
    plain = fxdelegate.lower(ep, backend="reference", exclude_ops=["aten.gelu"])
    # GELU written out as erf: nothing is excluded any more, one region.
    merged = fxdelegate.lower(
        ep,
        backend="reference",
        exclude_ops=["aten.gelu"],
        pipeline=_with("tag_regions", decompose_gelu),
    )
    assert len(plain.partitions) == 2 and len(merged.partitions) == 1
    assert merged.partitions[0].ops["aten.erf.default"] == 1
    assert merged.summary.executor_compute_nodes == 0
    x = torch.randn(4, 16)
    torch.testing.assert_close(merged(x), model(x))


def test_a_pass_after_delegation_runs_on_the_delegated_graph():
    torch.manual_seed(0)
    model = GeluBlock().eval()
    ep = torch.export.export(model, (torch.randn(4, 16),))
    route = RouteGeluToKernel()
    prog = fxdelegate.lower(
        ep,
        backend="reference",
        exclude_ops=["aten.gelu"],
        pipeline=_with("delegate_regions", route, after=True),
    )
    assert route.delegate_calls_seen == ["executorch_call_delegate", "executorch_call_delegate_1"]
    executor = [n.target for n in prog.exported_program.graph.nodes if n.op == "call_function"]
    assert torch.ops.fxdelegate_test.gelu.default in executor
    assert torch.ops.aten.gelu.default not in executor
    row = prog.summary.user_passes[0]
    assert row["name"] == "route_gelu_to_kernel" and row["position"] == "before verify_delegated"
    assert row["modified"] is True
    x = torch.randn(4, 16)
    torch.testing.assert_close(prog(x), model(x))


def test_an_unmodified_pass_is_reported_unchecked():
    class CountNodes(PassBase):
        def call(self, graph_module):
            self.count = len(graph_module.graph.nodes)
            assert get_context(graph_module).partition_result is not None
            return PassResult(graph_module, False)

    counter = CountNodes()
    ep = torch.export.export(NormBlock(), (torch.randn(2, 16),))
    prog = fxdelegate.lower(
        ep, backend="reference", pipeline=_with("tag_regions", counter, after=True)
    )
    assert counter.count > 5
    assert prog.summary.user_passes == [
        {
            "name": "count_nodes",
            "position": "before assign_constant_owners",
            "modified": False,
            "checks": [],
        }
    ]
    assert "count_nodes  before assign_constant_owners  unchanged  -" in prog.report()


def test_a_pass_may_hand_back_a_new_graph_module():
    def rebuilt(graph_module):
        decompose_gelu(graph_module)
        fresh = torch.fx.GraphModule(graph_module, graph_module.graph)
        return PassResult(fresh, True)

    torch.manual_seed(0)
    model = GeluBlock().eval()
    ep = torch.export.export(model, (torch.randn(4, 16),))
    prog = fxdelegate.lower(ep, backend="reference", pipeline=_with("tag_regions", rebuilt))
    assert len(prog.partitions) == 1
    x = torch.randn(4, 16)
    torch.testing.assert_close(prog(x), model(x))


def test_the_report_survives_saving(tmp_path):
    ep = torch.export.export(NormBlock(), (torch.randn(2, 16),))
    prog = fxdelegate.lower(ep, backend="reference", pipeline=_with("tag_regions", FuseRMSNorm()))
    prog.save(tmp_path / "fused.pt2")
    loaded = fxdelegate.load(tmp_path / "fused.pt2")
    assert loaded.summary.user_passes == prog.summary.user_passes
    x = torch.randn(2, 16)
    torch.testing.assert_close(loaded(x), prog(x))


class TwinLinears(torch.nn.Module):
    """Linear -> RMSNorm -> Linear, both linears 16 -> 16: once the norm leaves for
    a kernel, two regions of one structure (compiled once)."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = torch.nn.Linear(16, 16), torch.nn.Linear(16, 16)
        self.norm = RMSNorm(16)

    def forward(self, x):
        return self.second(self.norm(self.first(x)))


@pytest.mark.aoti
def test_a_user_pass_with_aotinductor_regions(tmp_path):
    torch.manual_seed(0)
    model = TwinLinears().eval()
    ep = torch.export.export(model, (torch.randn(4, 16),), dynamic_shapes=({0: Dim("b", max=32)},))
    prog = fxdelegate.lower(ep, backend="aoti", pipeline=_with("tag_regions", FuseRMSNorm()))
    assert [r.backend_id for r in prog.partitions] == ["aoti", "aoti"]
    assert prog.summary.compile["distinct"] == 1
    prog.save(tmp_path / "fused.pt2")
    loaded = fxdelegate.load(tmp_path / "fused.pt2")
    for batch in (2, 4, 31):
        x = torch.randn(batch, 16)
        expected = model(x)
        torch.testing.assert_close(prog(x), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(loaded(x), expected, rtol=1e-4, atol=1e-5)
