"""fxdelegate: partition a torch.export program into delegated regions, lower
each through a backend (AOTInductor by default), run the rest in a fast serial
executor, and package everything as one .pt2 archive."""

import os
import warnings

# torch warns at import when NumPy is absent; fxdelegate never needs NumPy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

# In a source checkout (say, Python started in the repository's root, which
# shadows the installed package), partitioner/, passes/ and runtime/ sit
# beside this folder rather than inside it: map them in as the install does.
_checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.path.isdir(os.path.join(os.path.dirname(__file__), "runtime")) and os.path.isfile(
    os.path.join(_checkout, "runtime", "__init__.py")
):
    __path__.append(_checkout)  # type: ignore[name-defined]


from fxdelegate.passes.compile.remote_cache import RemoteCacheOptions
from fxdelegate.passes.pipeline.pass_pipeline import PassPipeline, default_pipeline
from fxdelegate.runtime.backend import register_backend
from fxdelegate.runtime.cuda_graphs.cuda_graph_options import CUDAGraphOptions

from .api import load, lower
from .errors import (
    ArchiveError,
    BackendCompileError,
    BackendError,
    FxDelegateError,
    InputMismatchError,
    InvalidArgumentError,
    PassFailedError,
    PassInvariantError,
    RegionFallbackWarning,
    RegionProgramMissingError,
    RemoteCacheWarning,
    UnsupportedProgramError,
)
from .program import DelegatedProgram
from .version import __version__

__all__ = [
    "ArchiveError",
    "BackendCompileError",
    "BackendError",
    "CUDAGraphOptions",
    "DelegatedProgram",
    "FxDelegateError",
    "InputMismatchError",
    "InvalidArgumentError",
    "PassFailedError",
    "PassInvariantError",
    "PassPipeline",
    "RegionFallbackWarning",
    "RegionProgramMissingError",
    "RemoteCacheOptions",
    "RemoteCacheWarning",
    "UnsupportedProgramError",
    "__version__",
    "default_pipeline",
    "load",
    "lower",
    "register_backend",
]
