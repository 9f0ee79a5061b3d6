"""Which region or executor op is wrong: a per-step numerics bisect of one call.

Two walks over the parent graph, node by node, on the same inputs and from the
same random-generator state:

* the *eager* walk runs every op as its ``OpOverload`` and every delegate node
  through its region's own graph (the reference backend, which shares nothing
  with the executor's fast path), so it computes what the original program does;
* the *delegated* walk runs what the program runs: the compiled regions, and
  each executor op through the callee the executor's generated code uses (a
  Python binding where one was proven equal). At each step it also runs the
  eager way on the very same inputs and random state.

Each step is then judged twice: *local* error (what the program ran vs the eager
way on identical inputs, so an error upstream does not smear into it) and
*drift* (its outputs vs the eager walk's, which accumulates everything before
it). A region's local error is judged by a tolerance; an executor op's must be
zero, since its fast path claims the very kernel the op runs. Nothing the
program owns is changed: buffers and inputs that a region may write are copied.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch._ops import OpOverload
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from fxdelegate.partitioner.op_support import describe_target
from fxdelegate.text_table import format_table

from ..backend import RegionArtifact, Runner, get_runtime
from ..codegen.plan import op_callee
from ..lowered_module import delegate_key


@dataclass
class ValueDifference:
    """How far one computed value is from its reference (tensors elementwise)."""

    label: str  # "out[0]", "buffer bn.running_mean", "input 1 (written)"
    max_abs: float
    max_rel: float  # over elements whose reference is not zero
    # |actual - reference| and |reference|, kept to judge any tolerance later;
    # None when the values are not tensors (compared for equality: max_abs 0 or inf).
    abs_error: torch.Tensor | None = field(default=None, repr=False)
    abs_reference: torch.Tensor | None = field(default=None, repr=False)

    def within(self, rtol: float, atol: float) -> bool:
        """True when every element satisfies |actual - reference| <= atol + rtol * |reference|."""
        if self.abs_error is None or self.abs_reference is None:
            return self.max_abs == 0.0
        if self.abs_error.numel() == 0:
            return True
        bad = self.abs_error > atol + rtol * self.abs_reference
        bad |= torch.isnan(self.abs_error)
        return not bool(bad.any())


@dataclass
class ComparedStep:
    """One delegate call or executor op, in execution order."""

    step: int
    node: str  # the parent graph's node
    kind: str  # "region" or "executor"
    name: str  # region key ("region_2-aoti") or op ("aten.gelu.default")
    # What the program ran vs the eager way on the same inputs: a region's compiled
    # code vs its own graph, an executor op's callee vs its OpOverload (None for
    # steps with no fast path, such as Python builtins).
    local: list[ValueDifference] | None
    # Outputs vs the eager walk (the original program), everything upstream included.
    drift: list[ValueDifference]

    def __str__(self) -> str:
        head = f"{self.name} (node {self.node}, step {self.step}): "
        worst = self.worst("local" if self.kind == "region" else "drift")
        if worst is None:
            return head + "no outputs"
        return head + f"{worst.label} max abs {_num(worst.max_abs)}, max rel {_num(worst.max_rel)}"

    def worst(self, which: str = "local") -> ValueDifference | None:
        values = (self.local or []) if which == "local" else self.drift
        return max(values, key=lambda d: (d.max_abs, d.max_rel), default=None)

    def within(self, rtol: float, atol: float, which: str = "local") -> bool:
        """Within tolerance; an executor op's local error only when it is exactly zero."""
        if which == "local" and self.kind == "executor":
            rtol = atol = 0.0
        values = (self.local or []) if which == "local" else self.drift
        return all(d.within(rtol, atol) for d in values)


