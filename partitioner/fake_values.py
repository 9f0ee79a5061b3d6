"""Whether torch's fake kernel told the truth about an op's outputs.

A region is compiled from its inputs' ``meta["val"]``: when it reads a tensor
that an executor op makes, it trusts that value's dtype and device. A few
fake kernels misreport them (torch 2.13: ``_batch_norm_with_update_functional``
says its running statistics come out in float32, while the CPU kernel returns
bfloat16 for bfloat16 inputs), and compiled code would then read the bytes as
the wrong type: a silently wrong result. So the partitioner runs each executor
op whose output a region would read once, for real, on stand-in inputs made
from its inputs' metadata (values do not matter, only what comes out), and a
value whose real dtype or device differs from the fake one stays out of
regions. Verdicts are cached per op, its literal arguments and its inputs'
dtypes, ranks and devices: a graph that repeats an op probes it once.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch._ops import OpOverload

Misreports = dict[int, str]  # output (leaf) index -> how it differs
_verdicts: dict[tuple[Any, ...], Misreports] = {}
_UNKNOWN = object()


def misreported(node: torch.fx.Node) -> Misreports:
    """Per output of `node` (its flattened ``meta["val"]``), how the real one differs
    in dtype or device; empty when they agree or the op cannot be probed (it is
    then trusted, as before)."""
    target = node.target
    if not isinstance(target, OpOverload) or "val" not in node.meta:
        return {}
    try:
        key = (target, _signature(node.args), _signature(node.kwargs))
        hash(key)
    except (TypeError, _Unprobeable):
        return {}
    if key not in _verdicts:
        _verdicts[key] = _probe(node)
    return _verdicts[key]


class _Unprobeable(Exception):
    pass


def _signature(value: Any) -> Any:
    if isinstance(value, torch.fx.Node):
        val = value.meta.get("val", _UNKNOWN)
        if isinstance(val, torch.Tensor):
            if val._has_symbolic_sizes_strides or val.layout != torch.strided:
                raise _Unprobeable
            # not the sizes: what dtype and device come out does not depend on them
            return ("tensor", val.dtype, val.dim(), val.device.type)
        if val is _UNKNOWN or isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            raise _Unprobeable
        return ("value", repr(val))
    if isinstance(value, (list, tuple)):
        return tuple(_signature(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _signature(v)) for k, v in value.items())
    return repr(value)


def _stand_in(value: Any) -> Any:
    if isinstance(value, torch.fx.Node):
        val = value.meta["val"]
        if isinstance(val, torch.Tensor):
            return torch.ones(tuple(val.shape), dtype=val.dtype, device=val.device)
        return val
    return value


def _probe(node: torch.fx.Node) -> Misreports:
    args = torch.fx.node.map_aggregate(node.args, _stand_in)
    kwargs = torch.fx.node.map_aggregate(node.kwargs, _stand_in)
    try:
        # (a random op must not move the caller's generator)
        with torch.no_grad(), torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            real = node.target(*args, **kwargs)  # type: ignore[operator]
    except Exception:  # stand-ins the op refuses (indices, factorizations): trust it
        return {}
    fake_leaves, fake_spec = pytree.tree_flatten(node.meta["val"])
    real_leaves, real_spec = pytree.tree_flatten(real)
    if fake_spec.num_leaves != real_spec.num_leaves:
        return {}  # not comparable leaf by leaf: trust it
    found = {}
    for i, (fake, got) in enumerate(zip(fake_leaves, real_leaves)):
        if not isinstance(fake, torch.Tensor) or not isinstance(got, torch.Tensor):
            continue
        # dtype and device only: the rank and sizes of a value depend on its inputs'
        # values only where the fake kernel already says so (unbacked sizes).
        if (fake.dtype, fake.device.type) != (got.dtype, got.device.type):
            found[i] = (
                f"output {i} is {got.dtype} on {got.device.type}, where torch's fake kernel "
                f"says {fake.dtype} on {fake.device.type}"
            )
    return found
