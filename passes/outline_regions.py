"""Outline each region into its own ExportedProgram with flat inputs and outputs.

The region's program is built directly from the parent's nodes and metadata
instead of re-exporting a submodule: node ``val``s keep the parent's symbolic
shapes, so every ``Dim`` that reaches the region stays dynamic there and one
compiled artifact serves every size in its range.

Inputs, in order: state the region owns (parameters, buffers, constants,
under canonical names ``weight_<i>``; bound at load time), then runtime
tensors from the parent.

A buffer the program mutates is written by the region itself when the
backend allows it and nothing outside the region reads the buffer's old or
new value: the region's program mutates that input in place (a
USER_INPUT_MUTATION output), and the parent stops copying the new value back.
A KV cache updated with ``index_copy_`` then costs one small write per step
instead of two copies of the whole cache. Symbolic sizes the
region needs are recomputed inside it from its tensor inputs' shapes; when no
input carries a symbol as a plain dimension, the parent's graph input that
does is passed in as well.
"""

from __future__ import annotations

import copy

import sympy
import torch
import torch.utils._pytree as pytree
from torch.export import ExportedProgram
from torch.export.exported_program import ModuleCallEntry, ModuleCallSignature
from torch.export.graph_signature import (
    ExportGraphSignature,
    InputKind,
    InputSpec,
    OutputKind,
    OutputSpec,
    TensorArgument,
)
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from fxdelegate.partitioner.candidates import ValueKind, value_kind
from fxdelegate.partitioner.symbolic import size_expr, symbol_sources
from fxdelegate.runtime.backend import example_value, get_compiler

from .context import LoweringContext, RegionRecord, get_context
from .symbolic_sizes import SizeExprBuilder


class OutlineRegionsPass(PassBase):
    def requires(self, graph_module: torch.fx.GraphModule) -> None:
        ctx = get_context(graph_module)
        if ctx.partition_result is None or ctx.owners is None:
            raise AssertionError(
                "OutlineRegionsPass needs TagRegionsPass and AssignConstantOwnersPass first"
            )

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        ctx = get_context(graph_module)
        placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
        parent_sizes = symbol_sources(placeholders)
        specs_by_name = {s.arg.name: s for s in ctx.signature.input_specs}
        in_place = get_compiler(ctx.backend_id).supports_input_mutation
        for record in ctx.regions:
            if in_place:
                record.in_place = buffers_written_in_place(graph_module, record, ctx)
            outline_region(graph_module, record, ctx, specs_by_name, parent_sizes)
        return PassResult(graph_module, False)

    def ensures(self, graph_module: torch.fx.GraphModule) -> None:
        for record in get_context(graph_module).regions:
            if record.program is None:
                raise AssertionError(f"{record.name} was not outlined")
            n_user = len(record.program.graph_signature.user_inputs)
            if n_user != len(record.inputs) or n_user != len(record.example_inputs):
                raise AssertionError(
                    f"{record.name}: {n_user} user inputs vs {len(record.inputs)} parent values"
                )
            if len(record.program.graph_signature.user_outputs) != len(record.outputs):
                raise AssertionError(f"{record.name}: output count differs from the parent's uses")


def buffers_written_in_place(
    parent: torch.fx.GraphModule, record: RegionRecord, ctx: LoweringContext
) -> list[tuple[str, torch.fx.Node, torch.fx.Node]]:
    """Mutated buffers whose old and new values are read only inside the region."""
    members = set(record.partition.nodes)
    output = parent.graph.output_node()
    returned = list(output.args[0])
    placeholders = {n.name: n for n in parent.graph.nodes if n.op == "placeholder"}
    buffer_input = {
        s.target: placeholders.get(s.arg.name)
        for s in ctx.signature.input_specs
        if s.kind == InputKind.BUFFER
    }
    found = []
    for position, spec in enumerate(ctx.signature.output_specs):
        if spec.kind != OutputKind.BUFFER_MUTATION:
            continue
        old, new = buffer_input.get(spec.target), returned[position]
        if old is None or not isinstance(new, torch.fx.Node) or new not in members:
            continue
        if returned.count(new) != 1 or not all(u in members for u in old.users):
            continue
        if all(u in members or u is output for u in new.users):
            found.append((spec.target, old, new))
    return found


