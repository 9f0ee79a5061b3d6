"""AOTInductor runtime half: load a compiled region from a .pt2 and run it.

Uses the AOTI package loader from torch's C++ extension only; importing this
module never imports ``torch._inductor``'s compiler, so saved programs load
and run on a machine (or in a process) without one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from fxdelegate.errors import ArchiveError, BackendError

from ..backend import BackendRuntime, RegionArtifact, Runner


class AOTIRuntime(BackendRuntime):
    backend_id = "aoti"
    archive_dir = "aotinductor"

    def is_available(self) -> bool:
        return hasattr(torch._C, "_aoti") and hasattr(torch._C._aoti, "AOTIModelPackageLoader")

    def load(self, artifact: RegionArtifact, constants: Mapping[str, torch.Tensor]) -> Runner:
        path = artifact.package_path
        if path is None or not os.path.isfile(path):
            raise ArchiveError(f"region {artifact.key}: compiled package {path!r} does not exist")
        name = artifact.package_key or artifact.key
        try:
            loader = torch._C._aoti.AOTIModelPackageLoader(path, name, False, 1, -1)
            expected = set(loader.get_constant_fqns())
        except Exception as exc:  # the C++ loader reports missing/damaged members as RuntimeError
            raise BackendError(
                f"region {artifact.key}: AOTInductor could not load it from {path}: {exc}"
            ) from exc
        missing = expected - set(constants)
        if missing:
            # Running without them would read unset memory: refuse instead.
            raise BackendError(
                f"region {artifact.key}: weights {sorted(missing)} were not provided"
            )
        baked = set(constants) - expected
        if baked:
            # The compiled code holds these weights' values: it would ignore ours.
            raise BackendError(
                f"region {artifact.key}: the compiled code does not read weights {sorted(baked)} "
                "(they were baked in at compile time), so it cannot serve this region"
            )
        if expected:
            # user_managed: the compiled code reads the program's own tensors (one copy
            # in memory, and in-place weight updates take effect immediately).
            loader.load_constants({k: constants[k] for k in expected}, False, True, True)
        # The loader's bound `run` takes and returns flat tensor lists: no pytree, no Python wrapper.
        return loader.run
