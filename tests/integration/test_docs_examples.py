"""Every Python example in the README and on the docs site runs, page by page.

The blocks of one page run in order in one namespace, in a fresh folder that
is also on ``sys.path``. A block whose first line names a file
(``# my_passes.py``) is written to that folder instead, for the blocks after
it to import (``test_readme.py`` runs the worked example's files themselves).
A block right after ``<!-- example: skip (reason) -->`` is not run: it needs
what CI does not have (a GPU, a Redis server), and the reason names the test
that covers the same code path. Shell blocks are not run; the Quickstart's
are checked by ``test_readme.py``.

Lowering goes through the ``reference`` backend (no compiler, milliseconds)
everywhere but on one page, whose examples go through real AOTInductor as
written: its regions are the demo model's, which the rest of the suite
compiles too, so the compile cache usually holds them.
"""

from __future__ import annotations

import contextlib
import functools
import io
import pathlib
import re
from dataclasses import dataclass

import pytest

import fxdelegate


def _root() -> pathlib.Path:
    # The checkout's root, wherever this file sits under tests/.
    here = pathlib.Path(__file__).resolve()
    return next(p for p in here.parents if (p / "pyproject.toml").is_file())


ROOT = _root()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
REAL_AOTI = "docs/getting-started.md"
MARKER = re.compile(r"<!-- example: (.*?) -->")
SKIP = re.compile(r"skip \((\S.*)\)")
MOST_SKIPPED = 0.15  # of all Python blocks
FILE_NAME = re.compile(r"# (\w+\.py)")


@dataclass
class Block:
    line: int
    language: str
    code: str
    marker: str | None  # the text of an `<!-- example: ... -->` right before it

    @property
    def file_name(self) -> str | None:
        match = FILE_NAME.fullmatch(self.code.split("\n", 1)[0])
        return match.group(1) if self.language == "python" and match else None


def fenced_blocks(page: pathlib.Path) -> list[Block]:
    blocks: list[Block] = []
    language, start, lines, marker = None, 0, [], None
    previous = ""  # the last non-blank line outside a block
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if language is None and line.startswith("```"):
            found = MARKER.fullmatch(previous.strip())
            language, start, lines = line[3:].strip(), number, []
            marker = found.group(1) if found else None
        elif language is not None and line.strip() == "```":
            blocks.append(Block(start, language, "\n".join(lines), marker))
            language = None
        elif language is not None:
            lines.append(line)
        elif line.strip():
            previous = line
    return blocks


def _name(page: pathlib.Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _python_pages() -> list[pathlib.Path]:
    return [p for p in PAGES if any(b.language == "python" for b in fenced_blocks(p))]


def test_every_skip_gives_a_reason_and_few_examples_are_skipped():
    total, skipped, problems = 0, [], []
    for page in PAGES:
        text = page.read_text()
        for found in MARKER.finditer(text):
            if not SKIP.fullmatch(found.group(1)):
                problems.append(f"{_name(page)}: {found.group(0)!r} is not 'skip (a reason)'")
        markers = text.count("<!-- example:")
        blocks = [b for b in fenced_blocks(page) if b.language == "python"]
        attached = [b for b in blocks if b.marker is not None]
        if len(attached) != markers:
            problems.append(f"{_name(page)}: a marker is not right before a python block")
        total += len(blocks)
        skipped += [f"{_name(page)}:{b.line}" for b in attached]
    assert not problems, problems
    assert total >= 20, total  # the parser found the examples
    assert len(skipped) <= MOST_SKIPPED * total, (skipped, total)


def _on_reference(lower):
    """`lower` with the `aoti` backend swapped for `reference` (its options dropped)."""

    @functools.wraps(lower)
    def lower_on_reference(exported_program, backend="aoti", *args, **kwargs):
        names = [backend] if isinstance(backend, str) else list(backend)
        if "aoti" not in names:
            return lower(exported_program, backend, *args, **kwargs)
        names = list(dict.fromkeys("reference" if n == "aoti" else n for n in names))
        several = not isinstance(backend, str)
        for key in ("support", "compile_options"):
            value = kwargs.get(key)
            if several and isinstance(value, dict):
                value = {k: v for k, v in value.items() if k != "aoti"}
                kwargs[key] = value.get("reference") if len(names) == 1 else value
            elif not several and key == "compile_options":
                kwargs.pop(key, None)  # inductor's configs mean nothing to the reference backend
        return lower(exported_program, names[0] if len(names) == 1 else names, *args, **kwargs)

    return lower_on_reference


@pytest.mark.parametrize("page", _python_pages(), ids=_name)
def test_the_examples_of_a_page_run(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for variable in (
        "FXDELEGATE_REMOTE_CACHE",
        "FXDELEGATE_CACHE_SECRET",
        "FXDELEGATE_CACHE_INSECURE",
    ):
        monkeypatch.delenv(variable, raising=False)
    if _name(page) != REAL_AOTI:
        monkeypatch.setattr(fxdelegate, "lower", _on_reference(fxdelegate.lower))
    blocks = [b for b in fenced_blocks(page) if b.language == "python"]
    for block in blocks:
        if block.file_name:
            (tmp_path / block.file_name).write_text(block.code + "\n")
    namespace: dict[str, object] = {"__name__": "__docs_example__"}
    ran = 0
    for block in blocks:
        if block.file_name or block.marker is not None:
            continue
        code = compile(block.code, f"{_name(page)}:{block.line}", "exec")
        exec(code, namespace)  # a failure's traceback names the page and the block's line
        ran += 1
    assert ran or all(b.file_name for b in blocks if b.marker is None)


def cli_page() -> dict[str, str]:
    """Command -> the help text docs/reference/cli.md shows for it."""
    text = (ROOT / "docs" / "reference" / "cli.md").read_text()
    return dict(re.findall(r"^## `(fxdelegate[\w -]*)`\n\n```text\n(.*?)\n```", text, re.M | re.S))


def test_the_command_line_page_shows_the_help_of_every_command(monkeypatch):
    from fxdelegate.cli import main

    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps to the terminal's width
    shown = cli_page()
    assert set(shown) == {
        "fxdelegate",
        *(f"fxdelegate {c}" for c in ("demo", "inspect", "compare", "cache", "run-saved")),
    }
    for command, text in shown.items():
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), pytest.raises(SystemExit):
            main([*command.split()[1:], "--help"])
        assert printed.getvalue().strip("\n") == text, command
