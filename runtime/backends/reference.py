"""The ``reference`` backend: runs each region's own graph in eager PyTorch.

For debugging (is a wrong result the partitioning or the compiler?), for fast
pass-level tests, and as the oracle that :mod:`..debug.compare` and the test sweeps
check everything else against. So it shares nothing with the executor's fast
path (op bindings, generated code, skipped checks): a region runs the code
torch.fx generates for the region's graph, which calls every op as its
``OpOverload``, as ``ep.module()`` does. Its "artifact" is the region's
ExportedProgram, saved in the archive as ``models/<region>-reference.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch.export.graph_signature import InputKind, OutputKind

from fxdelegate.errors import ArchiveError

from ..backend import BackendCompiler, BackendRuntime, RegionArtifact, RegionToCompile, Runner


class ReferenceRuntime(BackendRuntime):
    backend_id = "reference"
    stores_program = True

    def load(self, artifact: RegionArtifact, constants: Mapping[str, Any]) -> Runner:
        program = artifact.program
        if program is None:
            raise ArchiveError(f"region {artifact.key}: its program is missing")
        # Bind the program's own tensors, as a compiled region would.
        for name, tensor in constants.items():
            if name in program.state_dict:
                program.state_dict[name] = tensor
            elif name in program.constants:
                program.constants[name] = tensor
        return GraphRunner(program)

    def load_recordable(self, artifact: RegionArtifact, constants: Mapping[str, Any]) -> Runner:
        return self.load(artifact, constants)  # plain ATen ops: a graph records them as they run


class GraphRunner:
    """Flat user inputs -> flat user outputs through a program's lifted graph, its
    weights bound at load. Regions of one structure share the program's graph
    module, and so the code torch.fx generated for it; each keeps its own weights."""

    def __init__(self, program) -> None:
        signature = program.graph_signature
        weights = {**program.state_dict, **program.constants}
        users: dict[str, int] = {}
        # Per placeholder: (is a user input, its index there or the bound weight).
        self.sources: list[tuple[bool, Any]] = []
        for spec in signature.input_specs:
            if spec.kind == InputKind.USER_INPUT:
                users[spec.arg.name] = len(users)
                self.sources.append((True, users[spec.arg.name]))
            else:
                self.sources.append((False, weights[spec.target]))
        # Per written output: (its position, is a user input, index or the buffer).
        self.written: list[tuple[int, bool, Any]] = []
        self.outputs: list[int] = []
        for i, spec in enumerate(signature.output_specs):
            if spec.kind == OutputKind.USER_OUTPUT:
                self.outputs.append(i)
            elif spec.kind == OutputKind.USER_INPUT_MUTATION:
                self.written.append((i, True, users[spec.target]))
            else:  # BUFFER_MUTATION
                self.written.append((i, False, weights[spec.target]))
        self.graph_module = program.graph_module

    def __call__(self, inputs: list[Any]) -> list[Any]:
        values = self.graph_module(*(inputs[v] if user else v for user, v in self.sources))
        for i, user, target in self.written:
            (inputs[target] if user else target).copy_(values[i])
        return [values[i] for i in self.outputs]


class ReferenceCompiler(BackendCompiler):
    backend_id = "reference"
    supports_input_mutation = True

    def compile(
        self, region: RegionToCompile, options: dict[str, Any], workdir: str
    ) -> RegionArtifact:
        return RegionArtifact(region.key(self.backend_id), self.backend_id, program=region.program)
