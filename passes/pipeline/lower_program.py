"""The lowering pipeline: the passes, in order, composed with torch's PassManager."""

from __future__ import annotations

import shutil
import tempfile

import torch
from torch.export import ExportedProgram
from torch.fx.passes.infra.pass_base import PassBase
from torch.fx.passes.infra.pass_manager import PassManager

from fxdelegate.errors import FxDelegateError
from fxdelegate.partitioner import OpSet
from fxdelegate.partitioner.gc_pause import gc_paused

from ..compile.remote_cache import RemoteCacheOptions
from ..context import CONTEXT_KEY, LoweringContext, RegionRecord, attach_context
from ..prepare_program import prepare
from ..tag_regions import existing_delegates
from .backend_choice import BackendChoice
from .builtin_passes import lowering_passes
from .lowering_result import BackendRun, LoweringResult
from .pass_pipeline import PassPipeline, default_pipeline
from .user_pass_checks import UserPassChecker, program_in_spec


def lower_program(
    exported_program: ExportedProgram,
    *,
    backends: list[BackendChoice],
    exclude_ops: OpSet,
    min_partition_size: int,
    cache_dir: str | None,
    remote_cache: RemoteCacheOptions | None = None,
    strict: bool,
    compile_workers: int | None,
    recordable_runners: bool,
    pipeline: PassPipeline | None = None,
) -> LoweringResult:
    """Prepare `exported_program` (left untouched), run every pass of `pipeline`
    (default: :func:`default_pipeline`) once per backend in priority order, and
    return the delegated program with its regions.

    Each backend partitions what the backends before it left: their regions are
    single delegate nodes by then, so every backend's regions are convex in the
    final graph and no region mixes backends. Arguments are checked by the caller.
    """
    workdir = tempfile.mkdtemp(prefix="fxdelegate-")
    try:
        with gc_paused():
            prepared = prepare(exported_program)
            graph_module = prepared.graph_module
            pipeline = pipeline if pipeline is not None else default_pipeline()
            checker = UserPassChecker(
                prepared.example_inputs,
                program_in_spec(prepared.module_call_graph),
                check_outputs=pipeline.check_outputs,
            )
            signature = prepared.graph_signature
            state_dict = dict(prepared.state_dict)
            constants = dict(prepared.constants)
            runs: list[BackendRun] = []
            regions: list[RegionRecord] = []
            snapshot = None
            for index, choice in enumerate(backends):
                context = LoweringContext(
                    backend_id=choice.backend_id,
                    support=choice.support,
                    exclude_ops=exclude_ops,
                    min_partition_size=min_partition_size,
                    compile_options=dict(choice.compile_options),
                    workdir=workdir,
                    signature=signature,
                    state_dict=state_dict,
                    constants=constants,
                    range_constraints=dict(prepared.range_constraints),
                    cache_dir=cache_dir,
                    remote_cache=remote_cache,
                    next_backends=tuple(b.backend_id for b in backends[index + 1 :]),
                    strict=strict,
                    compile_workers=compile_workers,
                    recordable_runners=recordable_runners,
                )
                graph_module = run_lowering_passes(
                    graph_module, context, pipeline.manager_passes(checker)
                )
                graph_module.meta.pop(CONTEXT_KEY, None)
                signature, state_dict, constants = (
                    context.signature,
                    context.state_dict,
                    context.constants,
                )
                runs.append(
                    BackendRun(
                        choice.backend_id,
                        context.partition_result,
                        context.failed_regions,
                        context.compile_stats,
                    )
                )
                regions += context.regions
                # The first backend sees the whole graph: its picture is the one to keep.
                snapshot = snapshot or context.graph_snapshot
            prepared.graph_module = graph_module  # a user pass may have handed back a new one
            prepared.graph_signature = signature
            prepared.state_dict = state_dict
            prepared.constants = constants
            program = prepared.to_exported_program()
            lowered_now = {r.name for r in regions}
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
        regions=regions,
        earlier_regions=earlier,
        runs=runs,
        graph_snapshot=snapshot,
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
