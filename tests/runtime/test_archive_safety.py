"""Damaged and hostile archives give a clear ArchiveError and touch nothing; weights
load memory-mapped and never through pickle."""

import json
import os
import zipfile

import pytest
import torch

import fxdelegate
from fxdelegate.errors import ArchiveError
from models import NestedIO, export_nested, nested_inputs


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    model = NestedIO().eval()
    prog = fxdelegate.lower(export_nested(model), backend="reference", exclude_ops=["aten.gelu"])
    path = tmp_path_factory.mktemp("good") / "m.pt2"
    prog.save(path)
    return path


def _rewrite(src, dst, *, edit=None, drop=None, add=None, meta=None):
    """Copy a zip member by member, optionally changing it."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            name = info.filename.split("/", 1)[1]
            if drop and drop(name):
                continue
            data = zin.read(info.filename)
            if meta and name == "extra/fxdelegate.json":
                m = json.loads(data)
                meta(m)
                data = json.dumps(m).encode()
            if edit and name in edit:
                data = edit[name](data)
            zout.writestr(info, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


def test_truncated_flipped_empty_and_missing(good, tmp_path):
    data = good.read_bytes()
    (tmp_path / "trunc.pt2").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="truncated"):
        fxdelegate.load(tmp_path / "trunc.pt2")
    # flip bytes inside a weight: the member's checksum catches it
    start = torch._C.PyTorchFileReader(str(good)).get_record_offset("data/weights/weight_0")
    flipped = bytearray(data)
    flipped[start + 5] ^= 0xFF
    (tmp_path / "flip.pt2").write_bytes(bytes(flipped))
    with pytest.raises(ArchiveError, match="damaged"):
        fxdelegate.load(tmp_path / "flip.pt2")
    (tmp_path / "empty.pt2").write_bytes(b"")
    with pytest.raises(ArchiveError, match="is empty"):
        fxdelegate.load(tmp_path / "empty.pt2")
    with pytest.raises(ArchiveError, match="does not exist"):
        fxdelegate.load(tmp_path / "absent.pt2")


@pytest.mark.parametrize(
    "evil", ["m/../../escape.txt", "/abs/path.txt", "m/data/aotinductor/x/../../../../y.so"]
)
def test_unsafe_member_names_are_refused_before_anything_is_read(good, tmp_path, evil):
    bad = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info.filename))
        zout.writestr(evil, b"payload")
    before = set(os.listdir(tmp_path))
    with pytest.raises(ArchiveError, match="unsafe name"):
        fxdelegate.load(bad)
    assert set(os.listdir(tmp_path)) == before
    assert not (tmp_path.parent / "escape.txt").exists()


def test_unsupported_writers_devices_and_missing_regions(good, tmp_path):
    cases = {
        "old_torch": (
            dict(meta=lambda m: m.update(torch_version="1.13.1")),
            "written with torch '1.13.1'",
        ),
        "format": (dict(meta=lambda m: m.update(format_version=7)), "format version 7"),
        "device": (
            dict(meta=lambda m: m["regions"][0]["meta"].update(device="cuda:0")),
            "compiled for cuda:0",
        ),
        "bad_key": (
            dict(meta=lambda m: m["regions"][0].update(key="../x")),
            "malformed region entry",
        ),
        "no_meta": (dict(drop=lambda n: n == "extra/fxdelegate.json"), "not written by fxdelegate"),
        "no_program": (
            dict(drop=lambda n: n == "models/model.json"),
            "models/model.json is missing",
        ),
        "no_region_program": (
            dict(drop=lambda n: n == "models/region_0-reference.json"),
            "region_0-reference.json is missing",
        ),
        "garbage_json": (
            dict(edit={"models/model.json": lambda d: b"{not json"}),
            "not a valid serialized program",
        ),
    }
    if torch.cuda.is_available():
        del cases["device"]
    for name, (change, message) in cases.items():
        path = _rewrite(good, tmp_path / f"{name}.pt2", **change)
        with pytest.raises(ArchiveError, match=message):
            fxdelegate.load(path)


def _edit_first_weight(good, dst, change):
    """Rewrite the archive with `change` applied to the first weight's config entry."""

    def edit(data):
        config = json.loads(data)
        change(next(iter(config["config"].values())))
        return json.dumps(config).encode()

    return _rewrite(good, dst, edit={"data/weights/model_weights_config.json": edit})


def test_pickled_payloads_are_refused(good, tmp_path):
    path = _edit_first_weight(
        good, tmp_path / "pickle.pt2", lambda entry: entry.update(use_pickle=True)
    )
    with pytest.raises(ArchiveError, match="stored with pickle"):
        fxdelegate.load(path)


def test_weight_record_too_small_for_its_shape_is_refused(good, tmp_path):
    def grow(entry):
        sizes = entry["tensor_meta"]["sizes"]
        entry["tensor_meta"]["sizes"] = [{"as_int": 4096}, *sizes[1:]]

    path = _edit_first_weight(good, tmp_path / "small.pt2", grow)
    with pytest.raises(ArchiveError, match=r"needs .* bytes but its record"):
        fxdelegate.load(path)


def test_weights_are_memory_mapped_and_outputs_match(good):
    prog = fxdelegate.load(good)
    model = NestedIO().eval()
    weight = prog.exported_program.state_dict["proj.weight"]
    # A view into a mapping of the archive file, not a private copy: loading is lazy.
    address = weight.data_ptr()
    with open("/proc/self/maps") as maps:
        mapping = next(line for line in maps if _contains(line, address))
    assert mapping.rstrip().endswith(str(good))
    args, kwargs = nested_inputs(3)
    model.load_state_dict({k: v.clone() for k, v in prog.exported_program.state_dict.items()})
    torch.testing.assert_close(prog(*args, **kwargs), model(*args, **kwargs))


def _contains(maps_line: str, address: int) -> bool:
    lo, hi = (int(x, 16) for x in maps_line.split()[0].split("-"))
    return lo <= address < hi
