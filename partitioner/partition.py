"""The partitioner's contract: what it proposes and why it left nodes out."""

from __future__ import annotations

import logging
import operator
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch.fx.passes.operator_support import OperatorSupportBase

from fxdelegate.errors import InvalidArgumentError

from .candidates import JudgedGraph, RejectReason, judge_graph
from .gc_pause import gc_paused
from .op_support import CompilableAtenSupport, OpSelector, OpSet, describe_target
from .regions import convex_regions

log = logging.getLogger("fxdelegate.partitioner")


@dataclass(frozen=True)
class Partition:
    """A convex set of call_function nodes that one backend call will execute."""

    name: str
    nodes: tuple[torch.fx.Node, ...]

    @property
    def compute_nodes(self) -> tuple[torch.fx.Node, ...]:
        return tuple(n for n in self.nodes if n.target is not operator.getitem)

    @property
    def size(self) -> int:
        return len(self.compute_nodes)

    def op_histogram(self) -> dict[str, int]:
        return dict(Counter(describe_target(n.target) for n in self.compute_nodes).most_common())


@dataclass(frozen=True)
class RejectedNode:
    """A call_function node left to the executor, and why."""

    node: torch.fx.Node
    reason: RejectReason
    detail: str = ""

    @property
    def op(self) -> str:
        return describe_target(self.node.target)

    def explain(self) -> str:
        return f"{self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class PartitionResult:
    partitions: list[Partition]
    rejected: list[RejectedNode] = field(default_factory=list)

    def partition_of(self) -> dict[torch.fx.Node, Partition]:
        return {node: p for p in self.partitions for node in p.nodes}


def check_partition_arguments(support: object, min_partition_size: object) -> None:
    """Refuse a support that is not an OperatorSupportBase, or a size that is not an int >= 1."""
    if not isinstance(support, OperatorSupportBase):
        raise InvalidArgumentError(
            "support must be a torch.fx.passes.operator_support.OperatorSupportBase, "
            f"got {type(support).__name__}"
        )
    if (
        isinstance(min_partition_size, bool)
        or not isinstance(min_partition_size, int)
        or min_partition_size < 1
    ):
        raise InvalidArgumentError(
            f"min_partition_size must be an int >= 1, got {min_partition_size!r}"
        )


def partition_graph(
    graph_module: torch.fx.GraphModule,
    support: OperatorSupportBase | None = None,
    *,
    exclude_ops: Iterable[OpSelector] = (),
    min_partition_size: int = 1,
    backend_id: str = "backend",
    name_prefix: str = "region",
    first_index: int = 0,
) -> PartitionResult:
    """Propose convex regions over `graph_module` and explain every node left out."""
    if not isinstance(graph_module, torch.fx.GraphModule):
        raise InvalidArgumentError(
            f"expected a torch.fx.GraphModule, got {type(graph_module).__name__}"
        )
    if support is None:
        support = CompilableAtenSupport()
    check_partition_arguments(support, min_partition_size)
    excluded = exclude_ops if isinstance(exclude_ops, OpSet) else OpSet(exclude_ops)

    submodules = dict(graph_module.named_modules())
    with gc_paused():
        judged = judge_graph(graph_module.graph, support, excluded, submodules, backend_id)
        _require_values(judged.missing_values)
        result = _partition(judged, min_partition_size, name_prefix, first_index)
        # Its lists (a few small ones per node) go now, before the collector
        # wakes up and would scan them.
        del judged
    _log_result(result.partitions, result.rejected)
    return result


def _partition(
    judged: JudgedGraph, min_partition_size: int, name_prefix: str, first_index: int
) -> PartitionResult:
    # By index: on large graphs, reading a node's fields again costs a cache miss.
    nodes, glue = judged.nodes, judged.glue
    partitions: list[Partition] = []
    too_small: dict[int, str] = {}  # node index -> why its region was dropped
    for region in convex_regions(judged.inputs, judged.candidate, glue):
        size = sum(1 for i in region if glue[i] < 0)  # getitems do not count
        if size < min_partition_size:
            detail = f"{size} < {min_partition_size} compute nodes"
            too_small.update(dict.fromkeys(region, detail))
            continue
        name = f"{name_prefix}_{first_index + len(partitions)}"
        partitions.append(Partition(name, tuple(map(nodes.__getitem__, region))))

    rejected = []
    for i, verdict in enumerate(judged.verdicts):  # graph order
        if verdict is None:
            continue  # not a call_function
        if not verdict.candidate:
            rejected.append(RejectedNode(nodes[i], verdict.reason, verdict.detail))  # type: ignore[arg-type]
        elif too_small and i in too_small:
            rejected.append(RejectedNode(nodes[i], RejectReason.TOO_SMALL, too_small[i]))
    return PartitionResult(partitions, rejected)


def _require_values(missing: list[str]) -> None:
    """Refuse a graph whose used values carry no ``meta["val"]`` (`missing` names
    them): without them the partitioner cannot tell a tensor from a size or a
    tuple, and would reject every such node for want of a tensor output."""
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise InvalidArgumentError(
            f"{len(missing)} call_function node(s) have no meta['val'] ({shown}); the "
            "partitioner needs every node's value (a fake tensor, a size or a tuple of them) "
            "to tell tensors from other values. Graphs from torch.export carry it; for a "
            "symbolic_trace or hand-built graph, run "
            "torch.fx.passes.fake_tensor_prop.FakeTensorProp(graph_module).propagate(*inputs) "
            "first"
        )


def propose_partitions(
    graph_module: torch.fx.GraphModule,
    support: OperatorSupportBase | None = None,
    *,
    exclude_ops: Iterable[OpSelector] = (),
    min_partition_size: int = 1,
) -> list[Partition]:
    """Convex, deterministic partitions of the supported nodes of `graph_module`.

    Use :func:`partition_graph` for the reason each node was left out; an empty
    result from a graph with compute nodes warns with the first reasons."""
    result = partition_graph(
        graph_module, support, exclude_ops=exclude_ops, min_partition_size=min_partition_size
    )
    compute = (
        [r for r in result.rejected if r.node.target is not operator.getitem]
        if not result.partitions
        else []
    )
    if compute:
        reasons = "; ".join(f"{r.node.name}: {r.explain()}" for r in compute[:3])
        warnings.warn(
            f"no partitions: all {len(compute)} compute node(s) were left out ({reasons}"
            f"{'; ...' if len(compute) > 3 else ''}); partition_graph() lists every reason",
            stacklevel=2,
        )
    return result.partitions


def _log_result(partitions: list[Partition], rejected: list[RejectedNode]) -> None:
    if not log.isEnabledFor(logging.INFO):
        return  # the messages below cost time linear in the graph to format
    compute = sum(p.size for p in partitions)
    log.info(
        "partitioned into %d region(s) holding %d compute node(s); %d node(s) stay in the executor",
        len(partitions),
        compute,
        len(rejected),
    )
    # Users must be able to see why a model runs slower than expected: INFO, not DEBUG.
    for r in rejected:
        if r.reason in (RejectReason.SYMBOLIC_SCALAR,):
            continue
        log.info("executor keeps %s (%s): %s", r.node.name, r.op, r.explain())