@dataclass
class ComparisonReport:
    """Per region and per executor op errors of one call, and the final outputs.

    ``print(report)`` gives a table; :meth:`first_divergence` names the earliest
    step that disagrees with the eager way on its own inputs: a region beyond a
    tolerance, an executor op by any difference.
    """

    steps: list[ComparedStep]
    # Final outputs (user outputs and buffer write-backs) vs the original program.
    outputs: list[ValueDifference]
    rtol: float = 1e-3
    atol: float = 1e-5

    @property
    def regions(self) -> list[ComparedStep]:
        return [s for s in self.steps if s.kind == "region"]

    def first_divergence(self, rtol: float | None = None, atol: float | None = None):
        """The earliest step (in execution order) whose local error is past tolerance
        (an executor op's: not zero), or None when every step agrees."""
        rtol, atol = self._tolerance(rtol, atol)
        for step in self.steps:
            if step.local is not None and not step.within(rtol, atol):
                return step
        return None

    def outputs_match(self, rtol: float | None = None, atol: float | None = None) -> bool:
        rtol, atol = self._tolerance(rtol, atol)
        return all(d.within(rtol, atol) for d in self.outputs)

    def _tolerance(self, rtol: float | None, atol: float | None) -> tuple[float, float]:
        return (self.rtol if rtol is None else rtol, self.atol if atol is None else atol)

    def __str__(self) -> str:
        return self.format()

    def format(self, rtol: float | None = None, atol: float | None = None) -> str:
        rtol, atol = self._tolerance(rtol, atol)
        rows = [["step", "node", "what", "local max abs", "local max rel", "drift max abs", "ok"]]
        for s in self.steps:
            local, drift = s.worst("local"), s.worst("drift")
            rows.append(
                [
                    str(s.step),
                    s.node,
                    s.name,
                    _num(local.max_abs) if local else "-",
                    _num(local.max_rel) if local else "-",
                    _num(drift.max_abs) if drift else "-",
                    ("yes" if s.within(rtol, atol) else "NO") if s.local is not None else "",
                ]
            )
        lines = [
            f"Per-step comparison (rtol={rtol:g}, atol={atol:g} for regions, exact for executor "
            "ops; local: what the program ran vs the eager way on the same inputs; drift: vs "
            "the original program)"
        ]
        lines += format_table(rows)
        lines += ["", "Final outputs vs the original program"]
        rows = [["output", "max abs", "max rel", "ok"]]
        for d in self.outputs:
            rows.append(
                [d.label, _num(d.max_abs), _num(d.max_rel), "yes" if d.within(rtol, atol) else "NO"]
            )
        lines += format_table(rows)
        first = self.first_divergence(rtol, atol)
        lines.append("")
        if first is None:
            ops = sum(1 for s in self.steps if s.kind == "executor" and s.local is not None)
            lines.append(
                f"Every region is within tolerance ({len(self.regions)} compared), and every "
                f"executor op matches its eager call exactly ({ops} compared)."
            )
        else:
            lines.append(f"First divergence: {first}")
        return "\n".join(lines)


RegionPrograms = Callable[[str], tuple[ExportedProgram, RegionArtifact]]


