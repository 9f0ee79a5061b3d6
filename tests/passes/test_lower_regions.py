import warnings

import pytest
import torch

import fxdelegate
from fxdelegate.errors import BackendCompileError, BackendError
from fxdelegate.partitioner.report import LoweringSummary
from fxdelegate.passes import LowerRegionsPass
from fxdelegate.runtime import BackendCompiler, BackendRuntime, RegionArtifact, register_backend
from fxdelegate.runtime.backends.reference import ReferenceRuntime
from models import SkipEdges
from pipeline_helpers import lowering_state


class CountingCompiler(BackendCompiler):
    backend_id = "counting"

    def __init__(self):
        self.compiled = []

    def compile(self, region, options, workdir):
        self.compiled.append((region.name, dict(options)))
        return RegionArtifact(region.key(self.backend_id), self.backend_id, program=region.program)


class CountingRuntime(ReferenceRuntime):
    backend_id = "counting"

    def __init__(self):
        self.loaded = []

    def load(self, artifact, constants):
        self.loaded.append(artifact.key)
        return super().load(artifact, constants)


def test_each_region_is_compiled_once_and_loaded():
    compiler, runtime = CountingCompiler(), CountingRuntime()
    register_backend("counting", runtime=runtime, compiler=compiler, replace=True)
    _, _, ctx = lowering_state(
        SkipEdges(),
        (torch.randn(3),),
        exclude=("aten.gelu",),
        backend="counting",
        upto=LowerRegionsPass,
    )
    assert [name for name, _ in compiler.compiled] == ["region_0", "region_1"]
    assert runtime.loaded == ["region_0-counting", "region_1-counting"]
    for r in ctx.regions:
        assert r.artifact.key == f"{r.name}-counting"
        assert callable(r.runner)


def test_user_backend_end_to_end_and_options_reach_the_compiler():
    compiler, runtime = CountingCompiler(), CountingRuntime()
    register_backend("counting", runtime=runtime, compiler=compiler, replace=True)
    model = SkipEdges()
    ep = torch.export.export(model, (torch.randn(5),))
    prog = fxdelegate.lower(
        ep, backend="counting", exclude_ops=["aten.gelu"], compile_options={"level": 3}
    )
    assert all(options == {"level": 3} for _, options in compiler.compiled)
    x = torch.randn(5)
    torch.testing.assert_close(prog(x), model(x))


class CompilerWithDefaults(CountingCompiler):
    backend_id = "defaults"

    def default_options(self):
        return {"level": 1, "threads": "few"}


def test_compiler_defaults_reach_the_compiler_under_the_users_options():
    compiler = CompilerWithDefaults()
    register_backend("defaults", runtime=CountingRuntime(), compiler=compiler, replace=True)
    ep = torch.export.export(SkipEdges(), (torch.randn(5),))
    fxdelegate.lower(ep, backend="defaults", exclude_ops=["aten.gelu"], cache_dir=False)
    assert [options for _, options in compiler.compiled] == [{"level": 1, "threads": "few"}] * 2
    compiler.compiled.clear()
    prog = fxdelegate.lower(
        ep,
        backend="defaults",
        exclude_ops=["aten.gelu"],
        compile_options={"level": 3},
        cache_dir=False,
    )
    assert [options for _, options in compiler.compiled] == [{"level": 3, "threads": "few"}] * 2
    # and the delegates say what their regions were compiled with
    specs = [m.compile_specs for _, m in prog.exported_program.graph_module.named_children()]
    assert specs == [["level=3", "threads=few"]] * 2


class FailingCompiler(CountingCompiler):
    backend_id = "failing"

    def compile(self, region, options, workdir):
        raise BackendCompileError(f"cannot compile {region.name}")


