"""How a segment of the call is recorded as a CUDA graph: the capturer interface.

:class:`CUDACapturer` records with ``torch.cuda.CUDAGraph`` on a side stream
(warm-up runs there too, so that libraries that initialise per stream, such
as cuBLAS workspaces, are ready before recording) and cleans up after a
recording that fails. Tests on machines without a GPU inject another
capturer with the same three verbs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from fxdelegate.errors import FxDelegateError

Segment = Callable[[list[Any]], Sequence[Any]]


class Replayable(Protocol):
    def replay(self) -> None: ...


class CaptureError(FxDelegateError, RuntimeError):
    """Recording a segment failed; ``__cause__`` is what the segment raised."""


class GraphCapturer(Protocol):
    #: Device type whose work this capturer records ("cuda").
    device_type: str

    def records_backend(self, backend_id: str) -> bool:
        """Whether a delegate of this backend, run with a recordable runner, is recorded."""

    def new_pool(self, device: torch.device) -> Any:
        """A memory pool that the graphs of one segment share."""

    def warmup(self, fn: Segment, args: list[Any], device: torch.device) -> Sequence[Any]:
        """Run `fn` eagerly where recordings will happen; returns its outputs."""

    def record(
        self, fn: Segment, args: list[Any], pool: Any, device: torch.device
    ) -> tuple[Replayable, Sequence[Any]]:
        """Record `fn(args)` without running it; raises :class:`CaptureError`."""

    def pool_bytes(self, pools: Sequence[Any], device: torch.device) -> int:
        """Device memory the given pools hold."""


# Graphs whose recording failed. The CUDA caching allocator may still hold a
# callback that points at them (torch registers it when recording begins and
# drops it only when recording ends well), so they are kept alive for good.
_failed_graphs: list[Any] = []


class CUDACapturer:
    """Records with ``torch.cuda.CUDAGraph`` on a side stream per device.

    The side streams are shared by every program in the process: libraries
    keep per-stream state (cuBLAS keeps a workspace per stream for good), so
    a stream per program would grow memory with every program loaded.
    """

    device_type = "cuda"
    _streams: dict[int, torch.cuda.Stream] = {}  # shared on purpose: see above
    _lock = threading.Lock()

    def records_backend(self, backend_id: str) -> bool:
        return True

    def _stream(self, device: torch.device) -> torch.cuda.Stream:
        index = device.index if device.index is not None else torch.cuda.current_device()
        with self._lock:
            if index not in self._streams:
                self._streams[index] = torch.cuda.Stream(device=index)
            return self._streams[index]

    def new_pool(self, device: torch.device) -> Any:
        return torch.cuda.graph_pool_handle()

    def warmup(self, fn: Segment, args: list[Any], device: torch.device) -> Sequence[Any]:
        side = self._stream(device)
        current = torch.cuda.current_stream(device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            outputs = fn(args)
        current.wait_stream(side)
        return outputs

    def record(
        self, fn: Segment, args: list[Any], pool: Any, device: torch.device
    ) -> tuple[Replayable, Sequence[Any]]:
        side = self._stream(device)
        current = torch.cuda.current_stream(device)
        graph = torch.cuda.CUDAGraph()
        side.wait_stream(current)
        with torch.cuda.device(device), torch.cuda.stream(side):
            # thread_local: other threads of the process may keep calling CUDA meanwhile.
            graph.capture_begin(pool=pool, capture_error_mode="thread_local")
            try:
                outputs = fn(args)
            except BaseException as exc:
                self._abandon(graph, pool, device)
                raise CaptureError(_describe(exc)) from exc
            try:
                graph.capture_end()
            except Exception as exc:
                self._release_after_failed_end(graph, pool, device)
                raise CaptureError(_describe(exc)) from exc
        current.wait_stream(side)
        return graph, outputs

    def _abandon(self, graph: Any, pool: Any, device: torch.device) -> None:
        try:
            graph.capture_end()  # a Python error in the middle: the capture itself is intact
        except Exception:
            self._release_after_failed_end(graph, pool, device)

    def _release_after_failed_end(self, graph: Any, pool: Any, device: torch.device) -> None:
        # capture_end raised before telling the allocator that recording is over.
        index = device.index if device.index is not None else torch.cuda.current_device()
        end = getattr(torch._C, "_cuda_endAllocateToPool", None)
        release = getattr(torch._C, "_cuda_releasePool", None)
        if end is not None and release is not None:
            end(index, pool)
            release(index, pool)
        _failed_graphs.append(graph)
        try:
            torch.cuda.synchronize(device)
        except Exception as exc:  # a sticky error: the CUDA context is unusable
            raise FxDelegateError(
                f"the CUDA context failed after a failed graph recording: {exc}"
            ) from exc
        self._settle_rng(device)

    def _settle_rng(self, device: torch.device) -> None:
        # torch 2.11 marks the CUDA RNG as "recording" when a recording begins and
        # clears the mark only when one ends well; after a failed one, every random
        # op would raise. A recording that ends well clears it.
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(device), torch.cuda.stream(self._stream(device)):
            scratch = torch.zeros(1, device=device)
            graph.capture_begin(capture_error_mode="thread_local")
            scratch.add_(1)
            graph.capture_end()

    def pool_bytes(self, pools: Sequence[Any], device: torch.device) -> int:
        wanted = {tuple(p) for p in pools}
        total = 0
        for segment in torch.cuda.memory_snapshot():
            if tuple(segment.get("segment_pool_id", ())) in wanted:
                total += int(segment.get("total_size", 0))
        return total


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
