"""A CPU stand-in for CUDA graph capture, so CI (no GPU) exercises the recording logic.

It keeps what makes CUDA graphs hard to get right:

* recording remembers every ATen op with the exact tensors it read and wrote;
  a replay runs those ops again on the same tensors, writing results into the
  same output tensors (fixed addresses);
* recording changes nothing: tensors that existed before it keep their values
  (in-place writes are undone), and the tensors it creates hold garbage (NaN,
  or -7 for integers) until the first replay;
* host code (Python, sizes, the pytree glue) runs only while recording, never
  on replay;
* an op that reads tensor values on the host (``item``, ``nonzero``...) while
  recording fails the recording, as a stream sync does under CUDA capture.

Only the reference backend's regions are recordable here: they run ATen ops
through the dispatcher, where a dispatch mode sees them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

_HOST_SYNC = {
    "aten::_local_scalar_dense",
    "aten::item",
    "aten::nonzero",
    "aten::masked_select",
    "aten::_unique2",
    "aten::unique_consecutive",
    "aten::unique_dim",
    "aten::equal",
    "aten::is_nonzero",
}


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class _Recorder(TorchDispatchMode):
    def __init__(self, fail_on: set[str]) -> None:
        super().__init__()
        self.ops: list[tuple[Any, tuple, dict, Any]] = []
        self.fail_on = fail_on
        self.created: set[int] = set()  # storages the recorded ops allocated
        self.saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # written, pre-existing

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func._schema.name in _HOST_SYNC or func._schema.name in self.fail_on:
            raise RuntimeError(
                f"operation not permitted when stream is capturing ({func} reads tensor values on the host)"
            )
        written = [
            a.name
            for a in func._schema.arguments
            if a.alias_info is not None and a.alias_info.is_write
        ]
        bound = dict(zip([a.name for a in func._schema.arguments], args)) | kwargs
        for name in written:
            t = bound.get(name)
            if isinstance(t, torch.Tensor) and t.numel() and _storage(t) not in self.created:
                self.saved.setdefault(id(t), (t, t.clone()))
        before = {
            _storage(t) for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)
        }
        out = func(*args, **kwargs)
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.numel() and _storage(t) not in before:
                self.created.add(_storage(t))
        self.ops.append((func, args, kwargs, out))
        return out

    def undo(self) -> None:
        """Recording changes nothing: restore what was written, poison what was made."""
        for t, value in self.saved.values():
            t.copy_(value)
        for *_, out in self.ops:
            for t in pytree.tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.numel() and _storage(t) in self.created:
                    t.fill_(
                        float("nan")
                        if t.dtype.is_floating_point
                        else (True if t.dtype == torch.bool else -7)
                    )


class _RecordedGraph:
    def __init__(self, ops: list[tuple[Any, tuple, dict, Any]]) -> None:
        self.ops = ops
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        with torch.no_grad():
            for func, args, kwargs, out in self.ops:
                result = func(*args, **kwargs)
                for got, into in zip(pytree.tree_leaves(result), pytree.tree_leaves(out)):
                    if isinstance(into, torch.Tensor) and got is not into:
                        into.copy_(got)


class RecordingCapturer:
    """Records on the CPU; `fail_on` names ops (``"aten::tanh"``) whose recording fails
    as if they synced."""

    device_type = "cpu"

    def __init__(self, fail_on: set[str] | None = None) -> None:
        self.fail_on = set(fail_on or ())
        self.records = 0
        self.warmups = 0
        self.pool_sizes: dict[int, int] = {}

    def records_backend(self, backend_id: str) -> bool:
        return backend_id == "reference"

    def new_pool(self, device: torch.device) -> Any:
        pool = object()
        self.pool_sizes[id(pool)] = 0
        return pool

    def warmup(self, fn, args, device):
        self.warmups += 1
        return fn(args)

    def record(self, fn, args, pool, device):
        from fxdelegate.runtime.cuda_graphs.graph_capture import CaptureError

        recorder = _Recorder(self.fail_on)
        try:
            with recorder:
                outputs = fn(args)
        except Exception as exc:
            recorder.undo()
            raise CaptureError(f"{type(exc).__name__}: {exc}") from exc
        recorder.undo()
        self.records += 1
        self.pool_sizes[id(pool)] += sum(
            t.numel() * t.element_size()
            for t in pytree.tree_leaves(outputs)
            if isinstance(t, torch.Tensor)
        )
        return _RecordedGraph(recorder.ops), outputs

    def pool_bytes(self, pools, device) -> int:
        return sum(self.pool_sizes.get(id(p), 0) for p in pools)
