"""Options of CUDA-graph execution, and the checks made before anything is compiled."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch.export import ExportedProgram

from fxdelegate.errors import InvalidArgumentError

from ..backend import RegionArtifact
from .graph_capture import GraphCapturer


@dataclass(frozen=True)
class CUDAGraphOptions:
    """How a program records and replays CUDA graphs (``cuda_graphs=True`` means the defaults).

    Args:
        max_graphs: graphs each recorded segment keeps, one per input signature
            (least recently used dropped first).
        warmup_calls: eager calls of a new signature before it is recorded.
        copy_outputs: return copies of the outputs. With False, outputs are the
            graph's own memory and the next call of the program overwrites them.
        capturer: records the graphs; None means CUDA (tests on machines without
            a GPU pass a stand-in).
    """

    max_graphs: int = 8
    warmup_calls: int = 1
    copy_outputs: bool = True
    capturer: GraphCapturer | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name, low in (("max_graphs", 1), ("warmup_calls", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidArgumentError(f"{name} must be an int >= {low}, got {value!r}")


def resolve_cuda_graphs(value: bool | CUDAGraphOptions | None) -> CUDAGraphOptions | None:
    """``cuda_graphs=`` as options, or None when off."""
    if value is None or value is False:
        return None
    if value is True:
        return CUDAGraphOptions()
    if isinstance(value, CUDAGraphOptions):
        return value
    raise InvalidArgumentError(
        f"cuda_graphs must be True, False or a CUDAGraphOptions, got {type(value).__name__}"
    )


def unrecordable_regions(
    artifacts: Mapping[str, RegionArtifact], recordable: frozenset[str]
) -> dict[str, str]:
    """Regions a CUDA graph cannot record, and why (their backend, or host reads inside)."""
    reasons = {}
    for key, artifact in artifacts.items():
        if key not in recordable:
            reasons[key] = f"backend '{artifact.backend_id}' has no runner a CUDA graph can record"
        elif artifact.meta.get("host_sync"):
            reasons[key] = str(artifact.meta["host_sync"])
    return reasons


def graph_device(program: ExportedProgram, device_type: str) -> torch.device:
    """The device whose work the graphs record: where the program's tensors live."""
    seen = set()
    for node in program.graph.nodes:
        vals = node.meta.get("val")
        for val in vals if isinstance(vals, (tuple, list)) else (vals,):
            if isinstance(val, torch.Tensor):
                if val.device.type == device_type:
                    return val.device
                seen.add(str(val.device))
    where = ", ".join(sorted(seen)) or "no device (it has no tensors)"
    raise InvalidArgumentError(
        f"cuda_graphs=True records {device_type} work, but this program runs on {where}; "
        "export it with its weights and inputs on a CUDA device, or leave cuda_graphs off"
    )
