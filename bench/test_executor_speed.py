"""What a call costs: fxdelegate's executor against eager PyTorch, whole-graph
AOTInductor, ExportedProgram.module() and torch.fx.Interpreter.

    pytest bench/test_executor_speed.py

Every comparison is timed interleaved in one process; the summary prints ratios.
"""

from __future__ import annotations

import torch
from baselines import whole_graph_aoti
from bench_models import BigIntermediates, CheapOps, GeluBlocks, TinyMLP
from ratios import fmt_seconds, interleaved, median, record, record_series
from torch.fx.passes.operator_support import OperatorSupportBase

import fxdelegate
from fxdelegate.runtime.memory import peak_allocated_bytes

TABLE = "executor latency per call, side by side (median of interleaved rounds; ratio to the first column)"


def _timer(fn, calls):
    def run():
        for _ in range(calls):
            fn()

    return run


def _row(name, times, calls, baseline_key, target=None):
    """One table per benchmark (their columns differ); returns seconds per call."""
    base = median(times[baseline_key]) / calls
    row = {"benchmark": name}
    for key, values in times.items():
        per_call = median(values) / calls
        row[key] = f"{fmt_seconds(per_call)} ({per_call / base:.2f}x)"
    if target:
        row["target"] = target
    record(f"{TABLE}: {name}", row)
    seconds = {k: median(v) / calls for k, v in times.items()}
    record_series("executor-latency", name, seconds)
    return seconds


@torch.no_grad()
def test_tiny_fully_delegated_vs_raw_aoti(benchmark):
    torch.manual_seed(0)
    model = TinyMLP().eval()
    x = torch.randn(4, 16)
    ep = torch.export.export(model, (x,))
    prog = fxdelegate.lower(ep, backend="aoti")
    raw = whole_graph_aoti(ep)
    torch.testing.assert_close(prog(x), raw([x])[0])
    calls = 2000
    times = interleaved(
        {
            "raw AOTI loader.run": _timer(lambda: raw([x]), calls),
            "fxdelegate": _timer(lambda: prog(x), calls),
            "eager": _timer(lambda: model(x), calls),
        },
        rounds=7,
    )
    t = _row(
        "tiny MLP, fully delegated", times, calls, "raw AOTI loader.run", "fxdelegate <= 1.5x raw"
    )
    benchmark.extra_info["ratio_vs_raw"] = t["fxdelegate"] / t["raw AOTI loader.run"]
    assert t["fxdelegate"] <= 1.5 * t["raw AOTI loader.run"]
    benchmark(prog, x)


@torch.no_grad()
def test_eight_blocks_gelu_in_executor_vs_eager(benchmark):
    torch.manual_seed(0)
    model = GeluBlocks(8, 128).eval()
    x = torch.randn(16, 128)
    ep = torch.export.export(model, (x,))
    prog = fxdelegate.lower(ep, backend="aoti", exclude_ops=["aten.gelu"])
    assert len(prog.partitions) == 9  # 8 blocks + the last residual add
    raw = whole_graph_aoti(ep)
    module = ep.module()
    torch.testing.assert_close(prog(x), model(x))
    calls = 200
    times = interleaved(
        {
            "eager": _timer(lambda: model(x), calls),
            "fxdelegate": _timer(lambda: prog(x), calls),
            "whole-graph AOTI": _timer(lambda: raw([x]), calls),
            "ep.module()": _timer(lambda: module(x), calls),
        },
        rounds=7,
    )
    t = _row(
        f"8 blocks, gelu in executor ({len(prog.partitions)} regions)",
        times,
        calls,
        "eager",
        "fxdelegate <= 0.5x eager",
    )
    benchmark.extra_info["ratio_vs_eager"] = t["fxdelegate"] / t["eager"]
    # Not asserted: on this machine the floor is above the target (see README).
    benchmark(prog, x)


class _Nothing(OperatorSupportBase):
    def is_node_supported(self, submodules, node):
        return False


@torch.no_grad()
def test_per_node_overhead_vs_interpreter_and_module(benchmark):
    model = CheapOps(1000)
    x = torch.randn(4)
    ep = torch.export.export(model, (x,))
    prog = fxdelegate.lower(ep, backend="reference", support=_Nothing())  # every op in the executor
    assert not prog.partitions
    module = ep.module()
    interpreter = torch.fx.Interpreter(ep.run_decompositions({}).module())
    torch.testing.assert_close(prog(x), model(x))
    calls = 20
    times = interleaved(
        {
            "eager": _timer(lambda: model(x), calls),
            "fxdelegate": _timer(lambda: prog(x), calls),
            "ep.module()": _timer(lambda: module(x), calls),
            "fx.Interpreter": _timer(lambda: interpreter.run(x), calls),
        },
        rounds=7,
    )
    t = _row("1000 cheap ops, all in the executor", times, calls, "eager")
    # Overhead per node: time above eager PyTorch running the same ops from Python.
    over = {k: (v - t["eager"]) / 1000 for k, v in t.items()}
    record(
        TABLE,
        {
            "benchmark": "  per-node overhead over eager",
            "eager": "-",
            "fxdelegate": fmt_seconds(over["fxdelegate"]),
            "ep.module()": f"{fmt_seconds(over['ep.module()'])} ({over['ep.module()'] / max(over['fxdelegate'], 1e-9):.1f}x ours)",
            "fx.Interpreter": f"{fmt_seconds(over['fx.Interpreter'])} ({over['fx.Interpreter'] / max(over['fxdelegate'], 1e-9):.1f}x ours)",
            "target": "Interpreter >= 5x ours; ours <= 1.3x ep.module()",
        },
    )
    assert over["fx.Interpreter"] >= 5 * over["fxdelegate"]
    assert t["fxdelegate"] <= 1.3 * t["ep.module()"]
    benchmark(prog, x)


@torch.no_grad()
def test_peak_memory_vs_eager(benchmark):
    """Allocator bytes (torch.profiler's memory events, AOTInductor's own allocations
    included): tensors must be released at their last use."""
    model = BigIntermediates().eval()
    x = torch.randn(128, 512)
    ep = torch.export.export(model, (x,))
    prog = fxdelegate.lower(ep, backend="aoti", exclude_ops=["aten.gelu"])
    torch.testing.assert_close(prog(x), model(x))
    eager_peak = peak_allocated_bytes(lambda: model(x))
    prog_peak = peak_allocated_bytes(lambda: prog(x))
    record(
        "peak memory of one call (allocator bytes)",
        {
            "model": f"big intermediates ({len(prog.partitions)} regions, gelu in executor)",
            "eager": f"{eager_peak / 2**20:.0f} MiB",
            "fxdelegate": f"{prog_peak / 2**20:.0f} MiB ({prog_peak / eager_peak:.2f}x)",
            "target": "fxdelegate <= eager",
        },
    )
    assert prog_peak <= eager_peak
    benchmark(prog, x)
