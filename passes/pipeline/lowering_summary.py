"""The report of one lowering, built from its result: regions, executor ops and why."""

from __future__ import annotations

import operator
from collections import Counter
from typing import Any

import torch
from torch.export import ExportedProgram

from fxdelegate.partitioner.op_support import describe_target
from fxdelegate.partitioner.report import LoweringSummary, RegionSummary, executor_ops_of

from .lowering_result import LoweringResult


def summarize(result: LoweringResult, known: dict[str, RegionSummary]) -> LoweringSummary:
    """`known`: the reports of regions an earlier lowering delegated, by name."""
    program = result.program
    # Regions of one structure share one program graph (and its node names), so an
    # earlier region is described by its own report when there is one.
    earlier = [
        known.get(m.module_name) or _summary_of_existing(m, program) for m in result.earlier_regions
    ]
    regions = earlier + [
        RegionSummary(
            name=r.name,
            backend_id=r.artifact.backend_id if r.artifact else result.backend_id,
            nodes=[n.name for n in r.partition.compute_nodes],
            ops=r.partition.op_histogram(),
            num_inputs=len(r.inputs),
            num_outputs=len(r.outputs),
            owned_state=list(r.owned_state),
            owned_bytes=r.owned_bytes,
            compile=r.cache_source,
        )
        for r in result.regions
    ]
    reasons = result.executor_reasons()
    snapshot = result.graph_snapshot
    if snapshot:
        _update_snapshot(snapshot, result, reasons)
    return LoweringSummary(
        result.backend_id,
        regions,
        executor_ops_of(program.graph, reasons),
        snapshot,
        result.compile_stats or None,
        user_passes=[run.to_dict() for run in result.user_passes] or None,
        failed_regions=_failed_regions(result) or None,
    )


def _failed_regions(result: LoweringResult) -> list[RegionSummary]:
    """The Regions table's rows for regions a backend failed to compile."""
    rows = []
    for run in result.runs:
        if run.partition_result is None:
            continue
        by_name = {p.name: p for p in run.partition_result.partitions}
        for name, error in run.failed_regions.items():
            partition = by_name[name]
            rows.append(
                RegionSummary(
                    name=name,
                    backend_id=run.backend_id,
                    nodes=[n.name for n in partition.compute_nodes],
                    ops=partition.op_histogram(),
                    # (its nodes may since be in a later backend's region: not counted)
                    num_inputs=-1,
                    num_outputs=-1,
                    compile=f"failed: {error}",
                )
            )
    return rows


def _update_snapshot(
    snapshot: dict[str, Any], result: LoweringResult, reasons: dict[str, str]
) -> None:
    """The snapshot is the first backend's picture: show where every node ended up
    (a region that failed to compile, a later backend's region)."""
    region_of = {n.name: r.name for r in result.regions for n in r.partition.nodes}
    for entry in snapshot["nodes"]:
        name, kind = entry[0], entry[1]
        if kind != "op":
            continue
        if name in region_of:
            entry[3], entry[4] = region_of[name], ""
        else:
            entry[3], entry[4] = None, reasons.get(name, entry[4])


def _summary_of_existing(module: Any, program: ExportedProgram) -> RegionSummary:
    region = module.original_module
    compute = [
        n
        for n in region.graph.nodes
        if n.op == "call_function" and n.target is not operator.getitem
    ]
    return RegionSummary(
        name=module.module_name,
        backend_id=module.backend_id,
        nodes=[n.name for n in compute],
        ops=dict(Counter(describe_target(n.target) for n in compute).most_common()),
        num_inputs=len(region.graph_signature.user_inputs),
        num_outputs=len(region.graph_signature.user_outputs),
        owned_state=[fqn for _, fqn in module.artifact.constant_bindings],
        owned_bytes=sum(
            t.numel() * t.element_size()
            for _, fqn in module.artifact.constant_bindings
            if isinstance(
                t := program.state_dict.get(fqn, program.constants.get(fqn)), torch.Tensor
            )
        ),
    )
