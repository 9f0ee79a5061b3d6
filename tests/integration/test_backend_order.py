"""lower(ep, backend=[...]): several backends in priority order."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fxdelegate
from fxdelegate.demo import DemoModel, demo_inputs, export_demo
from fxdelegate.errors import InvalidArgumentError
from fxdelegate.partitioner import SupportedOps
from fxdelegate.runtime.backends.reference import ReferenceCompiler, ReferenceRuntime
from graph_checks import is_convex, to_networkx


class GeluOnlyCompiler(ReferenceCompiler):
    """A small backend of its own: takes GELUs only, runs each region's graph."""

    backend_id = "gelu_only"

    def default_support(self):
        return SupportedOps(["aten.gelu"])


class GeluOnlyRuntime(ReferenceRuntime):
    backend_id = "gelu_only"


fxdelegate.register_backend(
    "gelu_only", runtime=GeluOnlyRuntime(), compiler=GeluOnlyCompiler(), replace=True
)


class Blocks(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linears = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear in self.linears:
            x = x + torch.nn.functional.gelu(linear(x)).sigmoid()
        return x


def _export():
    model = Blocks().eval()
    return model, torch.export.export(model, (torch.randn(2, 8),))


def test_each_node_goes_to_the_first_backend_that_supports_it(tmp_path):
    model, ep = _export()
    prog = fxdelegate.lower(
        ep,
        backend=["gelu_only", "reference"],
        support={"reference": SupportedOps(["aten.linear", "aten.add"])},
    )
    by_backend: dict[str, set[str]] = {}
    for region in prog.partitions:
        ops = set(region.ops)
        by_backend.setdefault(region.backend_id, set()).update(ops)
        assert len(ops) >= 1
    assert by_backend == {
        "gelu_only": {"aten.gelu.default"},
        "reference": {"aten.linear.default", "aten.add.Tensor"},
    }
    # Every region is convex in the original graph (and no region mixes backends,
    # which the op sets above show).
    g = to_networkx(ep.graph)
    by_name = {n.name: n for n in ep.graph.nodes}
    for region in prog.partitions:
        assert is_convex(g, {by_name[n] for n in region.nodes}), region.name
    # Sigmoid: no backend takes it, and the report says why for each.
    rows = [op for op in prog.summary.executor_ops if op.op != "getitem"]
    assert [op.op for op in rows] == ["aten.sigmoid.default"] * 3
    assert all(
        op.reason.startswith("gelu_only: ") and "; reference: " in op.reason for op in rows
    ), rows
    report = prog.report()
    assert "backends 'gelu_only' (3), 'reference' (4)" in report
    assert "backend" in report.splitlines()[3]  # the regions table has a backend column
    x = torch.randn(2, 8)
    torch.testing.assert_close(prog(x), model(x))
    prog.save(tmp_path / "two.pt2")
    loaded = fxdelegate.load(tmp_path / "two.pt2")
    torch.testing.assert_close(loaded(x), model(x))
    assert {a.backend_id for a in loaded.artifacts.values()} == {"gelu_only", "reference"}


def test_one_reason_when_every_backend_refuses_alike():
    _, ep = _export()
    prog = fxdelegate.lower(ep, backend=["gelu_only", "reference"], exclude_ops=["aten.sigmoid"])
    reasons = {op.reason for op in prog.summary.executor_ops if op.op != "getitem"}
    assert reasons == {"excluded by exclude_ops"}


def test_a_failed_region_falls_to_the_next_backend():
    class Refusing(ReferenceCompiler):
        backend_id = "refusing"

        def compile(self, region, options, workdir):
            raise fxdelegate.BackendCompileError("refused on purpose")

    fxdelegate.register_backend(
        "refusing", runtime=ReferenceRuntime(), compiler=Refusing(), replace=True
    )
    model, ep = _export()
    with pytest.warns(
        fxdelegate.RegionFallbackWarning, match=r"go to the next backends \(reference\)"
    ):
        prog = fxdelegate.lower(ep, backend=["refusing", "reference"])
    assert {r.backend_id for r in prog.partitions} == {"reference"}
    assert not [op for op in prog.summary.executor_ops if op.op != "getitem"]
    x = torch.randn(2, 8)
    torch.testing.assert_close(prog(x), model(x))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"backend": []}, "non-empty list"),
        ({"backend": ["reference", "reference"]}, "twice"),
        ({"backend": ["reference", 3]}, "backend id"),
        ({"backend": ["reference", "aoti"], "support": SupportedOps(["aten.gelu"])}, "keyed by"),
        ({"backend": ["reference", "aoti"], "support": {"mine": SupportedOps(["aten.gelu"])}}, "not in the backend list"),
        ({"backend": ["reference", "aoti"], "compile_options": {"max_autotune": True}}, "not in the backend list"),
        ({"backend": ["reference", "aoti"], "support": {"aoti": "gelu"}}, "OperatorSupportBase"),
        ({"backend": "reference", "compile_options": ["x"]}, "must be a dict"),
    ],
)  # fmt: skip
def test_backend_arguments_are_checked(kwargs, match):
    _, ep = _export()
    with pytest.raises(InvalidArgumentError, match=match):
        fxdelegate.lower(ep, **kwargs)


