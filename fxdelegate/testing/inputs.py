"""Inputs that exercise an exported program: its example, fresh values, and its
dynamic dimensions at the ends of their ranges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy
import torch
import torch.utils._pytree as pytree
from torch.export import ExportedProgram
from torch.export._tree_utils import reorder_kwargs
from torch.utils._sympy.numbers import int_oo

from fxdelegate.errors import InvalidArgumentError
from fxdelegate.passes.pipeline.user_pass_checks import program_in_spec

# torch.export traces a dynamic dimension assuming it is neither 0 nor 1 (sizes 0
# and 1 specialize broadcasting and are not guaranteed to work): the smallest size tried.
SMALLEST_DYNAMIC_SIZE = 2


@dataclass
class InputSample:
    """One set of call inputs, and what it stands for ("upper bounds: batch=64")."""

    label: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def cloned(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Fresh copies of the tensors, so that a call that mutates its inputs leaves
        the sample as it was."""
        return pytree.tree_map_only(torch.Tensor, torch.clone, (self.args, self.kwargs))


def sample_inputs(
    program: ExportedProgram,
    generator: torch.Generator,
    *,
    samples: int = 2,
    max_size: int = 1024,
) -> list[InputSample]:
    """The program's example inputs; `samples` more with fresh values at the same
    sizes; and, when the program has dynamic dimensions, every dimension at the low
    end of its range, then at the high end.

    The low end is at least :data:`SMALLEST_DYNAMIC_SIZE`. The high end is capped at
    `max_size`; a dimension without one is tried at twice its example size plus
    one (an odd size), within `max_size` too. Integer inputs are drawn between the example's smallest and
    largest value (indices stay valid); floating inputs from a normal distribution.
    """
    if program.example_inputs is None:
        raise InvalidArgumentError(
            "the program carries no example inputs to start from; pass inputs=[...] explicitly"
        )
    args, kwargs = program.example_inputs
    in_spec = program_in_spec(program.module_call_graph)
    if in_spec is not None and kwargs:
        kwargs = reorder_kwargs(kwargs, in_spec)
    leaves, spec = pytree.tree_flatten((args, kwargs))
    paths = [_input_name(path) for path, _ in pytree.tree_flatten_with_path((args, kwargs))[0]]
    user_inputs = set(program.graph_signature.user_inputs)
    fakes = [
        n.meta.get("val")
        for n in program.graph.nodes
        if n.op == "placeholder" and n.name in user_inputs
    ]
    if len(fakes) != len(leaves):
        raise InvalidArgumentError(
            f"the program's example inputs flatten to {len(leaves)} values but it has "
            f"{len(fakes)} user inputs; pass inputs=[...] explicitly"
        )

    def sample(label: str, sizes: dict[sympy.Symbol, int] | None) -> InputSample:
        values = [_value(leaf, fake, sizes, generator) for leaf, fake in zip(leaves, fakes)]
        new_args, new_kwargs = pytree.tree_unflatten(values, spec)
        return InputSample(label, tuple(new_args), dict(new_kwargs))

    found = [InputSample("the example inputs", tuple(args), dict(kwargs))]
    found += [sample(f"fresh values #{i + 1}", None) for i in range(samples)]
    symbols, where = _dynamic_symbols(fakes, paths)
    if symbols:
        low, high = {}, {}
        for symbol, hint in symbols.items():
            lower, upper = _range(program, symbol)
            low[symbol] = max(lower, SMALLEST_DYNAMIC_SIZE)
            high[symbol] = min(upper if upper is not None else 2 * hint + 1, max_size)
            if upper is not None:
                low[symbol] = min(low[symbol], upper)
            high[symbol] = max(high[symbol], low[symbol])
        for label, sizes in (("lower bounds", low), ("upper bounds", high)):
            shown = ", ".join(f"{where[s]}={v}" for s, v in sizes.items())
            found.append(sample(f"{label} of the dynamic dimensions ({shown})", sizes))
    return found


def _dynamic_symbols(
    fakes: list[Any], paths: list[str]
) -> tuple[dict[sympy.Symbol, int], dict[sympy.Symbol, str]]:
    """Each free symbol of the inputs' sizes with its example value, and the first
    input dimension that shows it (``x.shape[0]``), to name it by."""
    found: dict[sympy.Symbol, int] = {}
    where: dict[sympy.Symbol, str] = {}
    for fake, path in zip(fakes, paths):
        dims = fake.shape if isinstance(fake, torch.Tensor) else [fake]
        for i, dim in enumerate(dims):
            if not isinstance(dim, torch.SymInt):
                continue
            for symbol in sorted(dim.node.expr.free_symbols, key=str):
                if symbol in found:
                    continue
                env = dim.node.shape_env
                values = getattr(env, "backed_var_to_val", None) or env.var_to_val
                hint = values.get(symbol)
                found[symbol] = int(hint) if hint is not None else SMALLEST_DYNAMIC_SIZE
                plain = dim.node.expr == symbol
                shown = f"{path}.shape[{i}]" if isinstance(fake, torch.Tensor) else path
                where[symbol] = shown if plain else f"{symbol} (in {shown})"
    return found, where


def _input_name(path: tuple[Any, ...]) -> str:
    """``args[0]`` or ``kwargs['scale']`` for a leaf of (args, kwargs)."""
    head, *rest = path
    return ("args" if getattr(head, "idx", 0) == 0 else "kwargs") + pytree.keystr(tuple(rest))


def _range(program: ExportedProgram, symbol: sympy.Symbol) -> tuple[int, int | None]:
    """(lower, upper) of `symbol` in the program's range constraints; None: unbounded."""
    bounds = program.range_constraints.get(symbol)
    if bounds is None:
        return SMALLEST_DYNAMIC_SIZE, None
    lower = int(bounds.lower) if bounds.lower not in (-int_oo, int_oo) else 0
    upper = None if bounds.upper == int_oo else int(bounds.upper)
    return lower, upper


def _size(dim: Any, sizes: dict[sympy.Symbol, int] | None) -> int:
    if not isinstance(dim, torch.SymInt):
        return int(dim)
    if sizes is None:
        hint = dim.node.hint
        return int(hint) if hint is not None else SMALLEST_DYNAMIC_SIZE
    return int(dim.node.expr.xreplace({s: sympy.Integer(v) for s, v in sizes.items()}))


def _value(
    example: Any, fake: Any, sizes: dict[sympy.Symbol, int] | None, generator: torch.Generator
) -> Any:
    """A new value like `example`, its dynamic sizes set by `sizes` (None: as in the example)."""
    if isinstance(fake, torch.SymInt) and sizes is not None:
        return _size(fake, sizes)
    if not isinstance(example, torch.Tensor):
        return example
    shape = (
        [_size(d, sizes) for d in fake.shape] if isinstance(fake, torch.Tensor) else example.shape
    )
    dtype = example.dtype
    if dtype.is_floating_point or dtype.is_complex:
        value = torch.randn(shape, dtype=dtype, generator=generator)
    elif dtype == torch.bool:
        value = torch.randint(0, 2, shape, generator=generator).bool()
    elif example.numel():
        low, high = int(example.min()), int(example.max())
        value = torch.randint(low, high + 1, shape, generator=generator).to(dtype)
    else:
        value = torch.zeros(shape, dtype=dtype)
    return value.to(example.device)
