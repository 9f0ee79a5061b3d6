"""A cheap cacheable backend for compile-cache tests: its "compile" saves the
region's program as a package file (and can take a set time, like a real
compile); its runtime loads that file and runs the graph eagerly. Compiles
are counted in the file ``$FXDELEGATE_TEST_COMPILE_LOG`` names."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping
from typing import Any

import torch

from fxdelegate.runtime.backend import (
    BackendCompiler,
    BackendRuntime,
    RegionArtifact,
    RegionToCompile,
    Runner,
    register_backend,
)
from fxdelegate.runtime.backends.reference import ReferenceRuntime


class PackagedCompiler(BackendCompiler):
    backend_id = "packaged"
    cacheable = True

    def compile(
        self, region: RegionToCompile, options: dict[str, Any], workdir: str
    ) -> RegionArtifact:
        time.sleep(float(os.environ.get("FXDELEGATE_TEST_COMPILE_SECONDS", "0")))
        key = region.key(self.backend_id)
        path = os.path.join(workdir, f"{key}.pt2")
        torch.export.save(region.program, path)
        log = os.environ.get("FXDELEGATE_TEST_COMPILE_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {region.name}\n")
        return RegionArtifact(key, self.backend_id, package_path=path, package_key="model")


class PackagedRuntime(BackendRuntime):
    backend_id = "packaged"

    def load(self, artifact: RegionArtifact, constants: Mapping[str, Any]) -> Runner:
        program = torch.export.load(artifact.package_path)
        reference = RegionArtifact(artifact.key, "reference", program=program)
        return ReferenceRuntime().load(reference, constants)


def register() -> None:
    register_backend(
        "packaged", runtime=PackagedRuntime(), compiler=PackagedCompiler(), replace=True
    )


class DistinctBlocks(torch.nn.Module):
    """Linear layers of different widths with ReLU pinned between them: one
    distinct region per layer."""

    def __init__(self, widths: tuple[int, ...] = (8, 12, 16, 20, 24, 28, 8)) -> None:
        super().__init__()
        self.linears = torch.nn.ModuleList(
            torch.nn.Linear(a, b) for a, b in itertools.pairwise(widths)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear in self.linears:
            x = torch.relu(linear(x) * 0.5)
        return x
