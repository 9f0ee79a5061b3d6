"""What the sweep tests share: recording outcomes, batching compiled paths, the
fixed subset CI compiles."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import torch

from . import status
from .cases import Case
from .paths import Outcome, Outcomes, check_compiled, check_executor_and_reference, export_group

# Cases compiled together: one export, one region, one compile (a compile costs
# about as much for 60 small ops as for one, on this machine 15-30 s).
CASES_PER_COMPILE = 64
# OpInfos (ModuleInfos) per test of the full sweeps.
ENTRIES_PER_TEST = 8

# Compiled through AOTInductor in CI, first sample of each dtype: every kind of
# kernel inductor generates (pointwise, reductions, scans, matmuls and
# convolutions, pooling, norms, indexing and scatter, views, sorts), the ops
# whose Python bindings had wrong defaults, and ops the support rules keep in
# the executor (random, data-dependent) to show they stay right there.
AOTI_SUBSET_OPS = (
    "abs add addmm amax argmax bmm cat clamp cumprod cumsum div.floor_rounding einsum "
    "erf exp fmod full_like gather hash_tensor index_add index_put index_reduce.mean index_select isnan log1p log_softmax "
    "logsumexp masked_select matmul mean narrow nonzero permute pow prod remainder rsub "
    "scatter_add sigmoid softmax sort stack std sum tanh to topk transpose uniform var "
    "var_mean where linalg.vector_norm take "
    "nn.functional.adaptive_avg_pool2d nn.functional.avg_pool2d nn.functional.batch_norm "
    "nn.functional.binary_cross_entropy nn.functional.binary_cross_entropy_with_logits "
    "nn.functional.conv2d nn.functional.conv_transpose2d nn.functional.cross_entropy "
    "nn.functional.dropout nn.functional.embedding nn.functional.gelu "
    "nn.functional.group_norm nn.functional.hardswish nn.functional.huber_loss "
    "nn.functional.interpolate.bilinear nn.functional.layer_norm nn.functional.leaky_relu "
    "nn.functional.max_pool2d nn.functional.mse_loss nn.functional.nll_loss "
    "nn.functional.pad.reflect nn.functional.rms_norm nn.functional.scaled_dot_product_attention "
    "nn.functional.silu nn.functional.smooth_l1_loss nn.functional.soft_margin_loss"
).split()

AOTI_SUBSET_MODULES = (
    "nn.Conv2d nn.ConvTranspose2d nn.BatchNorm2d nn.LayerNorm nn.GroupNorm nn.Linear "
    "nn.Embedding nn.LSTM nn.GRU nn.MultiheadAttention nn.TransformerEncoderLayer "
    "nn.MaxPool2d nn.AvgPool2d nn.MSELoss nn.BCELoss nn.BCEWithLogitsLoss nn.SmoothL1Loss "
    "nn.SoftMarginLoss nn.HuberLoss nn.MultiMarginLoss nn.CrossEntropyLoss nn.GELU nn.Softmax"
).split()


def record(case: Case, outcomes: Iterable[Outcome]) -> None:
    for outcome in outcomes:
        status.record(
            case.id,
            case.kind,
            case.name,
            str(case.dtype).removeprefix("torch."),
            outcome.path,
            outcome.status,
            outcome.detail,
        )


def full_batches(count: int) -> list[Any]:
    """pytest params splitting `count` database entries into slices per test."""
    return [
        pytest.param(
            slice(start, start + ENTRIES_PER_TEST), id=f"{start}-{start + ENTRIES_PER_TEST - 1}"
        )
        for start in range(0, count, ENTRIES_PER_TEST)
    ]


def device_cases(
    entries: Iterable[Any], make: Callable[..., Iterator[Case]], device: str
) -> list[Case]:
    return [case for entry in entries for case in make(entry, device=device)]


def sweep_failures(cases: list[Case]) -> list[str]:
    """Export `cases` together, run them on the executor, the reference backend and
    after save/load, record every outcome, and return one line per failure."""
    groups, outcomes = export_group(cases)
    for group in groups:
        outcomes.update(check_executor_and_reference(group))
    return _recorded(cases, outcomes)


def aoti_failures(cases: list[Case], path: str, **lower_options: Any) -> list[str]:
    """Compile `cases` through AOTInductor `CASES_PER_COMPILE` at a time (`path` names
    the outcome: ``aoti``, ``cuda``, ``cuda_graphs``), record every outcome, and
    return one line per failure."""
    outcomes: Outcomes = {}
    with full_float32():
        for start in range(0, len(cases), CASES_PER_COMPILE):
            groups, excluded = export_group(cases[start : start + CASES_PER_COMPILE])
            outcomes.update(excluded)
            for group in groups:
                outcomes.update(check_compiled(group, path, **lower_options))
    return _recorded(cases, outcomes)


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """float32 in full on a GPU too: TF32 (on by default for cuDNN convolutions)
    rounds operands to 10 bits, and eager and compiled code do not round alike.
    (torch's test data locks the cuDNN flags: they change only through flags().)"""
    cudnn = torch.backends.cudnn
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with cudnn.flags(
            enabled=cudnn.enabled,
            benchmark=cudnn.benchmark,
            deterministic=cudnn.deterministic,
            allow_tf32=False,
        ):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def _recorded(cases: list[Case], outcomes: Outcomes) -> list[str]:
    failures = []
    for case in cases:
        found = outcomes.get(case.id, [])
        record(case, found)
        failures += [f"{case.id} [{case.sample}] {o}" for o in found if o.failed]
    status.flush()
    return failures
