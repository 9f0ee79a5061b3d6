"""Read every symbolic size from the graph inputs.

Exported graphs compute sizes such as ``sym_size(linear_3, 0)`` from
intermediate tensors. Such a node would make the partitioner believe that a
region's later ops depend on the executor (region -> sym_size -> region),
splitting regions for nothing. Every backed size is really a function of the
input shapes, so this pass recomputes each one from the graph's placeholders
(right after them) and drops the old computation. Data-dependent (unbacked)
sizes are left alone.
"""

from __future__ import annotations

import torch
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from fxdelegate.partitioner.candidates import has_unbacked_symbols
from fxdelegate.partitioner.symbolic import is_derivable, is_pure_size_op, size_expr, symbol_sources

from .symbolic_sizes import SizeExprBuilder


def _is_anchored(node: torch.fx.Node) -> bool:
    return all(
        a.op == "placeholder" or (is_pure_size_op(a) and _is_anchored(a))
        for a in node.all_input_nodes
    )


class AnchorSymbolicSizesPass(PassBase):
    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        nodes = list(graph.nodes)
        placeholders = [n for n in nodes if n.op == "placeholder"]
        sources = symbol_sources(placeholders)
        to_replace = []
        anchored: set[torch.fx.Node] = set()
        for node in nodes:
            if node.op != "call_function" or not is_pure_size_op(node):
                continue
            expr = size_expr(node.meta.get("val"))
            if expr is None or has_unbacked_symbols(node.meta.get("val")):
                continue
            if all(a.op == "placeholder" or a in anchored for a in node.all_input_nodes):
                anchored.add(node)
                continue
            if is_derivable(expr, sources):
                to_replace.append((node, expr))
        if not to_replace:
            return PassResult(graph_module, False)

        anchor = placeholders[-1] if placeholders else None
        builder = SizeExprBuilder(graph, sources)
        insert_at = anchor.next if anchor is not None else next(iter(graph.nodes))
        with graph.inserting_before(insert_at):
            for node, expr in to_replace:
                value = builder.build(expr)
                for user in list(node.users):
                    user.replace_input_with(node, value)  # type: ignore[arg-type]
        for node, _ in reversed(to_replace):
            if not node.users:
                graph.erase_node(node)
        # Inputs of the dropped size ops may now be dead size ops themselves.
        for node in reversed(list(graph.nodes)):
            if node.op == "call_function" and is_pure_size_op(node) and not node.users:
                graph.erase_node(node)
        graph_module.recompile()
        return PassResult(graph_module, True)

    def ensures(self, graph_module: torch.fx.GraphModule) -> None:
        """Every backed size is computed from the graph's inputs, none from an intermediate tensor."""
        graph = graph_module.graph
        sources = symbol_sources([n for n in graph.nodes if n.op == "placeholder"])
        for node in graph.nodes:
            if node.op != "call_function" or not is_pure_size_op(node):
                continue
            val = node.meta.get("val")
            expr = size_expr(val)
            if expr is None or has_unbacked_symbols(val) or not is_derivable(expr, sources):
                continue
            if not _is_anchored(node):
                raise AssertionError(f"size node {node.name} still reads an intermediate tensor")
