"""Generate a program's whole call as one Python function.

``entry(*args, **kwargs)`` does in straight-line code what the generic path
does with pytree calls and loops:

* it unpacks the user's pytree by position and key, checking container types
  and lengths;
* it checks each tensor's class, dtype, layout, device, rank, static sizes, dynamic
  sizes against their ranges, and equal dims;
* it runs the graph body (:mod:`..codegen.plan`) with weights bound as globals;
* it writes mutated buffers and inputs back, and builds the output pytree
  literally.

Whenever something does not match, it hands the call to the generic path,
which gives the detailed error or handles the rare valid input the fast path
does not cover (a tensor subclass, say). Programs whose pytrees use other
container types get no fast path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sympy
import torch
import torch.utils._pytree as pytree

from ..codegen.plan import GraphCodegen, NodeTimes, Runners
from .input_check import InputChecker, ScalarSpec, TensorSpec


class NoFastPath(Exception):
    """The program's pytree structure is outside what the generated entry supports."""


class _EntryWriter:
    def __init__(self, codegen: GraphCodegen):
        self.cg = codegen
        self.lines: list[str] = []
        self._temps = 0

    def temp(self) -> str:
        self._temps += 1
        return f"_p{self._temps}"

    def fail_if(self, condition: str) -> None:
        self.lines.append(f"    if {condition}:")
        self.lines.append("        return _slow(args, kwargs)")

    def unpack(self, expr: str, node: Any, leaf_names: dict[int, str]) -> None:
        if isinstance(node, int) and not isinstance(node, bool):
            name = f"u{node}"
            leaf_names[node] = name
            self.lines.append(f"    {name} = {expr}")
            return
        if node is None:
            self.fail_if(f"{expr} is not None")
            return
        kind = type(node)
        if kind in (tuple, list):
            name = self.temp()
            self.lines.append(f"    {name} = {expr}")
            self.fail_if(f"{name}.__class__ is not {kind.__name__} or len({name}) != {len(node)}")
            for i, child in enumerate(node):
                self.unpack(f"{name}[{i}]", child, leaf_names)
            return
        if kind is dict:
            name = self.temp()
            keys = self.cg.bind(frozenset(node), "_keys")
            self.lines.append(f"    {name} = {expr}")
            self.fail_if(f"{name}.__class__ is not dict or {name}.keys() != {keys}")
            for key, child in node.items():
                self.unpack(f"{name}[{self.cg.literal(key)}]", child, leaf_names)
            return
        raise NoFastPath(f"container {kind.__name__} in the input structure")

    def check_inputs(
        self,
        specs: Sequence[TensorSpec | ScalarSpec],
        checker: InputChecker,
        leaf_names: dict[int, str],
    ) -> None:
        cg = self.cg
        tensor = cg.bind(torch.Tensor, "_Tensor")
        bound: set[sympy.Symbol] = set()
        derived = False
        for i, spec in enumerate(specs):
            name = leaf_names[i]
            if isinstance(spec, ScalarSpec):
                self.fail_if(
                    f"{name}.__class__ is not {cg.bind(type(spec.value), '_type')} or {name} != {cg.literal(spec.value)}"
                )
                continue
            self.fail_if(
                f"{name}.__class__ is not {tensor} or {name}.dtype is not {cg.bind(spec.dtype, '_dtype')}"
                f" or {name}.layout is not {cg.bind(spec.layout, '_layout')}"
                f" or {_device_mismatch(name, spec.device, cg)}"
            )
            if all(isinstance(size, int) for size in spec.sizes):
                # one tuple comparison: cheaper than the rank and each size apart
                self.fail_if(f"{name}.shape != {tuple(spec.sizes)!r}")
                continue
            shape = self.temp()
            self.lines.append(f"    {shape} = {name}.shape")
            static = [
                f"{shape}[{d}] != {size}"
                for d, size in enumerate(spec.sizes)
                if isinstance(size, int)
            ]
            self.fail_if(" or ".join([f"len({shape}) != {len(spec.sizes)}", *static]))
            for d, size in enumerate(spec.sizes):
                if isinstance(size, int):
                    continue
                if not isinstance(size, sympy.Symbol):
                    derived = True
                    continue
                var = f"_sym_{size.name}"
                if size in bound:
                    self.fail_if(f"{shape}[{d}] != {var}")
                    continue
                bound.add(size)
                self.lines.append(f"    {var} = {shape}[{d}]")
                rng = checker.ranges.get(size)
                tests = []
                if rng is not None and rng.lower is not None:
                    tests.append(f"{var} < {rng.lower}")
                if rng is not None and rng.upper is not None:
                    tests.append(f"{var} > {rng.upper}")
                if tests:
                    self.fail_if(" or ".join(tests))
        if derived:
            # Sizes like 2*b: the generic checker solves and explains them.
            check = cg.bind(checker.check, "_check_all")
            self.lines.append(
                f"    {check}([{', '.join(leaf_names[i] for i in range(len(specs)))}])"
            )


