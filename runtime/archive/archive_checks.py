"""Checks that run before anything in an archive is trusted.

A `.pt2` can be damaged or hostile. Before a program is deserialized or a
compiled region is handed to AOTInductor's loader, which extracts files, the
archive must be a readable zip with intact member checksums and safe member
names. Its metadata must also be well formed, come from a supported writer,
and name regions that exist for devices this machine has.
"""

from __future__ import annotations

import os
import re
import zipfile
from typing import Any

import torch

from fxdelegate.errors import ArchiveError

FORMAT_NAME = "fxdelegate"
# 2: region programs may take weights from the parent ("shared_weights"); an
# archive without them is still written as 1.
FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
# torch versions whose archives this fxdelegate reads (the writer's torch).
SUPPORTED_TORCH = ((2, 11), (2, 14))
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def check_file(path: str | os.PathLike[str]) -> str:
    """An absolute path to an existing, non-empty zip file."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise ArchiveError(f"archive {path} does not exist")
    if not os.path.isfile(path):
        raise ArchiveError(f"{path} is not a file")
    if os.path.getsize(path) == 0:
        raise ArchiveError(f"{path} is empty")
    if not zipfile.is_zipfile(path):
        raise ArchiveError(f"{path} is not a .pt2 archive (not a zip file, or truncated)")
    # The directory must end the file. A truncated archive can still look like a
    # zip because of a nested one (torch.save data) inside it.
    with open(path, "rb") as f:
        f.seek(-22, os.SEEK_END)
        if f.read(4) != b"PK\x05\x06":
            raise ArchiveError(
                f"{path} is truncated or not a .pt2 archive (no zip directory at its end)"
            )
    return path


def check_members(path: str) -> tuple[list[str], set[str]]:
    """(member names without the archive's root folder, the compressed ones);
    every name is safe and every checksum intact."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            roots = set()
            names = []
            compressed = set()
            for info in infos:
                name = info.filename
                parts = name.split("/")
                if (
                    name.startswith("/")
                    or "\\" in name
                    or "\x00" in name
                    or any(p in ("", ".", "..") for p in parts[:-1])
                    or parts[-1] in (".", "..")
                    or re.match(r"^[A-Za-z]:", name)
                ):
                    raise ArchiveError(f"{path}: member {name!r} has an unsafe name")
                roots.add(parts[0])
                names.append("/".join(parts[1:]))
                if info.compress_type != zipfile.ZIP_STORED:
                    compressed.add(names[-1])
            if len(roots) != 1:
                raise ArchiveError(
                    f"{path}: members are not under one root folder ({sorted(roots)[:3]})"
                )
            bad = archive.testzip()
            if bad is not None:
                raise ArchiveError(f"{path}: member {bad!r} is damaged (checksum mismatch)")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, ArchiveError):
            raise
        raise ArchiveError(f"{path}: cannot read the archive: {exc}") from exc
    return names, compressed


def check_metadata(metadata: Any, path: str) -> None:
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise ArchiveError(f"{path}: metadata is not fxdelegate metadata")
    version = metadata.get("format_version")
    if type(version) is not int or version not in READABLE_FORMAT_VERSIONS:
        raise ArchiveError(
            f"{path}: archive format version {version!r} is not supported "
            f"(this fxdelegate reads {', '.join(map(str, READABLE_FORMAT_VERSIONS))})"
        )
    written_by = metadata.get("torch_version")
    match = re.match(r"^(\d+)\.(\d+)", str(written_by))
    lo, hi = SUPPORTED_TORCH
    if not match or not lo <= (int(match[1]), int(match[2])) <= hi:
        raise ArchiveError(
            f"{path}: archive was written with torch {written_by!r}; supported writers are torch "
            f"{lo[0]}.{lo[1]} to {hi[0]}.{hi[1]}"
        )
    if not isinstance(metadata.get("model"), str) or not _SAFE_NAME.match(metadata["model"]):
        raise ArchiveError(f"{path}: metadata names no valid model")
    regions = metadata.get("regions")
    if not isinstance(regions, list):
        raise ArchiveError(f"{path}: metadata lists regions in an unexpected form")
    for region in regions:
        if not (
            isinstance(region, dict)
            and all(
                isinstance(region.get(k), str) and _SAFE_NAME.match(region[k])
                for k in ("key", "backend_id")
            )
            and (region.get("package_key") is None or _SAFE_NAME.match(str(region["package_key"])))
            and isinstance(region.get("meta", {}), dict)
        ):
            raise ArchiveError(
                f"{path}: metadata lists a malformed region entry {str(region)[:200]}"
            )


def check_region_files(
    path: str,
    names: list[str],
    key: str,
    archive_dir: str,
    package_key: str,
    suffixes: tuple[str, ...] = (".so", ".cpp"),
) -> None:
    prefix = f"data/{archive_dir}/{package_key}/"
    files = [n for n in names if n.startswith(prefix)]
    if not any(n.endswith(tuple(suffixes)) for n in files):
        raise ArchiveError(
            f"{path}: region {key}: its compiled library ({prefix}*{suffixes[0]}) is missing"
        )


def check_device(path: str, key: str, meta: dict[str, Any]) -> None:
    device = str(meta.get("device", "cpu"))
    kind = device.split(":")[0]
    if kind == "cpu":
        return
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ArchiveError(
                f"{path}: region {key} was compiled for {device}, but this machine has no CUDA device"
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ArchiveError(
                f"{path}: region {key} was compiled for {device}, which this machine lacks"
            )
        return
    raise ArchiveError(f"{path}: region {key} was compiled for an unsupported device {device!r}")
