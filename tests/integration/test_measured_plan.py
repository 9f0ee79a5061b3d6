"""lower(..., plan="measure"): decisions from measured costs, tested with a fake timer
(real timing is only in bench/test_measured_plan.py)."""

from __future__ import annotations

import pytest
import torch

import fxdelegate
from fxdelegate.errors import InvalidArgumentError
from fxdelegate.measured_plan import option_variants
from fxdelegate.partitioner.plan_search import (
    EXECUTOR,
    Choice,
    Segment,
    blocks_of,
    choose,
    segments_of,
)


class Fragmented(torch.nn.Module):
    """Three small stretches of work, cut apart by `sin`, which the tests exclude."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.rand(3, 16) + 0.5)

    def forward(self, x):
        for i in range(3):
            x = torch.sin(torch.tanh(x * self.scale[i] + 0.1))
        return x


class FakeTimer:
    """Seconds by candidate label; counts what it was asked to time."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self.asked: list[str] = []

    def measure(self, candidates):
        self.asked += list(candidates)
        return {name: self.seconds.get(name, 1e-3) for name in candidates}


# The whole programs a measured plan times last: its own, the rules', and each backend
# alone with each option variant ("onnxruntime alone" places regions as the rules do).
WHOLE_CALLS = {"measured", "rules", "reference alone"} | {
    f"onnxruntime#{i} alone" for i in range(1, len(option_variants("onnxruntime")))
}


@pytest.fixture(scope="module")
def fragmented():
    model = Fragmented()
    x = torch.randn(4, 16)
    return model, x, torch.export.export(model, (x,))


def _lower(ep, timer, **kwargs):
    return fxdelegate.lower(
        ep,
        backend=["onnxruntime", "reference"],
        exclude_ops=["aten.sin"],
        plan="measure",
        measure_timer=timer,
        **kwargs,
    )


def test_the_cheapest_candidate_runs_each_segment_and_values_match_eager(fragmented, tmp_path):
    model, x, ep = fragmented
    timer = FakeTimer(
        {
            "executor": 5e-6,
            "onnxruntime": 9e-6,
            "onnxruntime#1": 12e-6,
            "reference": 3e-6,
            "measured": 1e-6,
            "rules": 2e-6,
        }
    )
    prog = _lower(ep, timer, cache_dir=tmp_path)
    plan = prog.summary.plan
    assert plan["kept"] == "measured"
    assert [d["choice"] for d in plan["decisions"]] == ["reference"] * 3
    assert {r.backend_id for r in prog.summary.regions} == {"reference"}
    for d in plan["decisions"]:
        assert set(d["alternatives_us"]) == {
            "executor",
            "onnxruntime",
            "onnxruntime#1",
            "reference",
        }
        assert d["us"] == 3.0 and "1.67x faster than executor" in d["why"]
    torch.testing.assert_close(prog(x), model(x))
    report = prog.report()
    assert "Measured plan: kept the measured program" in report
    assert "unit0[0:1]" in report


def test_the_executor_wins_where_delegating_costs_more(fragmented, tmp_path):
    model, x, ep = fragmented
    timer = FakeTimer({"executor": 2e-6, "onnxruntime": 9e-6, "reference": 5e-6, "measured": 1e-6})
    prog = _lower(ep, timer, cache_dir=tmp_path)
    assert [d["choice"] for d in prog.summary.plan["decisions"]] == [EXECUTOR] * 3
    assert prog.summary.regions == []
    torch.testing.assert_close(prog(x), model(x))


def test_the_rules_program_is_kept_when_it_runs_faster(fragmented, tmp_path):
    model, x, ep = fragmented
    timer = FakeTimer({"executor": 2e-6, "measured": 9e-6, "rules": 3e-6})
    prog = _lower(ep, timer, cache_dir=tmp_path)
    assert prog.summary.plan["kept"] == "rules"
    # the rules: the first backend of the list takes every region
    assert {r.backend_id for r in prog.summary.regions} == {"onnxruntime"}
    torch.testing.assert_close(prog(x), model(x))


def test_a_backend_alone_is_kept_when_it_beats_plan_and_rules(fragmented, tmp_path):
    model, x, ep = fragmented
    timer = FakeTimer({"measured": 5e-6, "rules": 4e-6, "reference alone": 1e-6})
    prog = _lower(ep, timer, cache_dir=tmp_path)
    plan = prog.summary.plan
    assert plan["kept"] == "reference alone"
    assert set(plan["whole_us"]) == WHOLE_CALLS
    assert plan["whole_us"]["reference alone"] == 1.0 and plan["whole_us"]["rules"] == 4.0
    assert {r.backend_id for r in prog.summary.regions} == {"reference"}
    assert "kept the reference alone program" in prog.report()
    torch.testing.assert_close(prog(x), model(x))


