"""State that the lowering passes share, carried on the graph module they transform.

torch's PassManager hands each pass only a GraphModule; everything else a pass
needs (the program's signature and state, the partition, the outlined regions)
lives in one :class:`LoweringContext` stored in ``graph_module.meta``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import ExportGraphSignature
from torch.fx.passes.operator_support import OperatorSupportBase

from fxdelegate.partitioner import OpSet, Partition, PartitionResult
from fxdelegate.runtime.backend import RegionArtifact, Runner

from .compile.remote_cache import RemoteCacheOptions

CONTEXT_KEY = "fxdelegate"
EXECUTOR = "executor"  # owner name of state that stays with the executor


@dataclass
class RegionRecord:
    """Everything known about one region as it moves through the passes."""

    partition: Partition
    # Parent-graph values fed to the region at run time, in the region's input order.
    inputs: list[torch.fx.Node] = field(default_factory=list)
    # Parent-graph values the region produces for the rest of the graph, in output order.
    outputs: list[torch.fx.Node] = field(default_factory=list)
    # Buffers the region writes in place: (FQN, parent placeholder, new value node).
    # The parent then neither outputs the new value nor copies it back.
    in_place: list[tuple[str, torch.fx.Node, torch.fx.Node]] = field(default_factory=list)
    # State (parameter/buffer/constant FQNs) that moved into the region.
    owned_state: list[str] = field(default_factory=list)
    owned_bytes: int = 0
    program: ExportedProgram | None = None
    # Regions with the same structure index outline to the same program (up to
    # their weights) and share it: see :mod:`.region_structure`.
    structure: int | None = None
    example_inputs: tuple[Any, ...] = ()
    artifact: RegionArtifact | None = None
    runner: Runner | None = None
    recordable: bool = False  # the runner can be recorded in a CUDA graph
    # Where its artifact came from, when a remote cache is in use: "local hit",
    # "remote hit", "compiled", "compiled, published" (see compile/tiered_cache.py).
    cache_source: str = ""
    delegate_node: torch.fx.Node | None = None

    @property
    def name(self) -> str:
        return self.partition.name


@dataclass
class LoweringContext:
    """Inputs and products of one lowering run."""

    backend_id: str
    support: OperatorSupportBase
    exclude_ops: OpSet
    min_partition_size: int
    compile_options: dict[str, Any]
    workdir: str
    # The program being transformed (its graph module is the one the passes see).
    signature: ExportGraphSignature
    state_dict: dict[str, torch.Tensor]
    constants: dict[str, Any]
    range_constraints: dict[Any, Any]
    partition_result: PartitionResult | None = None
    owners: dict[str, str] | None = (
        None  # state FQN -> region name or EXECUTOR; None until assigned
    )
    regions: list[RegionRecord] = field(default_factory=list)
    # Nodes and edges of the partitioned graph, for the report's picture.
    graph_snapshot: dict[str, Any] | None = None
    # Compile settings: cache folder (None: no cache), failure policy, parallelism.
    cache_dir: str | None = None
    remote_cache: RemoteCacheOptions | None = None
    # Backends tried after this one (they may take what this one fails to compile).
    next_backends: tuple[str, ...] = ()
    strict: bool = False
    compile_workers: int | None = None
    # Load runners that CUDA graphs can record (where the backend has them).
    recordable_runners: bool = False
    failed_regions: dict[str, str] = field(default_factory=dict)  # region -> compiler error
    compile_stats: dict[str, Any] = field(default_factory=dict)

    def region(self, name: str) -> RegionRecord:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(name)


def get_context(graph_module: torch.fx.GraphModule) -> LoweringContext:
    try:
        return graph_module.meta[CONTEXT_KEY]
    except KeyError:
        raise RuntimeError(
            "this pass runs inside fxdelegate's lowering pipeline: the graph module carries no LoweringContext"
        ) from None


def attach_context(graph_module: torch.fx.GraphModule, context: LoweringContext) -> None:
    graph_module.meta[CONTEXT_KEY] = context
