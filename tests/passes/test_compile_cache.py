"""Content keys and the compile cache itself (no compiler needed here)."""

import json
import os

import pytest
import torch
from torch.export import Dim

from fxdelegate.passes import OutlineRegionsPass
from fxdelegate.passes.compile.local_cache import CompileCache, default_cache_dir
from fxdelegate.passes.compile.region_key import region_key
from pipeline_helpers import lowering_state


class Blocks(torch.nn.Module):
    def __init__(self, n=3, width=8, dtype=torch.float32):
        super().__init__()
        self.lins = torch.nn.ModuleList(
            torch.nn.Linear(width, width, dtype=dtype) for _ in range(n)
        )

    def forward(self, x):
        for lin in self.lins:
            x = x + torch.nn.functional.gelu(lin(x))
        return x


def _keys(model, x, dynamic=None, options=None, backend="aoti"):
    _, _, ctx = lowering_state(
        model, (x,), dynamic_shapes=dynamic, exclude=("aten.gelu",), upto=OutlineRegionsPass
    )
    return [region_key(r.program, backend, options or {}) for r in ctx.regions]


def test_identical_blocks_share_a_key_whatever_their_weights_and_names():
    keys = _keys(Blocks(4), torch.randn(2, 8))
    # region_0: linear; region_1..3: add + linear; region_4: the last add
    assert len(keys) == 5
    assert keys[1] == keys[2] == keys[3]
    assert len({keys[0], keys[1], keys[4]}) == 3
    other = _keys(Blocks(4), torch.randn(2, 8))  # new weights, same structure
    assert other == keys


@pytest.mark.parametrize(
    "change",
    ["shape", "dtype", "options", "backend", "dynamic", "range"],
)
def test_any_relevant_change_changes_the_key(change):
    base = _keys(Blocks(2), torch.randn(2, 8))[1]
    if change == "shape":
        other = _keys(Blocks(2), torch.randn(3, 8))[1]
    elif change == "dtype":
        other = _keys(Blocks(2, dtype=torch.float64), torch.randn(2, 8, dtype=torch.float64))[1]
    elif change == "options":
        other = _keys(Blocks(2), torch.randn(2, 8), options={"cpp.threads": 1})[1]
    elif change == "backend":
        other = _keys(Blocks(2), torch.randn(2, 8), backend="reference")[1]
    elif change == "dynamic":
        other = _keys(Blocks(2), torch.randn(2, 8), dynamic={"x": {0: Dim("b", min=2, max=9)}})[1]
    else:
        a = _keys(Blocks(2), torch.randn(2, 8), dynamic={"x": {0: Dim("b", min=2, max=9)}})[1]
        b = _keys(Blocks(2), torch.randn(2, 8), dynamic={"x": {0: Dim("b", min=2, max=10)}})[1]
        base, other = a, b
    assert other != base


def test_cache_round_trip_checksum_and_damage(tmp_path):
    cache = CompileCache(tmp_path / "c")
    assert cache.get("ab" * 32) is None and cache.misses == 1
    package = tmp_path / "p.pt2"
    package.write_bytes(b"compiled bytes")
    entry = cache.put("ab" * 32, str(package), {"package_key": "model"})
    assert open(entry.package_path, "rb").read() == b"compiled bytes"
    again = cache.get("ab" * 32)
    assert again is not None and again.meta["package_key"] == "model" and cache.hits == 1
    # flip a byte: the entry is discarded, and the folder is gone
    with open(entry.package_path, "r+b") as f:
        f.write(b"X")
    assert cache.get("ab" * 32) is None
    assert not os.path.exists(os.path.dirname(entry.package_path))
    # a second writer of the same key keeps the first one's entry
    first = cache.put("cd" * 32, str(package), {"package_key": "model"})
    second = cache.put("cd" * 32, str(package), {"package_key": "model"})
    assert first.package_path == second.package_path
    leftovers = [p for p in (tmp_path / "c").rglob("*") if p.name.startswith(".")]
    assert not leftovers
    # an entry.json that does not parse is damage too
    with open(os.path.join(os.path.dirname(first.package_path), "entry.json"), "w") as f:
        f.write("{")
    assert cache.get("cd" * 32) is None
    assert json.loads(json.dumps({"ok": 1}))


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FXDELEGATE_CACHE_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == str(tmp_path / "x")
    monkeypatch.delenv("FXDELEGATE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == str(tmp_path / "xdg" / "fxdelegate")


def test_an_input_written_in_place_changes_the_key():
    from test_outline_regions import Cache
    from torch.export.graph_signature import OutputKind

    _, _, ctx = lowering_state(
        Cache(), (torch.randn(1, 4), torch.tensor([3])), upto=OutlineRegionsPass
    )
    program = ctx.regions[0].program
    in_place = region_key(program, "aoti", {})
    specs = program.graph_signature.output_specs
    assert specs[0].kind == OutputKind.USER_INPUT_MUTATION
    # the same graph with that output read as a plain one is another artifact
    specs[0] = type(specs[0])(OutputKind.USER_OUTPUT, specs[0].arg, None)
    assert region_key(program, "aoti", {}) != in_place


def test_a_new_compile_version_of_the_backend_changes_every_key(monkeypatch):
    """Cached artifacts of a compiler that now generates other code are not served."""
    from test_outline_regions import Cache

    from fxdelegate.runtime.backend import get_compiler

    _, _, ctx = lowering_state(
        Cache(), (torch.randn(1, 4), torch.tensor([3])), upto=OutlineRegionsPass
    )
    program = ctx.regions[0].program
    before = region_key(program, "aoti", {})
    monkeypatch.setattr(type(get_compiler("aoti")), "compile_version", 99)
    assert region_key(program, "aoti", {}) != before
