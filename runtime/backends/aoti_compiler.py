"""AOTInductor compiler half: compile one outlined region into a package."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import ExportGraphSignature, InputKind, InputSpec
from torch.export.pt2_archive._package import package_pt2
from torch.fx.passes.operator_support import OperatorSupportBase

from fxdelegate.errors import BackendCompileError

from ..backend import BackendCompiler, RegionArtifact, RegionToCompile

# Name of the compiled model inside a freshly built package.
PACKAGE_KEY = "model"

# Inductor splits a CPU kernel across OpenMP threads once each thread gets 512
# elements. Entering and leaving an OpenMP team costs about a microsecond here,
# more than a 2,048-element LayerNorm takes on one core, and a program cut into
# regions runs many such small kernels. Measured on a fused LayerNorm + GELU
# (README, "Against the floor"): 2,048 elements take 6.5 us on one thread and
# 7.6 us on two; at 4,096 elements per thread two threads win (14.1 against 17.4).
MIN_ELEMENTS_PER_THREAD = 4096


class AOTICompiler(BackendCompiler):
    backend_id = "aoti"
    cacheable = True
    parallel_safe = True
    supports_input_mutation = True
    # 1: values computed from weights alone are no longer folded into the code.
    compile_version = 1

    def default_options(self) -> dict[str, Any]:
        return {"cpp.min_chunk_size": MIN_ELEMENTS_PER_THREAD}

    def plan_variants(self) -> list[dict[str, Any]]:
        """Options a measured plan also times (beside the defaults): inductor's own
        chunk size, which wins where kernels are large enough to share out."""
        return [{"cpp.min_chunk_size": 512}]

    def default_support(self) -> OperatorSupportBase:
        from .aoti_support import AOTInductorSupport

        return AOTInductorSupport()

    def compile(
        self, region: RegionToCompile, options: dict[str, Any], workdir: str
    ) -> RegionArtifact:
        from torch._inductor import aot_compile

        key = region.key(self.backend_id)
        # Weights stay out of the library: they are bound at load time, so the
        # artifact serves every region of the same structure and stores no weights.
        config = {
            **options,
            "aot_inductor.package": True,
            "aot_inductor.package_constants_in_so": False,
            # and out of the generated code: inductor inlines small ones as literals,
            "always_keep_tensor_constants": True,
            # and folds values computed from weights alone (a view of PReLU's one-element
            # weight) into literals when all their elements are equal.
            "joint_graph_constant_folding": False,
        }
        try:
            module = _constants_as_buffers(region.program).module()
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
        # The in-memory weight blobs AOTInductor returns alongside are not kept.
        package_pt2(
            package_path, aoti_files={PACKAGE_KEY: [f for f in files if isinstance(f, str)]}
        )
        return RegionArtifact(
            key,
            self.backend_id,
            package_path=package_path,
            package_key=PACKAGE_KEY,
            meta={"device": _device_of(region.example_inputs)},
        )


def _constants_as_buffers(program: ExportedProgram) -> ExportedProgram:
    """`program` with its tensor constants turned into buffers of the same name.

    A constant tensor becomes a plain attribute when the program is unlifted, and
    the compile's re-trace then renames it (``_tensor_constant0``) or inlines it
    when it is 0-d: either way the weights bound at load time would not match.
    A buffer keeps its name and stays an input of the compiled code."""
    specs = program.graph_signature.input_specs
    if not any(s.kind is InputKind.CONSTANT_TENSOR for s in specs):
        return program
    state_dict = dict(program.state_dict)
    constants = dict(program.constants)
    new_specs = []
    for spec in specs:
        if spec.kind is InputKind.CONSTANT_TENSOR:
            state_dict[spec.target] = constants.pop(spec.target)
            spec = InputSpec(InputKind.BUFFER, spec.arg, spec.target, persistent=True)
        new_specs.append(spec)
    return ExportedProgram(
        root=program.graph_module,
        graph=program.graph,
        graph_signature=ExportGraphSignature(new_specs, program.graph_signature.output_specs),
        state_dict=state_dict,
        range_constraints=program.range_constraints,
        module_call_graph=program.module_call_graph,
        example_inputs=program.example_inputs,
        constants=constants,
    )


def _device_of(values: tuple[Any, ...]) -> str:
    for v in values:
        if isinstance(v, torch.Tensor):
            return str(v.device)
    return "cpu"
