"""Per-node and per-region timings of a program, as a table.

Each node of the instrumented call also runs inside a
``torch.profiler.record_function`` range named ``fxdelegate::<region key>``
or ``fxdelegate::<op> (<node>)``, so PyTorch's profiler and Chrome traces
show regions by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from .plan import NodeTimes


@dataclass
class ProfileRow:
    label: str
    calls: int
    total_s: float

    @property
    def mean_us(self) -> float:
        return 1e6 * self.total_s / self.calls if self.calls else 0.0


@dataclass
class ProfileReport:
    rows: list[ProfileRow]
    wall_s: float  # whole calls, Python overhead included
    runs: int

    @classmethod
    def from_times(cls, times: NodeTimes, wall_s: float, runs: int) -> ProfileReport:
        rows = [
            ProfileRow(label, count, seconds)
            for label, count, seconds in zip(times.labels, times.counts, times.seconds)
        ]
        return cls(rows, wall_s, runs)

    @property
    def regions(self) -> list[ProfileRow]:
        return [r for r in self.rows if r.label.startswith("fxdelegate::region")]

    def format(self, top: int | None = None) -> str:
        per_call = 1e6 * self.wall_s / self.runs
        node_total = sum(r.total_s for r in self.rows)
        lines = [
            f"profile over {self.runs} call(s): {per_call:.1f} us per call "
            f"({1e6 * node_total / self.runs:.1f} us in nodes, the rest is entry/exit and timing)",
            "",
        ]
        rows = sorted(self.rows, key=lambda r: r.total_s, reverse=True)
        if top is not None:
            rows = rows[:top]
        table = [["node", "calls", "mean us", "share"]]
        for r in rows:
            share = 100.0 * r.total_s / node_total if node_total else 0.0
            table.append(
                [
                    r.label.removeprefix("fxdelegate::"),
                    str(r.calls),
                    f"{r.mean_us:.1f}",
                    f"{share:.1f}%",
                ]
            )
        widths = [max(len(row[i]) for row in table) for i in range(4)]
        for row in table:
            lines.append(
                "  "
                + "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths))
                )
            )
        regions = self.regions
        if regions:
            delegated = sum(r.total_s for r in regions)
            lines.append("")
            lines.append(
                f"regions: {len(regions)}, {100.0 * delegated / node_total if node_total else 0:.1f}% of node time"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()