def test_supported_ops_needs_ops():
    with pytest.raises(InvalidArgumentError, match="at least one op"):
        SupportedOps([])


@pytest.mark.aoti
def test_a_small_backend_before_aotinductor_saves_and_loads_without_a_compiler(tmp_path):
    torch.manual_seed(3)
    model = DemoModel().eval()
    prog = fxdelegate.lower(export_demo(model), backend=["gelu_only", "aoti"], strict=True)
    backends = {r.name: r.backend_id for r in prog.partitions}
    assert sorted(set(backends.values())) == ["aoti", "gelu_only"]
    for region in prog.partitions:
        assert ("aten.gelu.default" in region.ops) == (region.backend_id == "gelu_only")
    assert not [op for op in prog.summary.executor_ops if op.op != "getitem"]
    args, kwargs = demo_inputs(6)
    torch.testing.assert_close(prog(*args, **kwargs), model(*args, **kwargs))
    assert prog.compare(*args, **kwargs).first_divergence(rtol=1e-4, atol=1e-5) is None

    prog.save(tmp_path / "mixed.pt2")
    torch.save({"args": args, "kwargs": kwargs}, tmp_path / "inputs.pt")
    torch.save(model(*args, **kwargs), tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys
        import torch
        import torch._inductor
        import torch._inductor.cpp_builder as cpp_builder
        import fxdelegate
        from fxdelegate.runtime.backends.reference import ReferenceRuntime

        def refuse(*args, **kwargs):
            raise AssertionError("a compile was attempted while loading")

        cpp_builder.CppBuilder.build = refuse
        torch._inductor.aot_compile = refuse

        class GeluOnlyRuntime(ReferenceRuntime):
            backend_id = "gelu_only"

        # The loading process registers the runtime half only.
        fxdelegate.register_backend("gelu_only", runtime=GeluOnlyRuntime())
        prog = fxdelegate.load({str(tmp_path / "mixed.pt2")!r})
        saved = torch.load({str(tmp_path / "inputs.pt")!r})
        out = prog(*saved["args"], **saved["kwargs"])
        torch.testing.assert_close(out, torch.load({str(tmp_path / "expected.pt")!r}))
        compilers = [m for m in ("torch._inductor.compile_fx",
                     "fxdelegate.runtime.backends.aoti_compiler") if m in sys.modules]
        assert not compilers, compilers
        print(sorted({{a.backend_id for a in prog.artifacts.values()}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": ""},  # no C++ compiler to be found
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['aoti', 'gelu_only']"


def test_user_passes_run_once_per_backend():
    runs: list[int] = []  # delegate calls in the graph each time the pass runs
    delegate = torch.ops.higher_order.executorch_call_delegate

    def count_nodes(graph_module):
        runs.append(sum(n.target is delegate for n in graph_module.graph.nodes))

    model, ep = _export()
    pipeline = fxdelegate.default_pipeline()
    pipeline.insert_before("tag_regions", count_nodes)
    prog = fxdelegate.lower(ep, backend=["gelu_only", "reference"], pipeline=pipeline)
    assert runs == [0, 3]  # the second run sees the first backend's three GELU regions
    assert {r.backend_id for r in prog.partitions} == {"gelu_only", "reference"}
    x = torch.randn(2, 8)
    torch.testing.assert_close(prog(x), model(x))
