"""MkDocs hook: lay the sources out as the installed package, for the API reference.

The import package ``fxdelegate`` is put together from several top-level folders
(``[tool.setuptools.package-dir]`` in pyproject.toml). mkdocstrings reads the
sources statically, without importing torch, so it needs them where the import
system would find them: ``fxdelegate/passes/...`` and so on. This hook copies
the ``.py`` files into ``build/api-sources/`` in that shape before every build,
reading the mapping from pyproject.toml, so a folder that moves needs no change
here.
"""

from __future__ import annotations

import pathlib
import shutil

import tomllib  # Python 3.11+, as CI's; the package itself still runs on 3.10

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "api-sources"


def package_folders(pyproject: dict) -> dict[str, pathlib.Path]:
    """Import name -> source folder of every package under ``fxdelegate``."""
    setuptools = pyproject.get("tool", {}).get("setuptools", {})
    mapping = setuptools.get("package-dir", {})
    folders: dict[str, pathlib.Path] = {}
    # Shorter names first, so that an explicit entry for a subpackage wins.
    for name in sorted(mapping, key=lambda n: n.count(".")):
        if name != "fxdelegate" and not name.startswith("fxdelegate."):
            continue
        top = ROOT / mapping[name]
        for init in sorted(top.rglob("__init__.py")):
            parts = init.parent.relative_to(top).parts
            folders[".".join((name, *parts))] = init.parent
    for name in setuptools.get("packages", []):
        if name.startswith("fxdelegate") and name not in folders:
            parent = max((p for p in folders if name.startswith(p + ".")), key=len)
            folders[name] = folders[parent].joinpath(*name[len(parent) + 1 :].split("."))
    return folders


def on_startup(command: str, dirty: bool) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shutil.rmtree(OUT, ignore_errors=True)
    for name, folder in package_folders(pyproject).items():
        target = OUT.joinpath(*name.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for source in folder.glob("*.py"):
            shutil.copy2(source, target / source.name)
