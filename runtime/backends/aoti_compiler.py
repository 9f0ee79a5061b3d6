"""AOTInductor compiler half: compile one outlined region into a per-region package."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.export.pt2_archive._package import package_pt2

from fxdelegate.errors import BackendCompileError

from ..backend import BackendCompiler, RegionArtifact, RegionToCompile


class AOTICompiler(BackendCompiler):
    backend_id = "aoti"

    def compile(
        self, region: RegionToCompile, options: dict[str, Any], workdir: str
    ) -> RegionArtifact:
        from torch._inductor import aot_compile

        key = region.key(self.backend_id)
        config = {**options, "aot_inductor.package": True}
        try:
            module = region.program.module()
            files = aot_compile(module, tuple(region.example_inputs), options=config)
        except Exception as exc:
            raise BackendCompileError(
                f"AOTInductor failed to compile region {region.name}: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(files, list):
            raise BackendCompileError(
                f"AOTInductor returned {type(files).__name__} for region {region.name}, expected a file list"
            )
        package_path = os.path.join(workdir, f"{key}.pt2")
        package_pt2(package_path, aoti_files={key: files})
        device = _device_of(region.example_inputs)
        return RegionArtifact(
            key, self.backend_id, package_path=package_path, meta={"device": device}
        )


def _device_of(values: tuple[Any, ...]) -> str:
    for v in values:
        if isinstance(v, torch.Tensor):
            return str(v.device)
    return "cpu"
