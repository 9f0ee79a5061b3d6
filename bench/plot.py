"""Bar charts of benchmark results (matplotlib, from the `bench` extra)."""

from __future__ import annotations

import pathlib


def plot_series(
    chart: str, groups: dict[str, dict[str, float]], path: pathlib.Path
) -> pathlib.Path | None:
    """One panel per group, one bar per implementation, times in microseconds."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False)
    for ax, (group, seconds) in zip(axes[0], groups.items()):
        names = list(seconds)
        values = [seconds[n] * 1e6 for n in names]
        colors = ["#e7298a" if n == "fxdelegate" else "#7570b3" for n in names]
        bars = ax.bar(range(len(names)), values, color=colors)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(group, fontsize=9)
        ax.set_ylabel("us per call")
        for bar, value in zip(bars, values):
            ax.annotate(
                f"{value:.0f}",
                (bar.get_x() + bar.get_width() / 2, value),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg")
    plt.close(fig)
    return path
