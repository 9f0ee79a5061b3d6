"""Check call inputs against what the program was exported for, before anything runs.

A compiled region trusts its inputs: a wrong dtype, rank or size can read out
of bounds instead of failing. So the executor checks every flat user input
against the exported placeholder metadata (layout, dtype, device, rank, static sizes,
dynamic sizes within their ``Dim`` range and equal where the export made them
equal) and raises :class:`InputMismatchError` naming the input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sympy
import torch

from fxdelegate.errors import InputMismatchError


def _bound(value: Any) -> int | None:
    """A finite range bound as int; None for sympy's oo and torch's int_oo."""
    if getattr(value, "is_finite", None) is False or getattr(value, "is_infinite", None):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None


@dataclass
class SymbolRange:
    lower: int | None
    upper: int | None

    def describe(self) -> str:
        lo = "-inf" if self.lower is None else str(self.lower)
        hi = "inf" if self.upper is None else str(self.upper)
        return f"[{lo}, {hi}]"

    def contains(self, v: int) -> bool:
        return (self.lower is None or v >= self.lower) and (self.upper is None or v <= self.upper)


@dataclass
class TensorSpec:
    name: str
    dtype: torch.dtype
    device: torch.device
    # Per dimension: an int (static) or a sympy expression over export symbols.
    sizes: list[int | sympy.Expr]
    layout: torch.layout = torch.strided

    def describe_shape(self) -> str:
        return "[" + ", ".join(str(s) for s in self.sizes) + "]"


@dataclass
class ScalarSpec:
    name: str
    value: Any


@dataclass
class InputChecker:
    specs: list[TensorSpec | ScalarSpec]
    ranges: dict[sympy.Symbol, SymbolRange] = field(default_factory=dict)

    @classmethod
    def from_placeholders(
        cls,
        names: Sequence[str],
        values: Sequence[Any],
        range_constraints: Mapping[sympy.Symbol, Any],
    ) -> InputChecker:
        specs: list[TensorSpec | ScalarSpec] = []
        for name, val in zip(names, values):
            if isinstance(val, torch.Tensor):
                sizes: list[int | sympy.Expr] = []
                for s in val.shape:
                    if isinstance(s, torch.SymInt):
                        expr = s.node.expr
                        sizes.append(int(expr) if expr.is_number else expr)
                    else:
                        sizes.append(int(s))
                specs.append(TensorSpec(name, val.dtype, val.device, sizes, val.layout))
            else:
                if isinstance(val, torch.SymInt):
                    raise NotImplementedError(f"dynamic scalar input {name} is not supported")
                specs.append(ScalarSpec(name, val))
        ranges = {
            sym: SymbolRange(_bound(vr.lower), _bound(vr.upper))
            for sym, vr in range_constraints.items()
            if isinstance(sym, sympy.Symbol)
        }
        return cls(specs, ranges)

    def check(self, flat_inputs: Sequence[Any]) -> None:
        if len(flat_inputs) != len(self.specs):
            raise InputMismatchError(
                f"expected {len(self.specs)} input value(s) after flattening, got {len(flat_inputs)}"
            )
        bindings: dict[sympy.Symbol, int] = {}
        first_seen: dict[sympy.Symbol, str] = {}
        derived: list[tuple[TensorSpec, int, sympy.Expr, int]] = []
        for spec, value in zip(self.specs, flat_inputs):
            if isinstance(spec, ScalarSpec):
                if isinstance(value, torch.Tensor) or value != spec.value:
                    raise InputMismatchError(
                        f"input {spec.name}: the program was exported with the constant "
                        f"{spec.value!r} here (it is specialised), got {_short(value)}"
                    )
                continue
            self._check_tensor(spec, value, bindings, first_seen, derived)
        self._check_derived(derived, bindings)

    def _check_tensor(self, spec, value, bindings, first_seen, derived) -> None:
        if not isinstance(value, torch.Tensor):
            raise InputMismatchError(
                f"input {spec.name}: expected a tensor of dtype {spec.dtype} and shape "
                f"{spec.describe_shape()}, got {_short(value)}"
            )
        # before the subclass check: a jagged nested tensor is also a Python subclass
        if value.is_nested:
            raise InputMismatchError(
                f"input {spec.name}: a nested tensor cannot be given to this program; it "
                f"takes a tensor of layout {spec.layout} and shape {spec.describe_shape()}"
            )
        if _dispatches_to_python(value):
            raise InputMismatchError(
                f"input {spec.name}: a {type(value).__name__} (a tensor subclass that runs its "
                "ops in Python) cannot be given to compiled code; fxdelegate programs take "
                "plain tensors (torch.Tensor, nn.Parameter)"
            )
        if value.layout != spec.layout:
            raise InputMismatchError(
                f"input {spec.name}: expected a tensor of layout {spec.layout}, got {value.layout}"
            )
        if value.dtype != spec.dtype:
            raise InputMismatchError(
                f"input {spec.name}: expected dtype {spec.dtype}, got {value.dtype}"
            )
        if value.device.type != spec.device.type or (
            spec.device.index is not None and value.device.index != spec.device.index
        ):
            raise InputMismatchError(
                f"input {spec.name}: expected a tensor on {spec.device}, got one on {value.device}"
            )
        if value.dim() != len(spec.sizes):
            raise InputMismatchError(
                f"input {spec.name}: expected rank {len(spec.sizes)} (shape {spec.describe_shape()}), "
                f"got rank {value.dim()} (shape {list(value.shape)})"
            )
        for dim, (want, got) in enumerate(zip(spec.sizes, value.shape)):
            if isinstance(want, int):
                if got != want:
                    raise InputMismatchError(
                        f"input {spec.name}: dimension {dim} must be {want} (shape "
                        f"{spec.describe_shape()}), got {got} (shape {list(value.shape)})"
                    )
            elif isinstance(want, sympy.Symbol):
                bound = bindings.get(want)
                if bound is None:
                    rng = self.ranges.get(want)
                    if rng is not None and not rng.contains(got):
                        raise InputMismatchError(
                            f"input {spec.name}: dimension {dim} is dynamic ({want}) with range "
                            f"{rng.describe()}, got {got}"
                        )
                    bindings[want] = got
                    first_seen[want] = f"{spec.name} dimension {dim}"
                elif bound != got:
                    raise InputMismatchError(
                        f"input {spec.name}: dimension {dim} must equal {first_seen[want]} "
                        f"(both are {want}), got {got} and {bound}"
                    )
            else:
                derived.append((spec, dim, want, got))

    def _check_derived(self, derived, bindings) -> None:
        for spec, dim, expr, got in derived:
            unbound = [s for s in expr.free_symbols if s not in bindings]
            if len(unbound) == 1:
                _solve_linear(expr, unbound[0], got, bindings, self.ranges, spec, dim)
        for spec, dim, expr, got in derived:
            want = expr.xreplace(bindings)
            if not want.is_number or int(want) != got:
                raise InputMismatchError(
                    f"input {spec.name}: dimension {dim} must be {expr} = {want}, got {got}"
                )


def _solve_linear(expr, sym, got, bindings, ranges, spec, dim) -> None:
    try:
        poly = sympy.Poly(expr.xreplace(bindings), sym)
        if poly.degree() != 1:
            return
        a, b = (int(c) for c in poly.all_coeffs())
    except (sympy.PolynomialError, TypeError, ValueError):
        return  # not linear in sym: the final check compares after binding what it can
    if a == 0 or (got - b) % a:
        raise InputMismatchError(
            f"input {spec.name}: dimension {dim} must be of the form {expr}, got {got}"
        )
    value = (got - b) // a
    rng = ranges.get(sym)
    if rng is not None and not rng.contains(value):
        raise InputMismatchError(
            f"input {spec.name}: dimension {dim} is {expr} with {sym} in {rng.describe()}, "
            f"got {got} ({sym} = {value})"
        )
    bindings[sym] = value


def _dispatches_to_python(value: torch.Tensor) -> bool:
    """A tensor subclass with its own ``__torch_dispatch__`` (a wrapper such as a fake,
    distributed or nested tensor): it has no plain memory for compiled code to read."""
    return type(value) not in (torch.Tensor, torch.nn.Parameter) and torch._C._dispatch_keys(
        value
    ).has(torch._C.DispatchKey.Python)


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of dtype {value.dtype} and shape {list(value.shape)}"
    return f"{type(value).__name__} {value!r}"
