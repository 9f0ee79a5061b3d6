"""Side-by-side timing: the implementations being compared run in turn, round
after round, so that machine noise hits them alike; the summary reports ratios."""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

# Tables printed at the end of the run: title -> rows (dicts with the same keys).
RATIO_TABLES: dict[str, list[dict[str, Any]]] = {}
# Numbers plotted at the end of the run: chart -> group -> implementation -> seconds.
SERIES: dict[str, dict[str, dict[str, float]]] = {}


def cuda_calls(fn: Callable[..., Any], args: tuple, calls: int) -> Callable[[], None]:
    """`calls` calls of `fn(*args)` as one sample, the device synchronized around them,
    so the sample holds the GPU work and not only its launches."""
    import torch

    def run() -> None:
        torch.cuda.synchronize()
        for _ in range(calls):
            fn(*args)
        torch.cuda.synchronize()

    return run


def interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each function, measured in alternation.

    Each round runs the functions in a new (seeded) order: what ran just before
    a function can change its time (another runtime's threads still winding
    down, caches holding another program's weights), and a fixed order would
    charge that to the same function every round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            fn = fns[name]
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def record(table: str, row: dict[str, Any]) -> None:
    RATIO_TABLES.setdefault(table, []).append(row)
    # Also shown at once (with -s), so a run cut short keeps what it measured.
    print(f"[{table}] " + " | ".join(f"{k}: {v}" for k, v in row.items()), flush=True)


def fmt_seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    if s >= 1e-5:
        return f"{s * 1e6:.0f} us"
    return f"{s * 1e6:.2f} us"


def record_series(chart: str, group: str, seconds: dict[str, float]) -> None:
    SERIES.setdefault(chart, {})[group] = dict(seconds)
