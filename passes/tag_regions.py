"""Partition the graph and tag each node with the region it joins."""

from __future__ import annotations

import operator

import torch
from torch.export.graph_signature import InputKind
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from fxdelegate.errors import UnsupportedProgramError
from fxdelegate.partitioner import partition_graph
from fxdelegate.partitioner.graph_picture import graph_snapshot
from fxdelegate.runtime.lowered_module import LoweredBackendModule

from .context import RegionRecord, get_context

REGION_TAG = "fxdelegate_region"


class TagRegionsPass(PassBase):
    """Runs the partitioner; writes ``node.meta["fxdelegate_region"]`` and one
    :class:`RegionRecord` per proposed region. The graph itself is unchanged."""

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        ctx = get_context(graph_module)
        result = partition_graph(
            graph_module,
            ctx.support,
            exclude_ops=ctx.exclude_ops,
            min_partition_size=ctx.min_partition_size,
            backend_id=ctx.backend_id,
            # Regions lowered earlier keep their names: new ones continue the count.
            first_index=_next_region_index(graph_module),
        )
        for node in graph_module.graph.nodes:
            node.meta.pop(REGION_TAG, None)
        for partition in result.partitions:
            for node in partition.nodes:
                node.meta[REGION_TAG] = partition.name
        ctx.partition_result = result
        ctx.regions = [RegionRecord(p) for p in result.partitions]
        ctx.graph_snapshot = graph_snapshot(
            graph_module.graph,
            {n.name: p.name for p in result.partitions for n in p.nodes},
            {r.node.name: r.explain() for r in result.rejected},
            {s.arg.name for s in ctx.signature.input_specs if s.kind == InputKind.USER_INPUT},
        )
        return PassResult(graph_module, False)

    def ensures(self, graph_module: torch.fx.GraphModule) -> None:
        """Only call_function nodes are tagged; a getitem is in its producer's region."""
        for node in graph_module.graph.nodes:
            tag = node.meta.get(REGION_TAG)
            if tag is None:
                continue
            if node.op != "call_function":
                raise AssertionError(f"{node.op} node {node.name} was tagged into {tag}")
            if node.target is operator.getitem and node.args[0].meta.get(REGION_TAG) != tag:
                raise AssertionError(f"getitem {node.name} is separated from its producer")


def existing_delegates(graph_module: torch.fx.GraphModule) -> list[LoweredBackendModule]:
    """Lowered modules of delegate nodes already in the graph (from an earlier lowering)."""
    delegate = torch.ops.higher_order.executorch_call_delegate
    found = []
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and node.target is delegate:
            module = node.args[0]
            if isinstance(module, torch.fx.Node) and module.op == "get_attr":
                module = getattr(graph_module, module.target)  # type: ignore[arg-type]
            if not isinstance(module, LoweredBackendModule) or module.artifact is None:
                raise UnsupportedProgramError(
                    f"delegate node {node.name} has no compiled region attached (a program loaded from an "
                    "archive cannot be lowered again); lower the program returned by fxdelegate.lower instead"
                )
            found.append(module)
    return found


def _next_region_index(graph_module: torch.fx.GraphModule) -> int:
    indices = [
        int(m.module_name.rsplit("_", 1)[1])
        for m in existing_delegates(graph_module)
        if m.module_name.rsplit("_", 1)[-1].isdigit()
    ]
    return max(indices, default=-1) + 1
