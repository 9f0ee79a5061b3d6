"""plan="measure" on a GPU, with CUDA graphs off and on (skipped without CUDA).

    pytest -s bench/test_cuda_measured_plan.py

Per model and graph setting, side by side in one process (interleaved, the
device synchronized around each block of calls): eager, whole-graph
AOTInductor, the rules' program (backend "aoti") and the measured plan of the
same backend, whose candidates (the executor, AOTInductor, its option variant)
are timed with the same graph setting. Every program is checked against eager
first, with strict=True (no fallback).
"""

from __future__ import annotations

import pytest
import torch
from baselines import whole_graph_aoti
from bench_models import Fragmented, GeluBlocks, WideMLPScan
from ratios import cuda_calls, fmt_seconds, interleaved, median, record

import fxdelegate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")

MODELS = {
    "gelu_blocks 8 x 512, batch 32, GELU pinned": (
        lambda: GeluBlocks(8, 512),
        lambda: (torch.randn(32, 512),),
        ["aten.gelu"],
    ),
    "fragmented: backbone 256 x 64, tail of 16": (
        lambda: Fragmented(16, 64),
        lambda: (torch.randn(256, 64),),
        [],
    ),
    "wide MLP 1024-4096, batch 8, then scan": (
        WideMLPScan,
        lambda: (torch.randn(8, 1024), torch.randn(256, 1024, 4)),
        [],
    ),
}


@pytest.mark.parametrize("graphs", [False, True], ids=["graphs off", "graphs on"])
@pytest.mark.parametrize("name", list(MODELS))
@torch.no_grad()
def test_measured_plan_on_cuda(name, graphs, tmp_path):
    make, inputs, pinned = MODELS[name]
    model = make().to(CUDA).eval()
    args = tuple(t.to(CUDA) for t in inputs())
    ep = torch.export.export(model, args)
    expected = model(*args)
    common = dict(backend="aoti", exclude_ops=pinned, strict=True, cuda_graphs=graphs)
    programs = {
        "rules": fxdelegate.lower(ep, **common),
        "measured": fxdelegate.lower(ep, plan="measure", measure_budget_s=240, **common),
    }
    for label, prog in programs.items():
        torch.testing.assert_close(prog(*args), expected, atol=1e-3, rtol=1e-3, msg=label)
        prog.check_inputs = False
    whole = whole_graph_aoti(ep)
    fns = {
        "eager": lambda *a: model(*a),
        "whole-graph AOTI": lambda *a: whole(list(a)),
        **{label: (lambda *a, p=p: p(*a)) for label, p in programs.items()},
    }
    times = interleaved({k: cuda_calls(f, args, 50) for k, f in fns.items()}, rounds=15)
    sec = {k: median(v) / 50 for k, v in times.items()}
    plan = programs["measured"].summary.plan
    record(
        f"Measured plan on {torch.cuda.get_device_name()}",
        {
            "model": name,
            "CUDA graphs": "on" if graphs else "off",
            **{k: fmt_seconds(v) for k, v in sec.items()},
            "measured / rules": f"{sec['measured'] / sec['rules']:.2f}x",
            "measured / whole-graph AOTI": f"{sec['measured'] / sec['whole-graph AOTI']:.2f}x",
            "plan": f"kept {plan['kept']}; "
            + ", ".join(sorted({d["choice"] for d in plan["decisions"]}) or ["-"]),
        },
    )
    print(programs["measured"].report().split("Measured plan:", 1)[-1])
