"""OpInfo and ModuleInfo samples as exported one-op (one-module) programs.

A sample's tensors (its input, and every tensor among its args and kwargs)
become the program's inputs; everything else (ints, dtypes, reductions...) is
fixed in the program, as a user's code would write it.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree

# Dtypes per case: float32, then one integer and one reduced-precision dtype
# where the op takes them (the first of each list that it supports).
FLOAT = torch.float32
INTEGERS = (torch.int64, torch.int32, torch.int16, torch.uint8)
REDUCED = (torch.bfloat16, torch.float16)
# Samples per dtype; fewer on a machine with little time (FXDELEGATE_SWEEP_SAMPLES=1).
SAMPLES_PER_DTYPE = int(os.environ.get("FXDELEGATE_SWEEP_SAMPLES", "3"))
# Ops whose results are uninitialized memory: two eager runs may well agree (a caching
# allocator hands back the same block), but the values mean nothing.
UNDEFINED_VALUES = frozenset(
    {"empty", "empty_like", "empty_permuted", "empty_strided", "new_empty", "new_empty_strided"}
)


@functools.cache
def op_db() -> list[Any]:
    from torch.testing._internal.common_methods_invocations import op_db as ops

    return list(ops)


@functools.cache
def module_db() -> list[Any]:
    from torch.testing._internal.common_modules import module_db as modules

    return list(modules)


def op_id(op: Any) -> str:
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


def chosen_dtypes(supported: Any, integers: bool = True) -> list[torch.dtype]:
    """float32, one integer dtype and one reduced-precision dtype, where supported."""
    chosen = [FLOAT] if FLOAT in supported else []
    for group in (INTEGERS, REDUCED) if integers else (REDUCED,):
        chosen += [d for d in group if d in supported][:1]
    return chosen


@dataclass
class Case:
    """One sample as a program: `module(*inputs)` is the sample's call."""

    id: str  # "nn.functional.mse_loss/float32/0"
    kind: str  # "op" or "module"
    name: str  # the OpInfo's or ModuleInfo's name (with its variant)
    dtype: torch.dtype
    module: torch.nn.Module
    inputs: tuple[torch.Tensor, ...]
    # The same call computed in float32 and cast back (reduced precision only): the
    # reference inductor's own OpInfo tests judge compiled low-precision code by.
    float_reference: Any = field(default=None, repr=False)
    nondeterministic: bool = False  # OpInfo says its outputs vary from run to run
    sample: str = ""  # the sample, shortly

    def fresh_inputs(self) -> tuple[torch.Tensor, ...]:
        """Copies (with the originals' strides), so that no path sees another's writes."""
        return tuple(_clone(t) for t in self.inputs)


def _clone(t: torch.Tensor) -> torch.Tensor:
    if t.layout != torch.strided:
        return t.clone()
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device).copy_(t)


class SampleCall(torch.nn.Module):
    """Calls `callee(*args, **kwargs)` (an op, or a module it registers), the tensors
    among the arguments (at `tensor_positions` of their flattened leaves) taken from
    forward's arguments and the rest fixed."""

    def __init__(self, callee: Any, spec: pytree.TreeSpec, leaves: list[Any], tensor_positions):
        super().__init__()
        self.callee = callee
        self.spec = spec
        self.leaves = leaves
        self.tensor_positions = tensor_positions

    def forward(self, *tensors: torch.Tensor) -> Any:
        leaves = list(self.leaves)
        for position, tensor in zip(self.tensor_positions, tensors):
            leaves[position] = tensor
        args, kwargs = pytree.tree_unflatten(leaves, self.spec)
        return self.callee(*args, **kwargs)


def _split(tree: Any) -> tuple[pytree.TreeSpec, list[Any], list[int], tuple[torch.Tensor, ...]]:
    """(structure, the leaves with None for each tensor, where the tensors go, the tensors)."""
    leaves, spec = pytree.tree_flatten(tree)
    positions = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
    tensors = tuple(leaves[i] for i in positions)
    fixed = [None if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]
    return spec, fixed, positions, tensors


def _upcast(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dtype in REDUCED:
        return value.float()
    return value


def _float_reference(module: torch.nn.Module, inputs: tuple, dtype: torch.dtype):
    """The call on float32 copies of the inputs, its outputs cast back to `dtype`."""

    def compute() -> Any:
        with torch.no_grad():
            out = module(*(_upcast(t) for t in inputs))
        return pytree.tree_map(
            lambda v: v.to(dtype) if isinstance(v, torch.Tensor) and v.dtype == FLOAT else v, out
        )

    return compute


def opinfo_cases(op: Any, samples: int = SAMPLES_PER_DTYPE, device: str = "cpu") -> Iterator[Case]:
    """The first `samples` samples of `op` on `device` per chosen dtype."""
    name = op_id(op)
    for dtype in chosen_dtypes(op.supported_dtypes(device)):
        with quiet():
            generated = op.sample_inputs(device, dtype, requires_grad=False)
            for index, sample in enumerate(itertools.islice(generated, samples)):
                call = ((sample.input, *sample.args), sample.kwargs)
                spec, fixed, positions, tensors = _split(call)
                module = SampleCall(op.op, spec, fixed, positions)
                yield Case(
                    id=f"{name}/{_short(dtype)}/{index}",
                    kind="op",
                    name=name,
                    dtype=dtype,
                    module=module,
                    inputs=tensors,
                    float_reference=(
                        _float_reference(module, tensors, dtype) if dtype in REDUCED else None
                    ),
                    # (torch 2.11's OpInfo has no such field)
                    nondeterministic=op.name in UNDEFINED_VALUES
                    or bool(getattr(op, "has_nondeterministic_output", False)),
                    sample=_describe(sample.input, sample.args, sample.kwargs),
                )


def moduleinfo_cases(
    info: Any, samples: int = SAMPLES_PER_DTYPE, device: str = "cpu"
) -> Iterator[Case]:
    """The first `samples` eval-mode inputs of `info`'s module on `device` per chosen dtype."""
    for dtype in chosen_dtypes(info.supported_dtypes(device), integers=False):
        with quiet():
            inputs = info.module_inputs_func(
                info, device=device, dtype=dtype, requires_grad=False, training=False
            )
        for index, given in enumerate(inputs[:samples]):
            if given.forward_input is None:
                continue
            with quiet():
                torch.manual_seed(index)
                constructor = given.constructor_input
                inner = info.module_cls(*constructor.args, **constructor.kwargs)
                inner = inner.to(device=device, dtype=dtype).eval()
            forward = given.forward_input
            spec, fixed, positions, tensors = _split((forward.args, forward.kwargs))
            module = SampleCall(inner, spec, fixed, positions)
            yield Case(
                id=f"{info.name}/{_short(dtype)}/{index}",
                kind="module",
                name=info.name,
                dtype=dtype,
                module=module,
                inputs=tensors,
                float_reference=(
                    _float_reference(_float_copy(module), tensors, dtype)
                    if dtype in REDUCED
                    else None
                ),
                sample=_describe(constructor.args, constructor.kwargs, forward.args),
            )


def _float_copy(module: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(module).float()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    # Samples and exports warn about deprecated ops and formats: torch's test data.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _short(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _describe(*parts: Any) -> str:
    def one(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            layout = "" if value.layout == torch.strided else f" {value.layout}"
            return f"T{list(value.shape)}{layout}"
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(one(v) for v in value) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k}={one(v)}" for k, v in value.items()) + "}"
        return repr(value)

    return " ".join(one(p) for p in parts)[:160]
