"""fxdelegate.runtime: backends, the graph executor, and the .pt2 archive.

Nothing here imports a compiler: a saved program loads and runs with the
runtime half of each backend only.
"""

from .backend import (
    BackendCompiler,
    BackendRuntime,
    RegionArtifact,
    RegionToCompile,
    Runner,
    get_compiler,
    get_runtime,
    register_backend,
    registered_backends,
)
from .codegen.plan import GraphPlan, build_plan
from .executor.input_check import InputChecker
from .executor.program_executor import ProgramExecutor
from .lowered_module import LoweredBackendModule

__all__ = [
    "BackendCompiler",
    "BackendRuntime",
    "GraphPlan",
    "InputChecker",
    "LoweredBackendModule",
    "ProgramExecutor",
    "RegionArtifact",
    "RegionToCompile",
    "Runner",
    "build_plan",
    "get_compiler",
    "get_runtime",
    "register_backend",
    "registered_backends",
]
