"""Aligned text tables for the reports (lowering, CUDA graphs, compare).

It imports nothing from the project: the partitioner's and the runtime's reports
both use it, and the partitioner sits below the runtime."""

from __future__ import annotations


def format_table(rows: list[list[str]]) -> list[str]:
    """Rows of cells as aligned, indented lines (the first row is the header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        out.append("  " + "  ".join(cells).rstrip())
    return out
