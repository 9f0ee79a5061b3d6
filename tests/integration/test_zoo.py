"""Every zoo model lowered, run at several sizes, saved and loaded, compared with eager.

The first setting of each case goes through real AOTInductor (and save ->
load); the other settings through the reference backend.
"""

import copy
import dataclasses
import warnings

import pytest
from recording_capturer import RecordingCapturer
from zoo import ZOO
from zoo.compare import check_program, export_case

import fxdelegate

CASES = [pytest.param(case, id=case.name) for case in ZOO]
OTHER_SETTINGS = [
    pytest.param(case, i, id=f"{case.name}-setting{i}")
    for case in ZOO
    for i in range(1, len(case.settings))
]


def _executor_ops(prog):
    return {op.op for op in prog.summary.executor_ops}


@pytest.mark.aoti
@pytest.mark.parametrize("case", CASES)
def test_zoo_through_aoti_and_save_load(case, tmp_path):
    eager, ep = export_case(case)
    loaded_eager = copy.deepcopy(eager)
    prog = fxdelegate.lower(ep, backend="aoti", strict=True, **case.settings[0])
    for op in case.expect_in_executor:
        assert op in _executor_ops(prog), f"{op} should stay in the executor"
    prog.save(tmp_path / f"{case.name}.pt2")  # before running: the archive keeps the initial state
    check_program(case, prog, eager)
    loaded = fxdelegate.load(tmp_path / f"{case.name}.pt2")
    check_program(case, loaded, loaded_eager)


@pytest.mark.parametrize("case, setting", OTHER_SETTINGS)
def test_zoo_other_settings_on_reference(case, setting):
    eager, ep = export_case(case)
    prog = fxdelegate.lower(ep, backend="reference", **case.settings[setting])
    min_size = case.settings[setting].get("min_partition_size", 1)
    assert all(p.size >= min_size for p in prog.partitions)
    check_program(case, prog, eager)


# Regions holding control flow read its predicate on the host; the CPU stand-in for
# CUDA capture cannot record `map` (a real CUDA graph can).
NOT_REPLAYED = {"cond_inside_region": "predicate is read on the host", "map": "map_impl"}


@pytest.mark.parametrize("case", CASES)
def test_zoo_with_recorded_graphs(case):
    """Every zoo model through the CUDA-graph runtime (CPU stand-in for capture),
    three calls per size: warm-up, record + replay, replay."""
    eager, ep = export_case(case)
    graphs = fxdelegate.CUDAGraphOptions(capturer=RecordingCapturer())
    prog = fxdelegate.lower(ep, backend="reference", cuda_graphs=graphs, **case.settings[0])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "CUDA graphs:")
        check_program(dataclasses.replace(case, calls=3), prog, eager)
    stats = prog.cuda_graphs.stats()
    if case.name in NOT_REPLAYED:
        assert NOT_REPLAYED[case.name] in prog.report()
    else:
        assert any(s["replays"] for s in stats), prog.report()


def test_zoo_is_large_enough():
    assert len(ZOO) >= 25
    assert len({c.name for c in ZOO}) == len(ZOO)


@pytest.mark.aoti
def test_lowering_a_lowered_program_again_leaves_its_delegates_alone(tmp_path):
    case = next(c for c in ZOO if c.name == "residual_blocks")
    eager, ep = export_case(case)
    first = fxdelegate.lower(ep, backend="reference", exclude_ops=["aten.gelu"])
    second = fxdelegate.lower(first, backend="aoti", strict=True)  # a second backend
    backends = {p.name: p.backend_id for p in second.partitions}
    assert {k: v for k, v in backends.items() if v == "reference"} == {
        p.name: "reference" for p in first.partitions
    }
    assert "aoti" in backends.values() and not second.summary.executor_ops
    first_keys = set(first.artifacts)
    assert first_keys <= set(second.artifacts) and second.artifacts.keys() - first_keys
    second.save(tmp_path / "mixed.pt2")
    fresh = copy.deepcopy(eager)
    check_program(case, second, eager)
    third = fxdelegate.lower(second, backend="aoti")  # the same backend again: nothing left to take
    assert set(third.artifacts) == set(second.artifacts)
    check_program(case, fxdelegate.load(tmp_path / "mixed.pt2"), fresh)