def _device_mismatch(name: str, device: torch.device, cg: GraphCodegen) -> str:
    if device.type == "cpu":
        return f"not {name}.is_cpu"
    if device.type == "cuda" and device.index is not None:
        return f"not {name}.is_cuda or {name}.get_device() != {device.index}"
    return f"{name}.device != {cg.bind(device, '_device')}"


def _build_output(node: Any, outputs: list[str], cg: GraphCodegen) -> str:
    if isinstance(node, int) and not isinstance(node, bool):
        return outputs[node]
    if node is None:
        return "None"
    kind = type(node)
    if kind is tuple:
        inner = ", ".join(_build_output(c, outputs, cg) for c in node)
        return f"({inner},)" if len(node) == 1 else f"({inner})"
    if kind is list:
        return "[" + ", ".join(_build_output(c, outputs, cg) for c in node) + "]"
    if kind is dict:
        return (
            "{"
            + ", ".join(
                f"{cg.literal(k)}: {_build_output(v, outputs, cg)}" for k, v in node.items()
            )
            + "}"
        )
    raise NoFastPath(f"container {kind.__name__} in the output structure")


def build_entry(
    graph: torch.fx.Graph,
    owner: torch.nn.Module | None,
    runners: Runners,
    *,
    in_spec: pytree.TreeSpec,
    out_spec: pytree.TreeSpec,
    placeholder_sources: Sequence[tuple[str, Any]],
    write_backs: Sequence[tuple[int, str, Any]],
    user_outputs: Sequence[int],
    checker: InputChecker | None,
    contiguous_inputs: frozenset[int] = frozenset(),
    slow: Callable[[tuple, dict], Any],
    instrument: bool = False,
    trace: bool = False,
    graphs: Callable[[list[Any]], list[Any]] | None = None,
    lock: Any = None,
) -> tuple[Callable[..., Any], str, NodeTimes | None]:
    """The generated ``entry(*args, **kwargs)``; raises :class:`NoFastPath` when
    the program's pytrees use containers it does not handle.

    `placeholder_sources` gives, per placeholder in order, ``("state", tensor)``
    or ``("user", flat_index)``; user inputs in `contiguous_inputs` are made
    contiguous before use (write-backs still go to the caller's tensor).
    With `graphs`, the checked flat inputs go to that runner (which writes
    mutations back and returns the flat user outputs) instead of the body.
    With `lock`, the body runs holding it (after the checks).
    """
    cg = GraphCodegen(graph, owner, runners)
    writer = _EntryWriter(cg)
    structure = pytree.tree_unflatten(list(range(in_spec.num_leaves)), in_spec)
    if not (type(structure) is tuple and len(structure) == 2 and type(structure[1]) is dict):
        raise NoFastPath("inputs are not (args, kwargs)")
    args_structure, kwargs_structure = structure
    leaf_names: dict[int, str] = {}
    if kwargs_structure:
        writer.fail_if(f"len(args) != {len(args_structure)}")
        writer.fail_if(f"kwargs.keys() != {cg.bind(frozenset(kwargs_structure), '_keys')}")
    else:
        writer.fail_if(f"len(args) != {len(args_structure)} or kwargs")
    for i, child in enumerate(args_structure):
        writer.unpack(f"args[{i}]", child, leaf_names)
    for key, child in kwargs_structure.items():
        writer.unpack(f"kwargs[{key!r}]", child, leaf_names)
    if checker is not None:
        first = len(writer.lines)
        writer.check_inputs(checker.specs, checker, leaf_names)
        # A tensor whose sizes cannot be read (a nested tensor's `.shape` raises)
        # goes to the checker, which names it; the `try` costs nothing otherwise.
        if len(writer.lines) > first:
            writer.lines[first:] = [
                "    try:",
                *("    " + line for line in writer.lines[first:]),
                "    except RuntimeError:",
                "        return _slow(args, kwargs)",
            ]

    out_structure = pytree.tree_unflatten(list(range(out_spec.num_leaves)), out_spec)
    if graphs is not None:
        flat = ", ".join(leaf_names[i] for i in range(len(leaf_names)))
        body = [f"    _o = {cg.bind(graphs, '_graphs')}([{flat}])"]
        epilogue: list[str] = []
        result = _build_output(out_structure, [f"_o[{i}]" for i in range(len(user_outputs))], cg)
    else:
        body, epilogue, result = _inline_body(
            graph,
            cg,
            writer,
            leaf_names,
            placeholder_sources,
            write_backs,
            user_outputs,
            contiguous_inputs,
            out_structure,
            instrument,
            trace,
        )
    cg.globals["_slow"] = slow
    run = [*body, *epilogue, f"    return {result}"]
    if lock is not None:
        # acquire/release in try/finally: half the cost of a `with` block
        name = cg.bind(lock, "_lock")
        run = [
            f"    {name}.acquire()",
            "    try:",
            *("    " + line for line in run),
            "    finally:",
            f"        {name}.release()",
        ]
    source = "def entry(*args, **kwargs):\n" + "\n".join([*writer.lines, *run]) + "\n"
    return cg.compile(source, "entry"), source, cg.times


