"""The invariants a user pass must keep: each check compares the graph with facts
taken before the pass ran (:class:`GraphFacts`) and returns the problems it finds.

In order (the first one broken is the error's ``invariant``):

* ``lint``: the graph is well formed (``Graph.lint``) and still functional (no
  new op writes in place).
* ``values``: every node has a ``meta["val"]``; a node the pass made without one
  gets it here, by running its op on the fake values of its inputs.
* ``regions``: once tag_regions ran, each region keeps exactly its nodes and
  stays convex; once outlined, its nodes do not change; once delegated, its
  delegate call stays.
* ``weights``: every parameter, buffer and constant keeps exactly one owner: none
  is dropped (its input gone, or no longer read), none read outside the region
  that owns it, none copied into a graph attribute.
* ``signature``: the graph's inputs are the program's, in order; it returns as
  many values as the signature lists, each of the same type, shape and dtype.
* ``outputs``: run on the program's example inputs, the graph gives what it gave
  before the pass (optional: ``PassPipeline.check_outputs``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._guards import detect_fake_mode
from torch._ops import OpOverload
from torch.export.graph_signature import (
    ExportGraphSignature,
    InputKind,
    OutputSpec,
    SymIntArgument,
    TensorArgument,
)

from fxdelegate.partitioner import describe_target

from ..context import EXECUTOR, LoweringContext
from ..tag_regions import REGION_TAG

STATE_KINDS = (
    InputKind.PARAMETER,
    InputKind.BUFFER,
    InputKind.CONSTANT_TENSOR,
    InputKind.CUSTOM_OBJ,
)


@dataclass
class GraphFacts:
    """What the checks compare against, taken before the pass runs."""

    weight_users: dict[str, int]  # state input placeholder -> how many nodes read it
    output_values: list[Any]  # meta["val"] of each returned value
    # Nodes of outlined regions with their printed form, to see a change.
    outlined: dict[str, list[tuple[torch.fx.Node, str]]]
    # call_function nodes that had no meta["val"], or wrote in place, already.
    without_values: set[torch.fx.Node]
    in_place: set[torch.fx.Node]
    # For the output check: the outputs themselves when already known, else a copy
    # of the graph (and what its get_attr nodes read) to run if the pass changes it.
    reference_outputs: list[Any] | None = None
    graph_copy: torch.fx.Graph | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


def fill_missing_values(
    graph: torch.fx.Graph,
    exempt: Container[torch.fx.Node] = (),
) -> list[str]:
    """Give each call_function node without a ``meta["val"]`` (but those in `exempt`)
    one, computed from its inputs' fake values; returns the nodes where that failed."""
    nodes = list(graph.nodes)
    missing = [
        n for n in nodes if n.op == "call_function" and "val" not in n.meta and n not in exempt
    ]
    if not missing:
        return []
    fake_mode = detect_fake_mode([n.meta.get("val") for n in nodes if n.op == "placeholder"])
    problems = []
    for node in missing:
        absent = [
            a.name for a in node.all_input_nodes if a.op != "get_attr" and "val" not in a.meta
        ]
        if absent:
            problems.append(f"{node.name} has no meta['val'], nor do its inputs {absent}")
            continue
        args, kwargs = torch.fx.map_arg(
            (node.args, node.kwargs), lambda a: a.meta["val"] if a.op != "get_attr" else a
        )
        try:
            with fake_mode if fake_mode is not None else contextlib.nullcontext():
                node.meta["val"] = node.target(*args, **kwargs)  # type: ignore[operator]
        except Exception as exc:
            problems.append(
                f"{node.name} ({describe_target(node.target)}) has no meta['val'], and running it "
                f"on its inputs' fake values failed ({type(exc).__name__}: {first_line(exc)}); "
                "give the op a fake implementation (torch.library.register_fake) or set the "
                "node's meta['val']"
            )
    return problems


