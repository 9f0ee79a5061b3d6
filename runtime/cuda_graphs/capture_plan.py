"""Which nodes of a program a CUDA graph can record, and the segments that follow.

A CUDA graph replays device work only: host code that ran while it was
recorded does not run again. So a node can be recorded when everything it
does per call happens on the program's device, and when whatever it computes
on the host is fixed by the shapes and scalars the graph is keyed on. The
nodes that fail this (a host sync such as ``.item()`` or ``nonzero``, an op on
CPU tensors, control flow whose predicate is read on the host, an op tagged
``cudagraph_unsafe``, a region whose backend cannot be recorded) run eagerly,
and split the call into *segments*: recorded stretches with eager ones between
them.

Everything here is decided once, from the graph, when the executor is built.
Nodes are scheduled so that the number of recorded segments is the smallest
any topological order allows: the recordable nodes are grouped into convex
sets with the partitioner's level algorithm, and each group runs as soon as
the eager nodes it needs have run.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

import torch
from torch._ops import HigherOrderOperator, OpOverload

from fxdelegate.partitioner.op_support import describe_target, has_data_dependent_shape
from fxdelegate.partitioner.regions import find_convex_regions


class NodeKind(str, Enum):
    RECORD = "record"  # device work a graph can replay
    HOST = "host"  # host-only work fixed by shapes (sizes, asserts, indexing): either side
    EAGER = "eager"  # must run outside a graph, every call


# Ops that read only a tensor's metadata, never its data: host work fixed by the shapes.
_METADATA_OPS = {
    "aten::sym_size",
    "aten::sym_stride",
    "aten::sym_numel",
    "aten::sym_storage_offset",
    "aten::_assert_scalar",
    "aten::_assert_tensor_metadata",
    "aten::sym_constrain_range",
    "aten::sym_constrain_range_for_size",
}
# Higher-order ops a graph can record: their bodies run on the device like any op.
_RECORDABLE_HOPS = {"map_impl", "auto_functionalized", "auto_functionalized_v2"}


@dataclass(frozen=True)
class CaptureBreak:
    """A node that runs eagerly, and why a graph cannot record it."""

    node: str
    op: str
    reason: str


@dataclass
class Segment:
    """A stretch of the call that is either recorded in a graph or run eagerly.

    `inputs` are the values it reads that come from the caller or from other
    segments (the program's own state is not among them: its tensors never
    move); `outputs` are the values it defines that are needed after it.
    """

    index: int
    recorded: bool
    nodes: list[torch.fx.Node]
    inputs: list[torch.fx.Node] = field(default_factory=list)
    outputs: list[torch.fx.Node] = field(default_factory=list)
    breaks: list[CaptureBreak] = field(default_factory=list)

    @property
    def regions(self) -> int:
        delegate = torch.ops.higher_order.executorch_call_delegate
        return sum(1 for n in self.nodes if n.target is delegate)

    def op_names(self) -> list[str]:
        return [
            describe_target(n.target)
            for n in self.nodes
            if n.op == "call_function" and n.target is not operator.getitem
        ]


@dataclass
class SegmentPlan:
    segments: list[Segment]
    breaks: list[CaptureBreak]
    device: torch.device

    @property
    def recorded(self) -> list[Segment]:
        return [s for s in self.segments if s.recorded]


def region_host_sync(graph_module: torch.nn.Module) -> str | None:
    """Why a region's compiled code would read device values on the host (None if it never does).

    Compiled control flow reads its predicate on the host, which a CUDA graph
    cannot record. Recorded in the region's artifact, so that a program loaded
    from an archive knows it without the region's graph.
    """
    for module in graph_module.modules():
        graph = getattr(module, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            name = getattr(node.target, "__name__", "")
            if isinstance(node.target, HigherOrderOperator) and name in ("cond", "while_loop"):
                return f"the region runs control flow ({name}) whose predicate is read on the host"
    return None


def _tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def classify_node(
    node: torch.fx.Node,
    device: torch.device,
    immovable: set[torch.fx.Node],
    delegate_reason: Callable[[torch.fx.Node], str | None],
) -> tuple[NodeKind, str]:
    """How a graph treats `node`, and, for eager nodes, why.

    `immovable` are placeholders whose tensors keep their address and value
    from call to call (weights, lifted constants): a graph may read a 0-d CPU
    one as a kernel argument. `delegate_reason` says why a delegate node cannot
    be recorded (None when it can).
    """
    target = node.target
    if node.op == "get_attr":
        return NodeKind.HOST, ""
    if target is operator.getitem:
        return NodeKind.HOST, ""
    if target is torch.ops.higher_order.executorch_call_delegate:
        reason = delegate_reason(node)
        if reason is None:
            reason = _device_reason(node, device, immovable)
        return (NodeKind.EAGER, reason) if reason else (NodeKind.RECORD, "")
    if isinstance(target, HigherOrderOperator):
        if target.__name__ in ("cond", "while_loop"):
            return NodeKind.EAGER, "control flow: its predicate is read on the host"
        if target.__name__ not in _RECORDABLE_HOPS:
            return (
                NodeKind.EAGER,
                f"higher-order op {target.__name__} is not known to be recordable",
            )
    elif isinstance(target, OpOverload):
        if target._schema.name in _METADATA_OPS:
            return NodeKind.HOST, ""
        if torch.Tag.cudagraph_unsafe in target.tags:
            return NodeKind.EAGER, "the op is tagged cudagraph_unsafe"
        if node.meta.get("unbacked_bindings") or has_data_dependent_shape(target):
            return NodeKind.EAGER, "reads tensor values on the host (data-dependent output)"
    if "val" not in node.meta and isinstance(target, (OpOverload, HigherOrderOperator)):
        # Without it the device is unknown, and a host op inside a graph would not rerun.
        return NodeKind.EAGER, "the node has no meta['val'], so where it runs is unknown"
    tensors_in = [t for a in node.all_input_nodes for t in _tensors(a.meta.get("val"))]
    tensors_out = _tensors(node.meta.get("val"))
    if (
        not tensors_in
        and not tensors_out
        and not isinstance(target, (OpOverload, HigherOrderOperator))
    ):
        return NodeKind.HOST, ""  # Python arithmetic on sizes and scalars
    sparse = next((t for t in (*tensors_in, *tensors_out) if t.layout != torch.strided), None)
    if sparse is not None:
        # Its index and value buffers are sized by the data: no fixed addresses to replay.
        return NodeKind.EAGER, f"reads or makes a {sparse.layout} tensor"
    reason = _device_reason(node, device, immovable)
    return (NodeKind.EAGER, reason) if reason else (NodeKind.RECORD, "")


def _device_reason(
    node: torch.fx.Node, device: torch.device, immovable: set[torch.fx.Node]
) -> str | None:
    for out in _tensors(node.meta.get("val")):
        if out.device != device:
            return f"produces a tensor on {out.device}, not on {device}"
    for arg in node.all_input_nodes:
        for t in _tensors(arg.meta.get("val")):
            if t.device == device:
                continue
            if arg in immovable and t.device.type == "cpu" and t.dim() == 0:
                continue  # a fixed 0-d host constant: launched as a kernel argument
            return f"reads {arg.name}, a tensor on {t.device}"
    return None


def plan_segments(
    graph: torch.fx.Graph,
    device: torch.device,
    *,
    state: set[torch.fx.Node],
    immovable: set[torch.fx.Node],
    delegate_reason: Callable[[torch.fx.Node], str | None],
    forced_eager: Mapping[str, str] | None = None,
) -> SegmentPlan:
    """Order the graph's nodes into recorded and eager segments.

    `state` are the placeholders of the program's own tensors (bound by
    address, never segment inputs); `immovable` those of them the program
    never mutates. `forced_eager` maps node names to a reason they must run
    eagerly (a recording that failed at run time names its node here).
    """
    forced_eager = forced_eager or {}
    delegate = torch.ops.higher_order.executorch_call_delegate
    nodes = [
        n
        for n in graph.nodes
        if n.op == "call_function"
        # a lowered module's get_attr: the delegate call binds its runner directly
        or (n.op == "get_attr" and not all(u.target is delegate for u in n.users))
    ]
    kinds: dict[torch.fx.Node, NodeKind] = {}
    reasons: dict[torch.fx.Node, str] = {}
    for node in nodes:
        if node.name in forced_eager:
            kind, reason = NodeKind.EAGER, forced_eager[node.name]
        else:
            kind, reason = classify_node(node, device, immovable, delegate_reason)
        if node.target is operator.getitem and isinstance(node.args[0], torch.fx.Node):
            producer = node.args[0]
            if kinds.get(producer) is NodeKind.EAGER:
                kind, reason = NodeKind.EAGER, ""  # a projection stays with its producer
        kinds[node], reasons[node] = kind, reason

    groups = find_convex_regions(nodes, lambda n: kinds[n] is not NodeKind.EAGER)
    # A group with no device work gains nothing from a graph: its nodes run eagerly.
    groups = [g for g in groups if any(kinds[n] is NodeKind.RECORD for n in g)]
    order = _schedule(nodes, groups)
    segments = _cut(order, groups)
    breaks = []
    for seg in segments:
        if seg.recorded:
            continue
        for n in seg.nodes:
            if kinds[n] is NodeKind.EAGER and reasons[n]:
                seg.breaks.append(CaptureBreak(n.name, describe_target(n.target), reasons[n]))
        breaks += seg.breaks
    _wire(graph, segments, state)
    return SegmentPlan(segments, breaks, device)


def _schedule(
    nodes: list[torch.fx.Node], groups: list[list[torch.fx.Node]]
) -> list[torch.fx.Node | int]:
    """A topological order in which each group is one contiguous run.

    Eager nodes run as soon as their inputs exist; each group runs (in level
    order) once no eager node is ready. Returns nodes, with a group's index in
    place of its nodes.
    """
    group_of = {n: i for i, g in enumerate(groups) for n in g}
    position = {n: i for i, n in enumerate(nodes)}
    unit_inputs: dict[object, set[object]] = {}

    def unit(n: torch.fx.Node) -> object:
        return group_of.get(n, n)

    units: list[object] = []
    for n in nodes:
        u = unit(n)
        if u not in unit_inputs:
            unit_inputs[u] = set()
            units.append(u)
        for a in n.all_input_nodes:
            if a in position and unit(a) != u:
                unit_inputs[u].add(unit(a))
    done: set[object] = set()
    order: list[torch.fx.Node | int] = []
    pending_groups = list(range(len(groups)))
    while len(done) < len(units):
        progressed = True
        while progressed:
            progressed = False
            for u in units:
                if u in done or isinstance(u, int) or not unit_inputs[u] <= done:
                    continue
                order.append(u)  # type: ignore[arg-type]
                done.add(u)
                progressed = True
        if pending_groups:
            g = pending_groups.pop(0)
            if not unit_inputs[g] <= done:  # cannot happen for convex, level-ordered groups
                raise AssertionError(f"capture group {g} scheduled before its inputs")
            order.append(g)
            done.add(g)
        elif len(done) < len(units):
            raise AssertionError("capture schedule is stuck: the graph has a cycle")
    return order


def _cut(order: list[torch.fx.Node | int], groups: list[list[torch.fx.Node]]) -> list[Segment]:
    segments: list[Segment] = []
    for item in order:
        if isinstance(item, int):
            segments.append(Segment(len(segments), True, list(groups[item])))
        elif segments and not segments[-1].recorded:
            segments[-1].nodes.append(item)
        else:
            segments.append(Segment(len(segments), False, [item]))
    return segments


def _wire(graph: torch.fx.Graph, segments: list[Segment], state: set[torch.fx.Node]) -> None:
    """Fill each segment's inputs (user placeholders count, state does not) and outputs."""
    segment_of = {n: s.index for s in segments for n in s.nodes}
    needed_later: dict[torch.fx.Node, int] = {}  # value -> last segment index that reads it
    output = next(n for n in graph.nodes if n.op == "output")
    for seg in segments:
        seen: set[torch.fx.Node] = set()
        for n in seg.nodes:
            for a in n.all_input_nodes:
                if a.op != "placeholder" and a not in segment_of:
                    continue  # a lowered module, bound by the delegate call itself
                if segment_of.get(a) != seg.index and a not in seen and a not in state:
                    seen.add(a)
                    seg.inputs.append(a)
                    needed_later[a] = seg.index
    for a in output.all_input_nodes:
        needed_later[a] = len(segments)
    for seg in segments:
        seg.outputs = [n for n in seg.nodes if n in needed_later and needed_later[n] > seg.index]
