"""Check the delegated parent graph before it becomes an ExportedProgram."""

from __future__ import annotations

import torch
from torch.export.graph_signature import InputKind
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from fxdelegate.runtime.lowered_module import LoweredBackendModule

from .context import get_context
from .tag_regions import existing_delegates


class VerifyDelegatedGraphPass(PassBase):
    """Graph lint, signature consistency, one owner per piece of state, no
    orphan constants, every delegate backed by a compiled region."""

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        ctx = get_context(graph_module)
        graph = graph_module.graph
        graph.lint()
        problems: list[str] = []

        placeholders = [n.name for n in graph.nodes if n.op == "placeholder"]
        spec_names = [s.arg.name for s in ctx.signature.input_specs]
        if placeholders != spec_names:
            problems.append(
                f"placeholders {placeholders} differ from signature inputs {spec_names}"
            )
        returned = graph.output_node().args[0]
        returned_names = [getattr(v, "name", None) for v in returned]
        for spec, name in zip(ctx.signature.output_specs, returned_names):
            if name is not None and getattr(spec.arg, "name", name) != name:
                problems.append(f"output spec {spec.arg} does not match returned value {name}")
        if len(ctx.signature.output_specs) != len(returned):
            problems.append("output spec count differs from returned values")

        # Every piece of state is read by exactly one owner: a graph input of the
        # executor, or one region that binds it at load time.
        read_by: dict[str, str] = {}
        for spec in ctx.signature.input_specs:
            if spec.kind != InputKind.USER_INPUT and spec.target is not None:
                read_by[spec.target] = "the executor"
        bound = [(r.name, r.owned_state) for r in ctx.regions]
        lowered_now = {f"{r.name}-{ctx.backend_id}" for r in ctx.regions}
        bound += [
            (m.key, [fqn for _, fqn in m.artifact.constant_bindings])
            for m in existing_delegates(graph_module)
            if m.key not in lowered_now
        ]
        for owner, fqns in bound:
            for fqn in fqns:
                if fqn in read_by:
                    problems.append(f"{fqn!r} is owned by both {read_by[fqn]} and {owner}")
                read_by[fqn] = owner
        for key in list(ctx.state_dict) + list(ctx.constants):
            if key not in read_by:
                problems.append(f"orphan state {key!r}: stored but nothing reads it")
        for fqn, owner in read_by.items():
            if fqn not in ctx.state_dict and fqn not in ctx.constants:
                problems.append(f"{owner} reads {fqn!r}, which the program does not store")

        delegate = torch.ops.higher_order.executorch_call_delegate
        calls = [n for n in graph.nodes if n.op == "call_function" and n.target is delegate]
        seen = set()
        for call in calls:
            module = getattr(graph_module, call.args[0].target, None)  # type: ignore[union-attr]
            if not isinstance(module, LoweredBackendModule) or module.artifact is None:
                # Nodes delegated by an earlier lowering keep their own runners.
                continue
            if module.key in seen:
                problems.append(f"two delegate nodes share the key {module.key}")
            seen.add(module.key)
        if problems:
            raise AssertionError("delegated graph failed verification:\n  " + "\n  ".join(problems))
        return PassResult(graph_module, False)
