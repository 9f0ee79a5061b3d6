"""Imports only go down: no module of the project imports one in a loop, or one in a
layer above its own.

Every import counts, those inside functions included (they are dependencies too,
only later); imports under ``if TYPE_CHECKING:`` do not (they never run). The
modules are found from pyproject.toml's package map, so a new folder is checked as
soon as it is installed."""

from __future__ import annotations

import ast
import itertools
import pathlib
from dataclasses import dataclass

import networkx as nx
import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Bottom to top: a module may import modules of its own layer or of layers below.
# An entry names one module, or with ".*" every module under a package; the longest
# entry that matches a module decides its layer.
LAYERS: list[tuple[str, list[str]]] = [
    # Leaves every layer uses: errors, the version, the report tables.
    ("base", ["fxdelegate.errors", "fxdelegate.version", "fxdelegate.text_table"]),
    # Op support and the partition algorithm: backends declare their ops with it.
    ("partitioner", ["fxdelegate.partitioner", "fxdelegate.partitioner.*"]),
    # What the runtime and the passes share: the backend contract and registry, the
    # module a delegate node points at, a program's weights.
    ("runtime", ["fxdelegate.runtime.*"]),
    ("runtime/backends", ["fxdelegate.runtime.backends", "fxdelegate.runtime.backends.*"]),
    ("runtime/archive", ["fxdelegate.runtime.archive", "fxdelegate.runtime.archive.*"]),
    # The graph as straight-line Python.
    ("runtime/codegen", ["fxdelegate.runtime.codegen", "fxdelegate.runtime.codegen.*"]),
    ("runtime/cuda_graphs", ["fxdelegate.runtime.cuda_graphs", "fxdelegate.runtime.cuda_graphs.*"]),
    ("runtime/debug", ["fxdelegate.runtime.debug", "fxdelegate.runtime.debug.*"]),
    # One call: its entry function, its input checks, the executor over all of the above.
    ("runtime/executor", ["fxdelegate.runtime.executor", "fxdelegate.runtime.executor.*"]),
    ("runtime/__init__", ["fxdelegate.runtime"]),
    # Compiling regions once: content key, caches, parallel and fleet compiles.
    ("passes/compile", ["fxdelegate.passes.compile", "fxdelegate.passes.compile.*"]),
    # The lowering passes, the state they share and their graph helpers.
    ("passes", ["fxdelegate.passes.*"]),
    # The pipeline that runs them, the checks after user passes, the result.
    ("passes/pipeline", ["fxdelegate.passes.pipeline", "fxdelegate.passes.pipeline.*"]),
    # The package's public names, gathered from all of the above.
    ("passes/__init__", ["fxdelegate.passes"]),
    # The public API, the CLI, the measured plan, the pass test kit.
    ("api", ["fxdelegate", "fxdelegate.*", "pytest_fxdelegate", "pytest_fxdelegate.*"]),
]


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    path: pathlib.Path
    line: int

    def __str__(self) -> str:
        return (
            f"{self.importer} imports {self.imported} ({self.path.relative_to(ROOT)}:{self.line})"
        )


def project_modules() -> dict[str, pathlib.Path]:
    """Module name -> file, for every package pyproject.toml installs."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = setuptools["package-dir"]
    modules = {}
    for package in setuptools["packages"]:
        folder = ROOT / folders.get(package, package.replace(".", "/"))
        for file in folder.glob("*.py"):
            name = package if file.stem == "__init__" else f"{package}.{file.stem}"
            modules[name] = file
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: pathlib.Path, modules: dict[str, pathlib.Path]) -> list[Import]:
    """The project modules `name` imports, anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []

    def project_module(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit_statement(other)
                continue
            visit_statement(child)

    def visit_statement(node: ast.AST) -> None:
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from package import module` imports the module itself.
            targets = [
                f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                for a in node.names
            ]
        for target in targets:
            module = project_module(target)
            if module is not None and module != name:
                found.append(Import(name, module, path, node.lineno))
        visit(node)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def layer_of(module: str) -> int:
    best: tuple[int, int] | None = None  # (length of the entry, layer index)
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            prefix = entry.removesuffix(".*")
            matches = module.startswith(prefix + ".") if entry.endswith(".*") else module == entry
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    assert best is not None, f"{module} is in no layer: add it to LAYERS in {__file__}"
    return best[1]


@pytest.fixture(scope="module")
def all_imports() -> list[Import]:
    modules = project_modules()
    assert "fxdelegate.runtime.backend" in modules, "pyproject.toml was not read"
    return [i for name, path in modules.items() for i in imports_of(name, path, modules)]


def test_every_package_folder_is_installed():
    """A folder with an ``__init__.py`` under an installed folder is itself installed
    (pyproject.toml's ``packages`` and ``package-dir``), or a regular install lacks it."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = setuptools["package-dir"]
    installed = {ROOT / folders.get(p, p.replace(".", "/")) for p in setuptools["packages"]}
    missing = [
        str(init.parent.relative_to(ROOT))
        for folder in installed
        for init in folder.rglob("__init__.py")
        if init.parent not in installed and "__pycache__" not in init.parts
    ]
    assert not missing, f"package folders not in pyproject.toml's packages: {sorted(missing)}"


def test_no_import_cycles(all_imports):
    graph = nx.DiGraph()
    for i in all_imports:
        graph.add_edge(i.importer, i.imported, where=i)
    cycles = list(itertools.islice(nx.simple_cycles(graph), 5))
    described = [
        "\n  ".join(str(graph.edges[a, b]["where"]) for a, b in zip(c, c[1:] + c[:1]))
        for c in cycles
    ]
    assert not cycles, "import cycles:\n  " + "\n\n  ".join(described)


def test_imports_only_go_down(all_imports):
    upward = [
        f"{i}: layer '{LAYERS[layer_of(i.importer)][0]}' imports from '{LAYERS[layer_of(i.imported)][0]}' above it"
        for i in all_imports
        if layer_of(i.imported) > layer_of(i.importer)
    ]
    assert not upward, "imports from a layer above:\n  " + "\n  ".join(upward)


def test_the_checker_sees_function_level_imports_and_skips_type_checking(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import low\n"
        "if TYPE_CHECKING:\n"
        "    from .high import Thing\n"
        "def f():\n"
        "    from .other import g\n"
    )
    modules = {n: tmp_path for n in ("pkg", "pkg.mod", "pkg.low", "pkg.high", "pkg.other")}
    found = {i.imported for i in imports_of("pkg.mod", source, modules)}
    assert found == {"pkg.low", "pkg.other"}
