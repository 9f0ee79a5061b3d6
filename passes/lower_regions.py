"""Compile every outlined region with the chosen backend and load the result.

Regions are grouped by content key (:mod:`.region_key`). Each distinct
structure is looked up in the compile cache, and the ones that miss are
compiled, concurrently where the backend allows it. Every region is then
loaded with its own weights bound to the shared artifact. A region whose
compile fails stays in the executor: this raises a warning and adds a
report row, unless ``strict``, in which case the error propagates.
"""

from __future__ import annotations

import logging
import time
import warnings

import torch
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from fxdelegate.errors import BackendCompileError, BackendError
from fxdelegate.runtime.backend import RegionArtifact, RegionToCompile, get_compiler, get_runtime
from fxdelegate.runtime.capture_plan import region_host_sync

from .compile_cache import CompileCache
from .context import LoweringContext, RegionRecord, get_context
from .outline_regions import constant_name
from .parallel_compile import CompileJob, compile_jobs
from .region_key import region_key
from .tag_regions import REGION_TAG

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
        options = dict(ctx.compile_options)

        groups: dict[str, list[RegionRecord]] = {}
        for record in ctx.regions:
            key = region_key(record.program, ctx.backend_id, options)  # type: ignore[arg-type]
            groups.setdefault(key, []).append(record)
        cache = CompileCache(ctx.cache_dir) if (ctx.cache_dir and compiler.cacheable) else None
        shared: dict[str, RegionArtifact] = {}
        failures: dict[str, str] = {}
        if cache is not None:
            for key in groups:
                entry = cache.get(key)
                if entry is not None:
                    shared[key] = RegionArtifact(
                        key,
                        ctx.backend_id,
                        package_path=entry.package_path,
                        package_key=entry.meta.get("package_key"),
                    )
        jobs = [
            CompileJob(
                key,
                RegionToCompile(records[0].name, records[0].program, records[0].example_inputs),
                len(records),
            )  # type: ignore[arg-type]
            for key, records in groups.items()
            if key not in shared
        ]
        log.info(
            "%d region(s), %d distinct; %d from the compile cache, %d to compile",
            len(ctx.regions),
            len(groups),
            len(shared),
            len(jobs),
        )

        def on_result(job: CompileJob, result: RegionArtifact | BaseException) -> None:
            if isinstance(result, BaseException):
                if ctx.strict:
                    if isinstance(result, BackendCompileError):
                        raise result
                    raise BackendCompileError(
                        f"{ctx.backend_id} failed to compile {job.region.name}: {result}"
                    ) from result
                failures[job.key] = _first_line(result)
                return
            if cache is not None and result.package_path is not None:
                entry = cache.put(
                    job.key,
                    result.package_path,
                    {"backend": ctx.backend_id, "package_key": result.package_key},
                )
                result.package_path = entry.package_path
            shared[job.key] = result

        start = time.perf_counter()
        cache_hits = len(shared)
        if jobs:
            done = sum(len(groups[k]) for k in shared)
            compile_jobs(
                jobs,
                compiler,
                options,
                ctx.workdir,
                workers=ctx.compile_workers,
                total_regions=len(ctx.regions),
                done_regions=done,
                on_result=on_result,
            )

        lowered = []
        for key, records in groups.items():
            for record in records:
                if key in failures:
                    _fall_back(ctx, record, failures[key])
                    continue
                record.artifact = _region_artifact(record, shared[key], ctx.backend_id)
                constants = {
                    name: _state(ctx, fqn) for name, fqn in record.artifact.constant_bindings
                }
                try:
                    record.runner = (
                        runtime.load_recordable(record.artifact, constants)
                        if ctx.recordable_runners
                        else None
                    )
                    record.recordable = record.runner is not None
                    if record.runner is None:
                        record.runner = runtime.load(record.artifact, constants)
                except BackendError as exc:
                    # e.g. options that fold weights into the code (GEMM prepacking)
                    if ctx.strict:
                        raise
                    _fall_back(ctx, record, _first_line(exc))
                    continue
                lowered.append(record)
        ctx.regions = [r for r in ctx.regions if r in lowered]
        ctx.compile_stats = {
            "regions": len(lowered) + len(ctx.failed_regions),
            "distinct": len(groups),
            "cache_hits": cache_hits,
            "compiled": len(jobs) - len(failures),
            "failed": len(failures),
            "seconds": round(time.perf_counter() - start, 2),
        }
        return PassResult(graph_module, False)

    def ensures(self, graph_module: torch.fx.GraphModule) -> None:
        for record in get_context(graph_module).regions:
            if record.artifact is None or record.runner is None:
                raise AssertionError(f"{record.name} has no compiled artifact")


def _region_artifact(
    record: RegionRecord, shared: RegionArtifact, backend_id: str
) -> RegionArtifact:
    """This region's view of a (possibly shared) artifact: its own key and weights."""
    program = record.program
    assert program is not None
    constants = []
    for i, fqn in enumerate(record.owned_state):
        name = constant_name(i)
        tensor = program.state_dict.get(name, program.constants.get(name))
        constants.append([name, fqn, list(tensor.shape), str(tensor.dtype).removeprefix("torch.")])
    return RegionArtifact(
        key=f"{record.name}-{backend_id}",
        backend_id=backend_id,
        package_path=shared.package_path,
        package_key=shared.package_key,
        program=program,
        meta={
            **shared.meta,
            "constants": constants,
            "content_key": shared.key,
            "host_sync": region_host_sync(program.graph_module),
        },
    )


def _state(ctx: LoweringContext, fqn: str) -> torch.Tensor:
    return ctx.state_dict[fqn] if fqn in ctx.state_dict else ctx.constants[fqn]


def _fall_back(ctx: LoweringContext, record: RegionRecord, error: str) -> None:
    message = f"{ctx.backend_id} failed to compile {record.name}; its {record.partition.size} node(s) stay in the executor: {error}"
    warnings.warn(message, stacklevel=2)
    log.warning(message)
    ctx.failed_regions[record.name] = error
    for node in record.partition.nodes:
        node.meta.pop(REGION_TAG, None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
