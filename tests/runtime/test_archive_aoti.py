"""The AOTInductor archive: one copy of every weight, weight swaps without
recompiling, a missing library, and loading inside a private temp folder."""

import os
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch

import fxdelegate
from fxdelegate.demo import demo_inputs
from fxdelegate.errors import ArchiveError, InvalidArgumentError
from fxdelegate.runtime.archive.archive_io import archive_members
from models import Wide

pytestmark = pytest.mark.aoti


def test_archive_holds_each_weight_once_plus_compiled_code(tmp_path):
    model = Wide(5).eval()  # 21 MB of weights
    ep = torch.export.export(model, (torch.randn(4, 1024),))
    prog = fxdelegate.lower(ep, exclude_ops=["aten.gelu"])
    path = tmp_path / "wide.pt2"
    prog.save(path)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert weights > 20e6
    code = sum(size for name, size in archive_members(path) if name.startswith("data/aotinductor/"))
    size = os.path.getsize(path)
    assert size <= 1.05 * weights + code, (size, weights, code)
    x = torch.randn(4, 1024)
    with torch.no_grad():
        torch.testing.assert_close(fxdelegate.load(path)(x), model(x))


def test_update_weights_without_recompiling(demo_archive, demo_model):
    prog = fxdelegate.load(demo_archive)
    args, kwargs = demo_inputs(5)
    new = {
        k: torch.randn_like(v)
        for k, v in prog.exported_program.state_dict.items()
        if k.startswith("blocks.1.")
    }
    prog.update_weights(new)
    expected = type(demo_model)().eval()
    expected.load_state_dict({**demo_model.state_dict(), **new})
    with torch.no_grad():
        torch.testing.assert_close(prog(*args, **kwargs), expected(*args, **kwargs))
        before = prog(*args, **kwargs)
    bad = {
        "blocks.0.linear.weight": torch.randn(64, 64),
        "blocks.2.linear.weight": torch.randn(3, 3),
    }
    with pytest.raises(
        InvalidArgumentError, match=r"blocks\.2\.linear\.weight.*expected shape \(64, 64\)"
    ):
        prog.update_weights(bad)
    with pytest.raises(InvalidArgumentError, match=r"did you mean blocks\.0\.linear\.weight"):
        prog.update_weights({"blocks.0.linear.weigth": torch.randn(64, 64)})
    with torch.no_grad():  # the refused updates changed nothing
        torch.testing.assert_close(prog(*args, **kwargs), before)
    with pytest.raises(InvalidArgumentError, match="strict update is missing"):
        prog.update_weights(new, strict=True)


def test_a_missing_region_library_is_reported(demo_archive, tmp_path):
    bad = tmp_path / "nolib.pt2"
    with zipfile.ZipFile(demo_archive) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            if "data/aotinductor/region_3-aoti/" not in info.filename:
                zout.writestr(info, zin.read(info.filename))
    with pytest.raises(
        ArchiveError, match=r"region region_3-aoti: its compiled library .* is missing"
    ):
        fxdelegate.load(bad)


PRIVATE_TMP = textwrap.dedent(
    """
    import os, sys, fxdelegate
    prog = fxdelegate.load(sys.argv[1])
    print(sorted(os.listdir(os.environ["TMPDIR"])))
    """
)


def test_loading_writes_only_inside_a_private_temp_folder(demo_archive, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", PRIVATE_TMP, str(demo_archive)],
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert result.returncode == 0, result.stderr
    (entry,) = eval(result.stdout.strip().splitlines()[-1])
    assert entry.startswith("fxdelegate-")  # everything AOTInductor extracted lives in there
    assert os.listdir(tmp) == []  # and it is gone once the process ends


class UniformWeights(torch.nn.Module):
    """Weights whose elements are all equal, as freshly made ones often are: PReLU's
    single 0.25, a LayerNorm's ones and zeros. Inductor folds values computed from
    such weights into literals unless told not to; a region must read them."""

    def __init__(self) -> None:
        super().__init__()
        self.act = torch.nn.PReLU()
        self.norm = torch.nn.LayerNorm(8)
        self.scale = torch.nn.Parameter(torch.full((8,), 2.0))

    def forward(self, x):
        return self.norm(self.act(x)) * self.scale.view(1, 8)


def test_weights_of_equal_elements_are_read_not_folded_into_the_code(tmp_path):
    model = UniformWeights().eval()
    x = torch.randn(4, 8)
    prog = fxdelegate.lower(torch.export.export(model, (x,)), strict=True)
    torch.testing.assert_close(prog(x), model(x))
    new = {name: torch.randn_like(p) for name, p in model.named_parameters()}
    prog.update_weights(new)
    model.load_state_dict(new)
    torch.testing.assert_close(prog(x), model(x))
    prog.save(tmp_path / "uniform.pt2")
    torch.testing.assert_close(fxdelegate.load(tmp_path / "uniform.pt2")(x), model(x))
