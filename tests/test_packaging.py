"""The three component folders map into the one package `fxdelegate` for both
regular and editable installs (each into its own fresh virtual environment)."""

import pathlib
import subprocess
import sys
import sysconfig
import venv

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

CHECK = """
import pathlib, sys, torch, fxdelegate
import fxdelegate.partitioner, fxdelegate.passes, fxdelegate.runtime, fxdelegate.runtime.backends.aoti_runtime
print(pathlib.Path(fxdelegate.__file__).parent.parent, pathlib.Path(fxdelegate.partitioner.__file__).parent)
class M(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.gelu(x * 2) + 1
ep = torch.export.export(M(), (torch.randn(3),))
prog = fxdelegate.lower(ep, backend="reference", exclude_ops=["aten.gelu"])
x = torch.randn(3)
torch.testing.assert_close(prog(x), M()(x))
print("ok", len(prog.partitions))
"""


def _fresh_env(path: pathlib.Path) -> pathlib.Path:
    venv.create(path, with_pip=True, system_site_packages=False)
    python = path / "bin" / "python"
    # torch comes from the environment running the tests; pip builds in isolation as usual.
    site = subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip()
    (pathlib.Path(site) / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.mark.parametrize("editable", [False, True], ids=["regular", "editable"])
def test_install_maps_components_into_one_package(tmp_path, editable):
    python = _fresh_env(tmp_path / "env")
    cmd = [python, "-m", "pip", "install", "-q", "--no-deps"]
    cmd += ["-e", str(ROOT)] if editable else [str(ROOT)]
    install = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert install.returncode == 0, install.stdout + install.stderr
    run = subprocess.run([python, "-c", CHECK], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    package_root, partitioner_dir = (pathlib.Path(p) for p in run.stdout.split("\n")[0].split())
    if editable:
        assert partitioner_dir == ROOT / "partitioner"
    else:
        assert partitioner_dir == package_root / "fxdelegate" / "partitioner"
        assert "site-packages" in str(partitioner_dir)
    assert run.stdout.strip().endswith("ok 2")
    assert sys.executable != str(python)
    # Started in the repository's root, Python finds the source folder first; it must
    # still resolve the component packages (the demo and compile workers run this way).
    from_root = subprocess.run([python, "-c", CHECK], capture_output=True, text=True, cwd=ROOT)
    assert from_root.returncode == 0, from_root.stdout + from_root.stderr
    assert from_root.stdout.strip().endswith("ok 2")
