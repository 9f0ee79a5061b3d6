"""fxdelegate.runtime: backends, the graph executor, and the .pt2 archive.

Nothing here imports a compiler: a saved program loads and runs with the
runtime half of each backend only.

:mod:`.backend` (the backend contract and registry), :mod:`.lowered_module` and
:mod:`.weight_update` are shared with the passes; ``backends/`` holds the built-in
backends, ``codegen/`` the graph as generated Python, ``executor/`` one call,
``cuda_graphs/`` recording and replaying it, ``debug/`` compare, profile and memory,
``archive/`` the .pt2 file.
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
