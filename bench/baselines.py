"""What fxdelegate is measured against."""

from __future__ import annotations

import tempfile

import torch


def whole_graph_aoti(ep: torch.export.ExportedProgram):
    """The exported graph compiled whole by AOTInductor, called through its loader's run."""
    path = tempfile.mktemp(suffix=".pt2")
    torch._inductor.aoti_compile_and_package(ep, package_path=path)
    return torch._C._aoti.AOTIModelPackageLoader(path, "model", False, 1, -1).run
