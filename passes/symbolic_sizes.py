"""Emit graph nodes that recompute a symbolic size from tensor shapes.

Used by the parent graph (read every size from the graph inputs) and by
outlined regions (recompute sizes from the region's own tensor inputs, since
AOTInductor takes tensors only).
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import sympy
import torch
from torch.utils._sympy.functions import CeilDiv, Max, Min

from fxdelegate.partitioner.symbolic import BINARY_SIZE_FUNCTIONS, SizeSource


class SizeExprBuilder:
    """Emits nodes computing size expressions into `graph`, reading symbols from `sources`.

    New nodes go where the graph's insertion point is; ``sym_size`` reads are
    shared between expressions.
    """

    def __init__(self, graph: torch.fx.Graph, sources: dict[sympy.Symbol, SizeSource]):
        self.graph = graph
        self.sources = sources
        self._reads: dict[sympy.Symbol, torch.fx.Node] = {}

    def build(self, expr: sympy.Expr) -> torch.fx.Node | int:
        if expr.is_Integer:
            return int(expr)
        if isinstance(expr, sympy.Symbol):
            return self._read(expr)
        if isinstance(expr, sympy.Add):
            return self._fold(operator.add, expr.args)
        if isinstance(expr, sympy.Mul):
            return self._fold(operator.mul, expr.args)
        if isinstance(expr, CeilDiv):
            a, b = (self.build(x) for x in expr.args)
            # ceil(a / b) == -((-a) // b)
            return self._call(
                operator.neg, self._call(operator.floordiv, self._call(operator.neg, a), b)
            )
        if isinstance(expr, Max):
            return self._fold(torch.sym_max, expr.args)
        if isinstance(expr, Min):
            return self._fold(torch.sym_min, expr.args)
        for cls, fn in BINARY_SIZE_FUNCTIONS:
            if isinstance(expr, cls):
                a, b = (self.build(x) for x in expr.args)
                return self._call(fn, a, b)
        raise NotImplementedError(f"cannot rebuild size expression {expr} ({type(expr).__name__})")

    def _read(self, symbol: sympy.Symbol) -> torch.fx.Node:
        node = self._reads.get(symbol)
        if node is None:
            source, dim = self.sources[symbol]
            node = self.graph.call_function(torch.ops.aten.sym_size.int, (source, dim))
            node.meta["val"] = source.meta["val"].shape[dim]
            self._reads[symbol] = node
        return node

    def _fold(self, fn: Callable, args: tuple) -> torch.fx.Node | int:
        # Integers last so that SymInt arithmetic never starts from a plain int.
        ordered = sorted(args, key=lambda a: a.is_Integer)
        acc = self.build(ordered[0])
        for arg in ordered[1:]:
            acc = self._call(fn, acc, self.build(arg))
        return acc

    def _call(self, fn: Callable, *args: torch.fx.Node | int) -> torch.fx.Node | int:
        vals = [a.meta["val"] if isinstance(a, torch.fx.Node) else a for a in args]
        if not any(isinstance(a, torch.fx.Node) for a in args):
            return fn(*vals)
        node = self.graph.call_function(fn, tuple(args))
        node.meta["val"] = fn(*vals)
        return node
