"""Where a region meets the rest of the parent graph.

Before a region is outlined, its edges are read off the parent: which values
flow in (state it owns, runtime tensors, sizes it recomputes, control-flow
bodies), which of its values flow out, and which buffers it writes in place.
Everything here costs time linear in the region and its edges, never in the
whole graph, so outlining every region of a program stays linear.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import sympy
import torch
from torch.export.graph_signature import ExportGraphSignature, InputKind, InputSpec, OutputKind

from fxdelegate.partitioner.candidates import ValueKind, value_kind
from fxdelegate.partitioner.symbolic import SizeSource, symbol_sources

from .context import LoweringContext, RegionRecord


@dataclass
class RegionBoundary:
    """A region's inputs and outputs in the parent graph, in the order its program uses."""

    members: list[torch.fx.Node]  # the region's nodes, in graph order
    owned: list[torch.fx.Node] = field(default_factory=list)  # placeholders of state it owns
    runtime: list[torch.fx.Node] = field(default_factory=list)  # tensors passed at run time
    sizes: list[torch.fx.Node] = field(default_factory=list)  # SymInts it recomputes
    bodies: list[torch.fx.Node] = field(default_factory=list)  # get_attr of control-flow bodies
    outputs: list[torch.fx.Node] = field(default_factory=list)  # members read outside
    # New value -> placeholder of the buffer the region writes in place.
    written: dict[torch.fx.Node, torch.fx.Node] = field(default_factory=dict)
    # Each size symbol the region needs -> the runtime input (and dim) it is read from.
    local_sizes: dict[sympy.Symbol, SizeSource] = field(default_factory=dict)


@dataclass(frozen=True)
class MutatedBuffer:
    position: int  # of the mutation among the parent's outputs
    fqn: str
    placeholder: torch.fx.Node  # the buffer's old value
    value: torch.fx.Node  # its new value


def mutated_buffers(
    parent: torch.fx.GraphModule, signature: ExportGraphSignature
) -> dict[torch.fx.Node, MutatedBuffer]:
    """New value -> the buffer it becomes, for every buffer mutation whose value
    the parent returns exactly once (computed once for all regions)."""
    output = parent.graph.output_node()
    returned = list(output.args[0])
    placeholders = {n.name: n for n in parent.graph.nodes if n.op == "placeholder"}
    buffer_input = {
        s.target: placeholders.get(s.arg.name)
        for s in signature.input_specs
        if s.kind == InputKind.BUFFER
    }
    times_returned = Counter(v for v in returned if isinstance(v, torch.fx.Node))
    found = {}
    for position, spec in enumerate(signature.output_specs):
        if spec.kind != OutputKind.BUFFER_MUTATION:
            continue
        old, new = buffer_input.get(spec.target), returned[position]
        if old is None or not isinstance(new, torch.fx.Node) or times_returned[new] != 1:
            continue
        found[new] = MutatedBuffer(position, spec.target, old, new)  # type: ignore[arg-type]
    return found


def buffers_written_in_place(
    parent: torch.fx.GraphModule,
    record: RegionRecord,
    mutated: dict[torch.fx.Node, MutatedBuffer],
) -> list[tuple[str, torch.fx.Node, torch.fx.Node]]:
    """Mutated buffers whose old and new values are read only inside the region,
    in the order of the parent's outputs."""
    members = set(record.partition.nodes)
    output = parent.graph.output_node()
    found = []
    for new in record.partition.nodes:
        buffer = mutated.get(new)
        if buffer is None or not all(u in members for u in buffer.placeholder.users):
            continue
        if all(u in members or u is output for u in new.users):
            found.append(buffer)
    found.sort(key=lambda b: b.position)
    return [(b.fqn, b.placeholder, b.value) for b in found]


def region_boundary(
    parent: torch.fx.GraphModule,
    record: RegionRecord,
    ctx: LoweringContext,
    specs_by_name: dict[str, InputSpec],
    parent_sizes: dict[sympy.Symbol, SizeSource],
) -> RegionBoundary:
    """Read `record`'s region boundary off the parent graph."""
    ordered = list(record.partition.nodes)
    members = set(ordered)
    boundary = RegionBoundary(ordered)

    external: list[torch.fx.Node] = []
    seen: set[torch.fx.Node] = set()
    for node in ordered:
        for arg in node.all_input_nodes:
            if arg not in members and arg not in seen:
                seen.add(arg)
                external.append(arg)
    boundary.written = {new: old for _, old, new in record.in_place}
    output_node = parent.graph.output_node()
    boundary.outputs = [
        n
        for n in ordered
        if any(
            u not in members and not (u is output_node and n in boundary.written) for u in n.users
        )
    ]

    owners = ctx.owners or {}
    for value in external:
        spec = specs_by_name.get(value.name) if value.op == "placeholder" else None
        if spec is not None and spec.target is not None and owners.get(spec.target) == record.name:
            boundary.owned.append(value)
        elif value.op == "get_attr":
            boundary.bodies.append(value)  # a control-flow body: travels with the region
        elif value_kind(value.meta.get("val")) is ValueKind.SYMBOLIC:
            boundary.sizes.append(value)
        else:
            boundary.runtime.append(value)

    # Every symbol in the region's shapes must be readable from a runtime input.
    local_sizes = symbol_sources(boundary.runtime)
    needed: set[sympy.Symbol] = set()
    for node in [*boundary.runtime, *ordered, *boundary.sizes]:
        needed |= free_symbols(node.meta.get("val"))
    for symbol in sorted(needed - set(local_sizes), key=str):
        source = parent_sizes.get(symbol)
        if source is None:
            raise AssertionError(
                f"{record.name}: size {symbol} is not readable from any graph input"
            )
        if source[0] not in boundary.runtime:
            boundary.runtime.append(source[0])
        local_sizes = symbol_sources(boundary.runtime)
    boundary.local_sizes = local_sizes
    return boundary


def free_symbols(val: object) -> set[sympy.Symbol]:
    if isinstance(val, torch.Tensor):
        out: set[sympy.Symbol] = set()
        for s in val.shape:
            if isinstance(s, torch.SymInt):
                out |= s.node.expr.free_symbols
        return out
    if isinstance(val, torch.SymInt):
        return set(val.node.expr.free_symbols)
    if isinstance(val, (tuple, list)):
        return set().union(*(free_symbols(v) for v in val)) if val else set()
    return set()
