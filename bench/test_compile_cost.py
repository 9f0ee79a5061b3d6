"""Compile cost: identical regions share one artifact; a second lowering hits the cache.

    pytest bench/test_compile_cost.py

AOTInductor's own caches are warmed first (each model is lowered once into a
throwaway fxdelegate cache), so the ratios measure fxdelegate's work, not
first-time header compilation.
"""

from __future__ import annotations

import tempfile
import time

import torch
from bench_models import GeluBlocks
from ratios import fmt_seconds, interleaved, median, record

import fxdelegate

TABLE = "compile cost (AOTInductor caches warm; fxdelegate cache cold unless stated)"


def _lower(model, cache_dir):
    ep = torch.export.export(model, (torch.randn(16, 64),))
    start = time.perf_counter()
    prog = fxdelegate.lower(ep, exclude_ops=["aten.gelu"], cache_dir=cache_dir)
    return time.perf_counter() - start, prog


def test_six_identical_blocks_vs_one_and_a_warm_second_lowering(benchmark):
    torch.manual_seed(0)
    one, six = GeluBlocks(1, 64).eval(), GeluBlocks(6, 64).eval()
    for model in (one, six):  # warm AOTInductor's caches
        _lower(model, tempfile.mkdtemp())
    t_one, p_one = _lower(one, tempfile.mkdtemp())
    cache = tempfile.mkdtemp()
    t_six, p_six = _lower(six, cache)
    t_again, p_again = _lower(GeluBlocks(6, 64).eval(), cache)  # same structure, new weights
    x = torch.randn(16, 64)
    with torch.no_grad():
        torch.testing.assert_close(p_six(x), six(x))
    stats = p_six.summary.compile
    record(
        TABLE,
        {
            "lowering": "1 block (2 regions)",
            "time": fmt_seconds(t_one),
            "ratio": "1.00x",
            "target": "",
            "regions / distinct / compiled": f"{p_one.summary.compile['regions']} / {p_one.summary.compile['distinct']} / {p_one.summary.compile['compiled']}",
        },
    )
    record(
        TABLE,
        {
            "lowering": "6 identical blocks (7 regions)",
            "time": fmt_seconds(t_six),
            "ratio": f"{t_six / t_one:.2f}x vs 1 block",
            "target": "<= 2x",
            "regions / distinct / compiled": f"{stats['regions']} / {stats['distinct']} / {stats['compiled']}",
        },
    )
    record(
        TABLE,
        {
            "lowering": "6 blocks again, same cache",
            "time": fmt_seconds(t_again),
            "ratio": f"{t_again / t_six:.2f}x vs cold",
            "target": "<= 0.1x",
            "regions / distinct / compiled": f"{p_again.summary.compile['regions']} / {p_again.summary.compile['distinct']} / {p_again.summary.compile['compiled']}",
        },
    )
    assert stats["regions"] >= 6
    assert t_six <= 2 * t_one
    assert t_again <= 0.1 * t_six
    benchmark.extra_info.update(six_vs_one=t_six / t_one, warm_vs_cold=t_again / t_six)
    benchmark.pedantic(lambda: None, rounds=1)


@torch.no_grad()
def test_run_time_cost_of_binding_weights_at_load(benchmark):
    """One region compiled with its weights inside the library (AOTInductor's default)
    against fxdelegate's artifact, which binds the program's tensors at load time."""
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.LayerNorm(128)).eval()
    x = torch.randn(16, 128)
    ep = torch.export.export(block, (x,))
    baked_path = tempfile.mktemp(suffix=".pt2")
    torch._inductor.aoti_compile_and_package(ep, package_path=baked_path)
    baked = torch._C._aoti.AOTIModelPackageLoader(baked_path, "model", False, 1, -1).run
    prog = fxdelegate.lower(ep, cache_dir=tempfile.mkdtemp())
    (runner,) = prog._runners.values()
    torch.testing.assert_close(runner([x])[0], baked([x])[0])
    calls = 2000

    def loop(fn):
        return lambda: [fn([x]) for _ in range(calls)]

    times = interleaved(
        {"weights in the library": loop(baked), "weights bound at load": loop(runner)}, rounds=9
    )
    a, b = (median(times[k]) / calls for k in ("weights in the library", "weights bound at load"))
    record(
        "run-time cost of shared artifacts (one region call, Linear 128 + LayerNorm, batch 16)",
        {
            "weights in the library": fmt_seconds(a),
            "weights bound at load (fxdelegate)": fmt_seconds(b),
            "ratio": f"{b / a:.3f}x",
        },
    )
    benchmark.extra_info["ratio"] = b / a
    benchmark.pedantic(runner, args=([x],), rounds=100)
