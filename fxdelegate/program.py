"""DelegatedProgram: what `fxdelegate.lower` returns and `fxdelegate.load` gives back."""

from __future__ import annotations

import os
import shutil
import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch.export import ExportedProgram

from fxdelegate.errors import FxDelegateError, RegionProgramMissingError
from fxdelegate.partitioner.report import LoweringSummary, RegionSummary
from fxdelegate.runtime.archive.archive_io import write_archive
from fxdelegate.runtime.backend import RegionArtifact, Runner, get_runtime
from fxdelegate.runtime.cuda_graphs.cuda_graph_options import CUDAGraphOptions, unrecordable_regions
from fxdelegate.runtime.cuda_graphs.cuda_graph_report import describe_off, format_report
from fxdelegate.runtime.cuda_graphs.cuda_graph_runner import CUDAGraphRunner
from fxdelegate.runtime.debug.compare import ComparisonReport, compare_program
from fxdelegate.runtime.debug.profile import ProfileReport
from fxdelegate.runtime.executor.program_executor import ProgramExecutor
from fxdelegate.runtime.weight_update import bound_constants, current_weight, plan_weight_update


class DelegatedProgram:
    """A program whose regions run in compiled backends and the rest in the executor.

    Call it like ``exported_program.module()``: same pytree of inputs and outputs.
    """

    def __init__(
        self,
        exported_program: ExportedProgram,
        artifacts: dict[str, RegionArtifact],
        runners: dict[str, Runner],
        summary: LoweringSummary,
        *,
        check_inputs: bool = True,
        workdir: str | None = None,
        cuda_graphs: CUDAGraphOptions | None = None,
        recordable: frozenset[str] = frozenset(),
    ) -> None:
        """`recordable` names the regions whose runners a CUDA graph can record."""
        self.exported_program = exported_program
        self.artifacts = artifacts
        self.summary = summary
        self._runners = runners
        self._graph_options = cuda_graphs
        self._recordable = recordable
        # A class of its own, whose __call__ is the generated entry itself: a call
        # then passes through no Python frame of ours (about 0.3 us of each call).
        cls = type(self)
        self.__class__ = type(
            cls.__name__, (cls,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        )
        self._executor = self._make_executor(check_inputs)
        if workdir is not None:
            # Compiled region packages live here until the program is gone.
            self._cleanup = weakref.finalize(self, shutil.rmtree, workdir, True)

    def update_weights(self, state_dict: Mapping[str, Any], *, strict: bool = False) -> None:
        """Swap weights by their original FQNs in every region and in the executor,
        without recompiling. All or nothing: a wrong name, shape, dtype or device
        is refused before anything changes. With `strict`, every weight must be given.
        """
        updates = plan_weight_update(self.exported_program, state_dict, strict=strict)
        if not updates:
            return
        previous = {fqn: current_weight(self.exported_program, fqn) for fqn in updates}
        try:
            self._bind(updates)
        except Exception:
            self._bind(previous)  # type: ignore[arg-type]
            raise

    def _bind(self, values: Mapping[str, torch.Tensor]) -> None:
        program = self.exported_program
        for fqn, tensor in values.items():
            if fqn in program.state_dict:
                program.state_dict[fqn] = tensor
            else:
                program.constants[fqn] = tensor
        for key, artifact in self.artifacts.items():
            bindings = artifact.constant_bindings
            changed = {name: values[fqn] for name, fqn in bindings if fqn in values}
            if changed:
                constants = {name: current_weight(program, fqn) for name, fqn in bindings}
                runtime = get_runtime(artifact.backend_id)
                self._runners[key] = runtime.rebind(
                    self._runners[key], artifact, changed, constants
                )
        # The executor binds its weights into generated code (and graphs record their
        # addresses): regenerate it.
        self._executor = self._make_executor(self._executor.check_inputs)

    def _make_executor(self, check_inputs: bool) -> ProgramExecutor:
        executor = ProgramExecutor(
            self.exported_program,
            self._runners,
            check_inputs=check_inputs,
            cuda_graphs=self._graph_options,
            unrecordable=unrecordable_regions(self.artifacts, self._recordable),
        )
        own_class = type(self)  # not the program: the executor must not keep it alive

        def install(call: Any) -> None:
            own_class.__call__ = staticmethod(call)  # type: ignore[method-assign]

        executor.on_new_call = install
        install(executor._call)
        return executor

    @property
    def cuda_graphs(self) -> CUDAGraphRunner | None:
        """The CUDA-graph runner (segments, ``stats()``, ``pool_bytes()``), or None when off."""
        return self._executor.graphs

    @property
    def partitions(self) -> list[RegionSummary]:
        """One record per region: name, backend, nodes, ops, input/output counts, owned state."""
        return self.summary.regions

    @property
    def check_inputs(self) -> bool:
        """Whether inputs are checked before each call. Turning this off is unsafe: a
        compiled region trusts its inputs (see the Debugging guide)."""
        return self._executor.check_inputs

    @check_inputs.setter
    def check_inputs(self, value: bool) -> None:
        self._executor.check_inputs = bool(value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Each program's own class replaces this with the generated entry (see __init__);
        # this serves only a program caught half-built.
        return self._executor._call(*args, **kwargs)

    def profile(
        self, *args: Any, runs: int = 10, trace: bool = False, **kwargs: Any
    ) -> ProfileReport:
        """Per-node and per-region times and counts over `runs` calls (printable table).

        The nodes' times add up to the call (one clock read per node). With
        `trace=True`, regions and ops also appear as ``fxdelegate::<region>-<backend>``
        ranges in ``torch.profiler`` traces, at several microseconds per range.
        """
        return self._executor.profile(args, kwargs, runs=runs, trace=trace)

    def compare(
        self, *args: Any, rtol: float = 1e-3, atol: float = 1e-5, **kwargs: Any
    ) -> ComparisonReport:
        """Run one call and say which region is wrong, if any.

        At each delegate node the compiled region and the region's own graph
        (run eagerly) get the same inputs, so each region's error is its own;
        every region and executor op is also compared with the original program
        run eagerly, and so are the final outputs. The program's buffers are not
        changed. A loaded program needs its regions' graphs: save it with
        ``keep_region_programs=True``. `rtol`/`atol` are the report's default
        tolerance (:meth:`ComparisonReport.first_divergence` takes others).
        """
        inputs = self._executor.graph_inputs(args, kwargs)
        with self._executor.call_lock:  # compiled regions must not be entered twice
            return compare_program(
                self.exported_program,
                self._runners,
                inputs,
                self._region_program,
                lambda artifact: bound_constants(self.exported_program, artifact, "the program"),
                rtol=rtol,
                atol=atol,
            )

    def _region_program(self, key: str) -> tuple[ExportedProgram, RegionArtifact]:
        artifact = self.artifacts.get(key)
        if artifact is None:
            raise RegionProgramMissingError(f"the program has no region {key!r}")
        if artifact.program is None:
            raise RegionProgramMissingError(
                f"region {key}: its own graph is not in this program (an archive keeps a "
                f"'{artifact.backend_id}' region's compiled code only). Compare the program "
                "fxdelegate.lower returns, or save it with "
                "prog.save(path, keep_region_programs=True) and load that archive"
            )
        return artifact.program, artifact

    def report(self) -> str:
        """A readable table: regions, every op left in the executor with the reason,
        and whether CUDA graphs are on (their segments, and why any node is not recorded)."""
        graphs = self.cuda_graphs
        section = (
            format_report(graphs) if graphs is not None else describe_off(self.exported_program)
        )
        return self.summary.format() + "\n\n" + section

    def save(self, path: str | os.PathLike[str], *, keep_region_programs: bool = False) -> None:
        """Write a self-contained .pt2 that `fxdelegate.load` runs without compiling.

        `keep_region_programs` also stores each region's own graph (its weights
        are the program's, stored once), so that the loaded program can
        :meth:`compare` its regions.
        """
        write_archive(
            path,
            self.exported_program,
            list(self.artifacts.values()),
            {"summary": self.summary.to_dict()},
            keep_region_programs=keep_region_programs,
        )

    def draw(self, path: str | os.PathLike[str], *, collapse: bool | None = None) -> str:
        """Picture of the partition (.dot/.svg/.png/.pdf/.html; all but .dot need graphviz)."""
        from fxdelegate.partitioner.graph_picture import render

        if self.summary.graph is None:
            raise FxDelegateError("this program carries no graph snapshot to draw")
        return render(self.summary.graph, path, collapse=collapse, title=self.summary.headline())

    @property
    def generated_code(self) -> str:
        """Source of the straight-line function each call runs."""
        return self._executor.entry_source or self._executor.plan.source

    def __repr__(self) -> str:
        return (
            f"DelegatedProgram({len(self.summary.regions)} region(s) on '{self.summary.backend_id}', "
            f"{self.summary.executor_compute_nodes} executor op(s))"
        )
