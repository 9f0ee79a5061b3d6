"""Weights and constants of a PT2 archive, memory-mapped, never unpickled.

torch's PT2 writer stores each plain tensor's bytes uncompressed and 64-byte
aligned, and describes it in ``data/<weights|constants>/<model>_*_config.json``
(dtype, sizes, strides, offset). This reader maps the archive file
copy-on-write and builds every tensor as a view into the mapping, so weights
are paged in lazily and writes never reach the file. Every extent is checked
against the record's size first. Payloads stored with pickle (tensor
subclasses, custom objects) are refused.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

import torch
from torch._export.serde import schema
from torch._export.serde.serialize import (
    _dict_to_dataclass,
    deserialize_device,
    deserialize_scalar_type,
    deserialize_size,
    deserialize_storage_offset,
    deserialize_stride,
)
from torch.export.pt2_archive import PT2ArchiveReader
from torch.export.pt2_archive.constants import (
    CONSTANTS_CONFIG_FILENAME_FORMAT,
    CONSTANTS_DIR,
    WEIGHTS_CONFIG_FILENAME_FORMAT,
    WEIGHTS_DIR,
)

from fxdelegate.errors import ArchiveError


@dataclass(frozen=True)
class Record:
    offset: int  # where the member's bytes start in the file
    size: int
    compressed: bool


def member_records(path: str) -> dict[str, Record]:
    """Data offset and size of every member (names without the root folder),
    read from the zip headers themselves rather than any torch reader API."""
    records = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
        for info in archive.infolist():
            f.seek(info.header_offset)
            header = f.read(30)
            if len(header) != 30 or header[:4] != b"PK\x03\x04":
                raise ArchiveError(f"{path}: member {info.filename!r} has a damaged header")
            name_len, extra_len = struct.unpack_from("<HH", header, 26)
            start = info.header_offset + 30 + name_len + extra_len
            records[info.filename.split("/", 1)[-1]] = Record(
                start, info.file_size, info.compress_type != zipfile.ZIP_STORED
            )
    return records


class MappedArchive:
    """One copy-on-write mapping of an archive file, shared by all its tensors."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.records = member_records(path)
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)

    def tensor(
        self, reader: PT2ArchiveReader, record: str, meta: schema.TensorMeta, what: str
    ) -> torch.Tensor:
        dtype = deserialize_scalar_type(meta.dtype)
        device = deserialize_device(meta.device)
        sizes = deserialize_size(meta.sizes)
        strides = deserialize_stride(meta.strides)
        offset = deserialize_storage_offset(meta.storage_offset)
        if any(isinstance(v, torch.SymInt) for v in (*sizes, *strides)) or any(
            v < 0 for v in (*sizes, *strides, offset)
        ):
            raise ArchiveError(
                f"{self.path}: {what} has a malformed shape {sizes} / strides {strides}"
            )
        element = torch._utils._element_size(dtype)
        extent = (
            0 if 0 in sizes else offset + 1 + sum((s - 1) * st for s, st in zip(sizes, strides))
        )
        entry = self.records.get(record)
        if entry is None:
            raise ArchiveError(f"{self.path}: {what} points at {record}, which is missing")
        nbytes = entry.size
        if extent * element > nbytes:
            raise ArchiveError(
                f"{self.path}: {what} needs {extent * element} bytes but its record {record} holds {nbytes}"
            )
        if nbytes == 0:
            flat = torch.zeros(0, dtype=dtype)
        elif entry.compressed:
            # Another zip tool recompressed it: it cannot be mapped, so read it.
            flat = torch.frombuffer(bytearray(reader.read_bytes(record)), dtype=dtype)
        else:
            start = entry.offset
            if start < 0 or start + nbytes > len(self._map):
                raise ArchiveError(f"{self.path}: record {record} lies outside the file")
            raw = torch.frombuffer(self._map, dtype=torch.uint8, count=nbytes, offset=start)
            if start % element:  # not written by torch's aligned writer: copy to align
                raw = raw.clone()
            flat = raw.view(dtype)
        tensor = torch.as_strided(flat, sizes, strides, offset)
        return tensor if device.type == "cpu" else tensor.to(device)


def read_payloads(
    reader: PT2ArchiveReader, mapped: MappedArchive, model: str, names: set[str]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(state_dict, constants) of `model` in the archive."""
    state = _read(
        reader,
        mapped,
        WEIGHTS_CONFIG_FILENAME_FORMAT.format(model),
        WEIGHTS_DIR,
        names,
        params=True,
    )
    constants = _read(
        reader,
        mapped,
        CONSTANTS_CONFIG_FILENAME_FORMAT.format(model),
        CONSTANTS_DIR,
        names,
        params=False,
    )
    return state, constants


def _read(reader, mapped, config_file, base_dir, names, params) -> dict[str, Any]:
    if config_file not in names:
        raise ArchiveError(f"{mapped.path}: {config_file} is missing")
    try:
        config = _dict_to_dataclass(
            schema.PayloadConfig, json.loads(reader.read_string(config_file))
        )
    except Exception as exc:
        raise ArchiveError(f"{mapped.path}: {config_file} is malformed: {exc}") from exc
    out: dict[str, Any] = {}
    for fqn, payload in config.config.items():
        what = f"{'weight' if params else 'constant'} {fqn!r}"
        if payload.use_pickle or payload.tensor_meta is None:
            raise ArchiveError(
                f"{mapped.path}: {what} is stored with pickle; fxdelegate does not unpickle archives"
            )
        record = os.path.join(base_dir, payload.path_name)
        if record not in names:
            raise ArchiveError(f"{mapped.path}: {what} points at {record}, which is missing")
        tensor = mapped.tensor(reader, record, payload.tensor_meta, what)
        if params and payload.is_param:
            # As exported: some kernels pick their algorithm by requires_grad (matmul
            # folds batch dimensions only without it), so a loaded program computes
            # bit for bit what the program did only if the flag comes back too.
            tensor = torch.nn.Parameter(tensor, requires_grad=payload.tensor_meta.requires_grad)
        out[fqn] = tensor
    return out
