"""Every ModuleInfo in torch's ``module_db`` through every path, as
``test_opinfo_sweep.py`` does for ops: each module in eval mode with up to three
of its inputs per dtype (float32 and one reduced-precision dtype), exported as
a one-module program."""

from __future__ import annotations

import pytest
import torch

from corpus import status
from corpus.cases import module_db, moduleinfo_cases
from corpus.sweeps import (
    AOTI_SUBSET_MODULES,
    aoti_failures,
    device_cases,
    full_batches,
    sweep_failures,
)

MODULES = [pytest.param(info, id=info.name) for info in module_db()]


@pytest.mark.parametrize("info", MODULES)
def test_every_input_agrees_on_the_executor_the_reference_backend_and_after_save_load(info):
    failures = sweep_failures(list(moduleinfo_cases(info)))
    assert not failures, "\n".join(failures)


def test_the_sweep_reaches_most_of_the_corpus():
    ran = [e for e in status.RESULTS.values() if e["kind"] == "module"]
    if len({e["name"] for e in ran}) < len(MODULES):
        pytest.skip("counts the whole sweep: run with the test above")
    exported = [e for e in ran if "export" not in e["outcomes"]]
    assert len(MODULES) > 100
    assert len(exported) > 250, len(exported)


@pytest.mark.aoti
def test_a_representative_subset_agrees_through_aoti():
    infos = [info for info in module_db() if info.name in AOTI_SUBSET_MODULES]
    assert len(infos) == len(AOTI_SUBSET_MODULES)
    cases = [case for info in infos for case in moduleinfo_cases(info, samples=1)]
    failures = aoti_failures(cases, "aoti")
    assert not failures, "\n".join(failures)


@pytest.mark.aoti
@pytest.mark.opinfo_full
@pytest.mark.parametrize("batch", full_batches(len(module_db())))
def test_every_input_agrees_through_aoti(batch):
    cases = [case for info in module_db()[batch] for case in moduleinfo_cases(info)]
    failures = aoti_failures(cases, "aoti")
    assert not failures, "\n".join(failures)


@pytest.mark.cuda
@pytest.mark.opinfo_full
@pytest.mark.parametrize("graphs", [False, True], ids=["cuda", "cuda_graphs"])
@pytest.mark.parametrize("batch", full_batches(len(module_db())))
def test_every_input_agrees_through_cuda_regions(batch, graphs):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    cases = device_cases(module_db()[batch], moduleinfo_cases, "cuda")
    failures = aoti_failures(cases, "cuda_graphs" if graphs else "cuda", cuda_graphs=graphs)
    assert not failures, "\n".join(failures)
