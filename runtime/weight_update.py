"""Validate a weight update before anything changes.

`DelegatedProgram.update_weights` swaps weights by their original FQNs in
every region and in the executor, without recompiling. All or nothing: every
name, shape, dtype and device is checked first, and the new values are
copied into fresh tensors laid out like the old ones, because compiled
regions assume the strides they were compiled for.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from typing import Any

import torch
from torch.export import ExportedProgram

from fxdelegate.errors import ArchiveError, InvalidArgumentError


def rebound_program(
    program: ExportedProgram, state_dict: dict[str, torch.Tensor], constants: dict[str, object]
) -> ExportedProgram:
    """`program` with other weights under the same names; it shares the graph,
    signature and everything else.

    torch's own unlifting (``torch.export._unlift``) makes variants of a program
    the same way, by copying the object and replacing fields. The constructor
    would generate the graph's code twice more and verify again a graph that
    was verified when `program` was made.
    """
    variant = copy.copy(program)
    variant._state_dict = state_dict
    variant._constants = constants
    return variant


def current_weight(program: ExportedProgram, fqn: str) -> torch.Tensor | None:
    if fqn in program.state_dict:
        return program.state_dict[fqn]
    value = program.constants.get(fqn)
    return value if isinstance(value, torch.Tensor) else None


def plan_weight_update(
    program: ExportedProgram, state_dict: Mapping[str, object], *, strict: bool = False
) -> dict[str, torch.Tensor]:
    """New tensors by FQN, or an InvalidArgumentError naming every problem."""
    if not isinstance(state_dict, Mapping):
        raise InvalidArgumentError(
            f"update_weights expects a mapping of FQN -> tensor, got {type(state_dict).__name__}"
        )
    known = list(program.state_dict) + [
        k for k, v in program.constants.items() if isinstance(v, torch.Tensor)
    ]
    problems = []
    updates: dict[str, torch.Tensor] = {}
    for fqn, value in state_dict.items():
        old = current_weight(program, fqn) if isinstance(fqn, str) else None
        if old is None:
            close = difflib.get_close_matches(str(fqn), known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"{fqn!r} is not a weight of this program{hint}")
            continue
        if not isinstance(value, torch.Tensor):
            problems.append(f"{fqn!r}: expected a tensor, got {type(value).__name__}")
            continue
        if value.shape != old.shape or value.dtype != old.dtype:
            problems.append(
                f"{fqn!r}: expected shape {tuple(old.shape)} and dtype {old.dtype}, "
                f"got {tuple(value.shape)} and {value.dtype}"
            )
            continue
        if value.device != old.device:
            problems.append(
                f"{fqn!r}: expected a tensor on {old.device}, got one on {value.device}"
            )
            continue
        fresh = torch.empty_strided(old.shape, old.stride(), dtype=old.dtype, device=old.device)
        with torch.no_grad():
            fresh.copy_(value)
        updates[fqn] = (
            torch.nn.Parameter(fresh, requires_grad=old.requires_grad)  # see archive_payloads
            if isinstance(old, torch.nn.Parameter)
            else fresh
        )
    if strict:
        missing = [k for k in program.state_dict if k not in state_dict]
        if missing:
            problems.append(f"strict update is missing {len(missing)} weight(s): {missing[:5]}")
    if problems:
        raise InvalidArgumentError(
            "weight update refused, nothing was changed:\n  " + "\n  ".join(problems)
        )
    return updates


def bound_constants(program: ExportedProgram, artifact: Any, path: str) -> dict[str, torch.Tensor]:
    """The program's tensors a region binds, checked against what it was compiled for."""
    constants = {}
    for entry in artifact.meta.get("constants", []):
        try:
            name, fqn, shape, dtype = entry
        except (TypeError, ValueError):
            raise ArchiveError(
                f"{path}: region {artifact.key} lists a malformed weight entry {entry!r}"
            ) from None
        tensor = program.state_dict.get(fqn, program.constants.get(fqn))
        if not isinstance(tensor, torch.Tensor):
            raise ArchiveError(
                f"{path}: region {artifact.key} needs weight {fqn!r}, which the archive lacks"
            )
        if list(tensor.shape) != list(shape) or str(tensor.dtype).removeprefix("torch.") != dtype:
            raise ArchiveError(
                f"{path}: weight {fqn!r} is {tuple(tensor.shape)} {tensor.dtype} in the archive, but region "
                f"{artifact.key} was compiled for {tuple(shape)} {dtype}"
            )
        constants[name] = tensor
    return constants
