"""Benchmarks: run with `pytest bench/<file>.py`. Each suite times the
implementations it compares side by side (interleaved, in one process) and
prints their ratios; absolute times are only context."""

from __future__ import annotations

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / ".cache" / "inductor"))

from ratios import RATIO_TABLES, SERIES  # noqa: E402


def pytest_terminal_summary(terminalreporter):
    if SERIES:
        from plot import plot_series

        for chart, groups in SERIES.items():
            written = plot_series(chart, groups, ROOT / "docs" / f"{chart}.svg")
            terminalreporter.write_line(
                f"plot: {written}" if written else "plot skipped: pip install matplotlib"
            )
    for title, rows in RATIO_TABLES.items():
        if not rows:
            continue
        terminalreporter.write_sep("=", title)
        header = list(rows[0])
        terminalreporter.write_line("| " + " | ".join(header) + " |")
        terminalreporter.write_line("|" + "---|" * len(header))
        for row in rows:
            terminalreporter.write_line("| " + " | ".join(str(row[k]) for k in header) + " |")
