"""Weights that region programs share with the parent program, stored once.

A region's program (kept for a backend that runs a graph, or with
``keep_region_programs``) holds the very tensors the parent program holds, but
torch's program writer stores each program's state on its own, so those bytes
would be written twice. The writer here finds the tensors a region program
shares with the parent by identity (the same storage, offset, shape, strides
and dtype, never by equal bytes: two zero-filled buffers are still two
buffers), stores an empty stand-in in their place, and records which parent
entry each one is, with its shape and dtype. The reader binds the parent's
loaded tensor back, so after loading they are one tensor again, as they were
in memory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.export import ExportedProgram

from fxdelegate.errors import ArchiveError

from ..weight_update import rebound_program

# {region program name: {"state_dict" | "constants":
#     {fqn: [parent kind, parent fqn, shape, dtype]}}}
Shared = dict[str, dict[str, dict[str, list[Any]]]]
_KINDS = ("state_dict", "constants")


def _identity(tensor: torch.Tensor) -> tuple[Any, ...]:
    return (
        tensor.device,
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tensor.stride(),
        tensor.dtype,
    )


def _entries(program: ExportedProgram, kind: str) -> dict[str, Any]:
    return program.state_dict if kind == "state_dict" else program.constants


def _tensors(program: ExportedProgram, kind: str) -> dict[str, torch.Tensor]:
    return {
        fqn: t
        for fqn, t in _entries(program, kind).items()
        if type(t) in (torch.Tensor, torch.nn.Parameter) and t.numel() > 0 and not t.is_meta
    }


def without_parent_weights(
    parent: ExportedProgram, programs: dict[str, ExportedProgram]
) -> tuple[dict[str, ExportedProgram], Shared]:
    """`programs` (region programs, not the parent) with every tensor they share
    with `parent` replaced by a stand-in (shallow copies where there are any),
    and which parent entry each stand-in is."""
    owners = {}
    for kind in _KINDS:
        for fqn, tensor in _tensors(parent, kind).items():
            owners.setdefault(_identity(tensor), [kind, fqn])
    shared: Shared = {}
    reduced = {}
    for name, program in programs.items():
        found: dict[str, dict[str, list[Any]]] = {}
        replaced: dict[str, dict[str, Any]] = {}
        for kind in _KINDS:
            for fqn, tensor in _tensors(program, kind).items():
                owner = owners.get(_identity(tensor))
                if owner is not None:
                    shape, dtype = list(tensor.shape), str(tensor.dtype).removeprefix("torch.")
                    found.setdefault(kind, {})[fqn] = [*owner, shape, dtype]
                    replaced.setdefault(kind, {})[fqn] = _stand_in(tensor)
        if not found:
            reduced[name] = program
            continue
        shared[name] = found
        reduced[name] = rebound_program(
            program,
            {**program.state_dict, **replaced.get("state_dict", {})},
            {**program.constants, **replaced.get("constants", {})},
        )
    return reduced, shared


def _stand_in(tensor: torch.Tensor) -> torch.Tensor:
    # No bytes and on the CPU, whatever the weight's device: the reader replaces it
    # with the parent's tensor after checking the shape and dtype recorded for it.
    empty = torch.empty(0, dtype=tensor.dtype)
    return (
        torch.nn.Parameter(empty, requires_grad=False)
        if type(tensor) is torch.nn.Parameter
        else empty
    )


def bind_parent_weights(
    parent: ExportedProgram, programs: dict[str, ExportedProgram], shared: Any, path: str
) -> None:
    """Put the parent's tensors back into the region programs, in place."""
    if shared is None:
        return
    if not isinstance(shared, dict):
        raise ArchiveError(f"{path}: metadata lists shared weights in an unexpected form")
    for name, kinds in shared.items():
        program = programs.get(name)
        if program is None or not isinstance(kinds, dict):
            raise ArchiveError(
                f"{path}: shared weights name {name!r}, which is not a stored program"
            )
        for kind, entries in kinds.items():
            if kind not in _KINDS or not isinstance(entries, dict):
                raise ArchiveError(f"{path}: program {name}: malformed shared weights {kind!r}")
            target = _entries(program, kind)
            for fqn, owner in entries.items():
                target[fqn] = _parent_tensor(parent, name, fqn, owner, path)


def _parent_tensor(
    parent: ExportedProgram, name: str, fqn: str, owner: Any, path: str
) -> torch.Tensor:
    what = f"{path}: program {name}: weight {fqn!r}"
    if not (isinstance(owner, list) and len(owner) == 4 and owner[0] in _KINDS):
        raise ArchiveError(f"{what} names its parent entry in an unexpected form {owner!r}")
    kind, parent_fqn, shape, dtype = owner
    tensor = _entries(parent, kind).get(parent_fqn)
    if not isinstance(tensor, torch.Tensor):
        raise ArchiveError(f"{what} is the parent's {parent_fqn!r}, which the archive lacks")
    if list(tensor.shape) != shape or str(tensor.dtype).removeprefix("torch.") != dtype:
        raise ArchiveError(
            f"{what} is {shape} {dtype}, but the parent's {parent_fqn!r} is "
            f"{list(tensor.shape)} {tensor.dtype}"
        )
    return tensor
