"""plan="measure" against each single configuration, side by side on this CPU.

For each model: eager (`ep.module()`), whole-graph AOTInductor, the rule-based
plan of the backend list ["onnxruntime", "aoti"], each backend alone (rules;
with its defaults and with the option variant a measured plan also tries),
and the measured plan, timed interleaved in one process. Every lowered
program is checked against eager first, with strict=True (no fallback).

    pytest -s bench/test_measured_plan.py

Measurements and compiled regions are cached (.cache/), so a second run
measures nothing again; FXDELEGATE_MEASURE_BUDGET_S sets the budget (default 300).
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from baselines import whole_graph_aoti
from bench_models import (
    ConvNet,
    DecodeStep,
    DiffusionResBlocks,
    Fragmented,
    GeluBlocks,
    WideMLPScan,
)
from ratios import fmt_seconds, interleaved, median, record

import fxdelegate

BUDGET_S = float(os.environ.get("FXDELEGATE_MEASURE_BUDGET_S", "300"))
CACHE = os.path.join(os.path.dirname(__file__), "..", ".cache", "fxdelegate-bench")
SAMPLE_S = 0.02  # seconds per timed sample: one gc.collect per sample, not per call


def _hf(name: str):
    from zoo.transformers_models import HF_ZOO, export_hf_case

    case = next(c for c in HF_ZOO if c.name == name)
    _, ep = export_hf_case(case)
    args, kwargs = ep.example_inputs
    return ep, args, kwargs


def _plain(model: torch.nn.Module, *inputs: torch.Tensor):
    with torch.no_grad():
        ep = torch.export.export(model.eval(), inputs)
    return ep, inputs, {}


MODELS = {
    "gelu_blocks 8 x 128, batch 32": lambda: _plain(GeluBlocks(8, 128), torch.randn(32, 128)),
    "convnet 1 x 3 x 64 x 64": lambda: _plain(ConvNet(), torch.randn(1, 3, 64, 64)),
    "fragmented: backbone 256 x 64, tail of 16": lambda: _plain(
        Fragmented(16, 64), torch.randn(256, 64)
    ),
    "wide MLP 1024-4096, batch 8, then scan 256 x 1024 x 4": lambda: _plain(
        WideMLPScan(), torch.randn(8, 1024), torch.randn(256, 1024, 4)
    ),
    "decode step: width 1024, batch 8, cache 8 x 16 x 512 x 64": lambda: _plain(
        DecodeStep(), torch.randn(8, 1024), torch.randn(8, 16, 512, 64), torch.randn(8, 16, 512, 64)
    ),
    "diffusion res blocks: 1 x 64 x 32 x 32, timestep MLP 320-1280": lambda: _plain(
        DiffusionResBlocks(), torch.randn(1, 64, 32, 32), torch.tensor([500.0])
    ),
    "gpt2 (tiny)": lambda: _hf("gpt2"),
    "bert (tiny)": lambda: _hf("bert"),
    "llama (tiny)": lambda: _hf("llama"),
}


def _batched(fn, n):
    def run():
        for _ in range(n):
            fn()

    return run


@pytest.mark.parametrize("name", list(MODELS))
@torch.no_grad()
def test_measured_plan_against_single_configurations(name):
    ep, args, kwargs = MODELS[name]()
    eager = ep.module()
    expected = eager(*args, **kwargs)
    common = dict(strict=True, cache_dir=CACHE)
    cores = os.cpu_count() or 1
    programs = {
        "rules [ort, aoti]": fxdelegate.lower(ep, backend=["onnxruntime", "aoti"], **common),
        "aoti alone": fxdelegate.lower(ep, backend="aoti", **common),
        "aoti alone, chunk 512": fxdelegate.lower(
            ep, backend="aoti", compile_options={"cpp.min_chunk_size": 512}, **common
        ),
        "ort alone": fxdelegate.lower(ep, backend="onnxruntime", **common),
        f"ort alone, {cores} threads": fxdelegate.lower(
            ep, backend="onnxruntime", compile_options={"intra_op_num_threads": cores}, **common
        ),
        "measured": fxdelegate.lower(
            ep,
            backend=["onnxruntime", "aoti"],
            plan="measure",
            measure_budget_s=BUDGET_S,
            **common,
        ),
    }
    for label, prog in programs.items():
        torch.testing.assert_close(prog(*args, **kwargs), expected, atol=1e-4, rtol=1e-4, msg=label)
        prog.check_inputs = False
    whole = whole_graph_aoti(ep)
    flat = [a for a in args] + list(kwargs.values())
    fns = {"eager": lambda: eager(*args, **kwargs), "whole-graph AOTI": lambda: whole(flat)}
    fns.update({label: (lambda p=p: p(*args, **kwargs)) for label, p in programs.items()})
    start = time.perf_counter()
    fns["eager"]()
    calls = max(1, round(SAMPLE_S / (time.perf_counter() - start)))
    times = interleaved({k: _batched(f, calls) for k, f in fns.items()}, rounds=15)
    sec = {k: median(v) / calls for k, v in times.items()}
    singles = [k for k in programs if k != "measured"]
    best_single = min(singles, key=sec.__getitem__)
    best_backend = min([k for k in singles if "alone" in k], key=sec.__getitem__)
    plan = programs["measured"].summary.plan
    record(
        "Measured plan (2-core CPU, one process, interleaved)",
        {
            "model": name,
            **{k: fmt_seconds(v) for k, v in sec.items()},
            "measured / best single": f"{sec['measured'] / sec[best_single]:.2f}x",
            "best backend alone / measured": f"{sec[best_backend] / sec['measured']:.2f}x",
            "measured / eager": f"{sec['measured'] / sec['eager']:.2f}x",
            "rules / eager": f"{sec['rules [ort, aoti]'] / sec['eager']:.2f}x",
            "plan": f"kept {plan['kept']}; "
            + ", ".join(sorted({d["choice"] for d in plan["decisions"]}) or ["-"]),
        },
    )
    print(programs["measured"].report().split("Measured plan:", 1)[-1])
