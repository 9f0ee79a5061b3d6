"""Write and read fxdelegate's .pt2 archives.

Layout (the NativeRT AOTI-delegate layout, plus one metadata file)::

    models/model.json                 parent program; delegate nodes name "<region>-<backend>"
    models/<region>-<backend>.json    region programs of backends that run a graph
                                      (of every region with keep_region_programs);
                                      weights they share with the parent are stored
                                      with the parent only
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

# torch's own (de)serializers for the program part of a PT2 archive; private
# but stable across the supported torch versions (2.11 - 2.14).
from torch._export.serde import schema
from torch._export.serde.serialize import ExportedProgramDeserializer, _bytes_to_dataclass
from torch.export import ExportedProgram
from torch.export.pt2_archive import PT2ArchiveReader, PT2ArchiveWriter
from torch.export.pt2_archive._package import _package_exported_programs
from torch.export.pt2_archive.constants import MODELS_FILENAME_FORMAT

from fxdelegate.errors import ArchiveError

from ..backend import RegionArtifact, get_runtime
from .archive_checks import (
    FORMAT_NAME,
    FORMAT_VERSION,
    check_device,
    check_file,
    check_members,
    check_metadata,
    check_region_files,
)
from .archive_payloads import MappedArchive, read_payloads
from .archive_shared_weights import bind_parent_weights, without_parent_weights
from .archive_specs import portable_specs, restore_specs

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
    *,
    keep_region_programs: bool = False,
) -> None:
    """Write `program` and its regions' artifacts to `path` (written whole, then renamed).

    `keep_region_programs`: store every region's own program, not only those of
    backends that run a graph (for comparing a loaded program's regions).
    """
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
        if runtime.stores_program or keep_region_programs:
            if artifact.program is None:
                raise ArchiveError(
                    f"region {artifact.key} has no program to store"
                    + ("" if runtime.stores_program else " (it was loaded without one)")
                )
            programs[artifact.key] = artifact.program
        if runtime.archive_dir:
            source = (artifact.package_path, artifact.package_key)
            if source not in stored:
                stored[source] = artifact.key
                region_members += _region_members(artifact, runtime.archive_dir, artifact.key)
            package_keys[artifact.key] = stored[source]
    regions_only = {name: p for name, p in programs.items() if name != MODEL_NAME}
    reduced, shared = without_parent_weights(program, regions_only)
    programs.update(reduced)
    structseqs = {}
    for name, stored_program in programs.items():
        programs[name], replaced = portable_specs(stored_program)
        if replaced:
            structseqs[name] = replaced
    meta = {
        "format": FORMAT_NAME,
        # Archives without shared weights read as before with older fxdelegate versions.
        "format_version": FORMAT_VERSION if shared else 1,
        "fxdelegate_version": _version(),
        "torch_version": torch.__version__,
        "model": MODEL_NAME,
        "regions": [
            {
                "key": a.key,
                "backend_id": a.backend_id,
                "package_key": package_keys.get(a.key),
                "program": a.key in programs,
                "meta": a.meta,
            }
            for a in artifacts
        ],
        **({"structseq_specs": structseqs} if structseqs else {}),
        **({"shared_weights": shared} if shared else {}),
        **metadata,
    }
    tmp = path + ".partial"
    try:
        with PT2ArchiveWriter(tmp) as writer:
            try:
                _package_exported_programs(writer, programs)
            except Exception as exc:
                raise ArchiveError(
                    "torch's program serializer (the one torch.export.save uses) cannot write "
                    f"this program: {type(exc).__name__}: {exc}"
                ) from exc
            for name, data in region_members:
                writer.write_bytes(name, data)
            writer.write_string(METADATA_MEMBER, json.dumps(meta, indent=1))
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fxdelegate")
    except PackageNotFoundError:
        return "unknown"


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


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Only the JSON metadata (report, regions): no program is deserialized, no code loaded."""
    path = check_file(path)
    names, _ = check_members(path)
    return _metadata(path, names)


def _metadata(path: str, names: list[str]) -> dict[str, Any]:
    if METADATA_MEMBER not in names:
        raise ArchiveError(f"{path} was not written by fxdelegate ({METADATA_MEMBER} is missing)")
    try:
        with PT2ArchiveReader(path) as reader:
            metadata = json.loads(reader.read_string(METADATA_MEMBER))
    except Exception as exc:
        raise ArchiveError(f"{path}: {METADATA_MEMBER} is unreadable: {exc}") from exc
    check_metadata(metadata, path)
    return metadata


def archive_members(path: str | os.PathLike[str]) -> list[tuple[str, int]]:
    """(member name without the archive's root folder, uncompressed size) for every file."""
    path = check_file(path)
    with zipfile.ZipFile(path) as archive:
        return [(info.filename.split("/", 1)[-1], info.file_size) for info in archive.infolist()]


def read_archive(path: str | os.PathLike[str]) -> ArchiveContents:
    """Check, then read the program, region artifacts and metadata of an fxdelegate archive.

    Nothing is unpickled: programs are JSON, tensors are memory-mapped raw bytes,
    and sample inputs are not read at all.
    """
    path = check_file(path)
    names, _ = check_members(path)
    metadata = _metadata(path, names)
    model = metadata["model"]
    stored = [
        r["key"]
        for r in metadata["regions"]
        if r.get("program") is True or _runtime(r["backend_id"], path).stores_program
    ]
    mapped = MappedArchive(path)
    programs = {}
    try:
        with PT2ArchiveReader(path) as reader:
            for name in (model, *stored):
                programs[name] = _read_program(reader, mapped, name, set(names), path)
                restore_specs(
                    programs[name], metadata.get("structseq_specs", {}).get(name, {}), path
                )
        bind_parent_weights(programs[model], programs, metadata.get("shared_weights"), path)
    except ArchiveError:
        raise
    except Exception as exc:
        raise ArchiveError(f"cannot read archive {path}: {type(exc).__name__}: {exc}") from exc
    artifacts = {}
    for region in metadata["regions"]:
        key = region["key"]
        runtime = _runtime(region["backend_id"], path)
        package_key = region.get("package_key") or key
        if runtime.archive_dir:
            check_region_files(
                path, names, key, runtime.archive_dir, package_key, runtime.package_suffixes
            )
        check_device(path, key, region.get("meta", {}))
        artifacts[key] = RegionArtifact(
            key,
            region["backend_id"],
            package_path=path,
            package_key=package_key,
            program=programs.get(key),
            meta=region.get("meta", {}),
        )
    return ArchiveContents(path, programs[model], artifacts, metadata)


def _runtime(backend_id: str, path: str):
    try:
        return get_runtime(backend_id)
    except Exception as exc:
        raise ArchiveError(f"{path}: regions need backend {backend_id!r}: {exc}") from exc


def _read_program(
    reader: PT2ArchiveReader, mapped: MappedArchive, name: str, names: set[str], path: str
) -> ExportedProgram:
    member = MODELS_FILENAME_FORMAT.format(name)
    if member not in names:
        raise ArchiveError(f"{path}: the program {member} is missing")
    try:
        serialized = _bytes_to_dataclass(schema.ExportedProgram, reader.read_bytes(member))
    except Exception as exc:
        raise ArchiveError(f"{path}: {member} is not a valid serialized program: {exc}") from exc
    state_dict, constants = read_payloads(reader, mapped, name, names)
    # Sample inputs are pickled tensors: never read them.
    return ExportedProgramDeserializer().deserialize(serialized, state_dict, constants, None)
