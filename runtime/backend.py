"""The backend contract and registry.

Modelled on torch's JIT backend contract (``is_available`` / ``compile`` /
``execute``), split in two halves so that loading and running a saved program
never imports a compiler:

* a :class:`BackendRuntime` loads a compiled region and executes it;
* a :class:`BackendCompiler` turns one outlined region into an artifact.

Built-in backends are registered by dotted path and imported on first use.
"""

from __future__ import annotations

import importlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from fxdelegate.errors import BackendError, InvalidArgumentError

if TYPE_CHECKING:
    from torch.export import ExportedProgram
    from torch.fx.passes.operator_support import OperatorSupportBase

# A loaded region: flat list of inputs in, flat list of outputs out.
Runner = Callable[[list[Any]], list[Any]]


@dataclass
class RegionArtifact:
    """What a backend produced for one region, in a form the runtime half can load.

    ``key`` is ``"<region>-<backend_id>"``, unique within one program; it is
    the string the serialized graph refers to the region by.
    """

    key: str
    backend_id: str
    # A zip file (a compile-cache package, or the program's own archive) holding
    # this region's files under ``data/<archive_dir>/<package_key>/``. Regions
    # with identical structure share one package and one package_key.
    package_path: str | None = None
    package_key: str | None = None
    # The region's ExportedProgram, for backends that store or run the graph itself.
    program: ExportedProgram | None = None
    # JSON-serializable facts the runtime half needs (saved in the archive), e.g.
    # "constants": [[name in the compiled code, program FQN, shape, dtype], ...].
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def constant_bindings(self) -> list[tuple[str, str]]:
        """(name inside the compiled region, FQN in the program's state) pairs."""
        return [(c[0], c[1]) for c in self.meta.get("constants", [])]


@dataclass
class RegionToCompile:
    """One outlined region as a compiler sees it."""

    name: str
    program: ExportedProgram  # flat inputs, flat outputs
    example_inputs: tuple[Any, ...]  # flat, concrete, matching program's user inputs

    def key(self, backend_id: str) -> str:
        return f"{self.name}-{backend_id}"


class BackendRuntime(ABC):
    """Runtime half: load an artifact, execute it on flat inputs.

    A region's own weights are not inputs: `load` receives them as
    `constants` (keyed by their names inside the region) and binds them once.
    """

    backend_id: str
    # Folder under data/ that holds this backend's files in an archive
    # (None when the backend keeps no files).
    archive_dir: str | None = None
    # True when the region's ExportedProgram must be saved (models/<key>.json).
    stores_program: bool = False
    # A region's folder in an archive must hold a file with one of these suffixes.
    package_suffixes: tuple[str, ...] = (".so", ".cpp")

    def is_available(self) -> bool:
        return True

    @abstractmethod
    def load(self, artifact: RegionArtifact, constants: Mapping[str, Any]) -> Runner:
        """Return the handle for one region: a callable on a flat input list."""

    def load_recordable(
        self, artifact: RegionArtifact, constants: Mapping[str, Any]
    ) -> Runner | None:
        """A handle a CUDA graph can record (no host syncs or locks inside), or None.

        The executor calls it one call at a time. None (the default) means the
        backend cannot be recorded: its regions run between recorded segments.
        """
        return None

    def execute(self, handle: Runner, inputs: list[Any]) -> list[Any]:
        return handle(inputs)

    def rebind(
        self,
        handle: Runner,
        artifact: RegionArtifact,
        changed: Mapping[str, Any],
        constants: Mapping[str, Any],
    ) -> Runner:
        """Bind new weights (`changed`, a subset of `constants`) to a loaded region.

        The default reloads the region; backends that can swap weights in place override it.
        """
        return self.load(artifact, constants)


class BackendCompiler(ABC):
    """Compile half: turn one outlined region into an artifact.

    The artifact must not depend on the values of the region's weights (they
    are bound at load time), so that identical regions share it.
    """

    backend_id: str
    # Artifacts are packages worth keeping in the content-addressed compile cache.
    cacheable: bool = False
    # `compile` may run in a separate process (the compiler is importable by path).
    parallel_safe: bool = False
    # The compiled region may write an input in place (a region program with a
    # USER_INPUT_MUTATION output): buffers the region updates are then written by
    # the region itself instead of being copied back by the executor after it.
    supports_input_mutation: bool = False
    # Part of every region's content key: raise it when the compiler starts producing
    # different code for the same region and options, so cached artifacts are rebuilt.
    compile_version: int = 0

    def is_available(self) -> bool:
        return True

    def default_support(self) -> OperatorSupportBase:
        from fxdelegate.partitioner import CompilableAtenSupport

        return CompilableAtenSupport()

    def default_options(self) -> dict[str, Any]:
        """Options every region gets unless the user's `compile_options` set them.

        They are part of each region's content key, like the user's own options."""
        return {}

    @abstractmethod
    def compile(
        self, region: RegionToCompile, options: dict[str, Any], workdir: str
    ) -> RegionArtifact:
        """Compile `region`; files it writes go under `workdir`."""


