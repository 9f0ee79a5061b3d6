"""fxdelegate: partition a torch.export program into delegated regions, lower
each through a backend (AOTInductor by default), run the rest in a fast serial
executor, and package everything as one .pt2 archive."""

import warnings

# torch warns at import when NumPy is absent; fxdelegate never needs NumPy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")


from fxdelegate.runtime.backend import register_backend

from .api import load, lower
from .errors import (
    ArchiveError,
    BackendCompileError,
    BackendError,
    FxDelegateError,
    InputMismatchError,
    InvalidArgumentError,
    UnsupportedProgramError,
)
from .program import DelegatedProgram

__version__ = "0.1.0"

__all__ = [
    "ArchiveError",
    "BackendCompileError",
    "BackendError",
    "DelegatedProgram",
    "FxDelegateError",
    "InputMismatchError",
    "InvalidArgumentError",
    "UnsupportedProgramError",
    "__version__",
    "load",
    "lower",
    "register_backend",
]
