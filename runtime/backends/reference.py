"""The ``reference`` backend: runs each region's own graph in eager PyTorch.

For debugging (is a wrong result the partitioning or the compiler?) and for
fast pass-level tests. Its "artifact" is the region's ExportedProgram, saved
in the archive as ``models/<region>-reference.json``.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import torch

from fxdelegate.errors import ArchiveError

from ..backend import BackendCompiler, BackendRuntime, RegionArtifact, RegionToCompile, Runner
from ..plan import GraphPlan

# Regions of one structure share one graph (see passes/region_structure.py), hence
# one generated plan: it takes the weights as inputs, so each region binds its own.
_plans: weakref.WeakKeyDictionary[torch.fx.GraphModule, GraphPlan] = weakref.WeakKeyDictionary()


class ReferenceRuntime(BackendRuntime):
    backend_id = "reference"
    stores_program = True

    def load(self, artifact: RegionArtifact, constants: Mapping[str, Any]) -> Runner:
        from ..executor import ProgramExecutor

        program = artifact.program
        if program is None:
            raise ArchiveError(f"region {artifact.key}: its program is missing")
        # Bind the program's own tensors, as a compiled region would.
        for name, tensor in constants.items():
            if name in program.state_dict:
                program.state_dict[name] = tensor
            elif name in program.constants:
                program.constants[name] = tensor
        plan = _plans.get(program.graph_module)
        # Inputs were checked by the parent executor; regions run unchecked, flat.
        executor = ProgramExecutor(program, check_inputs=False, entry=False, plan=plan)
        _plans.setdefault(program.graph_module, executor.plan)
        return executor.run_flat

    def load_recordable(self, artifact: RegionArtifact, constants: Mapping[str, Any]) -> Runner:
        return self.load(artifact, constants)  # plain ATen ops: a graph records them as they run


class ReferenceCompiler(BackendCompiler):
    backend_id = "reference"
    supports_input_mutation = True

    def compile(
        self, region: RegionToCompile, options: dict[str, Any], workdir: str
    ) -> RegionArtifact:
        return RegionArtifact(region.key(self.backend_id), self.backend_id, program=region.program)
