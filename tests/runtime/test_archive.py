import copy
import json
import os
import subprocess
import sys
import zipfile

import pytest
import torch

import fxdelegate
from fxdelegate.errors import ArchiveError
from fxdelegate.runtime.archive.archive_io import archive_members, read_metadata
from models import NestedIO, export_nested, nested_inputs


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = NestedIO().eval()
    prog = fxdelegate.lower(export_nested(model), backend="reference", exclude_ops=["aten.gelu"])
    path = tmp_path_factory.mktemp("ref") / "nested.pt2"
    prog.save(path)
    return model, prog, path


def test_reference_archive_round_trips(saved):
    model, prog, path = saved
    loaded = fxdelegate.load(path)
    for batch in (2, 7):
        args, kwargs = nested_inputs(batch)
        torch.testing.assert_close(loaded(*args, **kwargs), model(*args, **kwargs))
    assert loaded.report() == prog.report()
    names = {n for n, _ in archive_members(path)}
    assert "models/model.json" in names
    keys = list(prog.artifacts)
    assert len(keys) >= 2 and keys == [f"region_{i}-reference" for i in range(len(keys))]
    assert {f"models/{k}.json" for k in keys} <= names
    assert [r["key"] for r in read_metadata(path)["regions"]] == keys


def test_weights_shared_with_region_programs_are_stored_once(saved):
    # The reference backend keeps every region's program beside the parent; their
    # weights are the parent's tensors, stored with the parent only and shared
    # again after loading.
    model, prog, path = saved
    state = prog.exported_program.state_dict
    assert state, "the test model needs weights"
    param_bytes = sum(t.untyped_storage().nbytes() for t in state.values())
    payloads = sum(
        size
        for name, size in archive_members(path)
        if name.startswith("data/weights/") and not name.endswith("_config.json")
    )
    region_weights = [t for a in prog.artifacts.values() for t in a.program.state_dict.values()]
    assert region_weights, "the regions need weights"
    assert payloads <= param_bytes, (payloads, param_bytes)
    assert read_metadata(path)["shared_weights"]
    loaded = fxdelegate.load(path)
    parent = {t.data_ptr() for t in loaded.exported_program.state_dict.values()}
    for artifact in loaded.artifacts.values():
        assert {t.data_ptr() for t in artifact.program.state_dict.values()} <= parent
    args, kwargs = nested_inputs(3)
    torch.testing.assert_close(loaded(*args, **kwargs), model(*args, **kwargs))


class _TwoZeroCaches(torch.nn.Module):
    """Two buffers with equal bytes, updated in place: they must stay two buffers."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.register_buffer("k", torch.zeros(3, 4))
        self.register_buffer("v", torch.zeros(3, 4))

    def forward(self, x, pos):
        self.k.index_copy_(0, pos, self.lin(x))
        self.v.index_copy_(0, pos, torch.relu(x))
        return self.k.sum(0) * 2 + self.v.sum(0)


def test_buffers_with_equal_bytes_stay_distinct_through_save_and_load(tmp_path):
    model = _TwoZeroCaches().eval()
    x, pos = torch.randn(1, 4), torch.tensor([0])
    ep = torch.export.export(copy.deepcopy(model), (x, pos))
    prog = fxdelegate.lower(ep, backend="reference")
    path = tmp_path / "caches.pt2"
    prog.save(path, keep_region_programs=True)
    loaded = fxdelegate.load(path)
    state = loaded.exported_program.state_dict
    assert state["k"].data_ptr() != state["v"].data_ptr()
    for step in range(3):
        x, pos = torch.randn(1, 4), torch.tensor([step])
        torch.testing.assert_close(loaded(x, pos), model(x, pos))
    torch.testing.assert_close(state["k"], model.k)
    torch.testing.assert_close(state["v"], model.v)


def test_shared_weights_naming_what_the_parent_lacks(saved, tmp_path):
    _, _, path = saved

    def rename_owner(meta):
        entries = next(iter(next(iter(meta["shared_weights"].values())).values()))
        fqn = next(iter(entries))
        entries[fqn][1] = "no.such.weight"

    broken = tmp_path / "broken.pt2"
    _rewrite_metadata(path, broken, rename_owner)
    with pytest.raises(
        ArchiveError, match=r"the parent's 'no\.such\.weight', which the archive lacks"
    ):
        fxdelegate.load(broken)


def test_missing_and_non_archives(tmp_path):
    with pytest.raises(ArchiveError, match="does not exist"):
        fxdelegate.load(tmp_path / "nope.pt2")
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ArchiveError, match="not a zip file"):
        fxdelegate.load(junk)
    empty = tmp_path / "empty.pt2"
    empty.write_bytes(b"")
    with pytest.raises(ArchiveError):
        fxdelegate.load(empty)


def test_archives_not_written_by_fxdelegate(tmp_path):
    path = tmp_path / "plain.pt2"
    torch.export.save(torch.export.export(torch.nn.Linear(2, 2), (torch.randn(1, 2),)), path)
    with pytest.raises(ArchiveError, match="not written by fxdelegate"):
        fxdelegate.load(path)


def _rewrite_metadata(src, dst, change):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("extra/fxdelegate.json"):
                meta = json.loads(data)
                change(meta)
                data = json.dumps(meta).encode()
            zout.writestr(info, data)


def test_unsupported_format_version_and_unknown_region(saved, tmp_path):
    _, _, path = saved
    newer = tmp_path / "newer.pt2"
    _rewrite_metadata(path, newer, lambda m: m.update(format_version=99))
    with pytest.raises(ArchiveError, match="format version 99 is not supported"):
        fxdelegate.load(newer)
    missing = tmp_path / "missing.pt2"
    _rewrite_metadata(path, missing, lambda m: m["regions"].pop())
    with pytest.raises(
        ArchiveError, match=r"names region 'region_\d+-reference', which the archive lacks"
    ):
        fxdelegate.load(missing)


def test_save_refuses_other_extensions(saved, tmp_path):
    _, prog, _ = saved
    with pytest.raises(ArchiveError, match=r"must end in \.pt2"):
        prog.save(tmp_path / "model.zip")
    assert not list(tmp_path.iterdir())


def test_inspect_cli_prints_the_report_without_loading(saved):
    _, _, path = saved
    result = subprocess.run(
        [sys.executable, "-m", "fxdelegate.cli", "inspect", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "region_0" in result.stdout
        and "gelu" in result.stdout
        and "excluded by exclude_ops" in result.stdout
    )
    assert "models/model.json" in result.stdout or "models/" in result.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "fxdelegate.cli", "inspect", str(path) + ".missing"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_inspect_into_a_pipe_closed_early_stops_quietly(saved):
    _, _, path = saved
    # `fxdelegate inspect m.pt2 | head`, with `head` already gone: every write fails
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "fxdelegate.cli", "inspect", str(path)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
