"""Give every parameter, buffer and lifted constant exactly one owner.

State read only by one region belongs to that region: it stops being a graph
input and is bound to the region's compiled code at load time (the tensor
stays stored once, in the program's state). State read by several regions,
by the executor, mutated, or returned stays with the executor and is passed
to each region that reads it: never silently duplicated.
"""

from __future__ import annotations

import torch
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from .context import EXECUTOR, get_context
from .tag_regions import REGION_TAG

_STATE_KINDS = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)


class AssignConstantOwnersPass(PassBase):
    def requires(self, graph_module: torch.fx.GraphModule) -> None:
        """The regions are tagged (tag_regions ran)."""
        if get_context(graph_module).partition_result is None:
            raise AssertionError("AssignConstantOwnersPass needs TagRegionsPass first")

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        ctx = get_context(graph_module)
        sig = ctx.signature
        mutated = {
            spec.target
            for spec in sig.output_specs
            if spec.kind in (OutputKind.BUFFER_MUTATION, OutputKind.PARAMETER_MUTATION)
        }
        placeholders = {n.name: n for n in graph_module.graph.nodes if n.op == "placeholder"}
        owners: dict[str, str] = {}
        for spec in sig.input_specs:
            if spec.target is None:
                continue
            if spec.kind not in _STATE_KINDS:
                owners[spec.target] = EXECUTOR
                continue
            node = placeholders[spec.arg.name]
            user_regions = {u.meta.get(REGION_TAG) for u in node.users}
            if spec.target in mutated or len(user_regions) != 1 or None in user_regions:
                owners[spec.target] = EXECUTOR
            else:
                owners[spec.target] = user_regions.pop()  # type: ignore[assignment]
        ctx.owners = owners
        owned: dict[str, list[str]] = {}
        for target, owner in owners.items():
            if owner != EXECUTOR:
                owned.setdefault(owner, []).append(target)
        for region in ctx.regions:
            region.owned_state = owned.get(region.name, [])
            region.owned_bytes = sum(_nbytes(_state_value(ctx, t)) for t in region.owned_state)
        return PassResult(graph_module, False)

    def ensures(self, graph_module: torch.fx.GraphModule) -> None:
        """Every parameter, buffer and constant has one owner: a region or the executor."""
        ctx = get_context(graph_module)
        names = {r.name for r in ctx.regions} | {EXECUTOR}
        for target, owner in (ctx.owners or {}).items():
            if owner not in names:
                raise AssertionError(f"{target} is owned by unknown region {owner}")


def _state_value(ctx, target: str) -> object:
    if target in ctx.state_dict:
        return ctx.state_dict[target]
    return ctx.constants.get(target)


def _nbytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return 0
