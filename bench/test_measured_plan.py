"""plan="measure" against each single configuration, side by side on this CPU.

For each model: eager (`ep.module()`), whole-graph AOTInductor, the rule-based
plan of the backend list ["onnxruntime", "aoti"], each backend alone (rules),
and the measured plan, timed interleaved in one process. Every lowered
program is checked against eager first, with strict=True (no fallback).

    pytest -s bench/test_measured_plan.py

Measurements and compiled regions are cached (.cache/), so a second run
measures nothing again; FXDELEGATE_MEASURE_BUDGET_S sets the budget (default 300).
"""

from __future__ import annotations

import os

import pytest
import torch
from baselines import whole_graph_aoti
from bench_models import ConvNet, Fragmented, GeluBlocks
from ratios import fmt_seconds, interleaved, median, record

import fxdelegate

BUDGET_S = float(os.environ.get("FXDELEGATE_MEASURE_BUDGET_S", "300"))
CACHE = os.path.join(os.path.dirname(__file__), "..", ".cache", "fxdelegate-bench")
BATCH = 200  # calls per timed sample: one gc.collect per sample, not per call


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
    "fragmented 12 x 64, batch 8": lambda: _plain(Fragmented(12, 64), torch.randn(8, 64)),
    "gpt2 (tiny)": lambda: _hf("gpt2"),
    "bert (tiny)": lambda: _hf("bert"),
    "llama (tiny)": lambda: _hf("llama"),
}


def _batched(fn, n=BATCH):
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
    programs = {
        "rules [ort, aoti]": fxdelegate.lower(ep, backend=["onnxruntime", "aoti"], **common),
        "aoti alone": fxdelegate.lower(ep, backend="aoti", **common),
        "ort alone": fxdelegate.lower(ep, backend="onnxruntime", **common),
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
    times = interleaved({k: _batched(f) for k, f in fns.items()}, rounds=15)
    sec = {k: median(v) / BATCH for k, v in times.items()}
    singles = ["rules [ort, aoti]", "aoti alone", "ort alone"]
    best_single = min(singles, key=sec.__getitem__)
    best_backend = min(["aoti alone", "ort alone"], key=sec.__getitem__)
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
