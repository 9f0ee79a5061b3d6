"""Record the executor's call in CUDA graphs once per input signature, then replay it.

Turned on with ``lower(..., cuda_graphs=True)`` or ``load(..., cuda_graphs=True)``.

* **Segments.** The call is cut once, from the graph, into recorded and eager
  segments (:mod:`.capture_plan`); most programs are one recorded segment.
  Each segment runs the same generated code as the executor (:mod:`..codegen.plan`).
* **Signatures.** A recorded segment keeps one graph per signature of its
  inputs (shapes, dtypes, the values of scalars), at most
  ``CUDAGraphOptions.max_graphs``, least recently used first out. A new
  signature runs eagerly ``warmup_calls`` times, then is recorded.
* **Static buffers.** A graph reads its inputs from buffers it owns: each
  replay first copies the caller's tensors (and values from eager segments)
  into them. The program's own weights and buffers are read in place.
* **Outputs** are copied out of graph memory by default, so a later call
  never overwrites what an earlier one returned.
* **Mutation.** Buffers the program mutates are written inside the last
  segment's graph when it is recorded; mutated user inputs are written after
  the replay, so both hold what eager PyTorch leaves.
* **Memory.** The graphs of one segment share one memory pool; dropping the
  program releases them.
* **Failures.** A recording that fails at run time names the node it failed
  in: that node runs eagerly from then on (one warning), and that call runs
  the segment eagerly. No call returns a wrong result for it.
* **Threads.** One lock per program: the graphs' buffers and the
  single-threaded runners they record are used by one call at a time.
"""

from __future__ import annotations

import logging
import operator
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._ops import OpOverload
from torch.export import ExportedProgram

from ..codegen.plan import GraphCodegen, Runners
from ..lowered_module import delegate_key
from .capture_plan import Segment, SegmentPlan, plan_segments
from .cuda_graph_options import CUDAGraphOptions, graph_device
from .graph_capture import CaptureError, CUDACapturer, GraphCapturer, Replayable

log = logging.getLogger("fxdelegate.runtime")


@dataclass
class _Recording:
    graph: Replayable
    copies: list[tuple[int, torch.Tensor]]  # (input index, static buffer)
    outputs: Sequence[Any]


@dataclass
class _SegmentRuntime:
    """One segment's generated function and, when recorded, its graphs."""

    spec: Segment
    fn: Callable[[list[Any]], Sequence[Any]]
    in_slots: list[int]
    out_slots: list[int]
    contiguous: list[bool]  # per input: exported contiguous, so its static buffer is too
    line_nodes: dict[int, torch.fx.Node]
    pool: Any = None
    recordings: OrderedDict[Any, _Recording] = field(default_factory=OrderedDict)
    warm: dict[Any, int] = field(default_factory=dict)
    eager_reason: str | None = None
    recorded_total: int = 0
    replays: int = 0
    warmups: int = 0
    evictions: int = 0

    def signature(self, args: list[Any]) -> tuple:
        parts = []
        for value, contiguous in zip(args, self.contiguous):
            if isinstance(value, torch.Tensor):
                parts.append(
                    (value.shape, value.dtype)
                    if contiguous
                    else (value.shape, value.stride(), value.dtype)
                )
            else:
                parts.append(_freeze(value))
        return tuple(parts)

    def node_that_raised(self, exc: BaseException) -> torch.fx.Node | None:
        tb = exc.__traceback__
        found = None
        while tb is not None:
            if tb.tb_frame.f_code is self.fn.__code__:
                found = self.line_nodes.get(tb.tb_lineno)
            tb = tb.tb_next
        return found


def _freeze(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device)):
        return (type(value), value)
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_freeze(v) for v in value))
    raise TypeError(f"cannot key a graph on a {type(value).__name__}")


def _static_like(value: torch.Tensor, contiguous: bool) -> torch.Tensor:
    if contiguous:
        return torch.empty(value.shape, dtype=value.dtype, device=value.device)
    return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=value.device)


