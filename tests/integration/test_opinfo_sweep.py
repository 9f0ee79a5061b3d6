"""Every OpInfo in torch's ``op_db`` through every path fxdelegate runs programs on.

Each OpInfo with CPU samples gives up to three samples per dtype (float32, one
integer and one reduced-precision dtype where it takes them), each exported as
a one-op program. In CI, every case runs on the executor (every op pinned:
bit-exact with ``ep.module()``), on the reference backend and after save/load
(bit-exact), and a fixed, representative subset through AOTInductor (within
inductor's own OpInfo tolerances). ``pytest -m opinfo_full`` compiles every
case through AOTInductor; on a GPU machine, ``-m "opinfo_full and cuda"`` runs
them through CUDA regions, with and without CUDA graphs. See
``docs/opinfo-status.md`` for the outcome of each.
"""

from __future__ import annotations

import pytest
import torch

from corpus import status
from corpus.cases import op_db, op_id, opinfo_cases
from corpus.sweeps import (
    AOTI_SUBSET_OPS,
    aoti_failures,
    device_cases,
    full_batches,
    sweep_failures,
)

OPS = [pytest.param(op, id=op_id(op)) for op in op_db()]


@pytest.mark.parametrize("op", OPS)
def test_every_sample_agrees_on_the_executor_the_reference_backend_and_after_save_load(op):
    failures = sweep_failures(list(opinfo_cases(op)))
    status.SWEPT.add(("op", op_id(op)))
    assert not failures, "\n".join(failures)


def test_the_sweep_reaches_most_of_the_corpus():
    if len({name for kind, name in status.SWEPT if kind == "op"}) < len(OPS):
        pytest.skip("counts the whole sweep: run with the test above")
    # A few OpInfos have no CPU sample in the dtypes swept (complex-only ops such as
    # `imag`, CUDA-only kernels such as `_scaled_mm`): 9 of 702 in torch 2.13.
    ran = {e["name"] for e in status.RESULTS.values() if e["kind"] == "op"}
    exported = [
        e for e in status.RESULTS.values() if e["kind"] == "op" and "export" not in e["outcomes"]
    ]
    assert len(OPS) > 650
    assert len(ran) > len(OPS) - 20, sorted({op_id(op.values[0]) for op in OPS} - ran)
    assert len(exported) > 4000, len(exported)


@pytest.mark.aoti
def test_a_representative_subset_agrees_through_aoti():
    ops = [op for op in op_db() if op_id(op) in AOTI_SUBSET_OPS]
    assert len(ops) == len(AOTI_SUBSET_OPS), set(AOTI_SUBSET_OPS) - {op_id(o) for o in ops}
    cases = [case for op in ops for case in opinfo_cases(op, samples=1)]
    failures = aoti_failures(cases, "aoti")
    assert not failures, "\n".join(failures)


@pytest.mark.aoti
@pytest.mark.opinfo_full
@pytest.mark.parametrize("batch", full_batches(len(op_db())))
def test_every_sample_agrees_through_aoti(batch):
    cases = [case for op in op_db()[batch] for case in opinfo_cases(op)]
    failures = aoti_failures(cases, "aoti")
    assert not failures, "\n".join(failures)


@pytest.mark.cuda
@pytest.mark.opinfo_full
@pytest.mark.parametrize("graphs", [False, True], ids=["cuda", "cuda_graphs"])
@pytest.mark.parametrize("batch", full_batches(len(op_db())))
def test_every_sample_agrees_through_cuda_regions(batch, graphs):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    cases = device_cases(op_db()[batch], opinfo_cases, "cuda")
    failures = aoti_failures(cases, "cuda_graphs" if graphs else "cuda", cuda_graphs=graphs)
    assert not failures, "\n".join(failures)
