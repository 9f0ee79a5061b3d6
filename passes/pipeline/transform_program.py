"""Run passes of one's own over a program, with the checks the pipeline makes."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from torch.export import ExportedProgram

from fxdelegate.errors import InvalidArgumentError
from fxdelegate.partitioner import CompilableAtenSupport, OpSet

from ..context import CONTEXT_KEY, LoweringContext
from ..prepare_program import prepare
from .lower_program import run_lowering_passes
from .pass_pipeline import PassLike, PassPipeline
from .user_pass_checks import UserPassChecker, program_in_spec


def transform_program(
    exported_program: ExportedProgram,
    passes: Iterable[PassLike] | PassPipeline,
    *,
    check_outputs: bool = True,
) -> ExportedProgram:
    """Run `passes` (PassBase objects or functions over the graph module) in order
    over the program as the lowering pipeline prepares it, and return the result;
    `exported_program` is left untouched.

    Each pass is checked as a user pass of ``fxdelegate.lower`` is, before
    partitioning: a :class:`~fxdelegate.errors.PassInvariantError` names the pass
    and what it broke. `check_outputs` (ignored when `passes` is a pipeline, which
    carries its own) runs the program on its example inputs before and after each
    pass that changes the graph.
    """
    if isinstance(passes, PassPipeline):
        builtin = [s.name for s in passes if not s.user]
        if builtin:
            raise InvalidArgumentError(
                f"transform_program runs passes of your own only, but the pipeline holds the "
                f"lowering passes {builtin}; lower the program with fxdelegate.lower(ep, "
                "pipeline=...) instead"
            )
        pipeline = passes
    else:
        pipeline = PassPipeline(check_outputs=check_outputs)
        for pass_ in [passes] if callable(passes) else passes:
            pipeline.append(pass_)
    with warnings.catch_warnings():
        # torch deep-copies its own treespecs and warns about its own LeafSpec.
        warnings.filterwarnings("ignore", ".*LeafSpec.*deprecated", FutureWarning)
        return _transform(exported_program, pipeline)


def _transform(exported_program: ExportedProgram, pipeline: PassPipeline) -> ExportedProgram:
    prepared = prepare(exported_program)
    context = LoweringContext(
        backend_id="reference",
        support=CompilableAtenSupport(),
        exclude_ops=OpSet(),
        min_partition_size=1,
        compile_options={},
        workdir="",
        signature=prepared.graph_signature,
        state_dict=dict(prepared.state_dict),
        constants=dict(prepared.constants),
        range_constraints=dict(prepared.range_constraints),
    )
    checker = UserPassChecker(
        prepared.example_inputs,
        program_in_spec(prepared.module_call_graph),
        check_outputs=pipeline.check_outputs,
    )
    graph_module = run_lowering_passes(
        prepared.graph_module, context, pipeline.manager_passes(checker)
    )
    graph_module.meta.pop(CONTEXT_KEY, None)
    prepared.graph_module = graph_module
    prepared.graph_signature = context.signature
    return prepared.to_exported_program()