class CUDAGraphRunner:
    """Runs a program's call through recorded segments; see the module docstring.

    Called with the flat user inputs (already checked), returns the flat user
    outputs, with mutations written back.
    """

    def __init__(
        self,
        program: ExportedProgram,
        runners: Runners,
        *,
        sources: Sequence[tuple[str, Any]],
        write_backs: Sequence[tuple[int, str, Any]],
        user_outputs: Sequence[int],
        contiguous_inputs: frozenset[int],
        options: CUDAGraphOptions,
        unrecordable: Mapping[str, str],
        lock: Any = None,
    ) -> None:
        """`lock` serializes calls (the executor's); one of its own when None."""
        self.program = program
        self.options = options
        self.capturer: GraphCapturer = options.capturer or CUDACapturer()
        self.device = graph_device(program, self.capturer.device_type)
        self._runners = runners
        self._unrecordable = dict(unrecordable)
        self._sources = list(sources)
        self._write_backs = list(write_backs)
        self._user_outputs = list(user_outputs)
        self._contiguous_inputs = contiguous_inputs
        self._forced_eager: dict[str, str] = {}
        self._warned: set[str] = set()
        # One call at a time: the graphs' buffers and the runners they record are shared.
        self.lock = lock if lock is not None else threading.Lock()
        self._build()

    # -- the plan --------------------------------------------------------------------

    def _delegate_reason(self, node: torch.fx.Node) -> str | None:
        key = delegate_key(node.args[0], self.program.graph_module)
        backend = key.rsplit("-", 1)[-1]
        if key in self._unrecordable:
            return self._unrecordable[key]
        if not self.capturer.records_backend(backend):
            return f"this capturer cannot record backend '{backend}'"
        return None

    def _build(self) -> None:
        """Plan the segments and generate their code (again after a recording failed)."""
        graph = self.program.graph
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        state = {n for n, (kind, _) in zip(placeholders, self._sources) if kind == "state"}
        by_tensor = {
            id(src): n for n, (kind, src) in zip(placeholders, self._sources) if kind == "state"
        }
        mutated = {by_tensor.get(id(w)) for _, kind, w in self._write_backs if kind == "state"}
        self.plan: SegmentPlan = plan_segments(
            graph,
            self.device,
            state=state,
            immovable=state - mutated,
            delegate_reason=self._delegate_reason,
            forced_eager=self._forced_eager,
        )
        results = list(graph.output_node().args[0])
        cg = GraphCodegen(graph, self.program.graph_module, self._runners)
        slot: dict[torch.fx.Node, int] = {}
        self._user_slots: list[tuple[int, int, bool]] = []  # (flat index, slot, contiguous)
        for i, (node, (kind, src)) in enumerate(zip(placeholders, self._sources)):
            if kind == "state":
                cg.var[node] = cg.bind(src, "_s")
                continue
            cg.var[node] = f"p{i}"
            slot[node] = len(slot)
            self._user_slots.append((src, slot[node], src in self._contiguous_inputs))
        contiguous = {
            placeholders[i]
            for i, (k, src) in enumerate(self._sources)
            if k == "user" and src in self._contiguous_inputs
        }

        in_graph_writes = self._writes_in_last_graph(results, state)
        self.segments: list[_SegmentRuntime] = []
        for seg in self.plan.segments:
            writes = in_graph_writes if seg is self.plan.segments[-1] else []
            for n in seg.outputs:
                slot.setdefault(n, len(slot))
            self.segments.append(self._compile(cg, seg, slot, contiguous, writes, results))
        self._num_slots = len(slot)

        static = self._static_values(self.plan.segments)
        placeholder_index = {n: i for i, n in enumerate(placeholders)}

        def source_of(value: Any) -> tuple[str, Any, bool]:
            if isinstance(value, torch.fx.Node):
                if value.op == "placeholder":
                    kind, src = self._sources[placeholder_index[value]]
                    return ("user", src, False) if kind == "user" else ("const", src, False)
                return "slot", slot[value], value in static and self.options.copy_outputs
            return "const", value, False

        self._eager_writes = [
            (kind, where, source_of(results[pos]))
            for pos, kind, where in self._write_backs
            if not (kind == "state" and in_graph_writes)
        ]
        self._outputs = [source_of(results[pos]) for pos in self._user_outputs]
        self._dirty = False

    def _writes_in_last_graph(
        self, results: list[Any], state: set[torch.fx.Node]
    ) -> list[tuple[int, torch.Tensor]]:
        """Buffer write-backs (output position, buffer) that go inside the last graph.

        When the call ends in a recorded segment its graph writes the buffers, so
        a replay leaves them as eager would; values it does not compute become
        its inputs.
        """
        segments = self.plan.segments
        if not segments or not segments[-1].recorded:
            return []
        last = segments[-1]
        writes = [(pos, w) for pos, kind, w in self._write_backs if kind == "state"]
        defined = set(last.nodes)
        for pos, _ in writes:
            value = results[pos]
            if isinstance(value, torch.fx.Node) and value not in defined | state:
                if value not in last.inputs:
                    last.inputs.append(value)
        return writes

    def _compile(
        self,
        cg: GraphCodegen,
        seg: Segment,
        slot: dict[torch.fx.Node, int],
        contiguous: set[torch.fx.Node],
        writes: list[tuple[int, torch.Tensor]],
        results: list[Any],
    ) -> _SegmentRuntime:
        """One segment as ``seg<i>(inputs) -> outputs``, from the executor's code generator."""
        lines, owners = cg.emit(seg.nodes, keep=set(seg.outputs))
        for pos, target in writes:
            lines.append(f"    {cg.bind(target, '_s')}.copy_({cg.literal(results[pos])})")
            owners.append(None)
        header = [f"def seg{seg.index}(inputs):"]
        if seg.inputs:
            header.append(f"    ({''.join(cg.var[n] + ', ' for n in seg.inputs)}) = inputs")
        returns = f"    return ({''.join(cg.var[n] + ', ' for n in seg.outputs)})"
        first = len(header) + 1  # line number of the first body line
        return _SegmentRuntime(
            spec=seg,
            fn=cg.compile("\n".join([*header, *lines, returns]) + "\n", f"seg{seg.index}"),
            in_slots=[slot[n] for n in seg.inputs],
            out_slots=[slot[n] for n in seg.outputs],
            contiguous=[n in contiguous for n in seg.inputs],
            line_nodes={first + i: o for i, o in enumerate(owners) if o is not None},
            pool=self.capturer.new_pool(self.device) if seg.recorded else None,
        )

    @staticmethod
    def _static_values(segments: list[Segment]) -> set[torch.fx.Node]:
        """Values that live in graph memory: made by a recorded segment, or views of those."""
        static: set[torch.fx.Node] = set()
        for seg in segments:
            for node in seg.nodes:
                if seg.recorded:
                    static.add(node)
                    continue
                base = node.args[0] if node.args else None
                aliases = node.target is operator.getitem or (
                    isinstance(node.target, OpOverload) and node.target.is_view
                )
                if aliases and isinstance(base, torch.fx.Node) and base in static:
                    static.add(node)
        return static

    # -- a call ---------------------------------------------------------------------

    def __call__(self, user_inputs: Sequence[Any]) -> list[Any]:
        with self.lock:
            if self._dirty:
                self._build()
            env: list[Any] = [None] * self._num_slots
            for index, slot, contiguous in self._user_slots:
                value = user_inputs[index]
                env[slot] = value.contiguous() if contiguous else value
            for seg in self.segments:
                args = [env[s] for s in seg.in_slots]
                if seg.spec.recorded:
                    outs = self._run_recorded(seg, args)
                else:
                    outs = seg.fn(args)
                for s, value in zip(seg.out_slots, outs):
                    env[s] = value
            for kind, where, src in self._eager_writes:
                target = where if kind == "state" else user_inputs[where]
                target.copy_(self._value(src, env, user_inputs, {}))
            copies: dict[int, Any] = {}
            return [self._value(src, env, user_inputs, copies) for src in self._outputs]

    @staticmethod
    def _value(
        src: tuple[str, Any, bool], env: list[Any], user: Sequence[Any], copies: dict
    ) -> Any:
        kind, where, copy = src
        if kind == "slot":
            value = env[where]
            if copy and isinstance(value, torch.Tensor):
                # The same graph tensor returned twice is copied once.
                if id(value) not in copies:
                    copies[id(value)] = value.clone()
                return copies[id(value)]
            return value
        if kind == "user":
            return user[where]
        return where

    def _run_recorded(self, seg: _SegmentRuntime, args: list[Any]) -> Sequence[Any]:
        if seg.eager_reason is not None:
            return seg.fn(args)
        try:
            key = seg.signature(args)
        except TypeError:
            return seg.fn(args)
        recording = seg.recordings.get(key)
        if recording is not None:
            seg.recordings.move_to_end(key)
            for index, buffer in recording.copies:
                buffer.copy_(args[index])
            recording.graph.replay()
            seg.replays += 1
            return recording.outputs
        return self._warm_or_record(seg, key, args)

    def _warm_or_record(self, seg: _SegmentRuntime, key: Any, args: list[Any]) -> Sequence[Any]:
        seen = seg.warm.get(key, 0)
        if seen < self.options.warmup_calls:
            if len(seg.warm) > 4 * self.options.max_graphs:
                seg.warm.clear()
            seg.warm[key] = seen + 1
            seg.warmups += 1
            return self.capturer.warmup(seg.fn, args, self.device)
        with torch.inference_mode(False), torch.no_grad():
            statics = list(args)
            copies = []
            for i, (value, contiguous) in enumerate(zip(args, seg.contiguous)):
                if isinstance(value, torch.Tensor):
                    statics[i] = _static_like(value, contiguous)
                    statics[i].copy_(value)
                    copies.append((i, statics[i]))
            try:
                graph, outputs = self.capturer.record(seg.fn, statics, seg.pool, self.device)
            except CaptureError as exc:
                self._recording_failed(seg, exc)
                return seg.fn(args)
        seg.warm.pop(key, None)
        seg.recordings[key] = _Recording(graph, copies, outputs)
        seg.recorded_total += 1
        if len(seg.recordings) > self.options.max_graphs:
            seg.recordings.popitem(last=False)
            seg.evictions += 1
            if seg.evictions >= 2 * self.options.max_graphs:
                self._give_up(
                    seg,
                    f"its inputs changed signature {seg.recorded_total} times (max_graphs="
                    f"{self.options.max_graphs}), so recording cost more than it saved",
                )
        graph.replay()
        seg.replays += 1
        return outputs

    def _give_up(self, seg: _SegmentRuntime, reason: str) -> None:
        seg.eager_reason = reason
        seg.recordings.clear()
        self._warn(
            f"segment {seg.spec.index}",
            f"CUDA graphs: segment {seg.spec.index} now runs eagerly: {reason}",
        )

    def _recording_failed(self, seg: _SegmentRuntime, exc: CaptureError) -> None:
        cause = exc.__cause__ or exc
        node = seg.node_that_raised(cause)
        reason = f"recording failed at run time ({str(exc)[:160]})"
        if node is not None and node.target is not operator.getitem:
            self._forced_eager[node.name] = reason
            where = f"node {node.name}"
        else:
            for n in seg.spec.nodes:
                self._forced_eager[n.name] = reason
            where = f"segment {seg.spec.index}"
        self._dirty = True  # the next call plans the segments again
        self._warn(where, f"CUDA graphs: {where} cannot be recorded and now runs eagerly: {exc}")

    def _warn(self, key: str, message: str) -> None:
        log.warning(message)
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=4)

    # -- what users and reports see ----------------------------------------------------------

    def stats(self) -> list[dict[str, Any]]:
        """Per segment: kind, node count, graphs held, recordings, replays, warm-ups, evictions."""
        with self.lock:
            if self._dirty:
                self._build()
            return [
                {
                    "segment": s.spec.index,
                    "recorded": s.spec.recorded and s.eager_reason is None,
                    "nodes": len(s.spec.nodes),
                    "regions": s.spec.regions,
                    "graphs": len(s.recordings),
                    "recordings": s.recorded_total,
                    "replays": s.replays,
                    "warmups": s.warmups,
                    "evictions": s.evictions,
                    "eager_reason": s.eager_reason,
                }
                for s in self.segments
            ]

    def pool_bytes(self) -> int:
        """Device memory held by the graphs' pools."""
        pools = [s.pool for s in self.segments if s.pool is not None]
        return self.capturer.pool_bytes(pools, self.device) if pools else 0
