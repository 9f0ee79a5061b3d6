"""Every aten op the executor may call through torch's generated Python binding,
with every trailing run of omitted arguments, against the op's own schema.

For each aten overload whose name has a binding, nodes are built with stand-in
arguments (meta tensors, literals of each schema type), first with every argument
that has a default left out, then giving one more of them at a time, then all.
Wherever the executor's generated code would call the binding, it must
dispatch the node's overload with exactly the node's arguments, the omitted
ones meaning what the schema says. The oracle is the schema, not ``_op``: the
probe in ``runtime/codegen/op_bindings.py`` is what is under test.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch._ops import OpOverload
from torch.utils._python_dispatch import TorchDispatchMode

from fxdelegate.runtime.codegen.op_bindings import binding_for, python_binding
from fxdelegate.runtime.codegen.plan import build_plan


class _NoStandIn(Exception):
    """An argument type the sweep has no stand-in for (Generator, Dimname...)."""


def _stand_in(arg, make_tensor) -> Any:
    """A value of `arg`'s type (the JIT's spelling: List[int], Optional[Tensor]...)."""
    kind = str(arg.real_type)
    if kind.startswith("Optional[") and kind != "Optional[Tensor]":
        kind = kind[len("Optional[") : -1]
    if kind.startswith("List["):
        item = kind[len("List[") : -1]
        if item == "Tensor":
            return [make_tensor(), make_tensor()]
        if item == "Optional[Tensor]":
            return [make_tensor(), None]
        if item not in _VALUES:
            raise _NoStandIn(kind)
        return [_VALUES[item]] * (arg.N or 1)
    if kind in ("Tensor", "Optional[Tensor]"):
        return make_tensor()
    if kind not in _VALUES:
        raise _NoStandIn(kind)
    return _VALUES[kind]


_VALUES = {
    "int": 1,
    "SymInt": 1,
    "float": 0.5,
    "bool": False,
    "number": 2,  # Scalar
    "str": "none",
    "ScalarType": torch.float32,
    "Layout": torch.strided,
    "Device": torch.device("meta"),
    "MemoryFormat": torch.contiguous_format,
}


def _aten_overloads_with_bindings() -> list[OpOverload]:
    found = []
    for schema in torch._C._jit_get_all_schemas():
        if not schema.name.startswith("aten::"):
            continue
        try:
            packet = getattr(torch.ops.aten, schema.name[len("aten::") :])
            op = getattr(packet, schema.overload_name or "default")
        except (AttributeError, RuntimeError):
            continue
        if binding_for(op) is not None:
            found.append(op)
    return found


def _variants(op: OpOverload) -> list[tuple[tuple, dict, list[torch.Tensor]]]:
    """(args, kwargs, tensors) per way of calling `op`: every defaulted argument left
    out, then each trailing positional one given in turn, then every argument given."""
    arguments = op._schema.arguments
    tensors: list[torch.Tensor] = []

    def make_tensor():
        tensors.append(torch.empty(2, 2, device="meta"))
        return tensors[-1]

    def value(arg) -> Any:
        if arg.has_default_value():
            return arg.default_value
        return _stand_in(arg, make_tensor)

    positional = [a for a in arguments if not a.kwarg_only]
    keyword = [a for a in arguments if a.kwarg_only]
    required = max(
        (i + 1 for i, a in enumerate(positional) if not a.has_default_value()), default=0
    )
    variants = []
    for count in range(required, len(positional) + 1):
        tensors = []
        args = tuple(value(a) for a in positional[:count])
        kwargs = {a.name: value(a) for a in keyword if not a.has_default_value()}
        variants.append((args, kwargs, tensors))
    tensors = []
    args = tuple(value(a) for a in positional)
    kwargs = {a.name: value(a) for a in keyword}
    variants.append((args, kwargs, tensors))
    return variants


class _FirstDispatch(TorchDispatchMode):
    """Keeps the first op dispatched and its arguments, then stops the call."""

    class Stop(Exception):
        pass

    def __init__(self):
        super().__init__()
        self.call = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.call = (func, args, kwargs or {})
        raise self.Stop


def _normalized(op: OpOverload, args: tuple, kwargs: dict) -> list[Any]:
    """Every schema argument's value, in schema order, omitted ones by their default."""
    values = []
    for i, arg in enumerate(op._schema.arguments):
        if i < len(args) and not arg.kwarg_only:
            value = args[i]
        elif arg.name in kwargs:
            value = kwargs[arg.name]
        else:
            value = arg.default_value if arg.has_default_value() else "<missing>"
        values.append(_comparable(value, arg))
    return values


