"""Write and read fxdelegate's .pt2 archives.

Layout (the NativeRT AOTI-delegate layout, plus one metadata file)::

    models/model.json                 parent program; delegate nodes name "<region>-<backend>"
    models/<region>-reference.json    region programs of backends that run a graph
    data/weights/..., data/constants/...   state the executor owns
    data/aotinductor/<region>-aoti/   each AOTInductor region's compiled files
    extra/fxdelegate.json             format version, regions, report

The metadata is JSON; nothing fxdelegate writes is unpickled on load.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.pt2_archive import PT2ArchiveReader, PT2ArchiveWriter

# torch's own (de)serializers for the program part of a PT2 archive; private
# but stable across the supported torch versions (2.11 - 2.14).
from torch.export.pt2_archive._package import _load_exported_programs, _package_exported_programs

from fxdelegate.errors import ArchiveError

from .backend import RegionArtifact, get_runtime

FORMAT_NAME = "fxdelegate"
FORMAT_VERSION = 1
METADATA_MEMBER = "extra/fxdelegate.json"
MODEL_NAME = "model"


@dataclass
class ArchiveContents:
    path: str
    program: ExportedProgram
    artifacts: dict[str, RegionArtifact]
    metadata: dict[str, Any]


def write_archive(
    path: str | os.PathLike[str],
    program: ExportedProgram,
    artifacts: list[RegionArtifact],
    metadata: dict[str, Any],
) -> None:
    """Write `program` and its regions' artifacts to `path` (written whole, then renamed)."""
    path = os.fspath(path)
    if not path.endswith(".pt2"):
        raise ArchiveError(f"archive path must end in .pt2, got {path!r}")
    programs: dict[str, ExportedProgram] = {MODEL_NAME: program}
    region_members: list[tuple[str, bytes]] = []
    # Regions of identical structure share one compiled package: store it once.
    stored: dict[tuple[str | None, str | None], str] = {}
    package_keys: dict[str, str] = {}
    for artifact in artifacts:
        runtime = get_runtime(artifact.backend_id)
        if runtime.stores_program:
            if artifact.program is None:
                raise ArchiveError(f"region {artifact.key} has no program to store")
            programs[artifact.key] = artifact.program
        if runtime.archive_dir:
            source = (artifact.package_path, artifact.package_key)
            if source not in stored:
                stored[source] = artifact.key
                region_members += _region_members(artifact, runtime.archive_dir, artifact.key)
            package_keys[artifact.key] = stored[source]
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "torch_version": torch.__version__,
        "model": MODEL_NAME,
        "regions": [
            {
                "key": a.key,
                "backend_id": a.backend_id,
                "package_key": package_keys.get(a.key),
                "meta": a.meta,
            }
            for a in artifacts
        ],
        **metadata,
    }
    tmp = path + ".partial"
    with PT2ArchiveWriter(tmp) as writer:
        _package_exported_programs(writer, programs)
        for name, data in region_members:
            writer.write_bytes(name, data)
        writer.write_string(METADATA_MEMBER, json.dumps(meta, indent=1))
    os.replace(tmp, path)


def _region_members(
    artifact: RegionArtifact, archive_dir: str, name: str
) -> list[tuple[str, bytes]]:
    """Every file of one compiled package, read from wherever it lives now, renamed under `name`."""
    if artifact.package_path is None:
        raise ArchiveError(f"region {artifact.key} has no package to copy files from")
    prefix = f"data/{archive_dir}/{artifact.package_key or artifact.key}/"
    with PT2ArchiveReader(artifact.package_path) as reader:
        members = [
            (f"data/{archive_dir}/{name}/{n[len(prefix) :]}", reader.read_bytes(n))
            for n in reader.get_file_names()
            if n.startswith(prefix)
        ]
    if not members:
        raise ArchiveError(
            f"region {artifact.key}: no files under {prefix} in {artifact.package_path}"
        )
    return members


def _open_checked(path: str | os.PathLike[str]) -> str:
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise ArchiveError(f"archive {path} does not exist")
    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
        raise ArchiveError(f"{path} is not a .pt2 archive (not a zip file)")
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Only the JSON metadata (report, regions): no program is deserialized, no code loaded."""
    path = _open_checked(path)
    try:
        with PT2ArchiveReader(path) as reader:
            if METADATA_MEMBER not in reader.get_file_names():
                raise ArchiveError(
                    f"{path} was not written by fxdelegate ({METADATA_MEMBER} is missing)"
                )
            metadata = json.loads(reader.read_string(METADATA_MEMBER))
    except ArchiveError:
        raise
    except Exception as exc:
        raise ArchiveError(f"cannot read archive {path}: {type(exc).__name__}: {exc}") from exc
    _check_metadata(metadata, path)
    return metadata


def archive_members(path: str | os.PathLike[str]) -> list[tuple[str, int]]:
    """(member name without the archive's root folder, uncompressed size) for every file."""
    path = _open_checked(path)
    with zipfile.ZipFile(path) as archive:
        return [(info.filename.split("/", 1)[-1], info.file_size) for info in archive.infolist()]


def read_archive(path: str | os.PathLike[str]) -> ArchiveContents:
    """Read the program, region artifacts and metadata of an fxdelegate archive."""
    path = _open_checked(path)
    try:
        with PT2ArchiveReader(path) as reader:
            names = reader.get_file_names()
            if METADATA_MEMBER not in names:
                raise ArchiveError(
                    f"{path} was not written by fxdelegate ({METADATA_MEMBER} is missing)"
                )
            metadata = json.loads(reader.read_string(METADATA_MEMBER))
            _check_metadata(metadata, path)
            programs = _load_exported_programs(reader, names, None)
    except ArchiveError:
        raise
    except Exception as exc:
        raise ArchiveError(f"cannot read archive {path}: {type(exc).__name__}: {exc}") from exc
    model = metadata["model"]
    if model not in programs:
        raise ArchiveError(f"{path}: the program models/{model}.json is missing")
    artifacts = {}
    for region in metadata["regions"]:
        key = region["key"]
        artifacts[key] = RegionArtifact(
            key,
            region["backend_id"],
            package_path=path,
            package_key=region.get("package_key") or key,
            program=programs.get(key),
            meta=region.get("meta", {}),
        )
    return ArchiveContents(path, programs[model], artifacts, metadata)


def _check_metadata(metadata: Any, path: str) -> None:
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise ArchiveError(f"{path}: metadata is not fxdelegate metadata")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ArchiveError(
            f"{path}: archive format version {version!r} is not supported (this fxdelegate reads {FORMAT_VERSION})"
        )
    regions = metadata.get("regions")
    if not isinstance(regions, list) or not all(
        isinstance(r, dict)
        and isinstance(r.get("key"), str)
        and isinstance(r.get("backend_id"), str)
        for r in regions
    ):
        raise ArchiveError(f"{path}: metadata lists regions in an unexpected form")
