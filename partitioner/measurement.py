"""Timing candidates side by side, and remembering what was measured.

A :class:`Timer` turns named zero-argument callables into seconds per call.
The default one interleaves them: each round calls every candidate in turn,
in batches long enough (about a millisecond) that the clock's resolution and
the garbage collector do not decide, with warm-up first and the median over
rounds. Tests pass a timer of their own, so that decision logic is tested
without real timing.

Measurements are cached by content key (what runs, on what inputs, where), in
``<cache_dir>/measurements/`` and, when a remote store is used, in it too, so
that a fleet of machines alike measures a region once.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

# 5: a new (seeded) order each round. Versions 2-4 tried 10 ms samples and the
# fastest sample instead of the median; both measured worse on the bench's models
# (docs/benchmarks/measured-plans.md).
MEASUREMENT_VERSION = 5


class Timer(Protocol):
    def measure(self, candidates: Mapping[str, Callable[[], Any]]) -> dict[str, float]:
        """Seconds per call of each candidate."""


class InterleavedTimer:
    """Median seconds per call, candidates measured in alternation."""

    def __init__(self, rounds: int = 15, warmup: int = 3, batch_seconds: float = 1e-3) -> None:
        self.rounds = rounds
        self.warmup = warmup
        self.batch_seconds = batch_seconds

    def measure(self, candidates: Mapping[str, Callable[[], Any]]) -> dict[str, float]:
        sync = _device_sync()
        calls: dict[str, int] = {}
        for name, fn in candidates.items():
            for _ in range(self.warmup):
                fn()
            sync()
            start = time.perf_counter()
            fn()
            sync()
            once = max(time.perf_counter() - start, 1e-7)
            calls[name] = max(1, min(1000, int(self.batch_seconds / once)))
        samples: dict[str, list[float]] = {name: [] for name in candidates}
        enabled = gc.isenabled()
        gc.disable()
        try:
            # A new (seeded) order each round: what ran just before a candidate can
            # change its time (another runtime's threads winding down, caches
            # holding another program's weights); a fixed order would charge that
            # to the same candidate every round.
            order = list(candidates)
            shuffle = random.Random(0).shuffle
            for _ in range(self.rounds):
                shuffle(order)
                for name in order:
                    fn, n = candidates[name], calls[name]
                    sync()
                    start = time.perf_counter()
                    for _ in range(n):
                        fn()
                    sync()  # GPU work is timed when it is done, not when it is queued
                    samples[name].append((time.perf_counter() - start) / n)
        finally:
            if enabled:
                gc.enable()
        # The median, not the fastest sample: a program that mixes runtimes is
        # bimodal (on 2 cores, one with ORT and AOTInductor regions had its fastest
        # sample at 180 us and ran at 320 us in steady state), and the minimum
        # picked it over AOTInductor alone at 210 us.
        return {name: statistics.median(s) for name, s in samples.items()}


def _device_sync() -> Callable[[], None]:
    """Waits for queued GPU work, where CUDA is in use; else does nothing."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.synchronize
    return lambda: None


def machine_fingerprint() -> dict[str, Any]:
    """What a measurement depends on besides the program: the CPU and its thread count."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def measurement_key(what: Mapping[str, Any]) -> str:
    text = json.dumps(
        {"version": MEASUREMENT_VERSION, "machine": machine_fingerprint(), **what},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


class MeasurementCache:
    """Seconds per call by measurement key, in a local folder and optionally a remote store."""

    def __init__(self, cache_dir: str | None, remote: Any = None) -> None:
        self.folder = os.path.join(cache_dir, "measurements") if cache_dir else None
        self.remote = remote
        self.hits = 0
        self.stored = 0

    def get(self, key: str) -> float | None:
        if self.folder is not None:
            try:
                with open(os.path.join(self.folder, key + ".json")) as f:
                    value = float(json.load(f)["seconds"])
                self.hits += 1
                return value
            except (OSError, ValueError, KeyError, TypeError):
                pass
        if self.remote is not None:
            entry = self.remote.get("measure-" + key)
            if entry is not None:
                try:
                    value = float(json.loads(entry.payload)["seconds"])
                except (ValueError, KeyError, TypeError):
                    return None
                self._write_local(key, value)
                self.hits += 1
                return value
        return None

    def put(self, key: str, seconds: float) -> None:
        self._write_local(key, seconds)
        if self.remote is not None:
            self.remote.put("measure-" + key, json.dumps({"seconds": seconds}).encode(), {})
        self.stored += 1

    def _write_local(self, key: str, seconds: float) -> None:
        if self.folder is None:
            return
        os.makedirs(self.folder, exist_ok=True)
        tmp = os.path.join(self.folder, f".{key}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump({"seconds": seconds}, f)
        os.replace(tmp, os.path.join(self.folder, key + ".json"))