def region_problems(graph: torch.fx.Graph, ctx: LoweringContext, facts: GraphFacts) -> list[str]:
    if ctx.partition_result is None:
        return []  # before tag_regions: no regions yet
    nodes = set(graph.nodes)
    if any(r.delegate_node is not None for r in ctx.regions):
        return [
            f"the delegate call of {r.name} ({r.delegate_node.name}) was removed"  # type: ignore[union-attr]
            for r in ctx.regions
            if r.delegate_node not in nodes
        ]
    problems = []
    members = {r.name: set(r.partition.nodes) for r in ctx.regions}
    for record in ctx.regions:
        gone = [n.name for n in record.partition.nodes if n not in nodes]
        if gone:
            problems.append(
                f"{record.name} lost its node(s) {gone}; a pass that removes nodes of a region "
                "must run before tag_regions"
            )
    for node in graph.nodes:
        tag = node.meta.get(REGION_TAG)
        if tag is not None and node not in members.get(tag, ()):
            problems.append(
                f"node {node.name} is tagged {tag!r} but is not one of its nodes; a pass that "
                "adds nodes to a region must run before tag_regions"
            )
    for record in ctx.regions:
        region = members[record.name]
        untagged = [n.name for n in record.partition.nodes if n.meta.get(REGION_TAG) != record.name]
        if untagged:
            problems.append(f"node(s) {untagged} of {record.name} lost their region tag")
        if not region <= nodes:
            continue
        outside = _path_outside(region)
        if outside is not None:
            problems.append(
                f"{record.name} is no longer convex: node {outside.name} "
                f"({describe_target(outside.target)}) lies outside it, on a path from the "
                "region back into it"
            )
    for name, printed in facts.outlined.items():
        changed = [n.name for n, text in printed if n in nodes and n.format_node() != text]
        if changed:
            problems.append(
                f"node(s) {changed} of {name} changed after the region was outlined (its "
                "compiled code would not see the change); rewrite them before tag_regions"
            )
    return problems


def _path_outside(region: set[torch.fx.Node]) -> torch.fx.Node | None:
    """A node outside `region` on a path between two of its nodes, or None if convex."""
    order = {}
    graph = next(iter(region)).graph
    for i, node in enumerate(graph.nodes):
        order[node] = i
    last = max(order[n] for n in region)
    frontier = [u for n in region for u in n.users if u not in region]
    seen: set[torch.fx.Node] = set()
    while frontier:
        node = frontier.pop()
        if node in seen or order[node] > last:
            continue
        seen.add(node)
        for user in node.users:
            if user in region:
                return node
            frontier.append(user)
    return None


def weight_problems(
    graph_module: torch.fx.GraphModule, ctx: LoweringContext, facts: GraphFacts
) -> list[str]:
    graph = graph_module.graph
    placeholders = {n.name: n for n in graph.nodes if n.op == "placeholder"}
    regions = {r.name for r in ctx.regions}
    before_delegation = not any(r.delegate_node is not None for r in ctx.regions)
    problems = []
    for spec in ctx.signature.input_specs:
        if spec.kind not in STATE_KINDS:
            continue
        name, kind = spec.arg.name, spec.kind.name.lower().replace("_", " ")
        node = placeholders.get(name)
        if node is None:
            problems.append(
                f"{kind} {spec.target!r} was dropped: its input {name} is no longer in the graph"
            )
            continue
        if facts.weight_users.get(name) and not node.users:
            problems.append(
                f"{kind} {spec.target!r} was dropped: no node reads its input {name} any more"
            )
        owner = (ctx.owners or {}).get(spec.target)  # type: ignore[arg-type]
        if before_delegation and owner not in (None, EXECUTOR) and owner in regions:
            strangers = [u.name for u in node.users if u.meta.get(REGION_TAG) != owner]
            if strangers:
                problems.append(
                    f"{kind} {spec.target!r} belongs to {owner} (bound into its compiled code), "
                    f"but {strangers} outside that region now read it: it would be owned twice"
                )
    stored = {
        _storage(t): fqn
        for fqn, t in {**ctx.constants, **ctx.state_dict}.items()
        if isinstance(t, torch.Tensor) and t.numel()
    }
    for node in graph.nodes:
        if node.op != "get_attr":
            continue
        value = _attribute(graph_module, node.target)  # type: ignore[arg-type]
        if not isinstance(value, torch.Tensor):
            continue
        fqn = stored.get(_storage(value))
        if fqn is not None:
            problems.append(
                f"{fqn!r} is owned twice: graph attribute {node.target!r} holds it too; "
                "read the program's input instead"
            )
        else:
            problems.append(
                f"graph attribute {node.target!r} holds a tensor the program does not own; "
                "a weight must be a program input (parameter, buffer or constant)"
            )
    return problems


