"""Bring a user's ExportedProgram into the form the passes expect.

The passes need a functional ATen graph (no in-place ops; mutations appear
as extra outputs in the signature) that they may modify freely. This is the
one place where a program may be re-traced, and only when it must be:

* an already functional program is copied;
* torch.export's training IR is made functional by inlining its grad-mode and
  disabled-autocast wrappers (:mod:`.inline_mode_wrappers`) and rewriting its
  in-place ops where nothing aliases what they write (:mod:`.functionalize_in_place`):
  no re-trace, so every op stays as the user's code wrote it (a re-trace can
  drop a ``contiguous`` that a later ``view`` needs in eager);
* anything else is re-traced with ``run_decompositions({})``, with no
  decompositions, so ops keep the names the user sees (and can exclude).

Dropout in eval mode (``train=False``) returns its input in eager; it is
replaced by that input, so it does not cut a region in two (a re-trace used
to drop it too). Dead pure computations are dropped.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch._export.verifier import Verifier
from torch._ops import OpOverload
from torch.export import ExportedProgram
from torch.export.exported_program import ModuleCallEntry
from torch.export.graph_signature import ExportGraphSignature, InputSpec, OutputSpec
from torch.fx._lazy_graph_module import _LazyGraphModule

from fxdelegate.errors import UnsupportedProgramError

from .functionalize_in_place import functionalize_in_place
from .inline_mode_wrappers import inline_mode_wrappers

log = logging.getLogger("fxdelegate.passes")


@dataclass
class PreparedProgram:
    """The parts of an ExportedProgram the passes transform, not yet wrapped as one.

    Wrapping (:meth:`to_exported_program`) regenerates the graph's Python code
    and re-verifies it, which costs time linear in the graph; the pipeline does
    it once, at the end, instead of after every step. `graph_module` is lazy:
    its ``recompile()`` only marks the code stale (torch's PassManager calls it
    after every pass), and the code is generated if something reads it.
    """

    graph_module: torch.fx.GraphModule
    graph_signature: ExportGraphSignature
    state_dict: dict[str, Any]
    constants: dict[str, Any]
    range_constraints: dict[Any, Any]
    module_call_graph: list[ModuleCallEntry]
    example_inputs: Any
    verifiers: list[type[Verifier]]

    def to_exported_program(self) -> ExportedProgram:
        return ExportedProgram(
            root=self.graph_module,
            graph=self.graph_module.graph,
            graph_signature=self.graph_signature,
            state_dict=self.state_dict,
            range_constraints=self.range_constraints,
            module_call_graph=self.module_call_graph,
            example_inputs=self.example_inputs,
            constants=self.constants,
            verifiers=self.verifiers,
        )


def prepare_program(ep: ExportedProgram) -> ExportedProgram:
    """A functional copy of `ep` that the lowering passes may transform in place."""
    return prepare(ep).to_exported_program()


def prepare(ep: ExportedProgram) -> PreparedProgram:
    """Like :func:`prepare_program`, without wrapping the result as an ExportedProgram."""
    if not isinstance(ep, ExportedProgram):
        raise UnsupportedProgramError(
            f"fxdelegate.lower expects a torch.export.ExportedProgram, got {type(ep).__name__}; "
            "call torch.export.export(model, args) first"
        )
    prepared = _copy_program(ep)
    if not _is_functional(ep):
        prepared = _functionalized(ep, prepared)
    graph = prepared.graph_module.graph
    _drop_eval_dropout(graph, prepared.graph_signature)
    graph.eliminate_dead_code()
    prepared.graph_module.recompile()
    return prepared


def _is_functional(ep: ExportedProgram) -> bool:
    if any(getattr(v, "dialect", "ATEN") == "TRAINING" for v in ep.verifiers):
        return False
    return not _has_mutable_ops(ep.graph)


def _has_mutable_ops(graph: torch.fx.Graph) -> bool:
    return any(
        node.op == "call_function"
        and isinstance(node.target, OpOverload)
        and node.target._schema.is_mutable
        for node in graph.nodes
    )


def _functionalized(ep: ExportedProgram, copied: PreparedProgram) -> PreparedProgram:
    """`copied` (rewritten in place) made functional, or a re-trace of `ep`."""
    inlined = inline_mode_wrappers(copied.graph_module)
    signature = functionalize_in_place(copied.graph_module, copied.graph_signature)
    if signature is not None:
        copied.graph_signature = signature
        copied.verifiers = [Verifier]  # functional ATen from now on
        if not inlined and not _has_mutable_ops(ep.graph):
            # Nothing was rewritten: the graph is the user's, which torch.export
            # verified, and without in-place ops the ATen verifier asks nothing more.
            return copied
        try:
            verified = copied.to_exported_program()  # the ATen verifier checks the rewrite
        except Exception as exc:
            log.info("in-place functionalization gave an invalid program (%s); re-tracing", exc)
        else:
            # The program took the graph over (a graph has one owning module): take it back.
            copied.graph_module = _LazyGraphModule(verified.graph_module, verified.graph)
            return copied
    log.info("re-tracing the program to functionalize it (its mutations need it)")
    try:
        retraced = ep.run_decompositions(decomp_table={})
    except Exception as exc:
        raise UnsupportedProgramError(f"could not functionalize the program: {exc}") from exc
    return _copy_program(retraced)


_DROPOUTS = {
    "aten::dropout",
    "aten::feature_dropout",
    "aten::alpha_dropout",
    "aten::feature_alpha_dropout",
}


def _drop_eval_dropout(graph: torch.fx.Graph, signature: ExportGraphSignature) -> None:
    for node in list(graph.nodes):
        if not (isinstance(node.target, OpOverload) and node.target._schema.name in _DROPOUTS):
            continue
        train = node.kwargs.get("train", node.args[2] if len(node.args) > 2 else None)
        if train is False:  # eager returns the input itself
            source = node.args[0]
            node.replace_all_uses_with(source)
            graph.erase_node(node)
            for spec in signature.output_specs:  # the program may return it as it is
                if getattr(spec.arg, "name", None) == node.name:
                    spec.arg.name = source.name


def _copy_program(ep: ExportedProgram) -> PreparedProgram:
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
    return PreparedProgram(
        graph_module=_LazyGraphModule(ep.graph_module, graph),
        graph_signature=_copy_signature(ep.graph_signature),
        state_dict=dict(ep.state_dict),
        constants=dict(ep.constants),
        range_constraints=dict(ep.range_constraints),
        module_call_graph=copy.deepcopy(ep.module_call_graph),
        example_inputs=ep.example_inputs,
        verifiers=list(ep.verifiers),
    )


def _copy_signature(signature: ExportGraphSignature) -> ExportGraphSignature:
    """New specs and arguments (graph edits rename arguments in place), same targets.
    A shallow copy per spec: ``copy.deepcopy`` costs several times the graph copy."""
    return ExportGraphSignature(
        [
            InputSpec(s.kind, copy.copy(s.arg), s.target, s.persistent)
            for s in signature.input_specs
        ],
        [OutputSpec(s.kind, copy.copy(s.arg), s.target) for s in signature.output_specs],
    )