@dataclass
class _Registration:
    backend_id: str
    runtime: BackendRuntime | str
    compiler: BackendCompiler | str | None


_registry: dict[str, _Registration] = {}
_lock = threading.Lock()


def _resolve(obj: Any, what: str, backend_id: str) -> Any:
    if not isinstance(obj, str):
        return obj
    module_name, _, attr = obj.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BackendError(
            f"cannot import the {what} of backend '{backend_id}' from {obj}: {exc}"
        ) from exc
    return cls()


def register_backend(
    backend_id: str,
    *,
    runtime: BackendRuntime | str,
    compiler: BackendCompiler | str | None = None,
    replace: bool = False,
) -> None:
    """Register a backend under `backend_id`.

    `runtime` and `compiler` are instances, or ``"module:Class"`` strings that
    are imported (and instantiated) on first use, so that registering a backend
    costs nothing and the runtime half never drags its compiler in.
    """
    if not isinstance(backend_id, str) or not backend_id or "-" in backend_id or "/" in backend_id:
        raise InvalidArgumentError(
            f"backend id must be a non-empty string without '-' or '/', got {backend_id!r}"
        )
    for what, obj, base in (
        ("runtime", runtime, BackendRuntime),
        ("compiler", compiler, BackendCompiler),
    ):
        if obj is None or isinstance(obj, str):
            continue
        if not isinstance(obj, base):
            raise InvalidArgumentError(
                f"{what} of backend '{backend_id}' must be a {base.__name__} instance or a "
                f"'module:Class' string, got {type(obj).__name__}"
            )
    with _lock:
        if backend_id in _registry and not replace:
            raise InvalidArgumentError(
                f"backend '{backend_id}' is already registered (pass replace=True to override)"
            )
        _registry[backend_id] = _Registration(backend_id, runtime, compiler)


def registered_backends() -> list[str]:
    return sorted(_registry)


def _registration(backend_id: str) -> _Registration:
    try:
        return _registry[backend_id]
    except KeyError:
        raise BackendError(
            f"unknown backend '{backend_id}'; registered backends: {', '.join(registered_backends())}"
        ) from None


def get_runtime(backend_id: str) -> BackendRuntime:
    reg = _registration(backend_id)
    with _lock:
        reg.runtime = _resolve(reg.runtime, "runtime", backend_id)
    runtime = reg.runtime
    assert isinstance(runtime, BackendRuntime)
    if not runtime.is_available():
        raise BackendError(f"backend '{backend_id}' runtime is not available on this machine")
    return runtime


def get_compiler(backend_id: str) -> BackendCompiler:
    reg = _registration(backend_id)
    if reg.compiler is None:
        raise BackendError(f"backend '{backend_id}' has no compiler registered (runtime only)")
    with _lock:
        reg.compiler = _resolve(reg.compiler, "compiler", backend_id)
    compiler = reg.compiler
    assert isinstance(compiler, BackendCompiler)
    if not compiler.is_available():
        raise BackendError(f"backend '{backend_id}' compiler is not available on this machine")
    return compiler


def example_value(fake: Any) -> Any:
    """A concrete value with the shape/dtype/device of `fake`, sizes taken from their hints."""
    if isinstance(fake, torch.Tensor):
        shape = [_hint(s) for s in fake.shape]
        if fake.dtype.is_floating_point or fake.dtype.is_complex:
            return torch.randn(shape, dtype=fake.dtype, device=fake.device)
        return torch.zeros(shape, dtype=fake.dtype, device=fake.device)
    if isinstance(fake, torch.SymInt):
        return _hint(fake)
    return fake


def _hint(size: int | torch.SymInt) -> int:
    if isinstance(size, torch.SymInt):
        hint = size.node.hint
        if hint is None:
            raise ValueError(f"size {size} has no example value (data-dependent)")
        return int(hint)
    return int(size)


register_backend(
    "aoti",
    runtime="fxdelegate.runtime.backends.aoti_runtime:AOTIRuntime",
    compiler="fxdelegate.runtime.backends.aoti_compiler:AOTICompiler",
)
register_backend(
    "reference",
    runtime="fxdelegate.runtime.backends.reference:ReferenceRuntime",
    compiler="fxdelegate.runtime.backends.reference:ReferenceCompiler",
)
register_backend(
    "onnxruntime",
    runtime="fxdelegate.runtime.backends.onnxruntime_runtime:OnnxRuntimeRuntime",
    compiler="fxdelegate.runtime.backends.onnxruntime_compiler:OnnxRuntimeCompiler",
)
