"""What one run of the lowering pipeline hands back to ``fxdelegate.lower``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch.export import ExportedProgram

from fxdelegate.partitioner import PartitionResult
from fxdelegate.runtime.backend import RegionArtifact, Runner
from fxdelegate.runtime.lowered_module import LoweredBackendModule

from .context import RegionRecord
from .user_pass_checks import UserPassRun


@dataclass
class LoweringResult:
    """The delegated program and everything the caller needs to run and report it."""

    # The parent program, each lowered region replaced by one delegate call.
    program: ExportedProgram
    # Regions lowered by this run, in partition order, each with its artifact and runner.
    regions: list[RegionRecord]
    # Delegates an earlier lowering left in the program: kept as they are; the
    # caller loads their runners (as `fxdelegate.load` does).
    earlier_regions: list[LoweredBackendModule]
    backend_id: str
    # For the report: the partitioner's verdicts, the partition picture, regions
    # whose compile failed (name -> error), and compile-cache counts.
    partition_result: PartitionResult | None
    graph_snapshot: dict[str, Any] | None
    failed_regions: dict[str, str] = field(default_factory=dict)
    compile_stats: dict[str, Any] = field(default_factory=dict)
    # Folder holding the regions' compiled files; the program owns it from now on.
    workdir: str | None = None
    # The user's passes as they ran (for the report).
    user_passes: list[UserPassRun] = field(default_factory=list)

    @property
    def artifacts(self) -> dict[str, RegionArtifact]:
        return {r.artifact.key: r.artifact for r in self.regions}  # type: ignore[union-attr]

    @property
    def runners(self) -> dict[str, Runner]:
        return {r.artifact.key: r.runner for r in self.regions}  # type: ignore[union-attr,misc]

    @property
    def recordable(self) -> set[str]:
        """Keys of the regions whose runners a CUDA graph can record."""
        return {r.artifact.key for r in self.regions if r.recordable}  # type: ignore[union-attr]
