"""The three component folders map into the one package `fxdelegate` for both
regular and editable installs (each into its own fresh virtual environment),
and pytest finds the pass test kit's plugin through its entry point."""

import os
import pathlib
import subprocess
import sys
import sysconfig
import venv

import pytest

from readme_blocks import worked_example_files

ROOT = pathlib.Path(__file__).resolve().parents[2]

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


def _fresh_env(path: pathlib.Path, *, borrow_torch: bool) -> pathlib.Path:
    venv.create(path, with_pip=True, system_site_packages=False)
    python = path / "bin" / "python"
    if not borrow_torch:
        return python
    # torch comes from the environment running the tests; pip builds in isolation as usual.
    site = subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip()
    (pathlib.Path(site) / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.mark.parametrize("editable", [False, True], ids=["regular", "editable"])
def test_install_maps_components_into_one_package(tmp_path, editable):
    # The regular install is a virtualenv of its own that installs only fxdelegate (with
    # its dependencies; torch pinned to the CPU wheel) and pytest; the editable one
    # borrows torch from the environment running the tests.
    python = _fresh_env(tmp_path / "env", borrow_torch=editable)
    cmd = [python, "-m", "pip", "install", "-q"]
    cmd += ["--no-deps", "-e", str(ROOT)] if editable else ["torch==2.13.0", "pytest", str(ROOT)]
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
    if not editable:
        _pytest_finds_the_kit(python, tmp_path / "project", package_root)


def _pytest_finds_the_kit(python: pathlib.Path, project: pathlib.Path, site: pathlib.Path) -> None:
    """A project holding only the README's pass and its test file (no conftest): pytest
    finds the `fxd` fixture through the plugin's entry point in the installed package."""
    project.mkdir()
    for name, code in worked_example_files().items():
        (project / name).write_text(code)
    assert sorted(p.name for p in project.iterdir()) == [
        "lower_with_my_pass.py",
        "my_passes.py",
        "test_my_passes.py",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    tests = subprocess.run(
        [python, "-m", "pytest", "-p", "no:cacheprovider", "--trace-config", "test_my_passes.py"],
        capture_output=True,
        text=True,
        cwd=project,
        env=env,
    )
    output = tests.stdout + tests.stderr
    assert tests.returncode == 0, output
    plugin = site / "pytest_fxdelegate" / "__init__.py"
    assert f"fxdelegate-0.1.0 at {plugin}" in output, output
    assert "3 passed" in output, output
