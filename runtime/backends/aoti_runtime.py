"""AOTInductor runtime half: load a compiled region from a .pt2 and run it.

Uses the AOTI package loader from torch's C++ extension only; importing this
module never imports ``torch._inductor``, so saved programs load and run on a
machine (or in a process) without the compiler.
"""

from __future__ import annotations

import os

import torch

from fxdelegate.errors import ArchiveError, BackendError

from ..backend import BackendRuntime, RegionArtifact, Runner


class AOTIRuntime(BackendRuntime):
    backend_id = "aoti"
    archive_dir = "aotinductor"

    def is_available(self) -> bool:
        return hasattr(torch._C, "_aoti") and hasattr(torch._C._aoti, "AOTIModelPackageLoader")

    def load(self, artifact: RegionArtifact) -> Runner:
        path = artifact.package_path
        if path is None or not os.path.isfile(path):
            raise ArchiveError(f"region {artifact.key}: compiled package {path!r} does not exist")
        try:
            loader = torch._C._aoti.AOTIModelPackageLoader(path, artifact.key, False, 1, -1)
        except Exception as exc:  # the C++ loader reports missing/damaged members as RuntimeError
            raise BackendError(
                f"region {artifact.key}: AOTInductor could not load it from {path}: {exc}"
            ) from exc
        # The loader's bound `run` takes and returns flat tensor lists: no pytree, no Python wrapper.
        return loader.run
