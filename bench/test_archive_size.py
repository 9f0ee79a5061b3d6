"""Archive size against the bytes it must hold: unique weights plus compiled code.

pytest bench/test_archive_size.py
"""

from __future__ import annotations

import os
import tempfile

import torch
from ratios import record

import fxdelegate
from fxdelegate.runtime.archive import archive_members
from models import Wide


def test_archive_size_vs_weights_plus_code(benchmark):
    model = Wide(6).eval()
    ep = torch.export.export(model, (torch.randn(4, 1024),))
    prog = fxdelegate.lower(ep, exclude_ops=["aten.gelu"])
    path = os.path.join(tempfile.mkdtemp(), "wide.pt2")
    prog.save(path)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    code = sum(size for name, size in archive_members(path) if name.startswith("data/aotinductor/"))
    size = os.path.getsize(path)
    ratio = size / (weights + code)
    record(
        "archive size (6 x Linear 1024, GELU in the executor; 6 regions, 1 distinct)",
        {
            "weights": f"{weights / 1e6:.2f} MB",
            "compiled code": f"{code / 1e6:.2f} MB",
            "archive": f"{size / 1e6:.2f} MB",
            "archive / (weights + code)": f"{ratio:.3f}",
            "target": "<= 1.05 x weights + code",
        },
    )
    assert size <= 1.05 * weights + code
    benchmark.pedantic(lambda: fxdelegate.load(path), rounds=3)
