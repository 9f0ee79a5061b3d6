"""Compile distinct regions concurrently, with a progress bar.

Each job compiles one distinct region (regions with the same content key
share its result). With more than one job and a backend that allows it,
jobs run in worker processes (spawned, at most one per core). Each worker
receives its region as a serialized ExportedProgram. The bar shows regions
done over the total, with the region's name. tqdm disables it when stderr is
not a terminal.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import torch

from fxdelegate.runtime.backend import (
    BackendCompiler,
    RegionArtifact,
    RegionToCompile,
    get_compiler,
)

log = logging.getLogger("fxdelegate.passes")


@dataclass
class CompileJob:
    key: str  # content key (see region_key.py)
    region: RegionToCompile
    covers: int  # how many regions share this result


def default_workers() -> int:
    return max(
        1,
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
    )


def compile_jobs(
    jobs: list[CompileJob],
    compiler: BackendCompiler,
    options: dict[str, Any],
    workdir: str,
    *,
    workers: int | None,
    total_regions: int,
    done_regions: int,
    on_result: Callable[[CompileJob, RegionArtifact | BaseException], None],
) -> None:
    """Compile every job; `on_result` gets each artifact or the exception it raised."""
    from tqdm.auto import tqdm

    workers = min(len(jobs), workers or default_workers())
    bar = tqdm(
        total=total_regions,
        initial=done_regions,
        unit="region",
        desc="compiling",
        disable=None,
        leave=False,
    )
    try:
        if workers <= 1 or len(jobs) <= 1 or not compiler.parallel_safe:
            for job in jobs:
                bar.set_postfix_str(job.region.name)
                start = time.perf_counter()
                try:
                    result: RegionArtifact | BaseException = compiler.compile(
                        job.region, dict(options), workdir
                    )
                    log.info("compiled %s in %.1f s", job.region.name, time.perf_counter() - start)
                except Exception as exc:
                    result = exc
                on_result(job, result)
                bar.update(job.covers)
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {
                pool.submit(
                    _compile_in_worker,
                    compiler.backend_id,
                    _serialize(job.region),
                    dict(options),
                    workdir,
                ): job
                for job in jobs
            }
            bar.set_postfix_str(", ".join(j.region.name for j in jobs[:workers]))
            for future in as_completed(futures):
                job = futures[future]
                try:
                    result = future.result()
                    log.info("compiled %s", job.region.name)
                except Exception as exc:
                    result = exc
                on_result(job, result)
                bar.set_postfix_str(job.region.name)
                bar.update(job.covers)
    finally:
        bar.close()


def _serialize(region: RegionToCompile) -> tuple[str, bytes]:
    buffer = io.BytesIO()
    torch.export.save(region.program, buffer)
    return region.name, buffer.getvalue()


def _compile_in_worker(
    backend_id: str, payload: tuple[str, bytes], options: dict[str, Any], workdir: str
) -> RegionArtifact:
    name, data = payload
    program = torch.export.load(io.BytesIO(data))
    args, _ = program.example_inputs
    artifact = get_compiler(backend_id).compile(
        RegionToCompile(name, program, tuple(args)), options, workdir
    )
    artifact.program = None  # the parent process has the program already
    return artifact
