"""The built-in lowering passes, in the order they run, under their public names.

This list is the one source: :func:`lowering_passes` builds the passes from it and
``default_pipeline()`` names its steps after it."""

from __future__ import annotations

from torch.fx.passes.infra.pass_base import PassBase

from ..anchor_symbolic_sizes import AnchorSymbolicSizesPass
from ..assign_constant_owners import AssignConstantOwnersPass
from ..delegate_regions import DelegateRegionsPass
from ..lower_regions import LowerRegionsPass
from ..outline_regions import OutlineRegionsPass
from ..tag_regions import TagRegionsPass
from ..verify_delegated import VerifyDelegatedGraphPass

# (public name, pass class), in pipeline order. The names are what users insert
# their own passes around: insert_before("tag_regions", ...).
BUILTIN_PASSES: tuple[tuple[str, type[PassBase]], ...] = (
    ("anchor_symbolic_sizes", AnchorSymbolicSizesPass),
    ("tag_regions", TagRegionsPass),
    ("assign_constant_owners", AssignConstantOwnersPass),
    ("outline_regions", OutlineRegionsPass),
    ("lower_regions", LowerRegionsPass),
    ("delegate_regions", DelegateRegionsPass),
    ("verify_delegated", VerifyDelegatedGraphPass),
)


def lowering_passes() -> list[PassBase]:
    """A fresh instance of every built-in pass, in pipeline order."""
    return [cls() for _, cls in BUILTIN_PASSES]
