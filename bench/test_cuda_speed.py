"""fxdelegate on a GPU against eager, torch.compile and whole-graph AOTInductor.

    pytest bench/test_cuda_speed.py      (skipped without CUDA)

A small transformer encoder at batch 1 and 32, GELU pinned to the executor,
and 8 x (Linear 512 -> LayerNorm -> GELU) at batch 32. Each call is timed
with the device synchronized around a block of calls, interleaved rounds.
"""

from __future__ import annotations

import pytest
import torch
from baselines import whole_graph_aoti
from bench_models import GeluBlocks
from ratios import fmt_seconds, interleaved, median, record
from zoo.models import Encoder

import fxdelegate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _timer(fn, calls):
    def run():
        torch.cuda.synchronize()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()

    return run


def _compare(name, model, x, calls=200):
    ep = torch.export.export(model, (x,))
    prog = fxdelegate.lower(ep, exclude_ops=["aten.gelu"])
    raw = whole_graph_aoti(ep)
    compiled = torch.compile(model)
    torch.testing.assert_close(prog(x), model(x), rtol=2e-3, atol=2e-3)
    times = interleaved(
        {
            "eager": _timer(lambda: model(x), calls),
            "torch.compile": _timer(lambda: compiled(x), calls),
            "whole-graph AOTI": _timer(lambda: raw([x]), calls),
            "fxdelegate": _timer(lambda: prog(x), calls),
        },
        rounds=7,
        warmup=2,
    )
    t = {k: median(v) / calls for k, v in times.items()}
    record(
        f"CUDA latency per call on {torch.cuda.get_device_name()} (torch {torch.__version__})",
        {
            "model": f"{name} ({len(prog.partitions)} regions, gelu in executor)",
            **{k: fmt_seconds(v) for k, v in t.items()},
            "fxdelegate / AOTI": f"{t['fxdelegate'] / t['whole-graph AOTI']:.2f}x",
            "fxdelegate / eager": f"{t['fxdelegate'] / t['eager']:.2f}x",
        },
    )
    return t


@torch.no_grad()
@pytest.mark.parametrize("batch", [1, 32])
def test_small_transformer(benchmark, batch):
    torch.manual_seed(0)
    model = Encoder(d=256, heads=4, layers=4, ff=1024).eval().cuda()
    t = _compare(
        f"encoder 4x256, batch {batch}, seq 64", model, torch.randn(batch, 64, 256, device="cuda")
    )
    benchmark.extra_info.update({k: v for k, v in t.items()})
    benchmark.pedantic(lambda: None, rounds=1)


@torch.no_grad()
def test_gelu_blocks_512(benchmark):
    torch.manual_seed(0)
    model = GeluBlocks(8, 512).eval().cuda()
    t = _compare(
        "8 x (Linear 512 -> LayerNorm -> GELU), batch 32",
        model,
        torch.randn(32, 512, device="cuda"),
    )
    benchmark.extra_info.update({k: v for k, v in t.items()})
    benchmark.pedantic(lambda: None, rounds=1)
