"""Archive size against the bytes it must hold: unique weights plus compiled code.

pytest bench/test_archive_size.py
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
from ratios import record

import fxdelegate
from fxdelegate.runtime.archive.archive_io import archive_members
from models import Wide


@pytest.fixture(scope="module")
def wide():
    model = Wide(6).eval()
    ep = torch.export.export(model, (torch.randn(4, 1024),))
    return model, fxdelegate.lower(ep, exclude_ops=["aten.gelu"])


@pytest.mark.parametrize("keep_region_programs", [False, True])
def test_archive_size_vs_weights_plus_code(benchmark, wide, keep_region_programs):
    # With keep_region_programs every region's own program is stored too; the
    # weights it shares with the parent must not be stored a second time.
    model, prog = wide
    path = os.path.join(tempfile.mkdtemp(), "wide.pt2")
    prog.save(path, keep_region_programs=keep_region_programs)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    code = sum(size for name, size in archive_members(path) if name.startswith("data/aotinductor/"))
    size = os.path.getsize(path)
    ratio = size / (weights + code)
    kept = ", region programs kept" if keep_region_programs else ""
    record(
        f"archive size (6 x Linear 1024, GELU in the executor; 6 regions, 1 distinct{kept})",
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
