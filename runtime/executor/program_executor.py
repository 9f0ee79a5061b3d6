"""The graph executor: runs a (partly delegated) ExportedProgram serially.

Everything that can be decided once is decided at construction: where each
placeholder's value comes from, which outputs write back into buffers or
user inputs, the input checks, and two pieces of generated code (see
:mod:`..codegen.plan` and :mod:`.entry`):

* the *entry*, which is the whole call with pytree unpacking and input checks
  inlined. This is what ``executor(*args, **kwargs)`` runs;
* the *flat plan*, ``run_graph(list) -> tuple``. It serves :meth:`run_flat`,
  the generic path that the entry falls back to for detailed errors.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import sympy
import torch
import torch.utils._pytree as pytree
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from fxdelegate.errors import InputMismatchError, UnsupportedProgramError

from ..backend import Runner
from ..codegen.plan import GraphPlan, NodeTimes, build_plan
from ..cuda_graphs.cuda_graph_options import CUDAGraphOptions
from ..cuda_graphs.cuda_graph_runner import CUDAGraphRunner
from ..debug.profile import ProfileReport
from .entry import NoFastPath, build_entry
from .input_check import InputChecker


def describe_spec(spec: pytree.TreeSpec) -> str:
    """A treespec as Python-looking structure with `*` for each leaf."""
    return repr(pytree.tree_unflatten([_Leaf()] * spec.num_leaves, spec))


class _Leaf:
    def __repr__(self) -> str:
        return "*"


def input_paths(in_spec: pytree.TreeSpec) -> list[str]:
    """Readable names of the flat inputs: args[0], kwargs['mask'], args[1]['z'][0]..."""
    tree = pytree.tree_unflatten(list(range(in_spec.num_leaves)), in_spec)
    paths = []
    for path, _ in pytree.tree_flatten_with_path(tree)[0]:
        head, rest = path[0], path[1:]
        prefix = "args" if getattr(head, "idx", None) == 0 else "kwargs"
        if prefix == "kwargs" and rest and isinstance(rest[0], pytree.MappingKey):
            paths.append(f"kwargs[{rest[0].key!r}]" + pytree.keystr(rest[1:]))
        else:
            paths.append(prefix + pytree.keystr(rest))
    return paths


def _conform(value: Any, expected: Any) -> Any:
    """`value` with each dict's keys put in the order `expected` has them."""
    if type(expected) is dict and type(value) is dict and value.keys() == expected.keys():
        return {k: _conform(value[k], expected[k]) for k in expected}
    if (
        type(expected) in (tuple, list)
        and type(value) is type(expected)
        and len(value) == len(expected)
    ):
        return type(value)(_conform(v, e) for v, e in zip(value, expected))
    return value


def _inputs_needing_contiguity(
    program: ExportedProgram, sources: list[tuple[str, Any]]
) -> frozenset[int]:
    """User inputs that feed a delegate and were exported contiguous: compiled code
    indexes them as contiguous, so a strided caller tensor must be made so first."""
    delegate = torch.ops.higher_order.executorch_call_delegate
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    chosen = set()
    for node, (kind, source) in zip(placeholders, sources):
        if kind != "user" or not any(u.target is delegate for u in node.users):
            continue
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and _exported_contiguous(val):
            chosen.add(source)
    return frozenset(chosen)


def _exported_contiguous(val: torch.Tensor) -> bool:
    def expr(v: Any) -> sympy.Expr:
        return v.node.expr if isinstance(v, torch.SymInt) else sympy.Integer(int(v))

    expected: sympy.Expr = sympy.Integer(1)
    for size, stride in zip(reversed(val.shape), reversed(val.stride())):
        size_e = expr(size)
        if size_e != 1 and sympy.simplify(expr(stride) - expected) != 0:
            return False
        expected = expected * size_e
    return True


def _call_specs(program: ExportedProgram) -> tuple[pytree.TreeSpec, pytree.TreeSpec]:
    """``program.call_spec``, read from the root module call entry directly: the
    property defines a NamedTuple class on every read, which costs more than the
    rest of setting up a small region's runner."""
    entries = program.module_call_graph
    if entries and entries[0].fqn == "" and entries[0].signature is not None:
        return entries[0].signature.in_spec, entries[0].signature.out_spec
    spec = program.call_spec
    return spec.in_spec, spec.out_spec


