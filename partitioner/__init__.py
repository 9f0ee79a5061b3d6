"""fxdelegate.partitioner: decides which nodes run in which delegated region."""

from .candidates import RejectReason
from .op_support import (
    CompilableAtenSupport,
    OpSet,
    SupportedOps,
    describe_target,
    resolve_op_selector,
)
from .partition import Partition, PartitionResult, RejectedNode, partition_graph, propose_partitions

__all__ = [
    "CompilableAtenSupport",
    "OpSet",
    "Partition",
    "PartitionResult",
    "RejectReason",
    "RejectedNode",
    "SupportedOps",
    "describe_target",
    "partition_graph",
    "propose_partitions",
    "resolve_op_selector",
]