def test_compile_failure_falls_back_to_the_executor_or_raises_when_strict():
    register_backend("failing", runtime=CountingRuntime(), compiler=FailingCompiler(), replace=True)
    model = SkipEdges()
    ep = torch.export.export(model, (torch.randn(5),))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prog = fxdelegate.lower(ep, backend="failing", exclude_ops=["aten.gelu"])
    # both regions fail for one cause: one warning says so and names the switch
    (warning,) = [str(w.message) for w in caught if "failed to compile" in str(w.message)]
    assert warning.startswith(
        "failing failed to compile 2 regions (region_0, region_1) for one cause; "
        "their 4 node(s) stay in the executor: BackendCompileError: cannot compile <region>"
    ), warning
    assert "strict=True" in warning
    assert prog.partitions == []
    x = torch.randn(5)
    torch.testing.assert_close(prog(x), model(x))
    report = prog.report()
    assert "region_0 failed to compile (BackendCompileError: cannot compile region_0)" in report
    # The Regions table lists them too, and the summary saved in an archive keeps them.
    table = report.split("Regions\n")[1].split("\n\n")[0]
    for name in ("region_0", "region_1"):
        (row,) = [line for line in table.splitlines() if line.strip().startswith(name)]
        assert f"failed: BackendCompileError: cannot compile {name}" in row, table
    assert report.startswith("fxdelegate: 0 region(s)")
    assert LoweringSummary.from_dict(prog.summary.to_dict()).format() == prog.summary.format()
    with pytest.raises(BackendCompileError, match="cannot compile region_0"):
        fxdelegate.lower(ep, backend="failing", strict=True)


def test_unknown_and_runtime_only_backends():
    ep = torch.export.export(SkipEdges(), (torch.randn(5),))
    with pytest.raises(BackendError, match=r"unknown backend 'nope'.*aoti.*reference"):
        fxdelegate.lower(ep, backend="nope")

    class RuntimeOnly(BackendRuntime):
        backend_id = "runtime_only"

        def load(self, artifact, constants):
            raise AssertionError

    register_backend("runtime_only", runtime=RuntimeOnly(), replace=True)
    with pytest.raises(BackendError, match="no compiler registered"):
        fxdelegate.lower(ep, backend="runtime_only")


class RefusingRuntime(CountingRuntime):
    backend_id = "refusing"

    def load(self, artifact, constants):
        if artifact.key.startswith("region_1"):
            raise BackendError("weights ['constant4'] were not provided")
        return super().load(artifact, constants)


def test_a_region_its_runtime_cannot_load_stays_in_the_executor():
    compiler = CountingCompiler()
    compiler.backend_id = "refusing"
    register_backend("refusing", runtime=RefusingRuntime(), compiler=compiler, replace=True)
    model = SkipEdges()
    ep = torch.export.export(model, (torch.randn(5),))
    with pytest.warns(UserWarning, match="region_1"):
        prog = fxdelegate.lower(ep, backend="refusing", exclude_ops=["aten.gelu"])
    assert [p.name for p in prog.partitions] == ["region_0"]
    assert (
        "region_1 failed to compile (BackendError: weights ['constant4'] were not provided)"
        in prog.report()
    )
    x = torch.randn(5)
    torch.testing.assert_close(prog(x), model(x))
    with pytest.raises(BackendError, match="constant4"):
        fxdelegate.lower(ep, backend="refusing", exclude_ops=["aten.gelu"], strict=True)


def test_an_unexpected_fallback_fails_our_tests():
    """pyproject.toml turns fallback warnings into errors in this suite (by message):
    both forms of the warning must match that filter."""
    from fxdelegate.errors import RegionFallbackWarning

    one = "aoti failed to compile region_3; its 2 node(s) stay in the executor: X"
    many = "aoti failed to compile 2 regions (region_0, region_1) for one cause; their 4 node(s) stay in the executor: Y"
    for message in (one, many):
        with pytest.raises(RegionFallbackWarning):
            warnings.warn(message, RegionFallbackWarning, stacklevel=1)
