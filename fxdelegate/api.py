"""The public entry points: `lower` and `load`."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.fx.passes.operator_support import OperatorSupportBase

from fxdelegate.errors import ArchiveError, InvalidArgumentError
from fxdelegate.partitioner import OpSet
from fxdelegate.partitioner.gc_pause import gc_paused
from fxdelegate.partitioner.op_support import OpSelector
from fxdelegate.partitioner.partition import check_partition_arguments
from fxdelegate.partitioner.report import LoweringSummary, RegionSummary
from fxdelegate.passes import PassPipeline, default_cache_dir, lower_program
from fxdelegate.passes.compile.remote_cache import RemoteCacheOptions, resolve_remote_cache
from fxdelegate.passes.pipeline.backend_choice import BackendChoice, resolve_backends
from fxdelegate.passes.pipeline.lowering_summary import summarize
from fxdelegate.runtime.archive.archive_io import read_archive
from fxdelegate.runtime.cuda_graphs.cuda_graph_options import (
    CUDAGraphOptions,
    graph_device,
    resolve_cuda_graphs,
)
from fxdelegate.runtime.lowered_module import delegate_key
from fxdelegate.runtime.region_runners import load_region_runners

from .program import DelegatedProgram

log = logging.getLogger("fxdelegate")


def lower(
    exported_program: ExportedProgram,
    backend: str | Sequence[str] = "aoti",
    support: OperatorSupportBase | Mapping[str, OperatorSupportBase] | None = None,
    exclude_ops: Iterable[OpSelector] = (),
    min_partition_size: int = 1,
    *,
    compile_options: dict[str, Any] | None = None,
    check_inputs: bool = True,
    cache_dir: str | os.PathLike[str] | bool | None = None,
    remote_cache: str | RemoteCacheOptions | bool | None = None,
    strict: bool = False,
    compile_workers: int | None = None,
    cuda_graphs: bool | CUDAGraphOptions = False,
    pipeline: PassPipeline | None = None,
    plan: str = "rules",
    measure_budget_s: float = 120.0,
    measure_timer: Any = None,
) -> DelegatedProgram:
    """Partition `exported_program`, compile each region with `backend`, and return
    a callable program whose delegate nodes run the compiled regions.

    Args:
        exported_program: from ``torch.export.export``; it is not modified.
        backend: a registered backend id (``"aoti"``, ``"reference"``, or your own), or
            a list of them in priority order: each node goes to the first backend that
            supports it (and can take it into a convex region); regions never mix backends.
        support: which nodes the backend may take; None means the backend's default.
            With several backends, a dict keyed by backend id (missing ones: default).
        exclude_ops: ops that must stay in the executor: ``"aten.gelu"`` (every
            overload), ``"aten.gelu.default"``, OpOverload or OpOverloadPacket objects.
        min_partition_size: regions with fewer compute nodes stay in the executor.
        compile_options: passed to the backend compiler (for ``aoti``: inductor configs);
            with several backends, a dict keyed by backend id.
        check_inputs: check every call's inputs against the exported specs.
        cache_dir: where compiled regions are cached; None means ``$FXDELEGATE_CACHE_DIR``
            or ``~/.cache/fxdelegate``; False disables the cache.
        remote_cache: a Redis store shared by many machines (``"redis://host:6379/0"`` or a
            :class:`RemoteCacheOptions`), tried after the local folder; None means
            ``$FXDELEGATE_REMOTE_CACHE`` (unset: none), False none. Entries are signed with
            ``$FXDELEGATE_CACHE_SECRET``; without a secret the remote cache is refused.
        strict: raise when a region fails to compile, instead of leaving it in the executor.
        compile_workers: processes compiling distinct regions at once (default: one per core).
        cuda_graphs: record each call's GPU work in CUDA graphs and replay it (True,
            or a :class:`CUDAGraphOptions`); the program must run on a CUDA device.
        pipeline: the passes to run, from :func:`fxdelegate.default_pipeline` (the
            default) with passes of your own inserted; each of yours is checked after it
            runs, and a broken invariant raises :class:`PassInvariantError` naming it.
        plan: ``"rules"`` (the default): regions and backends follow the support rules
            and the backend list's priority. ``"measure"``: each candidate (the executor,
            each backend of the list, a few option variants) is compiled and timed on
            every stretch of the graph the backends could take, a shortest-path search
            picks the cheapest cover, and the result is kept only if it runs faster than
            the rules' program and each backend of the list alone; else the fastest of
            those is returned (:mod:`fxdelegate.measured_plan`).
        measure_budget_s: with ``plan="measure"``, seconds to spend measuring; stretches
            left unmeasured when it runs out follow the rules.
        measure_timer: with ``plan="measure"``, an object whose ``measure(candidates)``
            returns seconds per call for a dict of callables (tests pass a fake one).
    """
    known: dict[str, RegionSummary] = {}  # regions lowered earlier, as reported then
    if isinstance(exported_program, DelegatedProgram):
        known = {r.name: r for r in exported_program.summary.regions}
        exported_program = exported_program.exported_program  # lower it further
    backends = resolve_backends(backend, support, compile_options)
    check_partition_arguments(backends[0].support, min_partition_size)
    excluded = OpSet(exclude_ops)
    if cache_dir is True or cache_dir is None:
        cache_dir = default_cache_dir()
    if compile_workers is not None and (
        not isinstance(compile_workers, int) or compile_workers < 1
    ):
        raise InvalidArgumentError(f"compile_workers must be an int >= 1, got {compile_workers!r}")
    graphs = _check_cuda_graphs(cuda_graphs, exported_program)
    remote = resolve_remote_cache(remote_cache)
    if pipeline is not None and not isinstance(pipeline, PassPipeline):
        raise InvalidArgumentError(
            "pipeline must be a PassPipeline (start from fxdelegate.default_pipeline()), "
            f"got {type(pipeline).__name__}"
        )

    if plan not in ("rules", "measure"):
        raise InvalidArgumentError(f"plan must be 'rules' or 'measure', got {plan!r}")
    if not isinstance(measure_budget_s, (int, float)) or measure_budget_s < 0:
        raise InvalidArgumentError(
            f"measure_budget_s must be a number of seconds >= 0, got {measure_budget_s!r}"
        )

    def lower_choices(
        program: ExportedProgram,
        choices: list[BackendChoice],
        min_size: int,
        must_compile: bool,
    ) -> DelegatedProgram:
        return _lower_resolved(
            program,
            choices,
            excluded,
            min_size,
            cache_dir,
            remote,
            must_compile,
            compile_workers,
            graphs,
            pipeline,
            check_inputs,
            known,
        )

    if plan == "measure":
        from .measured_plan import lower_measured

        return lower_measured(
            exported_program,
            backends,
            lower_choices,
            min_partition_size=min_partition_size,
            exclude_ops=excluded,
            strict=strict,
            cache_dir=os.fspath(os.path.expanduser(cache_dir)) if cache_dir else None,
            remote=remote,
            budget_s=float(measure_budget_s),
            timer=measure_timer,
            cuda_graphs=graphs is not None,
        )
    return lower_choices(exported_program, backends, min_partition_size, strict)


def _lower_resolved(
    exported_program: ExportedProgram,
    backends: list[BackendChoice],
    excluded: OpSet,
    min_partition_size: int,
    cache_dir: Any,
    remote: RemoteCacheOptions | None,
    strict: bool,
    compile_workers: int | None,
    graphs: CUDAGraphOptions | None,
    pipeline: PassPipeline | None,
    check_inputs: bool,
    known: dict[str, RegionSummary],
) -> DelegatedProgram:
    """`lower` once its arguments are checked and resolved."""
    start = time.perf_counter()
    with gc_paused():
        with _quiet_torch_internals():
            result = lower_program(
                exported_program,
                backends=backends,
                exclude_ops=excluded,
                min_partition_size=min_partition_size,
                cache_dir=os.fspath(os.path.expanduser(cache_dir)) if cache_dir else None,
                remote_cache=remote,
                strict=strict,
                compile_workers=compile_workers,
                recordable_runners=graphs is not None,
                pipeline=pipeline,
            )
        try:
            log.info(
                "lowered to %d region(s) on %s in %.1f s",
                len(result.regions),
                result.backend_id,
                time.perf_counter() - start,
            )
            program = result.program
            artifacts = result.artifacts
            runners = result.runners
            recordable = result.recordable
            # Regions delegated by an earlier lowering are left alone, and loaded again here.
            earlier = {module.key: module.artifact for module in result.earlier_regions}
            artifacts.update(earlier)
            earlier_runners, earlier_recordable = load_region_runners(
                program, earlier, graphs is not None, "the program"
            )
            runners.update(earlier_runners)
            recordable |= earlier_recordable
            return DelegatedProgram(
                program,
                artifacts,
                runners,  # type: ignore[arg-type]
                summarize(result, known),
                check_inputs=check_inputs,
                workdir=result.workdir,
                cuda_graphs=graphs,
                recordable=frozenset(recordable),
            )
        except BaseException:
            if result.workdir is not None:
                shutil.rmtree(result.workdir, ignore_errors=True)
            raise


def _check_cuda_graphs(
    value: bool | CUDAGraphOptions, program: ExportedProgram
) -> CUDAGraphOptions | None:
    """The options, once the program and this machine can use them (checked before compiling)."""
    options = resolve_cuda_graphs(value)
    if options is None:
        return None
    if options.capturer is None and not torch.cuda.is_available():
        raise InvalidArgumentError(
            "cuda_graphs=True needs a CUDA device, and torch sees none on this machine"
        )
    graph_device(program, options.capturer.device_type if options.capturer else "cuda")
    return options


@contextlib.contextmanager
def _quiet_torch_internals() -> Iterator[None]:
    # torch deep-copies its own treespecs during re-tracing and compiling and
    # warns about its own deprecated LeafSpec; nothing the user can act on.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LeafSpec.*deprecated", category=FutureWarning)
        yield


def load(
    path: str | os.PathLike[str],
    *,
    check_inputs: bool = True,
    cuda_graphs: bool | CUDAGraphOptions = False,
) -> DelegatedProgram:
    """Load a program saved with :meth:`DelegatedProgram.save`. Compiles nothing.

    `cuda_graphs` records each call's GPU work and replays it, as in :func:`lower`.
    Loading runs the native code inside the archive: load only archives you trust.
    """
    contents = read_archive(path)
    graphs = _check_cuda_graphs(cuda_graphs, contents.program)
    runners, recordable = load_region_runners(
        contents.program, contents.artifacts, graphs is not None, contents.path
    )
    delegate = torch.ops.higher_order.executorch_call_delegate
    for node in contents.program.graph.nodes:
        if node.op == "call_function" and node.target is delegate:
            key = delegate_key(node.args[0], contents.program.graph_module)
            if key not in runners:
                raise ArchiveError(
                    f"{contents.path}: delegate node {node.name} names region {key!r}, which the archive lacks"
                )
    summary_data = contents.metadata.get("summary")
    try:
        summary = LoweringSummary.from_dict(summary_data)  # type: ignore[arg-type]
    except (KeyError, TypeError) as exc:
        raise ArchiveError(f"{contents.path}: the stored report is malformed: {exc}") from exc
    return DelegatedProgram(
        contents.program,
        contents.artifacts,
        runners,
        summary,
        check_inputs=check_inputs,
        cuda_graphs=graphs,
        recordable=frozenset(recordable),
    )
