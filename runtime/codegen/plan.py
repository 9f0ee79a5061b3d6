"""Turn an FX graph into straight-line Python, once, at load time.

The generated code is what the executor runs on every call. Compared with
walking the graph with ``torch.fx.Interpreter``, it does no per-node dispatch
in Python. Every operator is bound to a global name ahead of time; ATen ops
to torch's generated Python binding where a probe shows it runs exactly the
node's overload (:mod:`.op_bindings`), else to their C++ op handle, which
skips ``OpOverload.__call__``.
Every argument is a local variable or a literal, and each value's last use
is followed by ``del``, so its memory goes back to the allocator as soon as
possible. Delegate nodes call their region's runner directly with a flat
list.

:class:`GraphCodegen` emits the body. :func:`build_plan` wraps it as
``run_graph(inputs) -> outputs`` on flat lists; :mod:`..executor.entry` wraps it as the
program's full call, with pytree handling and input checks inlined.
"""

from __future__ import annotations

import keyword
import math
import operator
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._ops import OpOverload

from ..lowered_module import delegate_key
from .op_bindings import python_binding

_LITERAL_TYPES = (bool, int, str, type(None))
Runners = Mapping[str, Callable[[list[Any]], list[Any]]]


@dataclass
class NodeTimes:
    """Per-node wall time (nanoseconds) and call counts, filled by instrumented code.

    The code reads one clock after each statement and charges the time since the
    previous reading to that statement, so the nodes' times add up to the body's.
    """

    labels: list[str]
    nanos: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # In place: the generated code holds these very lists.
        self.nanos[:] = [0] * len(self.labels)
        self.counts[:] = [0] * len(self.labels)


class GraphCodegen:
    """Emits the lines that run a graph's nodes, given how placeholders are named."""

    def __init__(self, graph: torch.fx.Graph, owner: torch.nn.Module | None, runners: Runners):
        self.graph = graph
        self.owner = owner
        self.runners = runners
        self.globals: dict[str, Any] = {}
        self._bound: dict[int, str] = {}  # id(object) -> global name
        self.var: dict[torch.fx.Node, str] = {}
        self.times: NodeTimes | None = None
        self._counter = 0

    def bind(self, obj: Any, prefix: str) -> str:
        """A global name for `obj` in the generated module."""
        name = self._bound.get(id(obj))
        if name is None:
            name = f"{prefix}{len(self.globals)}"
            self.globals[name] = obj
            self._bound[id(obj)] = name
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
            if isinstance(value, tuple):
                return f"({inner},)" if len(value) == 1 else f"({inner})"
            return f"[{inner}]"
        if isinstance(value, dict):
            items = ", ".join(f"{self.literal(k)}: {self.literal(v)}" for k, v in value.items())
            return "{" + items + "}"
        return self.bind(value, "_k")

    def _call_args(self, args: tuple, kwargs: dict) -> str:
        parts = [self.literal(a) for a in args]
        for k, v in kwargs.items():
            if not k.isidentifier() or keyword.iskeyword(k):
                raise ValueError(f"cannot pass keyword argument {k!r} in generated code")
            parts.append(f"{k}={self.literal(v)}")
        return ", ".join(parts)

    def _callee(self, node: torch.fx.Node) -> str:
        return self.bind(op_callee(node), "_op" if isinstance(node.target, OpOverload) else "_fn")

    def body(
        self,
        placeholder_names: Mapping[torch.fx.Node, str],
        instrument: bool = False,
        trace: bool = False,
    ) -> tuple[list[str], list[str]]:
        """Lines running every node (indented 4 spaces) and the output expressions.

        With `instrument`, each node is timed into :attr:`times`; with `trace`
        too, each runs inside a ``torch.profiler.record_function`` range named
        after it (for Chrome traces; the ranges cost far more than the nodes).
        """
        nodes = list(self.graph.nodes)
        self.var.update(placeholder_names)
        output = next((n for n in nodes if n.op == "output"), None)
        compute = [n for n in nodes if n.op not in ("placeholder", "output")]
        lines, _ = self.emit(
            compute,
            keep=set(output.all_input_nodes) if output else set(),
            instrument=instrument,
            trace=trace,
        )
        outputs = [self.literal(v) for v in _as_tuple(output.args[0])] if output else []
        return lines, outputs

    def emit(
        self,
        nodes: list[torch.fx.Node],
        keep: set[torch.fx.Node] | frozenset[torch.fx.Node] = frozenset(),
        instrument: bool = False,
        trace: bool = False,
    ) -> tuple[list[str], list[torch.fx.Node | None]]:
        """Lines (indented 4 spaces) running `nodes` in order, and the node each line belongs to.

        Values defined here are deleted after their last use here unless they
        are in `keep` (needed later). Every value read must already have a name.
        """
        delegate = torch.ops.higher_order.executorch_call_delegate
        defined = set(nodes)
        last_use: dict[torch.fx.Node, torch.fx.Node] = {}
        for node in nodes:
            args = node.all_input_nodes
            if node.op == "call_function" and node.target is delegate:
                args = [a for a in args if a is not node.args[0]]
            for arg in args:
                last_use[arg] = node
        release_after: dict[torch.fx.Node, list[torch.fx.Node]] = {}
        for value, user in last_use.items():
            if value in defined and value not in keep:
                release_after.setdefault(user, []).append(value)

        lines: list[str] = ["    _c = _clock()"] if instrument else []
        owners: list[torch.fx.Node | None] = [None] * len(lines)
        labels = self.times.labels if (instrument and self.times is not None) else []
        unpacked: set[torch.fx.Node] = set()  # getitems a delegate call's unpacking defines
        for node in nodes:
            if (
                node.op == "get_attr"
                and node.users
                and all(u.target is delegate for u in node.users)
            ):
                continue  # a lowered module: the delegate call binds its runner directly
            if node in unpacked:
                continue
            var = f"t{self._counter}"
            self._counter += 1
            self.var[node] = var
            statement, label = self._statement(node, var, delegate)
            items = _unpackable(node, delegate, defined) if node.target is delegate else None
            if items is not None:
                # `a, b = region(...)` instead of a list and one subscript per output
                names = []
                for item in items:
                    if item is None or (not item.users and item not in keep):
                        names.append("_")
                        continue
                    self.var[item] = f"t{self._counter}"
                    self._counter += 1
                    names.append(self.var[item])
                    unpacked.add(item)
                    # the getitem's one input is the call, which gets no name of its own
                    release_after.pop(item, None)
                target = names[0] + "," if len(names) == 1 else ", ".join(names)
                statement = statement.replace(f"{var} = ", f"{target} = ", 1)
                if "_" in names:
                    statement += "; del _"
            if trace:
                block = [f"    with _range({label!r}):", f"        {statement}"]
            else:
                block = [f"    {statement}"]
            if instrument:
                index = len(labels)
                labels.append(label)
                block += [
                    f"    _n = _clock(); _nanos[{index}] += _n - _c; _counts[{index}] += 1; _c = _n"
                ]
            if not node.users and node not in keep and items is None:
                block.append(f"    del {var}")
            released = [v for v in release_after.get(node, ()) if v in self.var]
            if released:
                block.append(f"    del {', '.join(self.var[v] for v in released)}")
            lines += block
            owners += [node] * len(block)
        if instrument:
            self.times = NodeTimes(labels)
            self.globals.update(
                _clock=time.perf_counter_ns,
                _range=torch.profiler.record_function,
                _nanos=self.times.nanos,
                _counts=self.times.counts,
            )
        return lines, owners

    def _statement(self, node: torch.fx.Node, var: str, delegate: object) -> tuple[str, str]:
        if node.op == "get_attr":
            attr = _fetch_attr(self.owner, node.target)  # type: ignore[arg-type]
            return f"{var} = {self.bind(attr, '_a')}", f"fxdelegate::get_attr {node.target}"
        if node.op != "call_function":
            raise ValueError(f"cannot execute node {node.name}: op {node.op!r} is not supported")
        if node.target is operator.getitem and not node.kwargs:
            src, index = node.args
            return f"{var} = {self.literal(src)}[{self.literal(index)}]", "fxdelegate::getitem"
        if node.target is delegate:
            key = delegate_key(node.args[0], self.owner)
            if key not in self.runners:
                raise KeyError(f"no runner loaded for delegate region {key!r}")
            runner = self.bind(self.runners[key], "_d")
            return f"{var} = {runner}({self.literal(list(node.args[1:]))})", f"fxdelegate::{key}"
        call = f"{var} = {self._callee(node)}({self._call_args(node.args, node.kwargs)})"
        return call, f"fxdelegate::{_target_name(node.target)} ({node.name})"

    def compile(self, source: str, name: str) -> Callable[..., Any]:
        namespace = dict(self.globals)
        exec(compile(source, f"<fxdelegate-{name}>", "exec"), namespace)
        return namespace[name]