def test_same_measurements_give_the_same_plan_and_are_not_retimed(fragmented, tmp_path):
    _, _, ep = fragmented
    seconds = {"executor": 4e-6, "onnxruntime": 3e-6, "reference": 6e-6, "measured": 1e-6}
    first = _lower(ep, FakeTimer(seconds), cache_dir=tmp_path)
    again_timer = FakeTimer({})  # would pick differently if it were asked
    again = _lower(ep, again_timer, cache_dir=tmp_path)
    assert again.summary.plan["measured_now"] == 0
    assert again.summary.plan["cache_hits"] == first.summary.plan["measured_now"] > 0
    assert again.summary.plan["decisions"] == first.summary.plan["decisions"]
    assert set(again_timer.asked) == WHOLE_CALLS  # only the whole-program check


def test_a_spent_budget_leaves_every_segment_to_the_rules(fragmented, tmp_path):
    model, x, ep = fragmented
    timer = FakeTimer({"measured": 1e-6})
    prog = _lower(ep, timer, cache_dir=tmp_path, measure_budget_s=0)
    plan = prog.summary.plan
    assert plan["decisions"] == [] and len(plan["unmeasured"]) == plan["segments"] == 3
    assert {r.backend_id for r in prog.summary.regions} == {"onnxruntime"}
    assert "not measured (budget spent)" in prog.report()
    torch.testing.assert_close(prog(x), model(x))


def test_the_plan_is_saved_with_the_archive_and_shown_by_inspect(fragmented, tmp_path, capsys):
    model, x, ep = fragmented
    prog = _lower(ep, FakeTimer({"onnxruntime": 1e-6, "measured": 1e-6}), cache_dir=tmp_path)
    prog.save(tmp_path / "p.pt2")
    loaded = fxdelegate.load(tmp_path / "p.pt2")
    assert loaded.summary.plan == prog.summary.plan
    torch.testing.assert_close(loaded(x), model(x))
    from fxdelegate.cli import main

    assert main(["inspect", str(tmp_path / "p.pt2")]) == 0
    shown = capsys.readouterr().out
    assert "Measured plan: kept the measured program" in shown and "unit2[0:1]" in shown


def test_bad_plan_arguments_are_named():
    ep = torch.export.export(torch.nn.ReLU(), (torch.randn(2),))
    with pytest.raises(InvalidArgumentError, match="plan must be 'rules' or 'measure'"):
        fxdelegate.lower(ep, backend="reference", plan="fast")
    with pytest.raises(InvalidArgumentError, match="measure_budget_s"):
        fxdelegate.lower(ep, backend="reference", plan="measure", measure_budget_s=-1)


def test_search_splits_a_unit_between_two_backends():
    # blocks: 0 (a only), 1 (a and b), 2 (b only)
    supported = [("a",), ("a", "b"), ("b",)]
    segments = segments_of(0, ["n0", "n1", "n2"], supported, ["a", "b"])
    # no backend takes the whole unit; single blocks first, then longer runs
    assert [(s.start, s.stop, s.backends) for s in segments] == [
        (0, 1, ("a",)),
        (1, 2, ("a", "b")),
        (2, 3, ("b",)),
        (0, 2, ("a",)),
        (1, 3, ("b",)),
    ]
    a, b = Choice("a"), Choice("b")
    by_span = {(s.start, s.stop): s for s in segments}
    costs: dict[Segment, dict[Choice, float]] = {
        by_span[0, 2]: {a: 3.0},
        by_span[1, 3]: {b: 2.5},
        by_span[0, 1]: {a: 1.0},
        by_span[1, 2]: {a: 2.0, b: 2.0},
        by_span[2, 3]: {b: 1.0},
    }
    path = choose(3, costs, executor_block_costs=[5.0, 5.0, 5.0])
    assert [(i, j, c.label) for _, i, j, c, _ in path] == [(0, 1, "a"), (1, 3, "b")]
    # a tie goes to the earlier candidate, and the executor is an edge for every block
    costs[by_span[1, 3]] = {b: 3.0}
    path = choose(3, costs, executor_block_costs=[0.5, 5.0, 0.5])
    assert [(i, j, c.label) for _, i, j, c, _ in path] == [
        (0, 1, EXECUTOR),
        (1, 2, "a"),
        (2, 3, EXECUTOR),
    ]


def test_anchor_groups_cut_a_run_and_merge_to_at_most_four_blocks():
    both = ("a", "b")
    # ten nodes both backends take; anchors at 0, 2, 3, 5, 6, 8: six groups
    anchors = [True, False, True, True, False, True, True, False, True, False]
    blocks = blocks_of([both] * 10, anchors)
    # six groups into four blocks: the first two blocks take two groups each
    assert blocks == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert blocks_of([both] * 10) == [(0, 10)]  # no anchors: support runs only
    # a change of support always cuts, anchor or not
    assert blocks_of([("a",), ("a",), both, both], [True, False, False, True]) == [
        (0, 2),
        (2, 3),
        (3, 4),
    ]


