"""ONNX Runtime runtime half: load a region's ONNX model and run it on the CPU.

Imports only onnxruntime (and torch, numpy): never torch.onnx, onnx or
onnxscript, so a saved program loads and runs without the compiler half.

The model holds no weights. Its weight initializers are declared as
external data that no file backs, and :meth:`OnnxRuntimeRuntime.load`
supplies them from the program's tensors:

* ``SessionOptions.add_external_initializers`` stands in for the missing
  data while the model is loaded, so the session's graph optimizer and
  ONNX Runtime's GEMM weight pre-packing see real initializers;
* ``SessionOptions.add_initializer`` then makes the session use those same
  tensors' memory instead of keeping a copy of each weight.

``add_initializer`` alone cannot be used: it needs each initializer's data
in the model, which would put the weights in the artifact.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import zipfile
from collections.abc import Mapping
from typing import Any

import torch

from fxdelegate.errors import ArchiveError, BackendError

from ..backend import BackendRuntime, RegionArtifact, Runner

ARCHIVE_DIR = "onnxruntime"
MODEL_FILE = "model.onnx"
# What the model's weight initializers name as their external data location: no
# such file exists; the weights are bound when the session is made.
BOUND_AT_LOAD = "fxdelegate-weights-bound-at-load"
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")

_lock = threading.Lock()
# (archive path, package key, size, mtime) -> model bytes: regions of one
# structure share a package, read once per process.
_models: dict[tuple[str, str, int, int], bytes] = {}


def model_member(package_key: str) -> str:
    """The model's member name in a package or archive, without the archive's root folder."""
    return f"data/{ARCHIVE_DIR}/{package_key}/{MODEL_FILE}"


def _model_bytes(path: str, package_key: str) -> bytes:
    stat = os.stat(path)
    key = (os.path.realpath(path), package_key, stat.st_size, stat.st_mtime_ns)
    with _lock:
        if key in _models:
            return _models[key]
    wanted = model_member(package_key)
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.filename.split("/", 1)[-1] == wanted:
                data = archive.read(info)
                break
        else:
            raise ArchiveError(f"{path}: the ONNX model {wanted} is missing")
    with _lock:
        return _models.setdefault(key, data)


def session_options(ort: Any, options: Mapping[str, Any]) -> Any:
    """ONNX Runtime session options from a region's compile options."""
    levels = ort.GraphOptimizationLevel
    level = {
        "disable": levels.ORT_DISABLE_ALL,
        "basic": levels.ORT_ENABLE_BASIC,
        "extended": levels.ORT_ENABLE_EXTENDED,
        "all": levels.ORT_ENABLE_ALL,
    }[options["graph_optimization_level"]]
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = int(options["intra_op_num_threads"])
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # errors only: ORT's warnings are about its own choices
    # ORT's worker threads spin after each run by default. Between two ORT calls that
    # pays, but here the next work is the executor's or another backend's (inductor's
    # OpenMP team), and spinning threads take its cores: measured on 2 cores, a plan
    # with a 2-thread ORT region before an AOTInductor one ran 1.5-2x slower.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def weight_array(tensor: torch.Tensor) -> Any:
    """A contiguous CPU numpy view of a weight (a copy only where it is strided)."""
    if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cpu":
        raise BackendError(f"expected a CPU tensor, got {type(tensor).__name__}")
    return tensor.detach().contiguous().numpy()


def new_session(model: bytes, options: Mapping[str, Any], weights: Mapping[str, Any]) -> Any:
    """An InferenceSession on the CPU with `weights` (name -> contiguous numpy array) bound."""
    import onnxruntime as ort

    so = session_options(ort, options)
    if weights:
        names = list(weights)
        values = [ort.OrtValue.ortvalue_from_numpy(weights[n]) for n in names]
        so.add_external_initializers(names, values)
        for name, value in zip(names, values):
            so.add_initializer(name, value)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


class OrtRunner:
    """Flat torch tensors in, flat torch tensors out, through one InferenceSession.

    Inputs are handed over as numpy views of their memory (made contiguous
    first where they are not). ONNX Runtime returns each output in a fresh
    numpy array that owns its memory, which torch then wraps: no copies, and
    no output shares memory ONNX Runtime reuses on the next call.
    """

    def __init__(self, key: str, session: Any, meta: Mapping[str, Any], keep: list[Any]) -> None:
        self.key = key
        self.session = session
        self.input_names = list(meta["inputs"])
        self.output_names = list(meta["outputs"])
        # The bound weights' memory: the session reads it until it is gone.
        self._keep = keep
        inner = getattr(session, "_sess", None)
        self._run = inner.run if inner is not None else session.run

    def __call__(self, inputs: list[Any]) -> list[Any]:
        feeds = {}
        for name, t in zip(self.input_names, inputs):
            if t.requires_grad:
                t = t.detach()
            feeds[name] = (t if t.is_contiguous() else t.contiguous()).numpy()
        try:
            outputs = self._run(self.output_names, feeds, None)
        except Exception as exc:
            raise BackendError(
                f"region {self.key}: ONNX Runtime failed to run it: {type(exc).__name__}: {exc}"
            ) from exc
        return [torch.from_numpy(o) for o in outputs]


class OnnxRuntimeRuntime(BackendRuntime):
    backend_id = "onnxruntime"
    archive_dir = ARCHIVE_DIR
    # What a region's folder in an archive must hold (archive_checks.check_region_files
    # asks every backend for an AOTInductor library today, *.so or *.cpp: see the report).
    package_suffixes = (".onnx",)

    def is_available(self) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None

    def load(self, artifact: RegionArtifact, constants: Mapping[str, Any]) -> Runner:
        path = artifact.package_path
        if path is None or not os.path.isfile(path):
            raise ArchiveError(f"region {artifact.key}: compiled package {path!r} does not exist")
        meta = artifact.meta.get("onnxruntime")
        if not isinstance(meta, dict):
            raise ArchiveError(f"region {artifact.key}: its ONNX Runtime metadata is missing")
        model = _model_bytes(path, artifact.package_key or artifact.key)
        missing = [n for n in meta["weights"] if n not in constants]
        if missing:
            raise BackendError(f"region {artifact.key}: weights {missing} were not provided")
        weights = {}
        keep: list[Any] = []
        for name in meta["weights"]:
            tensor = constants[name]
            try:
                weights[name] = weight_array(tensor)
            except BackendError as exc:
                raise BackendError(f"region {artifact.key}: weight {name}: {exc}") from None
            keep.append(tensor)
        keep.extend(weights.values())
        try:
            session = new_session(model, meta["session"], weights)
        except Exception as exc:
            raise BackendError(
                f"region {artifact.key}: ONNX Runtime could not load its model: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return OrtRunner(artifact.key, session, meta, keep)
