"""Checking the program right after each user pass, and recording how each ran.

The invariants and their order are in :mod:`.program_invariants`; the output
check runs the graph through :mod:`.program_outputs`. A pass that returns
``PassResult(modified=False)`` is trusted: nothing is checked.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.export.graph_signature import InputKind

from fxdelegate.errors import PassInvariantError, UnsupportedProgramError
from fxdelegate.partitioner import describe_target

from ..context import LoweringContext, get_context
from .program_invariants import (
    STATE_KINDS,
    GraphFacts,
    fill_missing_values,
    region_problems,
    returned_values,
    signature_problems,
    value_of,
    weight_problems,
    with_output_names,
    writes_in_place,
)
from .program_outputs import compare_values, graph_attributes, run_graph, user_input_values


@dataclass
class UserPassRun:
    """One user pass as it ran in a lowering, for the report."""

    name: str
    position: str  # "before tag_regions"
    modified: bool
    checks: tuple[str, ...]  # the invariants checked after it (none when unmodified)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "position": self.position,
            "modified": self.modified,
            "checks": list(self.checks),
        }


class UserPassChecker:
    """Checks the program after each user pass of one lowering; keeps the report's records."""

    def __init__(
        self,
        example_inputs: tuple[tuple[Any, ...], dict[str, Any]] | None,
        in_spec: pytree.TreeSpec | None,
        *,
        check_outputs: bool,
    ) -> None:
        self.example_inputs = example_inputs
        self.in_spec = in_spec
        self.check_outputs = check_outputs
        self.runs: list[UserPassRun] = []
        self._user_values: list[Any] | None = None
        # (printed graph, its outputs) from the last check: the next user pass
        # starts from them when nothing changed the graph in between.
        self._known: tuple[str, list[Any]] | None = None

    @property
    def invariants(self) -> tuple[str, ...]:
        checks = ("lint", "values", "regions", "weights", "signature")
        return checks + (("outputs",) if self.check_outputs else ())

    def before(self, graph_module: torch.fx.GraphModule) -> GraphFacts:
        ctx = get_context(graph_module)
        graph = graph_module.graph
        placeholders = {n.name: n for n in graph.nodes if n.op == "placeholder"}
        weight_users = {
            s.arg.name: len(placeholders[s.arg.name].users)
            for s in ctx.signature.input_specs
            if s.kind in STATE_KINDS and s.arg.name in placeholders
        }
        outlined = {
            r.name: [(n, n.format_node()) for n in r.partition.nodes]
            for r in ctx.regions
            if r.program is not None and r.delegate_node is None
        }
        without_values = {n for n in graph.nodes if n.op == "call_function" and "val" not in n.meta}
        facts = GraphFacts(
            weight_users,
            [value_of(v) for v in returned_values(graph)],
            outlined,
            without_values,
            {n for n in graph.nodes if writes_in_place(n)},
        )
        if self.check_outputs:
            if self._known is not None and self._known[0] == _printed(graph):
                facts.reference_outputs = self._known[1]
            else:  # copied now, run only if the pass changes the graph
                facts.graph_copy = _copy_graph(graph)
                facts.attributes = graph_attributes(graph_module, graph)
        return facts

    def after(
        self, graph_module: torch.fx.GraphModule, facts: GraphFacts, pass_name: str, position: str
    ) -> None:
        """Raise :class:`PassInvariantError` naming `pass_name` for the first broken
        invariant (listing every problem found); on success, bring the signature's
        output names up to date with the values the graph now returns."""
        fail = functools.partial(_fail, pass_name, position)
        ctx = get_context(graph_module)
        graph = graph_module.graph
        try:
            graph.lint()
        except Exception as exc:
            fail([f"lint: {exc}"])
        writers = [n for n in graph.nodes if writes_in_place(n) and n not in facts.in_place]
        if writers:
            fail(
                [
                    f"lint: node {n.name} calls {describe_target(n.target)}, which writes in "
                    "place; the graph is functional (use the out-of-place op)"
                    for n in writers
                ]
            )
        problems = [f"values: {p}" for p in fill_missing_values(graph, facts.without_values)]
        problems += [f"regions: {p}" for p in region_problems(graph, ctx, facts)]
        problems += [f"weights: {p}" for p in weight_problems(graph_module, ctx, facts)]
        problems += [f"signature: {p}" for p in signature_problems(graph, ctx, facts)]
        if problems:
            fail(problems)
        ctx.signature = with_output_names(ctx.signature, returned_values(graph))
        if not self.check_outputs:
            return
        values = self._values(ctx, graph)
        expected = facts.reference_outputs
        if expected is None:
            assert facts.graph_copy is not None
            try:
                expected = run_graph(graph_module, facts.graph_copy, facts.attributes, ctx, values)
            except Exception as exc:
                raise UnsupportedProgramError(
                    f"could not run the program on its example inputs to check the outputs of "
                    f"pass {pass_name!r} ({type(exc).__name__}: {exc}); "
                    "default_pipeline(check_outputs=False) turns this check off"
                ) from exc
        try:
            got = run_graph(graph_module, graph, {}, ctx, values)
        except Exception as exc:
            fail([f"outputs: the graph no longer runs on the example inputs: {exc}"])
        names = [getattr(v, "name", str(v)) for v in returned_values(graph)]
        mismatches = compare_values(
            expected, got, names=[f"output {i} ({n})" for i, n in enumerate(names)]
        )
        if mismatches:
            fail([f"outputs: {p} (on the program's example inputs)" for p in mismatches])
        self._known = (_printed(graph), got)

    def _values(self, ctx: LoweringContext, graph: torch.fx.Graph) -> list[Any]:
        if self._user_values is None:
            users = {
                s.arg.name for s in ctx.signature.input_specs if s.kind == InputKind.USER_INPUT
            }
            placeholders = [n for n in graph.nodes if n.op == "placeholder" and n.name in users]
            self._user_values = user_input_values(self.example_inputs, self.in_spec, placeholders)
        return self._user_values


def program_in_spec(module_call_graph: list[Any]) -> pytree.TreeSpec | None:
    """The pytree spec of the program's (args, kwargs), as torch.export recorded it."""
    for entry in module_call_graph:
        if entry.fqn == "" and entry.signature is not None:
            return entry.signature.in_spec
    return None


def _fail(pass_name: str, position: str, problems: list[str]) -> None:
    invariant = problems[0].split(":", 1)[0]
    shown = "\n  ".join(problems[:10]) + ("\n  ..." if len(problems) > 10 else "")
    raise PassInvariantError(
        f"pass {pass_name!r} ({position}) broke the {invariant!r} invariant:\n  {shown}",
        pass_name=pass_name,
        invariant=invariant,
        problems=problems,
    )


def _copy_graph(graph: torch.fx.Graph) -> torch.fx.Graph:
    copied = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    copied.output(copied.graph_copy(graph, env))
    return copied


def _printed(graph: torch.fx.Graph) -> str:
    return "\n".join(n.format_node() for n in graph.nodes)
