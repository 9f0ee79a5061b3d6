"""ONNX Runtime compiler half: export one outlined region to an ONNX model.

The region's program goes through ``torch.onnx.export(program, dynamo=True)``
as it is: its size symbols become the model's symbolic dimensions, so the
model takes every size the region's program does. The exporter's optimizer
is off, because it reads weight values (it merged two LayerNorms' equal
weights into one initializer). The model must not depend on them: ONNX
Runtime's own optimizer runs when the session is made, with the weights
bound. Each weight initializer is then declared external, its data left
out of the model (see :mod:`.onnxruntime_runtime`).

The compile also makes a session with zero weights and runs it once on the
region's example inputs. A model that ONNX Runtime cannot load (no CPU kernel
for an op and dtype), or whose outputs differ from the region's in number,
dtype or shape, fails here, so the region goes to the next backend or the
executor rather than failing when it is loaded or run.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from typing import Any

import torch
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx.passes.operator_support import OperatorSupportBase

from fxdelegate.errors import BackendCompileError

from ..backend import BackendCompiler, RegionArtifact, RegionToCompile, _hint
from .onnxruntime_runtime import (
    BOUND_AT_LOAD,
    OPTIMIZATION_LEVELS,
    OrtRunner,
    model_member,
    new_session,
)

PACKAGE_KEY = "model"
_WEIGHT_KINDS = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)


class OnnxRuntimeCompiler(BackendCompiler):
    backend_id = "onnxruntime"
    cacheable = True
    # A compile takes well under a second; a worker process must first import torch and
    # build torch.onnx's registry (seconds). The worker path works (compile_worker), but
    # four distinct GeluBlocks regions lowered in 15.9 s through it and 0.5 s in-process.
    parallel_safe = False
    compile_version = 1

    def is_available(self) -> bool:
        return all(
            importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "onnxscript")
        )

    def default_options(self) -> dict[str, Any]:
        # One thread, as AOTInductor regions run: the executor runs regions one by
        # one, and small kernels lose more to a thread team than they gain.
        return {"intra_op_num_threads": 1, "graph_optimization_level": "all"}

    def default_support(self) -> OperatorSupportBase:
        from .onnxruntime_support import OnnxRuntimeSupport

        return OnnxRuntimeSupport()

    def plan_variants(self) -> list[dict[str, Any]]:
        """Options a measured plan also times: every core for the region's kernels."""
        cores = os.cpu_count() or 1
        return [{"intra_op_num_threads": cores}] if cores > 1 else []

    def compile(
        self, region: RegionToCompile, options: dict[str, Any], workdir: str
    ) -> RegionArtifact:
        key = region.key(self.backend_id)
        session = _check_options(options)
        program = region.program
        signature = program.graph_signature
        weights = {
            s.target: _weight(program, s.target)
            for s in signature.input_specs
            if s.kind in _WEIGHT_KINDS and s.target is not None
        }
        try:
            model = _export(program)
        except Exception as exc:
            raise BackendCompileError(
                f"torch.onnx could not export region {region.name}: {type(exc).__name__}: "
                f"{_first_line(exc)}"
            ) from exc
        inputs = [v.name for v in model.graph.inputs]
        outputs = [v.name for v in model.graph.outputs]
        if len(inputs) != len(signature.user_inputs) or len(outputs) != len(signature.user_outputs):
            raise BackendCompileError(
                f"the ONNX model of region {region.name} has {len(inputs)} inputs and "
                f"{len(outputs)} outputs, the region {len(signature.user_inputs)} and "
                f"{len(signature.user_outputs)}"
            )
        bound = _weights_out(model, weights)
        _strip_metadata(model)
        from onnxscript import ir

        data = ir.to_proto(model).SerializeToString()
        meta = {"inputs": inputs, "outputs": outputs, "weights": bound, "session": session}
        _try_model(region, data, meta, weights)

        package_path = os.path.join(workdir, f"{key}.pt2")
        from torch.export.pt2_archive import PT2ArchiveWriter

        with PT2ArchiveWriter(package_path) as writer:
            writer.write_bytes(model_member(PACKAGE_KEY), data)
        constants = [
            [n, n, list(weights[n].shape), str(weights[n].dtype).removeprefix("torch.")]
            for n in bound
        ]
        return RegionArtifact(
            key,
            self.backend_id,
            package_path=package_path,
            package_key=PACKAGE_KEY,
            meta={"device": "cpu", "onnxruntime": meta, "constants": constants},
        )


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    known = {"intra_op_num_threads", "graph_optimization_level"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise BackendCompileError(
            f"unknown onnxruntime compile option(s) {unknown}; the options are {sorted(known)}"
        )
    threads = options.get("intra_op_num_threads", 1)
    level = options.get("graph_optimization_level", "all")
    if type(threads) is not int or threads < 0:
        raise BackendCompileError(
            f"intra_op_num_threads must be an int >= 0 (0: ONNX Runtime's default), got {threads!r}"
        )
    if level not in OPTIMIZATION_LEVELS:
        raise BackendCompileError(
            f"graph_optimization_level must be one of {list(OPTIMIZATION_LEVELS)}, got {level!r}"
        )
    return {"intra_op_num_threads": threads, "graph_optimization_level": level}


def _weight(program: torch.export.ExportedProgram, name: str) -> torch.Tensor:
    value = program.state_dict.get(name, program.constants.get(name))
    if not isinstance(value, torch.Tensor):
        raise BackendCompileError(f"weight {name} of the region is not a tensor")
    return value


def _export(program: torch.export.ExportedProgram):
    """The region's ONNX model (an onnx_ir Model), weights still inside."""
    from .onnxruntime_support import quiet_exporter, registry

    # Without example inputs: the exporter's re-trace then adds no guard function, which
    # torch 2.13 generates broken for sizes derived from others (T5's decoder length
    # seq - 2: "name 'L' is not defined"). The region's graph is shared, not copied.
    program = copy.copy(program)
    program._example_inputs = None
    with quiet_exporter():
        try:
            from torch.onnx._internal.exporter._core import export
        except ImportError:  # the public entry (it builds its registry again each time)
            onnx_program = torch.onnx.export(
                program, (), dynamo=True, optimize=False, verbose=False, report=False
            )
        else:
            # What torch.onnx.export(program, dynamo=True, optimize=False) runs, with
            # the registry built once per process instead of once per region.
            from torch.onnx._constants import ONNX_DEFAULT_OPSET

            onnx_program = export(
                program,
                registry=registry(),
                optimize=False,
                verbose=False,
                opset_version=ONNX_DEFAULT_OPSET,
            )
    return onnx_program.model


def _weights_out(model, weights: dict[str, torch.Tensor]) -> list[str]:
    """Declare every weight initializer's data external (at BOUND_AT_LOAD); returns
    their names, which are the region program's own.

    They stay initializers, so the session's optimizer may fold them and ONNX
    Runtime pre-packs GEMM weights. That is safe because a region owns only
    state nothing mutates (assign_constant_owners leaves mutated buffers with
    the executor, which passes them in as inputs); new weights come through
    ``update_weights``, which reloads the region."""
    from onnxscript import ir

    bound = []
    for name, value in model.graph.initializers.items():
        if name not in weights:
            continue  # a constant the exporter made: part of the model's structure
        tensor = value.const_value
        if tensor is None:
            raise BackendCompileError(f"the exporter left weight {name} without a value")
        value.const_value = ir.ExternalTensor(
            BOUND_AT_LOAD,
            0,
            tensor.nbytes,
            tensor.dtype,
            shape=tensor.shape,
            name=name,
            base_dir="",
        )
        bound.append(name)
    return bound


def _strip_metadata(model) -> None:
    """Drop the exporter's notes (each node's FX node, module path and source
    stack trace): five sixths of a small region's model, and the user's paths."""
    from onnxscript import ir

    graphs = [model.graph, *model.functions.values()]
    for graph in graphs:
        graph.metadata_props.clear()
        for node in ir.traversal.RecursiveGraphIterator(graph):
            node.metadata_props.clear()
            for value in node.outputs:
                value.metadata_props.clear()
        for value in [*graph.inputs, *getattr(graph, "initializers", {}).values()]:
            value.metadata_props.clear()
    model.metadata_props.clear()


def _try_model(
    region: RegionToCompile,
    data: bytes,
    meta: dict[str, Any],
    weights: dict[str, torch.Tensor],
) -> None:
    """Load the model with zero weights and run it on the example inputs; raise
    BackendCompileError when that fails or its outputs are not the region's."""
    zeros = {
        n: torch.zeros(weights[n].shape, dtype=weights[n].dtype).numpy() for n in meta["weights"]
    }
    try:
        session = new_session(data, meta["session"], zeros)
        outputs = OrtRunner(region.name, session, meta, [])(list(region.example_inputs))
    except Exception as exc:
        raise BackendCompileError(
            f"ONNX Runtime cannot run the model of region {region.name}: "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    expected = _expected_outputs(region.program)
    for i, (got, want) in enumerate(zip(outputs, expected)):
        dtype, shape = want
        if got.dtype != dtype or (shape is not None and list(got.shape) != shape):
            raise BackendCompileError(
                f"the ONNX model of region {region.name} returns output {i} as "
                f"{got.dtype} {list(got.shape)}, the region as {dtype} {shape}"
            )


def _expected_outputs(program: torch.export.ExportedProgram) -> list[tuple[torch.dtype, Any]]:
    """(dtype, shape at the example sizes, or None where a size has no hint) per user output."""
    values = program.graph.output_node().args[0]
    out = []
    for spec, v in zip(program.graph_signature.output_specs, values):
        if spec.kind is not OutputKind.USER_OUTPUT:
            continue
        val = v.meta.get("val")
        try:
            shape = [_hint(s) for s in val.shape]
        except ValueError:
            shape = None
        out.append((val.dtype, shape))
    return out


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    # torch.onnx's ConversionError starts with a fixed banner; the cause follows it.
    for line in lines:
        if "Error" in line and not line.startswith("Failed to"):
            return line.strip()[:300]
    return (lines[0] if lines else "")[:300]