class ProgramExecutor:
    """Callable that runs `program` with the same pytree interface as ``program.module()``."""

    def __init__(
        self,
        program: ExportedProgram,
        runners: Mapping[str, Runner] | None = None,
        *,
        check_inputs: bool = True,
        cuda_graphs: CUDAGraphOptions | None = None,
        unrecordable: Mapping[str, str] | None = None,
    ) -> None:
        """`cuda_graphs` turns on recording (see :mod:`..cuda_graphs`); `unrecordable`
        maps the regions a CUDA graph cannot record to the reason."""
        self.program = program
        self.runners = dict(runners or {})
        self.in_spec, self.out_spec = _call_specs(program)
        sig = program.graph_signature
        placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != len(sig.input_specs):
            raise UnsupportedProgramError(
                f"graph has {len(placeholders)} placeholders but the signature lists "
                f"{len(sig.input_specs)} inputs"
            )

        # Where each placeholder's value comes from: the program's own state, or the user.
        self._sources: list[tuple[str, Any]] = []
        self._user_index_of_input: dict[str, int] = {}
        user_vals = []
        for node, spec in zip(placeholders, sig.input_specs):
            if spec.kind == InputKind.USER_INPUT:
                self._user_index_of_input[node.name] = len(user_vals)
                self._sources.append(("user", len(user_vals)))
                user_vals.append(node.meta.get("val"))
            else:
                self._sources.append(("state", self._state_value(spec)))
        n_user = len(user_vals)
        if self.in_spec.num_leaves != n_user:
            raise UnsupportedProgramError(
                f"input treespec has {self.in_spec.num_leaves} leaves but the program has "
                f"{n_user} user inputs"
            )
        self.input_names = input_paths(self.in_spec)
        self._structure = pytree.tree_unflatten([None] * n_user, self.in_spec)
        structure = self._structure
        self._kwarg_names: list[str] = (
            list(structure[1]) if isinstance(structure, tuple) and len(structure) == 2 else []
        )
        self.checker = InputChecker.from_placeholders(
            self.input_names, user_vals, program.range_constraints
        )

        # Outputs: write-backs first (buffers, user inputs), then the user's outputs.
        self._write_back: list[tuple[int, str, Any]] = []
        self._user_outputs: list[int] = []
        for pos, spec in enumerate(sig.output_specs):
            if spec.kind == OutputKind.USER_OUTPUT:
                self._user_outputs.append(pos)
            elif spec.kind == OutputKind.BUFFER_MUTATION:
                self._write_back.append((pos, "state", self._buffer(spec.target)))
            elif spec.kind == OutputKind.USER_INPUT_MUTATION:
                self._write_back.append((pos, "user", self._user_index_of_input[spec.target]))
            else:
                raise UnsupportedProgramError(
                    f"output kind {spec.kind.name} is not supported by the executor"
                )

        self._contiguous_inputs = _inputs_needing_contiguity(program, self._sources)
        self.plan: GraphPlan = build_plan(program.graph, self.runners, owner=program.graph_module)
        # One call at a time: compiled regions run in single-threaded containers
        # (and recorded graphs own their buffers), which must not be entered twice.
        self.call_lock = threading.Lock()
        self.graphs: CUDAGraphRunner | None = None
        if cuda_graphs is not None:
            self.graphs = CUDAGraphRunner(
                program,
                self.runners,
                sources=self._sources,
                write_backs=self._write_back,
                user_outputs=self._user_outputs,
                contiguous_inputs=self._contiguous_inputs,
                options=cuda_graphs,
                unrecordable=unrecordable or {},
                lock=self.call_lock,
            )
        self._entries: dict[tuple[bool, bool], Any] = {}
        self._lock = threading.Lock()
        # Told the new call function whenever it changes (the program installs it).
        self.on_new_call: Callable[[Callable[..., Any]], None] | None = None
        self.check_inputs = check_inputs

    def _state_value(self, spec) -> Any:
        target = spec.target
        if spec.kind == InputKind.PARAMETER:
            return self.program.state_dict[target]
        if spec.kind == InputKind.BUFFER:
            return self._buffer(target)
        if spec.kind in (InputKind.CONSTANT_TENSOR, InputKind.CUSTOM_OBJ):
            return self.program.constants[target]
        raise UnsupportedProgramError(
            f"input kind {spec.kind.name} ({spec.arg}) is not supported by the executor"
        )

    def _buffer(self, target: str) -> torch.Tensor:
        if target in self.program.state_dict:
            return self.program.state_dict[target]
        return self.program.constants[target]

    # -- the fast path -------------------------------------------------------------

    @property
    def check_inputs(self) -> bool:
        return self._check_inputs

    @check_inputs.setter
    def check_inputs(self, value: bool) -> None:
        self._check_inputs = bool(value)
        self._set_call(self._entry(self._check_inputs))

    def _set_call(self, fn: Callable[..., Any]) -> None:
        self._call = fn
        if self.on_new_call is not None:
            self.on_new_call(fn)

    def _entry(self, checked: bool, instrument: bool = False) -> Any:
        """The generated call (cached per checking mode), or the generic one."""
        key = (checked, instrument)
        with self._lock:
            if key not in self._entries:
                self._entries[key] = self._generate(checked, instrument)
            return self._entries[key][0]

    def _generate(
        self, checked: bool, instrument: bool, trace: bool = False
    ) -> tuple[Any, str, NodeTimes | None]:
        try:
            return build_entry(
                self.program.graph,
                self.program.graph_module,
                self.runners,
                in_spec=self.in_spec,
                out_spec=self.out_spec,
                placeholder_sources=self._sources,
                write_backs=self._write_back,
                user_outputs=self._user_outputs,
                checker=self.checker if checked else None,
                contiguous_inputs=self._contiguous_inputs,
                slow=self._generic_call,
                instrument=instrument,
                trace=trace,
                graphs=None if instrument else self.graphs,
                lock=self.call_lock if instrument or self.graphs is None else None,
            )
        except NoFastPath:
            if instrument:
                raise
            return self._generic_call_star, "", None

    @property
    def entry_source(self) -> str:
        """Source of the generated call (empty when the program has no fast path)."""
        self._entry(self._check_inputs)
        return self._entries[(self._check_inputs, False)][1]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    # -- the generic path ------------------------------------------------------------

    def _generic_call_star(self, *args: Any, **kwargs: Any) -> Any:
        return self._generic_call(args, kwargs)

    def _generic_call(self, args: tuple, kwargs: dict) -> Any:
        flat = self.flatten_inputs(args, kwargs)
        return pytree.tree_unflatten(self.run_flat(flat), self.out_spec)

    def flatten_inputs(self, args: tuple, kwargs: dict) -> list[Any]:
        if kwargs:
            expected = self._kwarg_names
            unknown = set(kwargs) - set(expected)
            if unknown:
                raise InputMismatchError(
                    f"unexpected keyword argument(s) {sorted(unknown)}; the program takes {expected}"
                )
            kwargs = {k: kwargs[k] for k in expected if k in kwargs}
        # Dicts may come with their keys in any order (by-key access is unambiguous).
        flat, spec = pytree.tree_flatten(_conform((args, kwargs), self._structure))
        if spec != self.in_spec:
            raise InputMismatchError(
                f"inputs are structured as {describe_spec(spec)}, but the program was exported "
                f"for {describe_spec(self.in_spec)} (args, kwargs)"
            )
        return flat

    def graph_inputs(self, args: tuple, kwargs: dict) -> list[Any]:
        """A value for every placeholder of the graph, from a pytree call's inputs
        (checked when the executor checks inputs)."""
        flat = self.flatten_inputs(args, kwargs)
        if self._check_inputs:
            self.checker.check(flat)
        return self._placeholder_values(flat)

    def _placeholder_values(self, flat: list[Any]) -> list[Any]:
        contiguous = self._contiguous_inputs
        return [
            source
            if kind == "state"
            else (flat[source].contiguous() if source in contiguous else flat[source])
            for kind, source in self._sources
        ]

    def run_flat(self, flat: list[Any]) -> list[Any]:
        """Run on flat user inputs; returns flat user outputs after applying write-backs."""
        if self._check_inputs:
            self.checker.check(flat)
        if self.graphs is not None:
            return self.graphs(flat)
        inputs = self._placeholder_values(flat)
        with self.call_lock:
            outs = self.plan.fn(inputs)
            for pos, kind, where in self._write_back:
                target = where if kind == "state" else flat[where]
                target.copy_(outs[pos])
        return [outs[i] for i in self._user_outputs]

    # -- profiling -----------------------------------------------------------------

    def profile(
        self, args: tuple, kwargs: dict, runs: int = 10, trace: bool = False
    ) -> ProfileReport:
        """Time every node over `runs` calls (after a warm-up call each way).

        Each node's time is read from the clock the generated code reads after
        every statement, so the nodes add up to the call; unprofiled calls are
        timed alongside for comparison. With `trace`, every node also runs in a
        ``torch.profiler.record_function`` range, for Chrome traces; the ranges
        cost several microseconds each, so those timings are not the program's.
        Graphs are not used while profiling: the nodes run one by one.
        """
        with self._lock:
            fn, _, times = self._generate(self._check_inputs, instrument=True, trace=trace)
        assert times is not None
        plain = self._call
        fn(*args, **kwargs)
        plain(*args, **kwargs)
        times.reset()
        profiled_ns = plain_ns = 0
        for _ in range(runs):  # alternated, so that machine noise hits both alike
            start = time.perf_counter_ns()
            fn(*args, **kwargs)
            profiled_ns += time.perf_counter_ns() - start
            start = time.perf_counter_ns()
            plain(*args, **kwargs)
            plain_ns += time.perf_counter_ns() - start
        return ProfileReport.from_times(times, profiled_ns, plain_ns, runs)