def outline_region(
    parent: torch.fx.GraphModule,
    record: RegionRecord,
    ctx: LoweringContext,
    specs_by_name: dict[str, InputSpec],
    parent_sizes: dict,
) -> None:
    members = set(record.partition.nodes)
    ordered = list(record.partition.nodes)

    external: list[torch.fx.Node] = []
    seen: set[torch.fx.Node] = set()
    for node in ordered:
        for arg in node.all_input_nodes:
            if arg not in members and arg not in seen:
                seen.add(arg)
                external.append(arg)
    written = {new: old for _, old, new in record.in_place}
    output_node = parent.graph.output_node()
    outputs = [
        n
        for n in ordered
        if any(u not in members and not (u is output_node and n in written) for u in n.users)
    ]

    owned, runtime, sizes, bodies = [], [], [], []
    for value in external:
        spec = specs_by_name.get(value.name) if value.op == "placeholder" else None
        owners = ctx.owners or {}
        if spec is not None and spec.target is not None and owners.get(spec.target) == record.name:
            owned.append(value)
        elif value.op == "get_attr":
            bodies.append(value)  # a control-flow body: travels with the region
        elif value_kind(value.meta.get("val")) is ValueKind.SYMBOLIC:
            sizes.append(value)
        else:
            runtime.append(value)

    # Every symbol in the region's shapes must be readable from a runtime input.
    local_sizes = symbol_sources(runtime)
    needed: set[sympy.Symbol] = set()
    for node in [*runtime, *ordered, *sizes]:
        needed |= _free_symbols(node.meta.get("val"))
    for symbol in sorted(needed - set(local_sizes), key=str):
        source = parent_sizes.get(symbol)
        if source is None:
            raise AssertionError(
                f"{record.name}: size {symbol} is not readable from any graph input"
            )
        if source[0] not in runtime:
            runtime.append(source[0])
        local_sizes = symbol_sources(runtime)

    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, object] = {}
    input_specs: list[InputSpec] = []
    state_dict: dict[str, torch.Tensor] = {}
    constants: dict[str, object] = {}
    owned_fqns = []
    for i, value in enumerate(owned):
        spec = specs_by_name[value.name]
        env[value] = _placeholder(graph, value)
        # Canonical names: the compiled region must not depend on which block it came from.
        name = constant_name(i)
        owned_fqns.append(spec.target)
        input_specs.append(
            InputSpec(
                spec.kind, TensorArgument(env[value].name), name, getattr(spec, "persistent", None)
            )
        )
        if spec.kind == InputKind.PARAMETER or (spec.kind == InputKind.BUFFER and spec.persistent):
            state_dict[name] = ctx.state_dict[spec.target]  # type: ignore[index]
        else:
            constants[name] = ctx.constants[spec.target]  # type: ignore[index]
    for value in runtime:
        env[value] = _placeholder(graph, value)
        input_specs.append(InputSpec(InputKind.USER_INPUT, TensorArgument(env[value].name), None))

    region_sizes = {sym: (env[node], dim) for sym, (node, dim) in local_sizes.items()}
    builder = SizeExprBuilder(graph, region_sizes)  # type: ignore[arg-type]
    for value in sizes:
        env[value] = builder.build(size_expr(value.meta["val"]))  # type: ignore[arg-type]
    holder = torch.nn.Module()
    for value in bodies:
        holder.add_module(value.target, getattr(parent, value.target))  # type: ignore[arg-type]
        env[value] = graph.get_attr(value.target)  # type: ignore[arg-type]
    for node in ordered:
        env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(tuple(env[n] for n in [*written, *outputs]))
    output_specs = [
        OutputSpec(
            OutputKind.USER_INPUT_MUTATION,
            TensorArgument(env[new].name),  # type: ignore[union-attr]
            env[old].name,  # type: ignore[union-attr]
        )
        for new, old in written.items()
    ] + [
        OutputSpec(OutputKind.USER_OUTPUT, TensorArgument(env[n].name), None)  # type: ignore[union-attr]
        for n in outputs
    ]

    example_inputs = tuple(example_value(v.meta["val"]) for v in runtime)
    in_spec = pytree.tree_flatten((example_inputs, {}))[1]
    out_spec = pytree.tree_flatten(tuple(range(len(outputs))))[1]
    symbols = (
        set().union(*(_free_symbols(v.meta.get("val")) for v in runtime)) if runtime else set()
    )
    root = torch.fx.GraphModule(holder, graph)
    record.program = ExportedProgram(
        root=root,
        graph=root.graph,
        graph_signature=ExportGraphSignature(input_specs, output_specs),
        state_dict=state_dict,
        range_constraints={s: r for s, r in ctx.range_constraints.items() if s in symbols},
        module_call_graph=[ModuleCallEntry("", ModuleCallSignature([], [], in_spec, out_spec))],
        example_inputs=(example_inputs, {}),
        constants=constants,
    )
    record.inputs = runtime
    record.outputs = outputs
    record.owned_state = owned_fqns
    record.example_inputs = example_inputs


def constant_name(index: int) -> str:
    """Name of a region's `index`-th own weight inside the region's program."""
    return f"weight_{index}"


def _placeholder(graph: torch.fx.Graph, value: torch.fx.Node) -> torch.fx.Node:
    node = graph.placeholder(value.name)
    node.meta = copy.copy(value.meta)
    node.meta.pop("fxdelegate_region", None)
    return node


def _free_symbols(val: object) -> set[sympy.Symbol]:
    if isinstance(val, torch.Tensor):
        out: set[sympy.Symbol] = set()
        for s in val.shape:
            if isinstance(s, torch.SymInt):
                out |= s.node.expr.free_symbols
        return out
    if isinstance(val, torch.SymInt):
        return set(val.node.expr.free_symbols)
    if isinstance(val, (tuple, list)):
        return set().union(*(_free_symbols(v) for v in val)) if val else set()
    return set()
