"""The built-in example: a residual MLP lowered with GELU pinned to the executor."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.export import Dim

import fxdelegate


class ResidualBlock(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(width, width)
        self.norm = torch.nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.nn.functional.gelu(self.norm(self.linear(x)))


class DemoModel(torch.nn.Module):
    """Residual blocks plus a head; inputs and outputs are small pytrees."""

    def __init__(self, width: int = 64, blocks: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(ResidualBlock(width) for _ in range(blocks))
        self.head = torch.nn.Linear(width, classes)

    def forward(self, x: torch.Tensor, *, scale: torch.Tensor) -> dict[str, Any]:
        for block in self.blocks:
            x = block(x)
        logits = self.head(x) * scale
        return {"logits": logits, "features": (x, x.mean(dim=-1))}


def demo_inputs(
    batch: int, width: int = 64, device: str | torch.device = "cpu"
) -> tuple[tuple[torch.Tensor], dict[str, torch.Tensor]]:
    x = torch.randn(batch, width, device=device)
    return (x,), {"scale": torch.rand(batch, 1, device=device) + 0.5}


def export_demo(model: DemoModel, batch: int = 8) -> torch.export.ExportedProgram:
    """`model` exported with a dynamic batch, on the device its weights are on."""
    device = next(model.parameters()).device
    args, kwargs = demo_inputs(batch, model.head.in_features, device)
    batch_dim = Dim("batch", min=1, max=1024)
    return torch.export.export(
        model, args, kwargs, dynamic_shapes={"x": {0: batch_dim}, "scale": {0: batch_dim}}
    )


def _median_us(fn: Callable[[], Any], runs: int) -> float:
    for _ in range(max(3, runs // 10)):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def run_demo(out_path: str | None = None, runs: int = 200, backend: str = "aoti") -> int:
    torch.manual_seed(0)
    model = DemoModel().eval()
    print(
        "fxdelegate demo: residual MLP (3 blocks, width 64), dynamic batch, aten.gelu pinned to the executor"
    )
    ep = export_demo(model)
    start = time.perf_counter()
    prog = fxdelegate.lower(ep, backend=backend, exclude_ops=("aten.gelu",), min_partition_size=1)
    print(f"lowered in {time.perf_counter() - start:.1f} s\n")
    print(prog.report())

    workdir = tempfile.mkdtemp(prefix="fxdelegate-demo-")
    path = out_path or "fxdelegate-demo.pt2"
    prog.save(path)
    print(f"\nsaved {path} ({os.path.getsize(path) / 1e6:.1f} MB)")

    # Reload in a fresh process (no compiler runs there) and compare with eager.
    failures = 0
    inputs_path = os.path.join(workdir, "inputs.pt")
    outputs_path = os.path.join(workdir, "outputs.pt")
    cases = {batch: demo_inputs(batch) for batch in (1, 8, 37)}
    torch.save(cases, inputs_path)
    # An empty PATH hides g++/clang from the child: had loading needed a compile, it would fail.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fxdelegate.cli",
            "-q",
            "run-saved",
            path,
            inputs_path,
            outputs_path,
        ],
        check=True,
        env={**os.environ, "PATH": ""},
    )
    reloaded_outputs = torch.load(outputs_path, weights_only=True)
    print("\ncheck against eager (max abs error)")
    with torch.no_grad():
        for batch, (args, kwargs) in cases.items():
            expected = model(*args, **kwargs)
            for label, got in (
                ("lowered", prog(*args, **kwargs)),
                ("reloaded", reloaded_outputs[batch]),
            ):
                err = _max_abs_error(expected, got)
                ok = _close(expected, got)
                failures += not ok
                print(f"  batch {batch:>3}  {label:<9} {err:.2e}  {'ok' if ok else 'MISMATCH'}")

    print(f"\nlatency, median of {runs} calls (us)")
    exported_module = ep.module()
    rows = [("batch", "eager", "ep.module()", "fxdelegate", "speedup vs eager")]
    with torch.no_grad():
        for batch in (1, 8, 64):
            args, kwargs = demo_inputs(batch)
            eager = _median_us(lambda a=args, k=kwargs: model(*a, **k), runs)
            unlifted = _median_us(lambda a=args, k=kwargs: exported_module(*a, **k), runs)
            lowered = _median_us(lambda a=args, k=kwargs: prog(*a, **k), runs)
            rows.append(
                (
                    str(batch),
                    f"{eager:.0f}",
                    f"{unlifted:.0f}",
                    f"{lowered:.0f}",
                    f"{eager / lowered:.2f}x",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)))
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nsee the saved program's report again with: fxdelegate inspect {path}")
    print("demo " + ("passed" if not failures else f"FAILED ({failures} mismatches)"))
    return 1 if failures else 0


def _close(expected: Any, got: Any) -> bool:
    try:
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        return True
    except AssertionError:
        return False


def _max_abs_error(expected: Any, got: Any) -> float:
    flat_e = torch.utils._pytree.tree_leaves(expected)
    flat_g = torch.utils._pytree.tree_leaves(got)
    if len(flat_e) != len(flat_g):
        return float("inf")
    return max(((e - g).abs().max().item() for e, g in zip(flat_e, flat_g)), default=0.0)
