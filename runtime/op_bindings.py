"""The cheapest way to call an ATen op the executor runs.

``OpOverload._op`` boxes its arguments for the JIT (about 1.9 us for a ``relu``
on a small tensor here); torch's generated Python binding for the same op
(``torch.relu``) parses them straight into the C++ call (1.2 us). Both end at
the same kernel. But a binding takes every overload of its name and picks one
from the argument types, and a composite op may decompose on the way, so a
binding is used for a node only after a probe shows that, called with
arguments of that node's kinds, it dispatches exactly the node's overload and
nothing else. Nodes that fail the probe, or that it cannot build arguments
for (opaque objects, sizes without an example value), keep ``_op``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch._ops import OpOverload
from torch.utils._python_dispatch import TorchDispatchMode

# Where torch's generated bindings for aten ops live.
_MODULES = (torch._C._VariableFunctions, torch._C._nn)
_SKIP = object()  # an argument the probe cannot stand in for
_probed: dict[tuple[Any, ...], Callable[..., Any] | None] = {}


class _Record(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Any] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


_PLAIN = (bool, int, float, str, torch.dtype, torch.device, torch.layout, torch.memory_format)


def _hint(size: Any) -> Any:
    """A size as a plain int: symbolic ones by their example value (a binding picks
    the overload by argument kinds, never by sizes), or _SKIP without one."""
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
        if not isinstance(value, torch.Tensor):
            return _SKIP
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


def _kind(value: Any) -> Any:
    if isinstance(value, torch.fx.Node):
        return type(value.meta.get("val")).__name__
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, *(_kind(v) for v in value))
    return type(value).__name__


def python_binding(node: torch.fx.Node) -> Callable[..., Any] | None:
    """Torch's generated Python binding that runs exactly `node`'s op, or None."""
    target = node.target
    if not isinstance(target, OpOverload) or target.namespace != "aten":
        return None
    if not node.all_input_nodes:
        return None  # factories: a binding would honour torch.device(...) contexts
    # Overloads are picked by argument kinds, not sizes: one probe per op and kinds.
    key = (target, _kind(node.args), tuple((k, _kind(v)) for k, v in node.kwargs.items()))
    if key in _probed:
        return _probed[key]
    meta_args = _stand_in(tuple(node.args))
    meta_kwargs = {k: _stand_in(v) for k, v in node.kwargs.items()}
    if meta_args is _SKIP or any(v is _SKIP for v in meta_kwargs.values()):
        return None  # not probed, so not remembered: another node of these kinds may be
    _probed[key] = found = _probe(target, meta_args, meta_kwargs)
    return found


def _probe(target: OpOverload, meta_args: tuple, meta_kwargs: dict) -> Callable[..., Any] | None:
    name = target._schema.name.split("::", 1)[1]
    bindings = [getattr(m, name) for m in _MODULES if hasattr(m, name)]
    if len(bindings) != 1:
        return None
    record = _Record()
    try:
        with record:
            bindings[0](*meta_args, **meta_kwargs)
    except Exception:  # the binding does not take these arguments: keep _op
        return None
    return bindings[0] if record.ops == [target] else None
