"""Run the lowering passes one by one on a prepared program (reference backend)."""

from __future__ import annotations

import tempfile

import torch

from fxdelegate.partitioner import CompilableAtenSupport, OpSet
from fxdelegate.passes import (
    AnchorSymbolicSizesPass,
    AssignConstantOwnersPass,
    DelegateRegionsPass,
    LoweringContext,
    LowerRegionsPass,
    OutlineRegionsPass,
    TagRegionsPass,
    VerifyDelegatedGraphPass,
    prepare_program,
    run_lowering_passes,
)

ALL_PASSES = [
    AnchorSymbolicSizesPass,
    TagRegionsPass,
    AssignConstantOwnersPass,
    OutlineRegionsPass,
    LowerRegionsPass,
    DelegateRegionsPass,
    VerifyDelegatedGraphPass,
]


def lowering_state(
    model,
    args,
    *,
    kwargs=None,
    dynamic_shapes=None,
    exclude=(),
    upto=None,
    backend="reference",
    min_size=1,
):
    """Export `model`, then run the pipeline's passes up to and including `upto`.

    Returns (prepared program, graph module, context).
    """
    ep = torch.export.export(model, args, kwargs or {}, dynamic_shapes=dynamic_shapes)
    prepared = prepare_program(ep)
    ctx = LoweringContext(
        backend_id=backend,
        support=CompilableAtenSupport(),
        exclude_ops=OpSet(exclude),
        min_partition_size=min_size,
        compile_options={},
        workdir=tempfile.mkdtemp(prefix="fxdelegate-test-"),
        signature=prepared.graph_signature,
        state_dict=dict(prepared.state_dict),
        constants=dict(prepared.constants),
        range_constraints=dict(prepared.range_constraints),
    )
    passes = []
    for cls in ALL_PASSES:
        passes.append(cls())
        if cls is upto:
            break
    gm = prepared.graph_module
    run_lowering_passes(gm, ctx, passes)
    return prepared, gm, ctx