def compare_program(
    program: ExportedProgram,
    runners: Mapping[str, Runner],
    placeholders: list[Any],
    region_program: RegionPrograms,
    constants_of: Callable[[RegionArtifact], dict[str, torch.Tensor]],
    *,
    rtol: float = 1e-3,
    atol: float = 1e-5,
) -> ComparisonReport:
    """Compare one call of `program` (a delegated parent graph) region by region.

    `placeholders`: a value for every placeholder of the graph, in order.
    `region_program(key)`: the region's own program and its artifact; it raises
    when the program is not available. `constants_of(artifact)`: the weights the
    region binds, by their names inside it.
    """
    eager_runners: dict[str, Runner] = {}

    def eager_runner(key: str) -> Runner:
        # Loaded right before each use: regions of one structure share a program,
        # which holds whichever region's weights were bound last.
        region, artifact = region_program(key)
        reference = RegionArtifact(key, "reference", program=region)
        return get_runtime("reference").load(reference, constants_of(artifact))

    delegate = torch.ops.higher_order.executorch_call_delegate
    graph_module = program.graph_module
    for node in program.graph.nodes:  # fail before running anything
        if node.op == "call_function" and node.target is delegate:
            region_program(delegate_key(node.args[0], graph_module))
    mutable = _writable_placeholders(program)

    def fresh_inputs() -> list[Any]:
        return [
            v.clone() if i in mutable and isinstance(v, torch.Tensor) else v
            for i, v in enumerate(placeholders)
        ]

    # The eager walk: what the original program computes. Both walks run the same
    # graph, so its nodes key both walks' values, and they start from one random state.
    def run_eager(node: torch.fx.Node, inputs: list[Any]) -> list[Any]:
        key = delegate_key(node.args[0], graph_module)
        if key not in eager_runners:
            eager_runners[key] = eager_runner(key)
        return eager_runners[key](inputs)

    start = _random_state()
    eager = _Walk(graph_module, run_eager)
    eager_outputs = eager.run(*fresh_inputs())
    reference_values = eager.env
    _set_random_state(start)

    steps: list[ComparedStep] = []

    def run_compiled(node: torch.fx.Node, inputs: list[Any]) -> list[Any]:
        key = delegate_key(node.args[0], graph_module)
        expected_inputs = _copies(inputs)
        actual, expected = _alike(
            lambda: list(runners[key](inputs)), lambda: eager_runner(key)(expected_inputs)
        )
        local = _differences(actual, expected, "out")
        # Inputs a region writes in place must be written alike.
        for i, (before, after) in enumerate(zip(inputs, expected_inputs)):
            if isinstance(before, torch.Tensor) and before is not after:
                if not torch.equal(before, after):
                    local += _differences([before], [after], f"input {i} (written)")
        steps.append(ComparedStep(len(steps), node.name, "region", key, local, []))
        return actual

    def run_op(node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
        callee = op_callee(node)
        actual, expected = _alike(
            lambda: callee(*args, **kwargs), lambda: node.target(*args, **kwargs)
        )
        local = _differences([actual], [expected], "out")
        name = describe_target(node.target)
        steps.append(ComparedStep(len(steps), node.name, "executor", name, local, []))
        return actual

    walk = _Walk(graph_module, run_compiled, run_op)

    def after_node(node: torch.fx.Node, value: Any) -> None:
        if node.op != "call_function" or _is_delegate_getitem(node, delegate):
            return
        expected = reference_values[node]
        if node.target is delegate:
            steps[-1].drift = _differences(list(value), list(expected), "out")
        elif isinstance(node.target, OpOverload):  # run_op has just added its step
            steps[-1].drift = _differences([value], [expected], "out")
        else:
            steps.append(
                ComparedStep(
                    len(steps),
                    node.name,
                    "executor",
                    describe_target(node.target),
                    None,
                    _differences([value], [expected], "out"),
                )
            )

    walk.after_node = after_node
    outputs = walk.run(*fresh_inputs())
    labels = _output_labels(program)
    finals = [
        d
        for label, actual, expected in zip(labels, outputs, eager_outputs)
        for d in _differences([actual], [expected], label)
    ]
    return ComparisonReport(steps, finals, rtol, atol)


class _Walk(torch.fx.Interpreter):
    """Runs a parent graph node by node: delegate nodes through `run_region`, ATen
    ops through `run_op` when given (else as their OpOverload)."""

    def __init__(
        self,
        graph_module: torch.fx.GraphModule,
        run_region: Callable[[torch.fx.Node, list[Any]], list[Any]],
        run_op: Callable[[torch.fx.Node, tuple, dict], Any] | None = None,
    ) -> None:
        super().__init__(graph_module, garbage_collect_values=False)
        self.run_region = run_region
        self.run_op = run_op
        self.after_node: Callable[[torch.fx.Node, Any], None] | None = None

    def run_node(self, n: torch.fx.Node) -> Any:
        if n.op == "call_function" and n.target is torch.ops.higher_order.executorch_call_delegate:
            with self._set_current_node(n):
                args, _ = self.fetch_args_kwargs_from_env(n)
                value = self.run_region(n, list(args[1:]))
        elif n.op == "call_function" and self.run_op and isinstance(n.target, OpOverload):
            with self._set_current_node(n):
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                value = self.run_op(n, args, kwargs)
        else:
            value = super().run_node(n)
        if self.after_node is not None:
            self.after_node(n, value)
        return value

    def run(self, *args: Any) -> Any:  # type: ignore[override]
        return super().run(*args, enable_io_processing=False)


def _random_state() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_random_state(state: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def _alike(run: Callable[[], Any], eager: Callable[[], Any]) -> tuple[Any, Any]:
    """`run()` and `eager()` from the same random state (a random op must draw the
    same numbers both ways), leaving the state where `run` left it."""
    start = _random_state()
    actual = run()
    end = _random_state()
    _set_random_state(start)
    try:
        expected = eager()
    finally:
        _set_random_state(end)
    return actual, expected


def _is_delegate_getitem(node: torch.fx.Node, delegate: object) -> bool:
    source = node.args[0] if node.args else None
    return isinstance(source, torch.fx.Node) and source.target is delegate


def _copies(values: list[Any]) -> list[Any]:
    return [v.clone() if isinstance(v, torch.Tensor) else v for v in values]


def _writable_placeholders(program: ExportedProgram) -> set[int]:
    """Placeholders a call may write: buffers and user inputs (parameters are read-only)."""
    written = {
        spec.target
        for spec in program.graph_signature.output_specs
        if spec.kind in (OutputKind.BUFFER_MUTATION, OutputKind.USER_INPUT_MUTATION)
    }
    return {
        i
        for i, spec in enumerate(program.graph_signature.input_specs)
        if spec.kind in (InputKind.BUFFER, InputKind.USER_INPUT) or spec.target in written
    }


def _output_labels(program: ExportedProgram) -> list[str]:
    labels, user = [], 0
    for spec in program.graph_signature.output_specs:
        if spec.kind == OutputKind.USER_OUTPUT:
            labels.append(f"output {user}")
            user += 1
        else:
            labels.append(f"{spec.kind.name.lower().replace('_', ' ')} {spec.target}")
    return labels


def _differences(actual: list[Any], expected: list[Any], label: str) -> list[ValueDifference]:
    """One entry per tensor (or other leaf) of `actual`, compared with `expected`."""
    flat_actual, spec_actual = pytree.tree_flatten(actual)
    flat_expected, spec_expected = pytree.tree_flatten(expected)
    if spec_actual != spec_expected:
        return [ValueDifference(f"{label} (structure differs)", math.inf, math.inf)]
    multi = len(flat_actual) > 1
    return [
        _difference(a, e, f"{label}[{i}]" if multi or label == "out" else label)
        for i, (a, e) in enumerate(zip(flat_actual, flat_expected))
    ]


def _difference(actual: Any, expected: Any, label: str) -> ValueDifference:
    if not isinstance(actual, torch.Tensor) or not isinstance(expected, torch.Tensor):
        same = actual == expected or (actual is None and expected is None)
        return ValueDifference(label, 0.0 if same else math.inf, 0.0 if same else math.inf)
    if actual.shape != expected.shape:
        return ValueDifference(
            f"{label} (shape {tuple(actual.shape)} vs {tuple(expected.shape)})", math.inf, math.inf
        )
    a, e = actual.detach().cpu(), expected.detach().cpu()
    if a.dtype == torch.bool or e.dtype == torch.bool:
        error = (a != e).to(torch.float64)
        reference = torch.zeros_like(error)
    else:
        wide = torch.complex128 if a.is_complex() or e.is_complex() else torch.float64
        a, e = a.to(wide), e.to(wide)
        # Infinities and NaNs in the same places agree.
        same = (a == e) | (torch.isnan(a) & torch.isnan(e))
        error = torch.where(same, 0.0, (a - e).abs())
        reference = e.abs().nan_to_num(nan=0.0)
    error, reference = error.to(torch.float32), reference.to(torch.float32)
    max_abs = float(error.max()) if error.numel() else 0.0
    nonzero = reference > 0
    max_rel = float((error[nonzero] / reference[nonzero]).max()) if bool(nonzero.any()) else 0.0
    if max_abs and not bool(nonzero.any()):
        max_rel = math.inf
    return ValueDifference(label, max_abs, max_rel, error, reference)


def _num(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else str(value)
