"""Real model code: tiny `transformers` models built from configs (nothing is
downloaded), each lowered with an activation family pinned to the executor,
through both backends, run at two sequence lengths (or batch sizes), saved,
loaded and compared with eager.

The AOTInductor half compiles real regions: about one distinct region per
kind of layer, shared by identical layers, cached across test sessions.
"""

import logging

import pytest
import torch
from zoo.transformers_models import HF_ZOO, HFCase, export_hf_case

import fxdelegate

CASES = [pytest.param(case, id=case.name) for case in HF_ZOO]
_EXPORTS: dict[str, tuple] = {}


def _exported(case: HFCase):
    """One export per model, shared by both backends' tests (lowering never modifies it)."""
    if case.name not in _EXPORTS:
        _EXPORTS[case.name] = export_hf_case(case)
    return _EXPORTS[case.name]


@torch.no_grad()
def _check(case: HFCase, prog, eager) -> None:
    for size in case.sizes:
        torch.manual_seed(size)
        inputs = case.inputs(size)
        torch.testing.assert_close(prog(**inputs), eager(**inputs), **case.tol)


def _check_lowered(case: HFCase, backend: str, tmp_path, caplog) -> None:
    eager, ep = _exported(case)
    # strict: a region that fails to compile is a bug here, not a fallback
    with caplog.at_level(logging.INFO, logger="fxdelegate.passes"):
        prog = fxdelegate.lower(ep, backend=backend, exclude_ops=case.pinned, strict=True)
    # ops stay as the model's code wrote them: no whole-program re-trace
    assert "re-tracing" not in caplog.text
    pinned = {op.op.rsplit(".", 1)[0] for op in prog.summary.executor_ops}
    assert set(case.pinned) <= pinned, prog.report()
    assert len(prog.partitions) >= 2, prog.report()
    _check(case, prog, eager)
    path = tmp_path / f"{case.name}-{backend}.pt2"
    prog.save(path)
    _check(case, fxdelegate.load(path), eager)


def test_zoo_covers_the_architecture_families():
    families = " ".join(c.family for c in HF_ZOO)
    for family in (
        "decoder-only",
        "encoder-only",
        "encoder-decoder",
        "vision transformer",
        "convolutional",
        "mixture of experts",
        "sliding-window",
    ):
        assert family in families, family
    assert len(HF_ZOO) >= 10


@pytest.mark.parametrize("case", CASES)
def test_transformers_model_on_the_reference_backend(case, tmp_path, caplog):
    _check_lowered(case, "reference", tmp_path, caplog)


@pytest.mark.aoti
@pytest.mark.parametrize("case", CASES)
def test_transformers_model_through_aoti(case, tmp_path, caplog):
    _check_lowered(case, "aoti", tmp_path, caplog)
