"""What one run of the lowering pipeline hands back to ``fxdelegate.lower``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch.export import ExportedProgram

from fxdelegate.partitioner import PartitionResult
from fxdelegate.runtime.backend import RegionArtifact, Runner
from fxdelegate.runtime.lowered_module import LoweredBackendModule

from ..context import RegionRecord
from .user_pass_checks import UserPassRun


@dataclass
class BackendRun:
    """One backend's turn in a lowering: what its partitioner decided and what failed."""

    backend_id: str
    partition_result: PartitionResult | None
    # Regions whose compile failed (name -> error): their nodes stay for the next backend.
    failed_regions: dict[str, str] = field(default_factory=dict)
    compile_stats: dict[str, Any] = field(default_factory=dict)

    def executor_reasons(self) -> dict[str, str]:
        """Node name -> why this backend did not take it."""
        result = self.partition_result
        reasons = {r.node.name: r.explain() for r in result.rejected} if result else {}
        by_name = {p.name: p for p in result.partitions} if result else {}
        for name, error in self.failed_regions.items():
            why = f"{name} failed to compile ({error})"
            reasons.update({n.name: why for n in by_name[name].nodes})
        return reasons


@dataclass
class LoweringResult:
    """The delegated program and everything the caller needs to run and report it."""

    # The parent program, each lowered region replaced by one delegate call.
    program: ExportedProgram
    # Regions lowered by this run, backend by backend, each with its artifact and runner.
    regions: list[RegionRecord]
    # Delegates an earlier lowering left in the program: kept as they are; the
    # caller loads their runners (as `fxdelegate.load` does).
    earlier_regions: list[LoweredBackendModule]
    # One per backend, in the order they were tried.
    runs: list[BackendRun]
    # The partitioned graph, for the report's picture (every backend's regions).
    graph_snapshot: dict[str, Any] | None
    # Folder holding the regions' compiled files; the program owns it from now on.
    workdir: str | None = None
    # The user's passes as they ran (for the report).
    user_passes: list[UserPassRun] = field(default_factory=list)

    @property
    def backend_ids(self) -> list[str]:
        return [run.backend_id for run in self.runs]

    @property
    def backend_id(self) -> str:
        """The backends tried, comma-separated in priority order."""
        return ",".join(self.backend_ids)

    @property
    def partition_result(self) -> PartitionResult | None:
        """The first backend's partition (the only one when a single backend ran)."""
        return self.runs[0].partition_result if self.runs else None

    @property
    def failed_regions(self) -> dict[str, str]:
        return {name: error for run in self.runs for name, error in run.failed_regions.items()}

    @property
    def compile_stats(self) -> dict[str, Any]:
        """Every backend's compile counts and seconds, added up."""
        total: dict[str, Any] = {}
        for run in self.runs:
            for key, value in run.compile_stats.items():
                total[key] = total.get(key, 0) + value
        if "seconds" in total:
            total["seconds"] = round(total["seconds"], 2)
        return total

    def executor_reasons(self) -> dict[str, str]:
        """Node name -> why no backend took it. With several backends, each says why:
        ``"reference: unsupported (...); aoti: excluded"``."""
        per_run = [run.executor_reasons() for run in self.runs]
        if len(per_run) == 1:
            return per_run[0]
        merged = {}
        for name in {name for reasons in per_run for name in reasons}:
            said = [(run.backend_id, r[name]) for run, r in zip(self.runs, per_run) if name in r]
            if len(said) == len(self.runs) and len({why for _, why in said}) == 1:
                merged[name] = said[0][1]  # every backend says the same (exclude_ops, say)
            else:
                merged[name] = "; ".join(f"{backend}: {why}" for backend, why in said)
        return merged

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