def _comparable(value: Any, arg) -> Any:
    kind = str(arg.type)
    if isinstance(value, torch.Tensor):
        return ("tensor", id(value))
    if isinstance(value, (list, tuple)):
        return [_comparable(v, arg) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and kind.startswith("List[int]"):
        return [value] * (getattr(arg, "N", None) or 1)  # an int where a list goes is broadcast
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    if kind in ("float", "Optional[float]") and isinstance(value, int):
        return float(value)  # an int given for a float argument is that float
    # Scalars keep their type: 2, 2.0 and True are different numbers to an op.
    return (type(value).__name__, value)


def _dispatched(plan, inputs) -> tuple | None:
    mode = _FirstDispatch()
    try:
        with mode:
            plan.fn(inputs)
    except Exception:  # the stop, or a kernel rejecting a stand-in
        pass
    return mode.call


def _as_nodes(value: Any, nodes: dict[int, torch.fx.Node]) -> Any:
    return torch.fx.node.map_aggregate(
        value, lambda x: nodes[id(x)] if isinstance(x, torch.Tensor) else x
    )


@pytest.fixture(scope="module")
def sweep():
    """(what the plan calls through a binding, how many it refused, wrong ones, ops skipped)."""
    served, refused, mismatches, no_stand_in = [], 0, [], set()
    for op in _aten_overloads_with_bindings():
        try:
            variants = _variants(op)
        except _NoStandIn:
            no_stand_in.add(op)
            continue
        for args, kwargs, tensors in variants:
            graph = torch.fx.Graph()
            nodes = {}
            for i, tensor in enumerate(tensors):
                nodes[id(tensor)] = placeholder = graph.placeholder(f"x{i}")
                placeholder.meta["val"] = tensor
            node = graph.call_function(op, _as_nodes(args, nodes), _as_nodes(kwargs, nodes))
            graph.output(node)
            if python_binding(node) is None:
                refused += 1
                continue
            plan = build_plan(graph)
            call = _dispatched(plan, tensors)
            what = f"{op}({len(args)} positional, kwargs {sorted(kwargs)})"
            served.append(what)
            if call is None or call[0] is not op:
                mismatches.append(f"{what}: dispatched {call and call[0]}")
                continue
            expected = _normalized(op, args, kwargs)
            actual = _normalized(op, call[1], call[2])
            if actual != expected:
                diff = [
                    f"{a.name}: {e} -> {g}"
                    for a, e, g in zip(op._schema.arguments, expected, actual)
                    if e != g
                ]
                mismatches.append(f"{what}: {'; '.join(diff)}")
    return served, refused, mismatches, no_stand_in


def test_every_binding_the_executor_uses_means_what_the_schema_says(sweep):
    served, refused, mismatches, _ = sweep
    assert not mismatches, f"{len(mismatches)} wrong binding(s):\n" + "\n".join(mismatches)
    # The sweep is only as good as what it reaches: most ops must be served.
    assert len(served) > 1500, (len(served), refused)


def test_the_sweep_reaches_the_ops_that_had_wrong_defaults(sweep):
    served, _, _, no_stand_in = sweep
    # Their bindings default to no reduction: used only where the reduction is given.
    for name in ("mse_loss", "binary_cross_entropy", "smooth_l1_loss", "soft_margin_loss"):
        op = getattr(torch.ops.aten, name).default
        names = [a.name for a in op._schema.arguments]
        given = [int(s.split("(")[1].split()[0]) for s in served if s.startswith(f"{op}(")]
        assert len(names) in given, (name, given)
        assert min(given) > names.index("reduction"), (name, given)
    assert len(no_stand_in) < 150, sorted(map(str, no_stand_in))
