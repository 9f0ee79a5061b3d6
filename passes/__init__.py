"""fxdelegate.passes: the FX passes that turn regions into delegate calls.

One pass per file, each a ``torch.fx.passes.infra.pass_base.PassBase``:

* :class:`AnchorSymbolicSizesPass` - read sizes from graph inputs, not intermediates
* :class:`TagRegionsPass` - run the partitioner, tag nodes with their region
* :class:`AssignConstantOwnersPass` - one owner for every parameter/buffer/constant
* :class:`OutlineRegionsPass` - each region becomes a flat ExportedProgram
* :class:`LowerRegionsPass` - compile each region with the backend, load it
* :class:`DelegateRegionsPass` - replace regions with ``executorch_call_delegate``
* :class:`VerifyDelegatedGraphPass` - lint, signature, ownership checks

:func:`default_pipeline` gives them as a named :class:`PassPipeline` that takes
passes of one's own (checked after each run by :mod:`.pipeline.user_pass_checks`);
:func:`transform_program` runs such passes alone.

Before them, :mod:`.prepare_program` makes the user's program functional (with
:mod:`.inline_mode_wrappers` and :mod:`.functionalize_in_place`). Beside the
passes: :mod:`.context` (what they share) and their graph helpers
(:mod:`.graph_order`, :mod:`.region_boundary`, :mod:`.region_structure`,
:mod:`.symbolic_sizes`); ``pipeline/`` runs the passes and checks user passes;
``compile/`` compiles each distinct region once (content key, caches, workers).
"""

from .anchor_symbolic_sizes import AnchorSymbolicSizesPass
from .assign_constant_owners import AssignConstantOwnersPass
from .compile.local_cache import default_cache_dir
from .context import EXECUTOR, LoweringContext, RegionRecord, attach_context, get_context
from .delegate_regions import DelegateRegionsPass
from .lower_regions import LowerRegionsPass
from .outline_regions import OutlineRegionsPass
from .pipeline.builtin_passes import lowering_passes
from .pipeline.lower_program import lower_program, run_lowering_passes
from .pipeline.lowering_result import LoweringResult
from .pipeline.pass_pipeline import PassPipeline, PipelineStep, default_pipeline
from .pipeline.transform_program import transform_program
from .pipeline.user_pass_checks import UserPassRun
from .prepare_program import PreparedProgram, prepare, prepare_program
from .tag_regions import REGION_TAG, TagRegionsPass
from .verify_delegated import VerifyDelegatedGraphPass

__all__ = [
    "EXECUTOR",
    "REGION_TAG",
    "AnchorSymbolicSizesPass",
    "AssignConstantOwnersPass",
    "DelegateRegionsPass",
    "LowerRegionsPass",
    "LoweringContext",
    "LoweringResult",
    "OutlineRegionsPass",
    "PassPipeline",
    "PipelineStep",
    "PreparedProgram",
    "RegionRecord",
    "TagRegionsPass",
    "UserPassRun",
    "VerifyDelegatedGraphPass",
    "attach_context",
    "default_cache_dir",
    "default_pipeline",
    "get_context",
    "lower_program",
    "lowering_passes",
    "prepare",
    "prepare_program",
    "run_lowering_passes",
    "transform_program",
]
