"""The cheapest way to call an ATen op the executor runs.

``OpOverload._op`` boxes its arguments for the JIT (about 1.9 us for a ``relu``
on a small tensor here); torch's generated Python binding for the same op
(``torch.relu``) parses them straight into the C++ call (1.2 us). Both end at
the same kernel, but they are not the same function:

* a binding takes every overload of its name and picks one from the argument
  types, and a composite op may decompose on the way;
* a binding has defaults of its own, and some differ from the op schema's:
  ``torch._C._nn.mse_loss(a, b)`` dispatches ``mse_loss(a, b, reduction=0)``
  (no reduction) where ``aten.mse_loss.default(a, b)`` means the schema's
  ``reduction=1`` (mean).

So a binding is used for a node only after a probe proves that, called with
exactly the node's arguments, it dispatches exactly what ``_op`` dispatches
with them: the same ops, in the same order, with the same arguments, defaults
filled in included (the dispatcher hands every argument it received that
differs from the schema's default to a dispatch mode, so a binding default
that differs shows up as an explicit argument). The probe runs once per op and
argument values (tensors by kind), on meta stand-ins. Nodes that fail it, or
that it cannot build arguments for (opaque objects, sizes without an example
value), keep ``_op``. ``tests/runtime/test_op_bindings_sweep.py`` holds every aten op
with a binding to this, against the schema.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch._ops import OpOverload
from torch.utils._python_dispatch import TorchDispatchMode

# Where torch's generated bindings for aten ops live.
BINDING_MODULES = (torch._C._VariableFunctions, torch._C._nn)
_SKIP = object()  # an argument the probe cannot stand in for
_probed: dict[tuple[Any, ...], Callable[..., Any] | None] = {}
_PLAIN = (bool, int, float, str, torch.dtype, torch.device, torch.layout, torch.memory_format)


def binding_for(target: OpOverload) -> Callable[..., Any] | None:
    """The one generated binding named like `target`, or None (none, or one per module)."""
    name = target._schema.name.split("::", 1)[1]
    found = [getattr(m, name) for m in BINDING_MODULES if hasattr(m, name)]
    return found[0] if len(found) == 1 else None


class DispatchRecord(TorchDispatchMode):
    """Records every op dispatched under it, with its arguments in a form that two
    runs on the same inputs can compare: each tensor by the order it was first seen
    (inputs first, then the outputs of recorded ops), everything else by value."""

    def __init__(self, inputs: list[torch.Tensor]) -> None:
        super().__init__()
        self.calls: list[tuple[Any, ...]] = []
        self._ids: dict[int, int] = {}
        self._keep: list[torch.Tensor] = []  # ids stay unique while the record lives
        for tensor in inputs:
            self._id(tensor)

    def _id(self, tensor: torch.Tensor) -> int:
        if id(tensor) not in self._ids:
            self._ids[id(tensor)] = len(self._ids)
            self._keep.append(tensor)
        return self._ids[id(tensor)]

    def canonical(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return ("tensor", self._id(value))
        if isinstance(value, (list, tuple)):
            return (type(value).__name__, *(self.canonical(v) for v in value))
        if isinstance(value, dict):
            return ("dict", *sorted((k, self.canonical(v)) for k, v in value.items()))
        if isinstance(value, float) and math.isnan(value):
            return ("float", "nan")
        # The type too: 2 and 2.0 (and True) are different Scalars to an op.
        return (type(value).__name__, value)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.calls.append((func, self.canonical(args), self.canonical(kwargs)))
        out = func(*args, **kwargs)
        self.canonical(out)  # outputs get their ids now, before a later op reads them
        return out


def record_dispatches(
    fn: Callable[..., Any], args: tuple, kwargs: dict
) -> tuple[list[tuple[Any, ...]], str | None]:
    """The ops `fn(*args, **kwargs)` dispatches, and the name of the exception it
    raised (None when it returned). Recorded up to the failure when it failed."""
    inputs = [t for t in _tensors((args, kwargs))]
    record = DispatchRecord(inputs)
    try:
        # A probe's deprecation notices are not the user's program's.
        with warnings.catch_warnings(), record:
            warnings.simplefilter("ignore")
            fn(*args, **kwargs)
    except Exception as exc:  # the two calls must then fail alike
        return record.calls, type(exc).__name__
    return record.calls, None


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _hint(size: Any) -> Any:
    """A size as a plain int: symbolic ones by their example value, or _SKIP without one."""
    if isinstance(size, torch.SymInt):
        hint = size.node.hint
        return hint if isinstance(hint, int) else _SKIP
    return size


def _stand_in(value: Any) -> Any:
    """A meta-device argument of the same kind as a node argument, or _SKIP."""
    if isinstance(value, torch.fx.Node):
        value = value.meta.get("val")
        if isinstance(value, torch.SymInt):
            return _hint(value)
        if not isinstance(value, torch.Tensor) or value.layout is not torch.strided:
            return _SKIP  # (a sparse tensor has no strides to copy)
        sizes = [_hint(s) for s in (*value.shape, *value.stride())]
        if any(s is _SKIP for s in sizes):
            return _SKIP
        rank = value.dim()
        return torch.empty_strided(sizes[:rank], sizes[rank:], dtype=value.dtype, device="meta")
    if isinstance(value, (list, tuple)):
        items = [_stand_in(v) for v in value]
        return _SKIP if any(i is _SKIP for i in items) else type(value)(items)
    if value is None or isinstance(value, _PLAIN):
        return value
    return _SKIP


def _key(value: Any) -> Any:
    """What the probe's verdict depends on: node values by kind, literals by value."""
    if isinstance(value, torch.fx.Node):
        return ("node", type(value.meta.get("val")).__name__)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, *(_key(v) for v in value))
    if value is None or isinstance(value, _PLAIN):
        return (type(value).__name__, value)
    return type(value).__name__


def python_binding(node: torch.fx.Node) -> Callable[..., Any] | None:
    """Torch's generated Python binding that runs exactly what `node` means, or None."""
    target = node.target
    if not isinstance(target, OpOverload) or target.namespace != "aten":
        return None
    if not node.all_input_nodes:
        return None  # factories: a binding would honour torch.device(...) contexts
    key = (target, _key(node.args), tuple((k, _key(v)) for k, v in node.kwargs.items()))
    if key in _probed:
        return _probed[key]
    meta_args = _stand_in(tuple(node.args))
    meta_kwargs = {k: _stand_in(v) for k, v in node.kwargs.items()}
    if meta_args is _SKIP or any(v is _SKIP for v in meta_kwargs.values()):
        return None  # not probed, so not remembered: another node of these kinds may be
    _probed[key] = found = probe_binding(target, meta_args, meta_kwargs)
    return found


def probe_binding(target: OpOverload, args: tuple, kwargs: dict) -> Callable[..., Any] | None:
    """`target`'s binding when, called with `args` and `kwargs` as given, it dispatches
    the same ops with the same arguments as ``target._op`` does, starting with
    `target` itself; else None."""
    binding = binding_for(target)
    if binding is None:
        return None
    expected, failed = record_dispatches(target._op, args, kwargs)
    if not expected or expected[0][0] is not target:
        return None  # composite: it decomposes before reaching a kernel of its own
    actual, binding_failed = record_dispatches(binding, args, kwargs)
    return binding if actual == expected and binding_failed == failed else None
