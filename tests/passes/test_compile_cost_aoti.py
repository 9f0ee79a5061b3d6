"""The compile cache, shared artifacts, concurrency and failure fallback, through
real AOTInductor."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fxdelegate
from fxdelegate.errors import BackendCompileError, RegionFallbackWarning
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
    # a hit brings the backend's own meta back (the archive's device check reads it)
    assert [a.meta["device"] for a in second.artifacts.values()] == ["cpu"] * 4
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
    # every region fails for one cause: one warning names them all
    with pytest.warns(
        RegionFallbackWarning, match=r"aoti failed to compile 4 regions \(region_0, "
    ):
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
    with pytest.warns(RegionFallbackWarning, match="region_0"):
        prog = _lower(tmp_path, backend="aoti_flaky")
    assert [p.name for p in prog.partitions] == ["region_1", "region_2", "region_3"]
    assert "region_0 failed to compile (BackendCompileError: injected fault)" in prog.report()
    prog.save(tmp_path / "partial.pt2")
    x = torch.randn(2, 8)
    torch.testing.assert_close(fxdelegate.load(tmp_path / "partial.pt2")(x), prog(x))


FROM_A_CHECKOUT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])  # fxdelegate is importable through sys.path alone
    import torch, fxdelegate
    assert fxdelegate.__file__.startswith(sys.argv[1]), fxdelegate.__file__
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.Linear(8, 4), torch.nn.Tanh()
    ).eval()
    ep = torch.export.export(model, (torch.randn(2, 8),))
    prog = fxdelegate.lower(
        ep, exclude_ops=["aten.gelu"], strict=True, cache_dir=sys.argv[2], compile_workers=2
    )
    x = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(prog(x), model(x))
    print("compiled", prog.summary.compile["compiled"])
    """
)


def test_compile_workers_import_what_the_caller_imports(tmp_path):
    """A script that finds fxdelegate only through sys.path (a notebook, a checkout
    that is not installed): its compile workers must find it too."""
    import venv

    # An interpreter that has torch and the other dependencies but not fxdelegate:
    # a bare virtualenv whose .pth names the test environment's site-packages (the
    # .pth files in there, the editable install's among them, are not processed).
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    site_packages = os.path.dirname(os.path.dirname(torch.__file__))
    (target,) = env_dir.glob("lib/python3*/site-packages")
    (target / "deps.pth").write_text(site_packages + "\n")
    python = env_dir / "bin" / "python"
    bare = subprocess.run(
        [python, "-c", "import fxdelegate"], capture_output=True, text=True, cwd=tmp_path
    )
    assert "No module named 'fxdelegate'" in bare.stderr  # the premise of this test
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(fxdelegate.__file__)))
    script = tmp_path / "lower_from_a_checkout.py"
    script.write_text(FROM_A_CHECKOUT)
    result = subprocess.run(
        [python, str(script), checkout, str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "compiled 2" in result.stdout
