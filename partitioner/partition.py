"""The partitioner's contract: what it proposes and why it left nodes out."""

from __future__ import annotations

import contextlib
import gc
import logging
import operator
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch.fx.passes.operator_support import OperatorSupportBase

from fxdelegate.errors import InvalidArgumentError

from .candidates import RejectReason, judge_nodes
from .op_support import CompilableAtenSupport, OpSelector, OpSet, describe_target
from .regions import find_convex_regions

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

    graph = graph_module.graph
    submodules = dict(graph_module.named_modules())
    with _gc_paused():
        verdicts = judge_nodes(graph, support, excluded, submodules, backend_id)
        nodes = list(graph.nodes)
        regions = find_convex_regions(nodes, lambda n: n in verdicts and verdicts[n].candidate)

    partitions: list[Partition] = []
    rejected_small: dict[torch.fx.Node, RejectedNode] = {}
    for members in regions:
        size = sum(1 for n in members if n.target is not operator.getitem)
        if size < min_partition_size:
            for n in members:
                rejected_small[n] = RejectedNode(
                    n, RejectReason.TOO_SMALL, f"{size} < {min_partition_size} compute nodes"
                )
            continue
        partitions.append(
            Partition(f"{name_prefix}_{first_index + len(partitions)}", tuple(members))
        )

    rejected = []
    for node in nodes:
        if node in rejected_small:
            rejected.append(rejected_small[node])
        elif node in verdicts and not verdicts[node].candidate:
            verdict = verdicts[node]
            rejected.append(RejectedNode(node, verdict.reason, verdict.detail))  # type: ignore[arg-type]
    _log_result(partitions, rejected)
    return PartitionResult(partitions, rejected)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    # The sweeps allocate one small list per node; on large graphs the cyclic
    # collector would rescan the whole FX graph many times over.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def propose_partitions(
    graph_module: torch.fx.GraphModule,
    support: OperatorSupportBase | None = None,
    *,
    exclude_ops: Iterable[OpSelector] = (),
    min_partition_size: int = 1,
) -> list[Partition]:
    """Convex, deterministic partitions of the supported nodes of `graph_module`."""
    return partition_graph(
        graph_module, support, exclude_ops=exclude_ops, min_partition_size=min_partition_size
    ).partitions


def _log_result(partitions: list[Partition], rejected: list[RejectedNode]) -> None:
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
