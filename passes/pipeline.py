"""The lowering pipeline: the passes, in order, composed with torch's PassManager."""

from __future__ import annotations

import torch
from torch.fx.passes.infra.pass_base import PassBase
from torch.fx.passes.infra.pass_manager import PassManager

from fxdelegate.errors import FxDelegateError

from .anchor_symbolic_sizes import AnchorSymbolicSizesPass
from .assign_constant_owners import AssignConstantOwnersPass
from .context import LoweringContext, attach_context
from .delegate_regions import DelegateRegionsPass
from .lower_regions import LowerRegionsPass
from .outline_regions import OutlineRegionsPass
from .tag_regions import TagRegionsPass
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