@dataclass
class GraphPlan:
    """The generated flat function and its source (kept for debugging)."""

    fn: Callable[[list[Any]], tuple[Any, ...]]
    source: str
    num_inputs: int


def build_plan(
    graph: torch.fx.Graph, runners: Runners | None = None, owner: torch.nn.Module | None = None
) -> GraphPlan:
    """``run_graph(inputs) -> outputs`` on flat lists.

    `runners` maps delegate keys (``"<region>-<backend>"``) to loaded regions.
    """
    codegen = GraphCodegen(graph, owner, runners or {})
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    names = {node: f"v{i}" for i, node in enumerate(placeholders)}
    lines, outputs = codegen.body(names)
    prologue = [f"    ({', '.join(names.values())},) = inputs"] if placeholders else []
    source = (
        "def run_graph(inputs):\n"
        + "\n".join([*prologue, *lines, f"    return ({''.join(o + ', ' for o in outputs)})"])
        + "\n"
    )
    return GraphPlan(codegen.compile(source, "run_graph"), source, len(placeholders))


def op_callee(node: torch.fx.Node) -> Callable[..., Any]:
    """What the generated code calls for a ``call_function`` node: an ATen op's
    Python binding where :mod:`.op_bindings` proves it runs exactly the node, else
    its C++ op handle (the semantics of ``OpOverload.__call__``, one Python frame
    less); any other target as it is."""
    target = node.target
    if isinstance(target, OpOverload):
        return python_binding(node) or target._op
    return target  # type: ignore[return-value]


def _target_name(target: Any) -> str:
    if isinstance(target, OpOverload):
        return str(target)
    return getattr(target, "__name__", str(target))


def _unpackable(
    node: torch.fx.Node, delegate: object, defined: set[torch.fx.Node]
) -> list[torch.fx.Node | None] | None:
    """Per output of a delegate call, the getitem that reads it (None: unread), when
    getitems defined here are its only users, one per output; else None."""
    outputs = node.meta.get("val")
    if not isinstance(outputs, (tuple, list)) or not node.users:
        return None
    items: list[torch.fx.Node | None] = [None] * len(outputs)
    for user in node.users:
        if user.target is not operator.getitem or user.kwargs or user not in defined:
            return None
        index = user.args[1]
        if not isinstance(index, int) or not 0 <= index < len(items) or items[index] is not None:
            return None
        items[index] = user
    return items


def _as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _fetch_attr(owner: torch.nn.Module | None, target: str) -> Any:
    if owner is None:
        raise ValueError(f"get_attr {target!r} needs an owning module")
    obj: Any = owner
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
