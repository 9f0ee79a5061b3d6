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

Regions with the same structure (:mod:`.region_structure`), such as the
blocks of a model that repeats one block, are outlined once: the others get
a copy of that program that shares its graph and binds their own weights.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable

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

from fxdelegate.partitioner.symbolic import size_expr, symbol_sources
from fxdelegate.runtime.backend import example_value, get_compiler
from fxdelegate.runtime.weight_update import rebound_program

from .context import LoweringContext, RegionRecord, get_context
from .region_boundary import (
    RegionBoundary,
    buffers_written_in_place,
    free_symbols,
    mutated_buffers,
    region_boundary,
)
from .region_structure import region_structure
from .symbolic_sizes import SizeExprBuilder


class OutlineRegionsPass(PassBase):
    def requires(self, graph_module: torch.fx.GraphModule) -> None:
        """The regions are tagged and every weight has its owner."""
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
        mutated = mutated_buffers(graph_module, ctx.signature) if in_place else {}
        outlined: dict[Hashable, RegionRecord] = {}  # structure -> the region outlined for it
        for record in ctx.regions:
            if mutated:
                record.in_place = buffers_written_in_place(graph_module, record, mutated)
            boundary = region_boundary(graph_module, record, ctx, specs_by_name, parent_sizes)
            structure = region_structure(boundary, specs_by_name)
            first = outlined.get(structure)
            if first is None:
                outlined[structure] = record
                record.structure = len(outlined) - 1
                outline_region(graph_module, record, boundary, ctx, specs_by_name)
            else:
                record.structure = first.structure
                rebind_region(record, first, boundary, ctx, specs_by_name)
        return PassResult(graph_module, False)

    def ensures(self, graph_module: torch.fx.GraphModule) -> None:
        """Every region has its own program, its inputs and outputs matching the parent's values."""
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


def outline_region(
    parent: torch.fx.GraphModule,
    record: RegionRecord,
    boundary: RegionBoundary,
    ctx: LoweringContext,
    specs_by_name: dict[str, InputSpec],
) -> None:
    """Build `record`'s program from the parent's nodes."""
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, object] = {}
    input_specs: list[InputSpec] = []
    for i, value in enumerate(boundary.owned):
        spec = specs_by_name[value.name]
        env[value] = _placeholder(graph, value)
        # Canonical names: the compiled region must not depend on which block it came from.
        input_specs.append(
            InputSpec(
                spec.kind,
                TensorArgument(env[value].name),  # type: ignore[union-attr]
                constant_name(i),
                getattr(spec, "persistent", None),
            )
        )
    for value in boundary.runtime:
        env[value] = _placeholder(graph, value)
        input_specs.append(InputSpec(InputKind.USER_INPUT, TensorArgument(env[value].name), None))  # type: ignore[union-attr]

    region_sizes = {sym: (env[node], dim) for sym, (node, dim) in boundary.local_sizes.items()}
    builder = SizeExprBuilder(graph, region_sizes)  # type: ignore[arg-type]
    for value in boundary.sizes:
        env[value] = builder.build(size_expr(value.meta["val"]))  # type: ignore[arg-type]
    holder = torch.nn.Module()
    for value in boundary.bodies:
        holder.add_module(value.target, getattr(parent, value.target))  # type: ignore[arg-type]
        env[value] = graph.get_attr(value.target)  # type: ignore[arg-type]
    for node in boundary.members:
        env[node] = graph.node_copy(node, lambda n: env[n])
    written, outputs = boundary.written, boundary.outputs
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

    example_inputs = tuple(example_value(v.meta["val"]) for v in boundary.runtime)
    in_spec = pytree.tree_flatten((example_inputs, {}))[1]
    out_spec = pytree.tree_flatten(tuple(range(len(outputs))))[1]
    symbols = set().union(*(free_symbols(v.meta.get("val")) for v in boundary.runtime))
    state_dict, constants = _own_weights(boundary, ctx, specs_by_name)
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
    _record_boundary(record, boundary, specs_by_name, example_inputs)


def rebind_region(
    record: RegionRecord,
    outlined: RegionRecord,
    boundary: RegionBoundary,
    ctx: LoweringContext,
    specs_by_name: dict[str, InputSpec],
) -> None:
    """Give `record` the program of `outlined` (same structure) with its own weights."""
    assert outlined.program is not None
    state_dict, constants = _own_weights(boundary, ctx, specs_by_name)
    record.program = rebound_program(outlined.program, state_dict, constants)
    _record_boundary(record, boundary, specs_by_name, outlined.example_inputs)


def _own_weights(
    boundary: RegionBoundary, ctx: LoweringContext, specs_by_name: dict[str, InputSpec]
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """The region's own state under canonical names: (state dict, constants)."""
    state_dict: dict[str, torch.Tensor] = {}
    constants: dict[str, object] = {}
    for i, value in enumerate(boundary.owned):
        spec = specs_by_name[value.name]
        if spec.kind == InputKind.PARAMETER or (spec.kind == InputKind.BUFFER and spec.persistent):
            state_dict[constant_name(i)] = ctx.state_dict[spec.target]  # type: ignore[index]
        else:
            constants[constant_name(i)] = ctx.constants[spec.target]  # type: ignore[index]
    return state_dict, constants


def _record_boundary(
    record: RegionRecord,
    boundary: RegionBoundary,
    specs_by_name: dict[str, InputSpec],
    example_inputs: tuple,
) -> None:
    record.inputs = boundary.runtime
    record.outputs = boundary.outputs
    record.owned_state = [specs_by_name[v.name].target for v in boundary.owned]  # type: ignore[misc]
    record.example_inputs = example_inputs


def constant_name(index: int) -> str:
    """Name of a region's `index`-th own weight inside the region's program."""
    return f"weight_{index}"


def _placeholder(graph: torch.fx.Graph, value: torch.fx.Node) -> torch.fx.Node:
    node = graph.placeholder(value.name)
    node.meta = copy.copy(value.meta)
    node.meta.pop("fxdelegate_region", None)
    return node
