"""Compile distinct regions concurrently, with a progress bar.

Each job compiles one distinct region (regions with the same content key
share its result). With more than one job and a backend that allows it,
each job runs in a fresh ``python -m fxdelegate.passes.compile.compile_worker``
process, with at most one process per core. The job is handed over as a
saved ExportedProgram file. Plain subprocesses are used rather than
multiprocessing, so the user's script is never re-imported in a worker,
whether or not it has an ``if __name__ == "__main__"`` guard. The bar shows
regions done over the total, with the region's name. tqdm disables it when
stderr is not a terminal.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import torch

from fxdelegate.errors import BackendCompileError
from fxdelegate.runtime.backend import BackendCompiler, RegionArtifact, RegionToCompile

log = logging.getLogger("fxdelegate.passes")


@dataclass
class CompileJob:
    key: str  # content key (see region_key.py)
    region: RegionToCompile
    covers: int  # how many regions share this result


def default_workers() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


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
        if (
            workers <= 1
            or len(jobs) <= 1
            or not compiler.parallel_safe
            or not _literal_options(options)
        ):
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
        # Programs are saved here, one at a time (torch's serializer is not thread-safe);
        # only the worker processes run concurrently.
        specs = [_write_job(compiler.backend_id, job.region, options, workdir) for job in jobs]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(_run_job, spec, job.region.name): job for spec, job in zip(specs, jobs)
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


def worker_environment() -> dict[str, str]:
    """The caller's environment, with its import path as the worker's PYTHONPATH.

    A worker must import what the caller imports: fxdelegate itself from a
    checkout that is only on ``sys.path`` (a notebook, a script that appends
    to it), and the modules that register the custom ops a region calls."""
    # fxdelegate itself is imported already (this module is inside it); importing it
    # here would make the passes depend on the package's top.
    package_root = os.path.dirname(
        os.path.dirname(os.path.abspath(sys.modules["fxdelegate"].__file__))
    )
    paths = [package_root] + [os.path.abspath(p or os.curdir) for p in sys.path]
    inherited = os.environ.get("PYTHONPATH", "")
    paths += [p for p in inherited.split(os.pathsep) if p]
    unique = [p for i, p in enumerate(paths) if p not in paths[:i]]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(unique)}


def _literal_options(options: dict[str, Any]) -> bool:
    """Options travel to workers as Python literals; anything else compiles in-process."""
    try:
        return all(ast.literal_eval(repr(v)) == v for v in options.values())
    except (ValueError, SyntaxError):
        return False


def _write_job(
    backend_id: str, region: RegionToCompile, options: dict[str, Any], workdir: str
) -> dict[str, Any]:
    job_dir = tempfile.mkdtemp(prefix=f"{region.name}-", dir=workdir)
    program_path = os.path.join(job_dir, "region.pt2")
    torch.export.save(region.program, program_path)
    spec = {
        "backend": backend_id,
        "name": region.name,
        "program": program_path,
        "options": {k: repr(v) for k, v in options.items()},
        "workdir": workdir,
        "result": os.path.join(job_dir, "result.json"),
    }
    spec["job"] = os.path.join(job_dir, "job.json")
    with open(spec["job"], "w") as f:
        json.dump(spec, f)
    return spec


def _run_job(spec: dict[str, Any], name: str) -> RegionArtifact:
    proc = subprocess.run(
        [sys.executable, "-m", "fxdelegate.passes.compile.compile_worker", spec["job"]],
        capture_output=True,
        text=True,
        env=worker_environment(),
    )
    try:
        with open(spec["result"]) as f:
            result = json.load(f)
    except (OSError, ValueError):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise BackendCompileError(
            f"compile worker for {name} exited with status {proc.returncode}: " + " | ".join(tail)
        ) from None
    if "error" in result:
        if result.get("error_type") == "BackendCompileError":
            raise BackendCompileError(result["error"])
        raise BackendCompileError(f"{result.get('error_type', 'Error')}: {result['error']}")
    return RegionArtifact(
        result["key"],
        spec["backend"],
        package_path=result["package_path"],
        package_key=result["package_key"],
        meta=result["meta"],
    )
