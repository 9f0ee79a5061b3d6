"""Per-node and per-region timings of a program, as a table.

The instrumented call reads a clock after every statement of the generated
code (about 0.1 us each), so the nodes' times add up to the call's. With
``trace=True`` every node also runs inside a ``torch.profiler.record_function``
range named ``fxdelegate::<region key>`` or ``fxdelegate::<op> (<node>)``, so
PyTorch's profiler and Chrome traces show regions by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..codegen.plan import NodeTimes


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
    wall_s: float  # whole profiled calls, entry and exit included
    runs: int
    plain_wall_s: float = 0.0  # the same number of unprofiled calls, timed alongside

    @classmethod
    def from_times(
        cls, times: NodeTimes, profiled_ns: int, plain_ns: int, runs: int
    ) -> ProfileReport:
        rows = [
            ProfileRow(label, count, nanos / 1e9)
            for label, count, nanos in zip(times.labels, times.counts, times.nanos)
        ]
        return cls(rows, profiled_ns / 1e9, runs, plain_ns / 1e9)

    @property
    def node_total_s(self) -> float:
        return sum(r.total_s for r in self.rows)

    @property
    def regions(self) -> list[ProfileRow]:
        return [r for r in self.rows if r.label.startswith("fxdelegate::region")]

    def format(self, top: int | None = None) -> str:
        per_call = 1e6 * self.wall_s / self.runs
        plain = 1e6 * self.plain_wall_s / self.runs
        node_total = self.node_total_s
        in_nodes = 1e6 * node_total / self.runs
        lines = [
            f"profile over {self.runs} call(s): {in_nodes:.1f} us per call in nodes; "
            f"{per_call:.1f} us per profiled call, {plain:.1f} us per unprofiled call "
            f"(nodes = {in_nodes / plain if plain else 0:.2f}x an unprofiled call; the rest is "
            "input checks, pytree handling and the clock)",
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
