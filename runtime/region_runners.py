"""Loading the runners of a program's delegated regions.

One place decides which runner a region gets: the one a CUDA graph can record,
when recording is asked for and the backend offers one, else the plain one.
Lowering, loading an archive and re-loading regions lowered earlier all come here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.export import ExportedProgram

from .backend import BackendRuntime, RegionArtifact, Runner, get_runtime
from .weight_update import bound_constants


def load_region_runner(
    runtime: BackendRuntime,
    artifact: RegionArtifact,
    constants: dict[str, torch.Tensor],
    recordable: bool,
) -> tuple[Runner, bool]:
    """A region's runner, and whether a CUDA graph can record it."""
    if recordable:
        runner = runtime.load_recordable(artifact, constants)
        if runner is not None:
            return runner, True
    return runtime.load(artifact, constants), False


def load_region_runners(
    program: ExportedProgram,
    artifacts: Mapping[str, RegionArtifact],
    recordable: bool,
    where: str,
) -> tuple[dict[str, Runner], set[str]]:
    """Every region's runner, its weights bound from `program` (`where` names the
    program in errors), and the keys of those a CUDA graph can record."""
    runners: dict[str, Runner] = {}
    recordable_keys: set[str] = set()
    for key, artifact in artifacts.items():
        constants = bound_constants(program, artifact, where)
        runners[key], ok = load_region_runner(
            get_runtime(artifact.backend_id), artifact, constants, recordable
        )
        if ok:
            recordable_keys.add(key)
    return runners, recordable_keys
