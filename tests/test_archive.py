import json
import os
import subprocess
import sys
import zipfile

import pytest
import torch

import fxdelegate
from fxdelegate.errors import ArchiveError
from fxdelegate.runtime.archive import archive_members, read_metadata
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
