"""Exceptions raised by fxdelegate.

Every error a user can cause (bad arguments, inputs that do not match the
program, a damaged archive, a backend that is missing) is one of these, with
a message that names what was wrong and what was expected.
"""

from __future__ import annotations


class FxDelegateError(Exception):
    """Base class of every exception fxdelegate raises on purpose."""


class InvalidArgumentError(FxDelegateError, ValueError):
    """An argument to a public function is malformed (unknown op name, bad option...)."""


class UnsupportedProgramError(FxDelegateError, ValueError):
    """The ExportedProgram uses a feature the pipeline cannot handle."""


class InputMismatchError(FxDelegateError, ValueError):
    """Call inputs do not match what the program was exported/compiled for."""


class BackendError(FxDelegateError, RuntimeError):
    """A backend is unknown, unavailable, or failed."""


class BackendCompileError(BackendError):
    """A backend failed to compile one region."""


class ArchiveError(FxDelegateError, ValueError):
    """A .pt2 archive is missing, damaged, or was not written by fxdelegate."""


class RegionProgramMissingError(FxDelegateError, ValueError):
    """A region's own graph is needed (to compare it with its compiled code), but the
    program does not carry it: an archive keeps compiled code only, unless it was
    saved with ``keep_region_programs=True``."""


class RegionFallbackWarning(UserWarning):
    """A region failed to compile or load, and its nodes run in the executor instead.

    The program still matches eager, only slower. ``lower(..., strict=True)``
    makes the failure an error; a test suite can do the same with
    ``warnings.simplefilter("error", RegionFallbackWarning)``.
    """


class RemoteCacheWarning(UserWarning):
    """The remote compile cache failed or served an entry that failed its checks;
    the lowering goes on, compiling the regions concerned locally."""


class PassFailedError(FxDelegateError, RuntimeError):
    """A pass added to the pipeline raised, or returned something that is not a PassResult.

    ``pass_name`` is the pass's name in the pipeline; ``stage`` is where it failed:
    ``"requires"``, ``"call"`` or ``"ensures"``. The pass's own exception is the cause.
    """

    def __init__(self, message: str, *, pass_name: str, stage: str) -> None:
        super().__init__(message)
        self.pass_name = pass_name
        self.stage = stage


class PassInvariantError(FxDelegateError, RuntimeError):
    """A pass added to the pipeline left the program broken.

    ``pass_name`` names the pass; ``invariant`` is the first broken invariant, one of
    ``"lint"``, ``"values"``, ``"regions"``, ``"weights"``, ``"signature"``,
    ``"outputs"``; ``problems`` lists every problem found, each prefixed by its invariant.
    """

    def __init__(
        self, message: str, *, pass_name: str, invariant: str, problems: list[str]
    ) -> None:
        super().__init__(message)
        self.pass_name = pass_name
        self.invariant = invariant
        self.problems = problems
