"""Bring a user's ExportedProgram into the form the passes expect.

The passes need a functional ATen graph (no in-place ops; mutations appear
as extra outputs in the signature) that they may modify freely. torch.export
returns the non-functional training IR by default, which is functionalized
here with no decompositions, so ops keep the names the user sees (and can
exclude). An already functional program is copied rather than re-traced.
Dead pure computations are dropped.
"""

from __future__ import annotations

import copy

import torch
from torch._ops import OpOverload
from torch.export import ExportedProgram

from fxdelegate.errors import UnsupportedProgramError


def _is_functional(ep: ExportedProgram) -> bool:
    if any(getattr(v, "dialect", "ATEN") == "TRAINING" for v in ep.verifiers):
        return False
    for node in ep.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, OpOverload):
            if node.target._schema.is_mutable:
                return False
    return True


def prepare_program(ep: ExportedProgram) -> ExportedProgram:
    """A functional copy of `ep` that the lowering passes may transform in place."""
    if not isinstance(ep, ExportedProgram):
        raise UnsupportedProgramError(
            f"fxdelegate.lower expects a torch.export.ExportedProgram, got {type(ep).__name__}; "
            "call torch.export.export(model, args) first"
        )
    if _is_functional(ep):
        prepared = _copy_program(ep)
    else:
        try:
            prepared = ep.run_decompositions(decomp_table={})
        except Exception as exc:
            raise UnsupportedProgramError(f"could not functionalize the program: {exc}") from exc
    graph = prepared.graph_module.graph
    graph.eliminate_dead_code()
    prepared.graph_module.recompile()
    return prepared


def _copy_program(ep: ExportedProgram) -> ExportedProgram:
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    result = graph.graph_copy(ep.graph, env)
    graph.output(result)
    # The copy renames nodes whose names shadow Python builtins (input -> input_1);
    # the signature refers to the original names, so keep them (as torch.export does).
    for old, new in env.items():
        if new.name != old.name:
            new.name = old.name
            if new.op == "placeholder":
                new.target = old.name
    gm = torch.fx.GraphModule(ep.graph_module, graph)
    return ExportedProgram(
        root=gm,
        graph=gm.graph,
        graph_signature=copy.deepcopy(ep.graph_signature),
        state_dict=dict(ep.state_dict),
        range_constraints=dict(ep.range_constraints),
        module_call_graph=copy.deepcopy(ep.module_call_graph),
        example_inputs=ep.example_inputs,
        constants=dict(ep.constants),
        verifiers=list(ep.verifiers),
    )
