"""The lowering pipeline: the passes, in order, composed with torch's PassManager."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.fx.passes.infra.pass_base import PassBase
from torch.fx.passes.infra.pass_manager import PassManager

from fxdelegate.errors import FxDelegateError
from fxdelegate.partitioner import OpSet
from fxdelegate.partitioner.gc_pause import gc_paused

from .anchor_symbolic_sizes import AnchorSymbolicSizesPass
from .assign_constant_owners import AssignConstantOwnersPass
from .context import CONTEXT_KEY, LoweringContext, attach_context
from .delegate_regions import DelegateRegionsPass
from .lower_regions import LowerRegionsPass
from .lowering_result import LoweringResult
from .outline_regions import OutlineRegionsPass
from .pass_pipeline import PassPipeline, default_pipeline
from .prepare_program import prepare
from .tag_regions import TagRegionsPass, existing_delegates
from .user_pass_checks import UserPassChecker, program_in_spec
from .verify_delegated import VerifyDelegatedGraphPass


def lowering_passes() -> list[PassBase]:
    return [
        AnchorSymbolicSizesPass(),
        TagRegionsPass(),
        AssignConstantOwnersPass(),
        OutlineRegionsPass(),
        LowerRegionsPass(),
        DelegateRegionsPass(),
        VerifyDelegatedGraphPass(),
    ]


def lower_program(
    exported_program: ExportedProgram,
    *,
    backend_id: str,
    support: Any,
    exclude_ops: OpSet,
    min_partition_size: int,
    compile_options: dict[str, Any],
    cache_dir: str | None,
    strict: bool,
    compile_workers: int | None,
    recordable_runners: bool,
    pipeline: PassPipeline | None = None,
) -> LoweringResult:
    """Prepare `exported_program` (left untouched), run every pass of `pipeline`
    (default: :func:`default_pipeline`), and return the delegated program with its
    regions. Arguments are checked by the caller."""
    workdir = tempfile.mkdtemp(prefix="fxdelegate-")
    try:
        with gc_paused():
            prepared = prepare(exported_program)
            context = LoweringContext(
                backend_id=backend_id,
                support=support,
                exclude_ops=exclude_ops,
                min_partition_size=min_partition_size,
                compile_options=dict(compile_options),
                workdir=workdir,
                signature=prepared.graph_signature,
                state_dict=dict(prepared.state_dict),
                constants=dict(prepared.constants),
                range_constraints=dict(prepared.range_constraints),
                cache_dir=cache_dir,
                strict=strict,
                compile_workers=compile_workers,
                recordable_runners=recordable_runners,
            )
            pipeline = pipeline if pipeline is not None else default_pipeline()
            checker = UserPassChecker(
                prepared.example_inputs,
                program_in_spec(prepared.module_call_graph),
                check_outputs=pipeline.check_outputs,
            )
            graph_module = run_lowering_passes(
                prepared.graph_module, context, pipeline.manager_passes(checker)
            )
            graph_module.meta.pop(CONTEXT_KEY, None)
            prepared.graph_module = graph_module  # a user pass may have handed back a new one
            prepared.graph_signature = context.signature
            prepared.state_dict = context.state_dict
            prepared.constants = context.constants
            program = prepared.to_exported_program()
            lowered_now = {r.name for r in context.regions}
            earlier = [
                m
                for m in existing_delegates(program.graph_module)
                if m.module_name not in lowered_now
            ]
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return LoweringResult(
        program=program,
        regions=context.regions,
        earlier_regions=earlier,
        backend_id=backend_id,
        partition_result=context.partition_result,
        graph_snapshot=context.graph_snapshot,
        failed_regions=context.failed_regions,
        compile_stats=context.compile_stats,
        workdir=workdir,
        user_passes=checker.runs,
    )


def run_lowering_passes(
    graph_module: torch.fx.GraphModule,
    context: LoweringContext,
    passes: list[PassBase] | None = None,
) -> torch.fx.GraphModule:
    """Run `passes` (default: the whole pipeline) over `graph_module` in place."""
    attach_context(graph_module, context)
    manager = PassManager(
        passes=passes if passes is not None else lowering_passes(), run_checks_after_each_pass=True
    )
    manager.add_checks(_lint)
    try:
        result = manager(graph_module)
    except Exception as exc:
        # PassManager wraps every failure; users should see ours unwrapped.
        cause = exc.__cause__
        if isinstance(cause, FxDelegateError):
            raise cause from cause.__cause__
        raise
    return result.graph_module


def _lint(module: torch.nn.Module) -> None:
    if isinstance(module, torch.fx.GraphModule):
        module.graph.lint()