def signature_problems(graph: torch.fx.Graph, ctx: LoweringContext, facts: GraphFacts) -> list[str]:
    problems = []
    inputs = [n.name for n in graph.nodes if n.op == "placeholder"]
    expected = [getattr(s.arg, "name", None) for s in ctx.signature.input_specs]
    if inputs != expected:
        added = [n for n in inputs if n not in expected]
        removed = [n for n in expected if n not in inputs]
        detail = f"added {added}" if added else ""
        detail += ("; " if added and removed else "") + (f"removed {removed}" if removed else "")
        problems.append(
            f"the graph's inputs no longer match the program's ({detail or 'reordered'}); "
            "a pass may not add, remove or reorder inputs"
        )
    returned = returned_values(graph)
    specs = ctx.signature.output_specs
    if len(returned) != len(specs):
        problems.append(
            f"the graph returns {len(returned)} values, the program's signature {len(specs)}; "
            "a pass may not add or remove outputs"
        )
        return problems
    for i, (spec, value, was) in enumerate(zip(specs, returned, facts.output_values)):
        if isinstance(value, torch.fx.Node) and "val" not in value.meta:
            continue  # the values check reported it
        now = value_of(value)
        if was is not None and _describe_value(was) != _describe_value(now):
            problems.append(
                f"output {i} ({spec.kind.name.lower()}) was {_describe_value(was)} and is now "
                f"{_describe_value(now)}"
            )
    return problems


def writes_in_place(node: torch.fx.Node) -> bool:
    return isinstance(node.target, OpOverload) and node.target._schema.is_mutable


def returned_values(graph: torch.fx.Graph) -> list[Any]:
    values = graph.output_node().args[0]
    return list(values) if isinstance(values, (tuple, list)) else [values]


def value_of(value: Any) -> Any:
    return value.meta.get("val") if isinstance(value, torch.fx.Node) else value


def _describe_value(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        shape = ", ".join(str(d) for d in value.shape)
        return f"{str(value.dtype).removeprefix('torch.')}[{shape}] on {value.device}"
    if isinstance(value, (torch.SymInt, int)) and not isinstance(value, bool):
        return "an int"
    return type(value).__name__


def with_output_names(signature: ExportGraphSignature, returned: list[Any]) -> ExportGraphSignature:
    """The signature with each output spec naming the node the graph now returns."""
    specs = []
    for spec, value in zip(signature.output_specs, returned):
        arg = spec.arg
        if isinstance(value, torch.fx.Node) and isinstance(arg, (TensorArgument, SymIntArgument)):
            if arg.name != value.name:
                arg = type(arg)(name=value.name)
        specs.append(OutputSpec(spec.kind, arg, spec.target))
    return ExportGraphSignature(signature.input_specs, specs)


def _attribute(module: torch.nn.Module, target: str) -> Any:
    try:
        return functools.reduce(getattr, target.split("."), module)
    except AttributeError:
        return None


def _storage(tensor: torch.Tensor) -> tuple[int, int]:
    try:
        return (tensor.untyped_storage().data_ptr(), tensor.device.index or 0)
    except Exception:  # fake or meta tensors have no storage to share
        return (id(tensor), -1)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (messages can run to pages)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else ""
