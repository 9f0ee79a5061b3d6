"""What fxdelegate is measured against."""

from __future__ import annotations

import tempfile

import torch


def whole_graph_aoti(ep: torch.export.ExportedProgram, single_threaded: bool = True):
    """The exported graph compiled whole by AOTInductor, called through its loader's run.

    By default loaded single-threaded, as fxdelegate loads its regions: the
    cheapest plain call AOTInductor offers, so the baseline is the strictest one.
    With False, the default container (what `aoti_load_package` gives).
    """
    path = tempfile.mktemp(suffix=".pt2")
    torch._inductor.aoti_compile_and_package(ep, package_path=path)
    loader = torch._C._aoti.AOTIModelPackageLoader(path, "model", single_threaded, 1, -1)
    return loader.run
