"""Symbolic sizes: where each size symbol can be read, and which size
expressions a region can recompute from tensor shapes.

AOTInductor takes tensors only, so a region cannot receive a SymInt from the
executor; it recomputes the value from the shapes of its tensor inputs. The
partitioner keeps out of regions any node needing a size that cannot be
recomputed that way.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import sympy
import torch
from torch._ops import OpOverload
from torch.utils._sympy.functions import (
    CeilDiv,
    CleanDiv,
    FloorDiv,
    Max,
    Min,
    Mod,
    PowByNatural,
    PythonMod,
)

SizeSource = tuple[torch.fx.Node, int]  # (tensor-valued node, dimension)

# sympy functions rebuilt as one binary Python operator.
BINARY_SIZE_FUNCTIONS: list[tuple[type, Callable]] = [
    (FloorDiv, operator.floordiv),
    (CleanDiv, operator.floordiv),
    (PythonMod, operator.mod),
    (Mod, operator.mod),
    (PowByNatural, operator.pow),
]


def symbol_sources(nodes: list[torch.fx.Node]) -> dict[sympy.Symbol, SizeSource]:
    """For each size symbol, the first (node, dim) whose size is exactly that symbol."""
    sources: dict[sympy.Symbol, SizeSource] = {}
    for node in nodes:
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        for dim, size in enumerate(val.shape):
            if isinstance(size, torch.SymInt):
                expr = size.node.expr
                if isinstance(expr, sympy.Symbol) and expr not in sources:
                    sources[expr] = (node, dim)
    return sources


def size_expr(value: object) -> sympy.Expr | None:
    """The sympy expression of an int/SymInt value, None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return sympy.Integer(value)
    if isinstance(value, torch.SymInt):
        return value.node.expr
    return None


def is_derivable(expr: sympy.Expr, sources: dict[sympy.Symbol, SizeSource]) -> bool:
    """Whether `expr` can be rebuilt by :class:`SizeExprBuilder` from `sources`."""
    if expr.is_Integer:
        return True
    if isinstance(expr, sympy.Symbol):
        return expr in sources
    if isinstance(expr, (sympy.Add, sympy.Mul)):
        return all(a.is_Integer or is_derivable(a, sources) for a in expr.args)
    if isinstance(expr, (CeilDiv, Max, Min)) or any(
        isinstance(expr, cls) for cls, _ in BINARY_SIZE_FUNCTIONS
    ):
        return all(is_derivable(a, sources) for a in expr.args)
    return False


def is_pure_size_op(node: torch.fx.Node) -> bool:
    """Nodes that only compute sizes and have no side effects (safe to drop or re-create)."""
    target = node.target
    if isinstance(target, OpOverload):
        return target._schema.name in (
            "aten::sym_size",
            "aten::sym_numel",
            "aten::sym_stride",
            "aten::sym_storage_offset",
        )
    return target in _PURE_SCALAR_FNS


_PURE_SCALAR_FNS = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.floordiv,
    operator.mod,
    operator.neg,
    operator.pow,
    torch.sym_max,
    torch.sym_min,
}
