"""The compile cache, shared artifacts, concurrency and failure fallback, through
real AOTInductor."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fxdelegate
from fxdelegate.errors import BackendCompileError
from fxdelegate.runtime import register_backend
from fxdelegate.runtime.backends.aoti_compiler import AOTICompiler
from fxdelegate.runtime.backends.aoti_runtime import AOTIRuntime

pytestmark = pytest.mark.aoti


class Blocks(torch.nn.Module):
    """Three residual blocks: 4 regions, 3 distinct structures."""

    def __init__(self, n=3, width=8):
        super().__init__()
        self.lins = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(n))

    def forward(self, x):
        for lin in self.lins:
            x = x + torch.nn.functional.gelu(lin(x))
        return x


def _lower(cache_dir, model=None, **kwargs):
    model = model or Blocks().eval()
    ep = torch.export.export(model, (torch.randn(2, 8),))
    prog = fxdelegate.lower(ep, exclude_ops=["aten.gelu"], cache_dir=cache_dir, **kwargs)
    x = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(prog(x), model(x))
    return prog


def test_identical_regions_compile_once_and_a_second_lowering_compiles_nothing(tmp_path):
    first = _lower(tmp_path)
    stats = first.summary.compile
    assert stats["regions"] == 4 and stats["distinct"] == 3
    assert stats["compiled"] == 3 and stats["cache_hits"] == 0
    # a different model of the same structure: everything comes from the cache
    second = _lower(tmp_path)
    assert second.summary.compile["cache_hits"] == 3 and second.summary.compile["compiled"] == 0
    assert "3 from the compile cache, 0 compiled" in second.report()
    # and the shared artifacts survive save/load with each region's own weights
    second.save(tmp_path / "b.pt2")
    loaded = fxdelegate.load(tmp_path / "b.pt2")
    x = torch.randn(2, 8)
    torch.testing.assert_close(loaded(x), second(x))


def test_a_damaged_entry_is_discarded_and_rebuilt(tmp_path, caplog):
    _lower(tmp_path)
    packages = sorted(tmp_path.rglob("package.pt2"))
    assert len(packages) == 3
    with open(packages[0], "r+b") as f:
        f.seek(100)
        f.write(b"\x00garbage\x00")
    with caplog.at_level("WARNING", logger="fxdelegate.cache"):
        prog = _lower(tmp_path)
    assert prog.summary.compile["cache_hits"] == 2 and prog.summary.compile["compiled"] == 1
    assert "discarding damaged compile-cache entry" in caplog.text


CONCURRENT = textwrap.dedent(
    """
    import sys, torch, fxdelegate
    sys.path.insert(0, sys.argv[2])
    from test_compile_cost_aoti import Blocks
    torch.manual_seed(int(sys.argv[3]))
    model = Blocks().eval()
    ep = torch.export.export(model, (torch.randn(2, 8),))
    prog = fxdelegate.lower(ep, exclude_ops=["aten.gelu"], cache_dir=sys.argv[1], compile_workers=1)
    x = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(prog(x), model(x))
    print("ok", prog.summary.compile["compiled"], prog.summary.compile["cache_hits"])
    """
)


def test_two_processes_lowering_into_one_cache_at_once(tmp_path):
    cache = tmp_path / "shared"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(cache), os.path.dirname(__file__), str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
        assert out.strip().startswith("ok")
    assert len(list(cache.rglob("package.pt2"))) == 3
    assert not [
        p for p in cache.rglob("*") if p.name.startswith(".")
    ]  # no half-written entries left
    assert _lower(cache).summary.compile["cache_hits"] == 3


def test_a_region_that_fails_to_compile_stays_in_the_executor(tmp_path):
    bad = {"cpp.cxx": (None, "/nonexistent/g++"), "force_disable_caches": True}
    with pytest.warns(UserWarning, match="aoti failed to compile region_0"):
        prog = _lower(tmp_path, compile_options=bad)
    assert prog.partitions == [] and prog.summary.compile["failed"] == 3
    report = prog.report()
    # the report names the region and the compiler's error (its wording varies across torch versions)
    assert "region_0 failed to compile (BackendCompileError: " in report, report
    with pytest.raises(BackendCompileError, match="AOTInductor failed to compile"):
        _lower(tmp_path, compile_options=bad, strict=True)


class FlakyCompiler(AOTICompiler):
    """Real AOTInductor, with an injected fault for one region."""

    backend_id = "aoti_flaky"
    parallel_safe = False

    def compile(self, region, options, workdir):
        if region.name == "region_0":
            raise BackendCompileError("injected fault")
        return super().compile(region, options, workdir)


class FlakyRuntime(AOTIRuntime):
    backend_id = "aoti_flaky"


def test_one_failed_region_leaves_the_others_compiled(tmp_path):
    register_backend("aoti_flaky", runtime=FlakyRuntime(), compiler=FlakyCompiler(), replace=True)
    with pytest.warns(UserWarning, match="region_0"):
        prog = _lower(tmp_path, backend="aoti_flaky")
    assert [p.name for p in prog.partitions] == ["region_1", "region_2", "region_3"]
    assert "region_0 failed to compile (BackendCompileError: injected fault)" in prog.report()
    prog.save(tmp_path / "partial.pt2")
    x = torch.randn(2, 8)
    torch.testing.assert_close(fxdelegate.load(tmp_path / "partial.pt2")(x), prog(x))
