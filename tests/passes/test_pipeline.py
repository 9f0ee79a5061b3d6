"""The pipeline as `fxdelegate.lower` sees it: one call, one result."""

import gc
import os

import pytest
import torch

from fxdelegate.errors import BackendCompileError
from fxdelegate.partitioner import CompilableAtenSupport, OpSet
from fxdelegate.partitioner.gc_pause import gc_paused
from fxdelegate.passes import LoweringResult, lower_program
from fxdelegate.passes.context import CONTEXT_KEY
from fxdelegate.passes.pipeline.backend_choice import BackendChoice
from fxdelegate.runtime import BackendCompiler, register_backend
from fxdelegate.runtime.backends.reference import ReferenceRuntime
from models import SkipEdges


def _lower(ep, backend="reference", strict=False):
    return lower_program(
        ep,
        backends=[BackendChoice(backend, CompilableAtenSupport())],
        exclude_ops=OpSet(["aten.gelu"]),
        min_partition_size=1,
        cache_dir=None,
        strict=strict,
        compile_workers=None,
        recordable_runners=False,
    )


class Blocks(torch.nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.linears = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(blocks))

    def forward(self, x):
        for lin in self.linears:
            x = x + torch.nn.functional.gelu(lin(x))
        return x


def test_the_result_carries_the_program_and_its_regions():
    ep = torch.export.export(SkipEdges(), (torch.randn(5),))
    before = [n.name for n in ep.graph.nodes]
    result = _lower(ep)
    assert isinstance(result, LoweringResult)
    assert [r.name for r in result.regions] == ["region_0", "region_1"]
    assert (
        set(result.artifacts) == set(result.runners) == {"region_0-reference", "region_1-reference"}
    )
    assert result.earlier_regions == [] and result.failed_regions == {}
    assert result.partition_result is not None and result.graph_snapshot is not None
    assert CONTEXT_KEY not in result.program.graph_module.meta
    assert "def forward" in result.program.graph_module.code
    assert os.path.isdir(result.workdir)
    assert [n.name for n in ep.graph.nodes] == before  # the user's program is untouched
    # Lowered again, the regions already delegated are handed back as earlier ones.
    again = _lower(result.program)
    assert [m.module_name for m in again.earlier_regions] == ["region_0", "region_1"]


def test_the_workdir_goes_when_lowering_fails(monkeypatch, tmp_path):
    class Refusing(BackendCompiler):
        backend_id = "refusing"

        def compile(self, region, options, workdir):
            raise BackendCompileError("no")

    register_backend("refusing", runtime=ReferenceRuntime(), compiler=Refusing(), replace=True)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    ep = torch.export.export(SkipEdges(), (torch.randn(5),))
    with pytest.raises(BackendCompileError):
        _lower(ep, backend="refusing", strict=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("fxdelegate-")]


def test_the_big_graph_code_is_generated_once(monkeypatch):
    """torch's PassManager regenerates a GraphModule's code after every pass; the
    pipeline's module is lazy, so the parent's code is generated once (for the
    result), and each region structure's twice (its module and its program)."""
    generated: list[int] = []
    real = torch.fx.GraphModule.recompile

    def counting(self):
        generated.append(len(self.graph.nodes))
        return real(self)

    ep = torch.export.export(Blocks(30), (torch.randn(2, 8),))
    monkeypatch.setattr(torch.fx.GraphModule, "recompile", counting)
    result = _lower(ep)
    structures = {r.structure for r in result.regions}
    assert len(result.regions) == 31 and len(structures) == 3
    assert len([n for n in generated if n > 100]) == 1
    assert len([n for n in generated if n <= 100]) == 2 * len(structures)


def test_gc_paused_nests_and_restores():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_reference_regions_of_one_structure_share_their_generated_code():
    model = Blocks(6).eval()
    x = torch.randn(2, 8)
    result = _lower(torch.export.export(model, (x,)))
    modules = {}
    for record in result.regions:
        graph_module = record.runner.graph_module
        assert modules.setdefault(record.structure, graph_module) is graph_module
    assert len(modules) == 3
    # Each region still runs with its own weights.
    from fxdelegate.runtime import ProgramExecutor

    with torch.no_grad():
        torch.testing.assert_close(ProgramExecutor(result.program, result.runners)(x), model(x))
