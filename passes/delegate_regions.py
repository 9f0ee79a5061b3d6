"""Replace each region in the parent graph with one delegate call.

Each region becomes ``executorch_call_delegate(lowered_module, *flat_inputs)``
followed by one ``getitem`` per output; its nodes and the state it owns leave
the parent graph and signature.
"""

from __future__ import annotations

import operator

import torch
from torch.export.graph_signature import (
    ExportGraphSignature,
    OutputKind,
    OutputSpec,
    SymIntArgument,
    TensorArgument,
)
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from fxdelegate.partitioner.symbolic import is_pure_size_op
from fxdelegate.runtime.lowered_module import LoweredBackendModule

from .context import get_context
from .graph_order import stable_topological_sort
from .tag_regions import REGION_TAG


class DelegateRegionsPass(PassBase):
    def requires(self, graph_module: torch.fx.GraphModule) -> None:
        """Every region is compiled."""
        for record in get_context(graph_module).regions:
            if record.artifact is None:
                raise AssertionError("DelegateRegionsPass needs LowerRegionsPass first")

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        ctx = get_context(graph_module)
        if not ctx.regions:
            return PassResult(graph_module, False)
        graph = graph_module.graph
        _drop_in_place_write_backs(graph, ctx)
        delegate = torch.ops.higher_order.executorch_call_delegate
        # Outputs of regions already replaced, read by later regions.
        replaced: dict[torch.fx.Node, torch.fx.Node] = {}
        for record in ctx.regions:
            lowered = LoweredBackendModule(
                record.program,  # type: ignore[arg-type]
                ctx.backend_id,
                module_name=record.name,
                artifact=record.artifact,
                compile_specs=[f"{k}={v}" for k, v in sorted(ctx.compile_options.items())],
            )
            attr = f"lowered_{record.name}"
            graph_module.add_submodule(attr, lowered)
            members = set(record.partition.nodes)
            with graph.inserting_before(record.partition.nodes[0]):
                module_node = graph.get_attr(attr)
                record.inputs = [replaced.get(n, n) for n in record.inputs]
                call = graph.call_function(delegate, (module_node, *record.inputs))
                call.meta["val"] = tuple(n.meta["val"] for n in record.outputs)
                for i, out in enumerate(record.outputs):
                    item = graph.call_function(operator.getitem, (call, i))
                    item.meta["val"] = out.meta["val"]
                    for key in ("stack_trace", "nn_module_stack"):
                        if key in out.meta:
                            item.meta[key] = out.meta[key]
                    out.replace_all_uses_with(
                        item, delete_user_cb=lambda user, members=members: user not in members
                    )
                    replaced[out] = item
            record.delegate_node = call
            for node in reversed(record.partition.nodes):
                graph.erase_node(node)

        # A region's own weights stop being graph inputs; they stay in the program's
        # state (stored once) and are bound to the region when it is loaded.
        bound = {fqn for record in ctx.regions for fqn in record.owned_state}
        kept_inputs = []
        for node, spec in zip(
            [n for n in graph.nodes if n.op == "placeholder"], ctx.signature.input_specs
        ):
            if spec.target in bound:
                if node.users:
                    raise AssertionError(
                        f"{spec.target} is bound to a region but {node.name} is still used"
                    )
                graph.erase_node(node)
            else:
                kept_inputs.append(spec)
        # Size computations and control-flow bodies whose only users were region
        # nodes are dead now.
        for node in reversed(list(graph.nodes)):
            if node.users:
                continue
            if (node.op == "call_function" and is_pure_size_op(node)) or (
                node.op == "get_attr"
                and isinstance(getattr(graph_module, node.target, None), torch.fx.GraphModule)  # type: ignore[arg-type]
            ):
                graph.erase_node(node)
        delete_unused_submodules(graph_module)
        stable_topological_sort(graph)
        output_node = graph.output_node()
        ctx.signature = ExportGraphSignature(
            kept_inputs, _renamed_outputs(ctx.signature.output_specs, output_node.args[0])
        )
        graph_module.recompile()
        return PassResult(graph_module, True)

    def ensures(self, graph_module: torch.fx.GraphModule) -> None:
        """No region node is left in the parent graph."""
        for node in graph_module.graph.nodes:
            if node.op == "call_function" and REGION_TAG in node.meta:
                raise AssertionError(f"region node {node.name} is still in the parent graph")


def _drop_in_place_write_backs(graph: torch.fx.Graph, ctx) -> None:
    """Buffers a region writes itself are no longer returned (and copied back) by the parent."""
    written = {fqn for record in ctx.regions for fqn, _, _ in record.in_place}
    if not written:
        return
    output = graph.output_node()
    keep = [
        (spec, value)
        for spec, value in zip(ctx.signature.output_specs, output.args[0])
        if not (spec.kind == OutputKind.BUFFER_MUTATION and spec.target in written)
    ]
    output.args = (tuple(value for _, value in keep),)
    ctx.signature = ExportGraphSignature(ctx.signature.input_specs, [spec for spec, _ in keep])


def _renamed_outputs(specs: list[OutputSpec], returned: tuple) -> list[OutputSpec]:
    renamed = []
    for spec, value in zip(specs, returned):
        arg = spec.arg
        if isinstance(value, torch.fx.Node):
            if isinstance(arg, TensorArgument):
                arg = TensorArgument(value.name)
            elif isinstance(arg, SymIntArgument):
                arg = SymIntArgument(value.name)
        renamed.append(OutputSpec(spec.kind, arg, spec.target))
    return renamed


def delete_unused_submodules(graph_module: torch.fx.GraphModule) -> None:
    """What ``GraphModule.delete_all_unused_submodules`` does, in linear time.

    torch's version looks every submodule up in a list of the used names, which
    is quadratic in the number of delegate calls (each has a lowered module).
    """
    used: set[str] = set()
    for node in graph_module.graph.nodes:
        if node.op not in ("call_module", "get_attr") or not isinstance(node.target, str):
            continue
        parts = node.target.split(".")
        used.update(".".join(parts[: i + 1]) for i in range(len(parts)))  # and its parents
        if node.op == "call_module":
            try:
                called = graph_module.get_submodule(node.target)
            except AttributeError:
                continue
            used.update(f"{node.target}.{name}" for name, _ in called.named_modules() if name)
    for name in [name for name, _ in graph_module.named_modules() if name and name not in used]:
        graph_module.delete_submodule(name)
