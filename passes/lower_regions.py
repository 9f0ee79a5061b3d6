"""Compile every outlined region with the chosen backend and load the result."""

from __future__ import annotations

import logging
import time

import torch
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from fxdelegate.runtime.backend import RegionToCompile, get_compiler, get_runtime

from .context import get_context

log = logging.getLogger("fxdelegate.passes")


class LowerRegionsPass(PassBase):
    def requires(self, graph_module: torch.fx.GraphModule) -> None:
        for record in get_context(graph_module).regions:
            if record.program is None:
                raise AssertionError("LowerRegionsPass needs OutlineRegionsPass first")

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        ctx = get_context(graph_module)
        if not ctx.regions:
            return PassResult(graph_module, False)
        compiler = get_compiler(ctx.backend_id)
        runtime = get_runtime(ctx.backend_id)
        total = len(ctx.regions)
        for i, record in enumerate(ctx.regions, 1):
            start = time.perf_counter()
            log.info(
                "compiling %s with %s (%d/%d, %d nodes)",
                record.name,
                ctx.backend_id,
                i,
                total,
                record.partition.size,
            )
            region = RegionToCompile(record.name, record.program, record.example_inputs)  # type: ignore[arg-type]
            record.artifact = compiler.compile(region, dict(ctx.compile_options), ctx.workdir)
            record.runner = runtime.load(record.artifact)
            log.info("compiled %s in %.1f s", record.name, time.perf_counter() - start)
        return PassResult(graph_module, False)

    def ensures(self, graph_module: torch.fx.GraphModule) -> None:
        for record in get_context(graph_module).regions:
            if record.artifact is None or record.runner is None:
                raise AssertionError(f"{record.name} has no compiled artifact")