def _inline_body(
    graph: torch.fx.Graph,
    cg: GraphCodegen,
    writer: _EntryWriter,
    leaf_names: dict[int, str],
    placeholder_sources: Sequence[tuple[str, Any]],
    write_backs: Sequence[tuple[int, str, Any]],
    user_outputs: Sequence[int],
    contiguous_inputs: frozenset[int],
    out_structure: Any,
    instrument: bool,
    trace: bool,
) -> tuple[list[str], list[str], str]:
    """The graph's nodes as straight-line code: (body, write-backs, result expression)."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    names: dict[torch.fx.Node, str] = {}
    for node, (kind, source) in zip(placeholders, placeholder_sources):
        if kind == "state":
            names[node] = cg.bind(source, "_s")
        elif source in contiguous_inputs:
            # Compiled regions assume the layout they were compiled for; a copy
            # (only when the caller's tensor is not contiguous) keeps them right.
            names[node] = f"c{source}"
            writer.lines.append(f"    c{source} = {leaf_names[source]}.contiguous()")
        else:
            names[node] = leaf_names[source]
    body, outputs = cg.body(names, instrument=instrument, trace=trace)
    epilogue = []
    for pos, kind, where in write_backs:
        target = cg.bind(where, "_s") if kind == "state" else leaf_names[where]
        epilogue.append(f"    {target}.copy_({outputs[pos]})")
    result = _build_output(out_structure, [outputs[i] for i in user_outputs], cg)
    return body, epilogue, result
