"""Compile every outlined region with the chosen backend and load the result.

Regions are grouped by content key (:mod:`.compile.region_key`). Each distinct
structure is looked up in the compile cache (the local folder, then the
remote store when there is one: :mod:`.compile.tiered_cache`), and the ones that
miss are compiled, concurrently where the backend allows it, and split with other
machines missing them at the same time (:mod:`.compile.fleet_compile`). Every region is then
loaded with its own weights bound to the shared artifact. A region whose
compile fails stays in the executor: this raises a warning and adds a
report row, unless ``strict``, in which case the error propagates.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter

import torch
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from fxdelegate.errors import BackendCompileError, BackendError, RegionFallbackWarning
from fxdelegate.runtime.backend import RegionArtifact, RegionToCompile, get_compiler, get_runtime
from fxdelegate.runtime.cuda_graphs.capture_plan import region_host_sync
from fxdelegate.runtime.region_runners import load_region_runner

from .compile.fleet_compile import compile_across_fleet
from .compile.local_cache import CompileCache
from .compile.parallel_compile import CompileJob, compile_jobs, default_workers
from .compile.region_key import region_key
from .compile.remote_cache import RemoteCache
from .compile.tiered_cache import COMPILED, LOCAL_HIT, PUBLISHED, REMOTE_HIT, SHARED, RegionCache
from .context import LoweringContext, RegionRecord, get_context
from .outline_regions import constant_name
from .tag_regions import REGION_TAG

log = logging.getLogger("fxdelegate.passes")


class LowerRegionsPass(PassBase):
    def requires(self, graph_module: torch.fx.GraphModule) -> None:
        """Every region is outlined."""
        for record in get_context(graph_module).regions:
            if record.program is None:
                raise AssertionError("LowerRegionsPass needs OutlineRegionsPass first")

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        ctx = get_context(graph_module)
        if not ctx.regions:
            return PassResult(graph_module, False)
        compiler = get_compiler(ctx.backend_id)
        runtime = get_runtime(ctx.backend_id)
        # The compiler's defaults under the user's options: what the regions are
        # compiled with, keyed by, and reported as (the delegates' compile_specs).
        options = ctx.compile_options = {**compiler.default_options(), **ctx.compile_options}

        groups: dict[str, list[RegionRecord]] = {}
        keys: dict[int, str] = {}  # structure -> content key: one hash per structure
        for record in ctx.regions:
            key = keys.get(record.structure) if record.structure is not None else None
            if key is None:
                key = region_key(record.program, ctx.backend_id, options)  # type: ignore[arg-type]
                if record.structure is not None:
                    keys[record.structure] = key
            groups.setdefault(key, []).append(record)
        cache = _region_cache(ctx, compiler.cacheable)
        shared: dict[str, RegionArtifact] = {}
        sources: dict[str, str] = {}  # content key -> where its artifact came from
        failures: dict[str, str] = {}
        failed_as: dict[str, str] = {}  # the region name a failed compile was reported under
        if cache is not None:
            for key in groups:
                hit = cache.lookup(key)
                if hit is not None:
                    shared[key], sources[key] = hit
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
                failed_as[job.key] = job.region.name
                return
            sources[job.key] = cache.store(job.key, result) if cache is not None else COMPILED
            shared[job.key] = result

        def compile_batch(batch: list[CompileJob]) -> None:
            compile_jobs(
                batch,
                compiler,
                options,
                ctx.workdir,
                workers=ctx.compile_workers,
                total_regions=len(ctx.regions),
                done_regions=sum(len(groups[k]) for k in shared),
                on_result=on_result,
            )

        def fetched(job: CompileJob, artifact: RegionArtifact) -> None:
            shared[job.key], sources[job.key] = artifact, REMOTE_HIT

        start = time.perf_counter()
        if jobs and cache is not None and cache.remote is not None:
            compile_across_fleet(
                jobs,
                cache,
                compile_batch,
                fetched,
                batch_size=ctx.compile_workers or default_workers(),
            )
        elif jobs:
            compile_batch(jobs)

        lowered = []
        fallen: list[tuple[RegionRecord, str, str]] = []  # record, error, its cause
        for key, records in groups.items():
            program = records[0].program
            assert program is not None
            host_sync = None if key in failures else region_host_sync(program.graph_module)
            for record in records:
                if key in failures:
                    cause = failures[key].replace(failed_as[key], "<region>")
                    fallen.append((record, failures[key], cause))
                    continue
                record.artifact = _region_artifact(record, shared[key], ctx.backend_id, host_sync)
                if cache is not None and cache.remote is not None:
                    record.cache_source = sources[key]
                constants = {
                    name: _state(ctx, fqn) for name, fqn in record.artifact.constant_bindings
                }
                try:
                    record.runner, record.recordable = load_region_runner(
                        runtime, record.artifact, constants, ctx.recordable_runners
                    )
                except BackendError as exc:
                    # e.g. options that fold weights into the code (GEMM prepacking)
                    if ctx.strict:
                        raise
                    error = _first_line(exc)
                    fallen.append((record, error, error.replace(record.name, "<region>")))
                    continue
                lowered.append(record)
        _fall_back(ctx, fallen)
        kept = {id(r) for r in lowered}  # records compare by value: match by identity
        ctx.regions = [r for r in ctx.regions if id(r) in kept]
        counts = Counter(sources.values())
        ctx.compile_stats = {
            "regions": len(lowered) + len(ctx.failed_regions),
            "distinct": len(groups),
            "cache_hits": counts[LOCAL_HIT] + counts[SHARED] + counts[REMOTE_HIT],
            "compiled": counts[COMPILED] + counts[PUBLISHED],
            "failed": len(failures),
            "seconds": round(time.perf_counter() - start, 2),
        }
        if cache is not None and cache.remote is not None:
            ctx.compile_stats["remote_hits"] = counts[REMOTE_HIT]
            ctx.compile_stats["published"] = counts[PUBLISHED]
            ctx.compile_stats["shared"] = counts[SHARED]
        return PassResult(graph_module, False)

    def ensures(self, graph_module: torch.fx.GraphModule) -> None:
        """Every region kept has a compiled artifact and a loaded runner."""
        for record in get_context(graph_module).regions:
            if record.artifact is None or record.runner is None:
                raise AssertionError(f"{record.name} has no compiled artifact")


def _region_artifact(
    record: RegionRecord, shared: RegionArtifact, backend_id: str, host_sync: object
) -> RegionArtifact:
    """This region's view of a (possibly shared) artifact: its own key and weights.
    `host_sync` is what :func:`region_host_sync` says of the (shared) program."""
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
            "host_sync": host_sync,
        },
    )


def _region_cache(ctx: LoweringContext, cacheable: bool) -> RegionCache | None:
    if not cacheable:
        return None
    local = CompileCache(ctx.cache_dir) if ctx.cache_dir else None
    remote = RemoteCache(ctx.remote_cache) if ctx.remote_cache is not None else None
    if local is None and remote is None:
        return None
    return RegionCache(local, remote, ctx.backend_id, ctx.workdir)


def _state(ctx: LoweringContext, fqn: str) -> torch.Tensor:
    return ctx.state_dict[fqn] if fqn in ctx.state_dict else ctx.constants[fqn]


def _fall_back(ctx: LoweringContext, fallen: list[tuple[RegionRecord, str, str]]) -> None:
    """Leave each failed region's nodes to the executor, with one warning per cause:
    when every region fails the same way (a worker that cannot import what the
    caller imports, a missing compiler), one line says so, not one per region."""
    by_cause: dict[str, list[RegionRecord]] = {}
    for record, error, cause in fallen:
        ctx.failed_regions[record.name] = error
        for node in record.partition.nodes:
            node.meta.pop(REGION_TAG, None)
        by_cause.setdefault(cause, []).append(record)
    where = (
        f"go to the next backends ({', '.join(ctx.next_backends)}), or stay in the executor"
        if ctx.next_backends
        else "stay in the executor"
    )
    for cause, records in by_cause.items():
        nodes = sum(r.partition.size for r in records)
        if len(records) == 1:
            (record,) = records
            message = (
                f"{ctx.backend_id} failed to compile {record.name}; its {nodes} node(s) {where}: "
                f"{ctx.failed_regions[record.name]}"
            )
        else:
            names = ", ".join(r.name for r in records[:6]) + (", ..." if len(records) > 6 else "")
            message = (
                f"{ctx.backend_id} failed to compile {len(records)} regions ({names}) for one "
                f"cause; their {nodes} node(s) {where}: {cause}"
            )
        message += ". lower(..., strict=True) makes a compile failure an error"
        warnings.warn(message, RegionFallbackWarning, stacklevel=2)
        log.warning(message)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
