"""The interleaved timer: every candidate in every round, in a new order each round,
and the median sample kept. Clocks are faked; nothing here depends on real timing."""

import itertools

import pytest

from fxdelegate.partitioner import measurement
from fxdelegate.partitioner.measurement import InterleavedTimer


def test_each_round_runs_every_candidate_in_a_new_order(monkeypatch):
    ticks = itertools.count()
    monkeypatch.setattr(measurement.time, "perf_counter", lambda: next(ticks) * 1e-3)
    calls: list[str] = []
    candidates = {name: (lambda n=name: calls.append(n)) for name in "abcde"}
    InterleavedTimer(rounds=6, warmup=0, batch_seconds=1e-3).measure(candidates)
    timed = calls[len(candidates) :]  # after the one call each that sizes the batches
    rounds = [tuple(timed[i : i + 5]) for i in range(0, len(timed), 5)]
    assert len(rounds) == 6 and all(sorted(r) == list("abcde") for r in rounds)
    assert len(set(rounds)) > 1, "the order never changed between rounds"


def test_the_median_sample_is_kept(monkeypatch):
    # "bimodal" is fast now and then (2 ms) but runs at 5 ms; "steady" always takes
    # 3 ms. The fastest sample would rank "bimodal" first; its median does not.
    now = [0.0]
    bimodal_costs = iter([5e-3] * 3 + [5e-3, 2e-3, 5e-3, 2e-3, 5e-3])

    def bimodal():
        now[0] += next(bimodal_costs)

    def steady():
        now[0] += 3e-3

    monkeypatch.setattr(measurement.time, "perf_counter", lambda: now[0])
    times = InterleavedTimer(rounds=5, warmup=2, batch_seconds=1e-3).measure(
        {"bimodal": bimodal, "steady": steady}
    )
    assert times == pytest.approx({"bimodal": 5e-3, "steady": 3e-3})
