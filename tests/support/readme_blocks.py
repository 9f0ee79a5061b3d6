"""The README's "Writing a pass" section, read as code: its files and printed output."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]


def section_blocks() -> list[tuple[str, str]]:
    """(language, code) of each fenced block in the "Writing a pass" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Writing a pass", 1)[1].split("\n## ", 1)[0]
    blocks, language, lines = [], None, []
    for line in section.splitlines():
        if language is None and line.startswith("```"):
            language, lines = line[3:], []
        elif language is not None and line == "```":
            blocks.append((language, "\n".join(lines)))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def worked_example_files() -> dict[str, str]:
    """The section's files, by the name in their first line (``# my_passes.py``)."""
    found = {}
    for language, code in section_blocks():
        first = code.split("\n", 1)[0]
        if language == "python" and re.fullmatch(r"# \w+\.py", first):
            found[first[2:]] = code + "\n"
    return found


def printed_blocks() -> list[str]:
    """The section's plain blocks: what the worked example prints."""
    return [code for language, code in section_blocks() if language == ""]
