"""Turn an FX graph into a straight-line Python function, once, at load time.

The generated function is what the executor calls on every run. Compared to
walking the graph with ``torch.fx.Interpreter`` it does no per-node dispatch
in Python: every operator is bound to a global name ahead of time (ATen ops to
their C++ entry point, skipping ``OpOverload.__call__``), every argument is a
local variable or a literal, and a value's last use is followed by ``del`` so
its memory returns to the allocator as soon as possible. Delegate nodes call
their region's runner directly with a flat list.
"""

from __future__ import annotations

import keyword
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch._ops import OpOverload

from .lowered_module import delegate_key

_LITERAL_TYPES = (bool, int, str, type(None))


@dataclass
class GraphPlan:
    """The generated function and its source (kept for debugging and profiling)."""

    fn: Callable[[list[Any]], tuple[Any, ...]]
    source: str
    num_inputs: int
    node_names: list[str]


class _Codegen:
    def __init__(
        self, graph: torch.fx.Graph, owner: torch.nn.Module | None, runners: Mapping[str, Callable]
    ):
        self.graph = graph
        self.owner = owner
        self.runners = runners
        self.globals: dict[str, Any] = {}
        self.bound: dict[int, str] = {}  # id(callable/constant) -> global name
        self.var: dict[torch.fx.Node, str] = {}
        self.lines: list[str] = []

    def bind(self, obj: Any, prefix: str) -> str:
        name = self.bound.get(id(obj))
        if name is None:
            name = f"{prefix}{len(self.globals)}"
            self.globals[name] = obj
            self.bound[id(obj)] = name
        return name

    def literal(self, value: Any) -> str:
        if isinstance(value, torch.fx.Node):
            return self.var[value]
        if isinstance(value, _LITERAL_TYPES):
            return repr(value)
        if isinstance(value, float) and math.isfinite(value):
            return repr(value)
        if isinstance(value, (list, tuple)):
            inner = ", ".join(self.literal(v) for v in value)
            if isinstance(value, tuple) and not hasattr(value, "_fields"):
                return f"({inner},)" if len(value) == 1 else f"({inner})"
            if isinstance(value, list):
                return f"[{inner}]"
        if isinstance(value, dict):
            return (
                "{"
                + ", ".join(f"{self.literal(k)}: {self.literal(v)}" for k, v in value.items())
                + "}"
            )
        return self.bind(value, "_k")

    def call_args(self, args: tuple, kwargs: dict) -> str:
        parts = [self.literal(a) for a in args]
        for k, v in kwargs.items():
            if not k.isidentifier() or keyword.iskeyword(k):
                raise ValueError(f"cannot pass keyword argument {k!r} in generated code")
            parts.append(f"{k}={self.literal(v)}")
        return ", ".join(parts)

    def callee(self, target: Any) -> str:
        if isinstance(target, OpOverload):
            # The C++ op handle: same semantics as OpOverload.__call__, one Python frame less.
            return self.bind(target._op, "_op")
        return self.bind(target, "_fn")

    def emit(self) -> GraphPlan:
        nodes = list(self.graph.nodes)
        last_use: dict[torch.fx.Node, torch.fx.Node] = {}
        delegate = torch.ops.higher_order.executorch_call_delegate
        for node in nodes:
            args = node.all_input_nodes
            if node.op == "call_function" and node.target is delegate:
                args = [a for a in args if a is not node.args[0]]
            for arg in args:
                last_use[arg] = node
        release_after: dict[torch.fx.Node, list[torch.fx.Node]] = {}
        for value, user in last_use.items():
            release_after.setdefault(user, []).append(value)

        placeholders = [n for n in nodes if n.op == "placeholder"]
        for i, node in enumerate(placeholders):
            self.var[node] = f"v{i}"
        lines = self.lines
        if placeholders:
            names = ", ".join(self.var[n] for n in placeholders)
            lines.append(f"    ({names},) = inputs")
        counter = len(placeholders)
        node_names = []
        for node in nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                lines.append(f"    return {self.literal(tuple(_as_tuple(node.args[0])))}")
                break
            if node.op == "get_attr" and all(u.target is delegate for u in node.users):
                continue  # a lowered module: the delegate call binds its runner directly
            var = f"v{counter}"
            counter += 1
            self.var[node] = var
            node_names.append(node.name)
            if node.op == "get_attr":
                attr = _fetch_attr(self.owner, node.target)  # type: ignore[arg-type]
                lines.append(f"    {var} = {self.bind(attr, '_a')}")
                continue
            if node.op != "call_function":
                raise ValueError(
                    f"cannot execute node {node.name}: op {node.op!r} is not supported"
                )
            if node.target is operator.getitem and not node.kwargs:
                src, index = node.args
                lines.append(f"    {var} = {self.literal(src)}[{self.literal(index)}]")
            elif node.target is delegate:
                key = delegate_key(node.args[0], self.owner)
                if key not in self.runners:
                    raise KeyError(f"no runner loaded for delegate region {key!r}")
                runner = self.bind(self.runners[key], "_d")
                lines.append(f"    {var} = {runner}({self.literal(list(node.args[1:]))})")
            else:
                lines.append(
                    f"    {var} = {self.callee(node.target)}({self.call_args(node.args, node.kwargs)})"
                )
            if not node.users:
                lines.append(f"    del {var}")
            released = [v for v in release_after.get(node, ()) if v.op != "placeholder"]
            if released:
                lines.append(f"    del {', '.join(self.var[v] for v in released)}")

        source = "def run_graph(inputs):\n" + "\n".join(lines) + "\n"
        namespace = dict(self.globals)
        exec(compile(source, "<fxdelegate-plan>", "exec"), namespace)
        return GraphPlan(namespace["run_graph"], source, len(placeholders), node_names)


def _as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _fetch_attr(owner: torch.nn.Module | None, target: str) -> Any:
    if owner is None:
        raise ValueError(f"get_attr {target!r} needs an owning module")
    obj: Any = owner
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def build_plan(
    graph: torch.fx.Graph,
    runners: Mapping[str, Callable[[list[Any]], list[Any]]] | None = None,
    owner: torch.nn.Module | None = None,
) -> GraphPlan:
    """Generate the straight-line function for `graph`.

    `runners` maps delegate keys (``"<region>-<backend>"``) to loaded regions.
    """
    return _Codegen(graph, owner, runners or {}).emit()
