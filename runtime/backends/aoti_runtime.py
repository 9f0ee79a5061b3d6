"""AOTInductor runtime half: load a compiled region from a .pt2 and run it.

Uses the AOTI package loader from torch's C++ extension only; importing this
module never imports ``torch._inductor``'s compiler, so saved programs load
and run on a machine (or in a process) without one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Mapping

import torch

from fxdelegate.errors import ArchiveError, BackendError

from ..backend import BackendRuntime, RegionArtifact, Runner
from .libstdcxx_guard import prepare_to_load

_tmp_lock = threading.Lock()
_private_root: str | None = None


@contextlib.contextmanager
def private_tmpdir() -> Iterator[str]:
    """Point TMPDIR at a folder only this process uses while AOTInductor's loader
    extracts a package (it extracts under TMPDIR), and remove it at exit."""
    global _private_root
    with _tmp_lock:
        if _private_root is None:
            _private_root = tempfile.mkdtemp(prefix="fxdelegate-")  # mode 0700
            atexit.register(shutil.rmtree, _private_root, True)
        saved = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = _private_root
        try:
            yield _private_root
        finally:
            if saved is None:
                del os.environ["TMPDIR"]
            else:
                os.environ["TMPDIR"] = saved


def _libraries(path: str, package_key: str) -> Iterator[tuple[str, bytes]]:
    """The compiled libraries of one package inside a .pt2 archive."""
    prefix = f"data/aotinductor/{package_key}/"
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename.split("/", 1)[-1]
            if name.startswith(prefix) and name.endswith(".so"):
                yield name, archive.read(info)


# (archive path, package key, size, mtime) -> the package's folder, or "" where the
# loader reads the archive itself; filled once per package and process.
_packages: dict[tuple[str, str, int, int], str] = {}
# Whether this torch's loader takes an unpacked package folder (2.13 does, 2.11 does
# not); None until the first load finds out.
_loads_folders: bool | None = None


def _package_source(path: str, package_key: str) -> str:
    """What to hand AOTInductor's loader for one package of a .pt2 archive.

    Regions of one structure share a package. Given the archive, the loader
    unpacks the package and copies its library again for every region (about
    5 ms each, most of a warm lowering of hundreds of regions); given an
    unpacked folder, it loads the library in place. So each package is
    unpacked once per process, where the loader takes folders: only its own
    members and the archive's top-level records, never the program's weights.
    The libstdc++ check also runs once per package.
    """
    stat = os.stat(path)
    key = (os.path.realpath(path), package_key, stat.st_size, stat.st_mtime_ns)
    with _tmp_lock:
        if key in _packages:
            return _packages[key] or path
    for library, data in _libraries(path, package_key):
        prepare_to_load(data, library)
    folder = ""
    if _loads_folders is not False:
        with private_tmpdir() as root:
            target = tempfile.mkdtemp(prefix="package-", dir=root)
            folder = _unpack(path, package_key, target)
    with _tmp_lock:
        return _packages.setdefault(key, folder) or path


def _unpack(path: str, package_key: str, target: str) -> str:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        top = names[0].split("/", 1)[0] if names else ""
        wanted = f"{top}/data/aotinductor/{package_key}/"
        for name in names:
            parts = name.split("/")
            if ".." in parts or name.startswith("/") or parts[0] != top:
                raise ArchiveError(f"{path}: member {name!r} lies outside the archive folder")
            inside = name.split("/", 1)[-1]
            if name.startswith(wanted) or not inside.startswith(("data/", "models/")):
                archive.extract(name, target)
    return os.path.join(target, top)


def _new_loader(path: str, package_key: str) -> torch._C._aoti.AOTIModelPackageLoader:
    """A single-threaded loader of one package, from its folder where torch can."""
    global _loads_folders
    source = _package_source(path, package_key)
    loader_class = torch._C._aoti.AOTIModelPackageLoader
    if source != path:
        try:
            with private_tmpdir():
                loader = loader_class(source, package_key, True, 1, -1)
        except RuntimeError as exc:
            if _loads_folders is not None or "zip" not in str(exc):
                raise
            # This torch reads packages from archives only: from now on, hand it those.
            _loads_folders = False
            with _tmp_lock:
                _packages.clear()
        else:
            _loads_folders = True
            return loader
    with private_tmpdir():
        return loader_class(path, package_key, True, 1, -1)


class AOTIRuntime(BackendRuntime):
    backend_id = "aoti"
    archive_dir = "aotinductor"

    def is_available(self) -> bool:
        return hasattr(torch._C, "_aoti") and hasattr(torch._C._aoti, "AOTIModelPackageLoader")

    def load(self, artifact: RegionArtifact, constants: Mapping[str, torch.Tensor]) -> Runner:
        # The single-threaded container: the default one hands each call to a model
        # instance under a lock (with CUDA events on a GPU), which costs time at every
        # region boundary and which a CUDA graph cannot record. The executor makes
        # a program's calls take turns instead (ProgramExecutor.call_lock).
        path = artifact.package_path
        if path is None or not os.path.isfile(path):
            raise ArchiveError(f"region {artifact.key}: compiled package {path!r} does not exist")
        name = artifact.package_key or artifact.key
        try:
            loader = _new_loader(path, name)
            expected = set(loader.get_constant_fqns())
        except ArchiveError:
            raise
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

    def load_recordable(
        self, artifact: RegionArtifact, constants: Mapping[str, torch.Tensor]
    ) -> Runner:
        return self.load(artifact, constants)  # runs straight on the caller's stream

    def rebind(
        self,
        handle: Runner,
        artifact: RegionArtifact,
        changed: Mapping[str, torch.Tensor],
        constants: Mapping[str, torch.Tensor],
    ) -> Runner:
        # The loader behind the bound `run`: swap just the changed weights, no reload.
        handle.__self__.load_constants(dict(changed), False, False, True)  # type: ignore[attr-defined]
        return handle