def test_a_pointwise_epilogue_joins_its_anchor_in_a_real_graph():
    from fxdelegate.measured_plan import _is_anchor

    model = torch.nn.Sequential(
        torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.LayerNorm(8), torch.nn.ReLU()
    )
    ep = torch.export.export(model, (torch.randn(2, 8),))
    starts = [n.target.__name__ for n in ep.graph.nodes if _is_anchor(n)]
    assert starts == ["linear.default", "layer_norm.default"]


def test_dynamic_sizes_are_measured_inside_the_dims_range(tmp_path):
    model = Fragmented()
    x = torch.randn(8, 16)
    batch = torch.export.Dim("batch", min=2, max=12)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    timer = FakeTimer({"onnxruntime": 1e-6, "measured": 1e-6})
    prog = _lower(ep, timer, cache_dir=tmp_path)
    # the example size, half of it and twice it clamped to max=12, per candidate
    assert {"executor", "executor@1", "executor@2", "onnxruntime@2"} <= set(timer.asked)
    for size in (2, 5, 12):
        y = torch.randn(size, 16)
        torch.testing.assert_close(prog(y), model(y))


def test_inputs_at_sizes_follow_the_symbols_and_their_range():
    from fxdelegate.measured_plan import inputs_at_sizes

    x = torch.randn(8, 16)
    ep = torch.export.export(
        torch.nn.Linear(16, 4), (x,), dynamic_shapes=({0: torch.export.Dim("b", min=6, max=12)},)
    )
    assert [tuple(a[0].shape) for a in inputs_at_sizes(ep)] == [(8, 16), (6, 16), (12, 16)]
    static = torch.export.export(torch.nn.Linear(16, 4), (x,))
    assert [tuple(a[0].shape) for a in inputs_at_sizes(static)] == [(8, 16)]


def test_a_fleet_measures_a_segment_once_through_the_remote_store(fragmented, tmp_path):
    from redis_server import RedisServer

    (tmp_path / "redis").mkdir()
    server = RedisServer(str(tmp_path / "redis"))
    try:
        _, _, ep = fragmented
        remote = fxdelegate.RemoteCacheOptions(server.url, secret="fleet")
        seconds = {"executor": 4e-6, "onnxruntime": 3e-6, "reference": 6e-6, "measured": 1e-6}
        first = _lower(ep, FakeTimer(seconds), cache_dir=tmp_path / "a", remote_cache=remote)
        # another machine: an empty local folder, the same store
        other = FakeTimer({})
        again = _lower(ep, other, cache_dir=tmp_path / "b", remote_cache=remote)
        assert first.summary.plan["measured_now"] > 0
        assert again.summary.plan["measured_now"] == 0
        assert again.summary.plan["decisions"] == first.summary.plan["decisions"]
        assert set(other.asked) == WHOLE_CALLS
    finally:
        server.stop()


def test_a_candidate_that_fails_to_compile_is_no_candidate(fragmented, tmp_path):
    from fxdelegate.errors import BackendCompileError, RegionFallbackWarning

    model, x, ep = fragmented
    broken = {"onnxruntime": {"no_such_option": 1}}  # the compiler refuses it
    timer = FakeTimer({"executor": 5e-6, "onnxruntime": 1e-9, "reference": 3e-6, "measured": 1e-6})
    with pytest.warns(RegionFallbackWarning):  # the rules' program falls back
        prog = _lower(ep, timer, cache_dir=tmp_path, compile_options=broken)
    decisions = prog.summary.plan["decisions"]
    assert [d["choice"] for d in decisions] == ["reference"] * 3
    assert all("onnxruntime" not in d["alternatives_us"] for d in decisions)
    torch.testing.assert_close(prog(x), model(x))
    with pytest.raises(BackendCompileError):
        _lower(ep, timer, cache_dir=tmp_path, compile_options=broken, strict=True)


@pytest.mark.aoti
def test_a_measured_plan_through_real_aoti_matches_eager(tmp_path):
    # one real AOTInductor compile per variant; the timer is fake, the compiles are not
    model = Fragmented()
    x = torch.randn(4, 16)
    ep = torch.export.export(model, (x,))
    timer = FakeTimer({"executor": 5e-6, "aoti": 2e-6, "aoti#1": 3e-6, "measured": 1e-6})
    prog = fxdelegate.lower(
        ep, backend="aoti", exclude_ops=["aten.sin"], plan="measure", measure_timer=timer
    )
    assert [d["choice"] for d in prog.summary.plan["decisions"]] == ["aoti"] * 3
    assert {r.backend_id for r in prog.summary.regions} == {"aoti"}
    torch.testing.assert_close(prog(x), model(x))
