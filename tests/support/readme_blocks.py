"""The "Writing a pass" guide (docs/guides/writing-a-pass.md), read as code: its
worked example's files and what they print. The name is from when the example
lived in the README."""

from __future__ import annotations

import pathlib
import re


def _root() -> pathlib.Path:
    # The checkout's root, wherever this helper sits under tests/.
    here = pathlib.Path(__file__).resolve()
    return next(p for p in here.parents if (p / "pyproject.toml").is_file())


ROOT = _root()
GUIDE = ROOT / "docs" / "guides" / "writing-a-pass.md"


def section_blocks() -> list[tuple[str, str]]:
    """(language, code) of each fenced block in the guide, in order."""
    blocks, language, lines = [], None, []
    for line in GUIDE.read_text().splitlines():
        if language is None and line.startswith("```"):
            language, lines = line[3:], []
        elif language is not None and line == "```":
            blocks.append((language, "\n".join(lines)))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def worked_example_files() -> dict[str, str]:
    """The guide's files, by the name in their first line (``# my_passes.py``)."""
    found = {}
    for language, code in section_blocks():
        first = code.split("\n", 1)[0]
        if language == "python" and re.fullmatch(r"# \w+\.py", first):
            found[first[2:]] = code + "\n"
    return found


def printed_blocks() -> list[str]:
    """The guide's plain blocks: what the worked example prints."""
    return [code for language, code in section_blocks() if language == ""]
