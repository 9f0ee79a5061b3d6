"""Run cases every way fxdelegate runs programs, and judge each against
``ep.module()`` on the same inputs, from the same random state.

Cases are exported together, side by side in one program (:class:`Batch`):
one export, one lowering and one compile serve many cases (export and compile
costs are mostly per program), and each case is still judged on its own
outputs. When a group fails as a whole (export, lowering, save), its cases are
run one by one, so the failure is charged to the case that causes it.

* ``executor``: every op pinned to the executor (its generated code, its op
  bindings): bit for bit.
* ``reference``: regions on the reference backend, bit for bit; ``save/load``:
  that program saved and loaded again, bit for bit.
* ``aoti`` (``cuda``, ``cuda_graphs``): regions compiled by AOTInductor, within
  inductor's own OpInfo tolerances; a region that fails to compile is an
  error, never a silent fallback.

A case whose outputs differ between two eager runs on the same inputs and seed
(``empty_like``, ops OpInfo marks nondeterministic) has undefined values: only
its structure, shapes and dtypes are compared.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.fx.passes.operator_support import OperatorSupportBase

import fxdelegate

from .cases import REDUCED, Case, quiet

SEED = 1234

# Inductor's own OpInfo sweep compares float32 at these tolerances, and other
# dtypes at torch.testing's defaults, reduced precision against the op computed
# in float32 (see `tolerance` and `_judge`).
FLOAT32_TOLERANCE = (1.3e-5, 1.5e-5)


@dataclass
class Outcome:
    path: str  # "export", "executor", "reference", "save/load", "aoti", "cuda", "cuda_graphs"
    status: str  # "agree", "values undefined", "differ", "error", "excluded"
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("differ", "error")

    def __str__(self) -> str:
        return f"{self.path}: {self.status}" + (f" ({self.detail})" if self.detail else "")


Outcomes = dict[str, list[Outcome]]  # case id -> its outcomes


class NoOps(OperatorSupportBase):
    """A backend that takes nothing: every op stays in the executor."""

    def is_node_supported(self, submodules, node) -> bool:  # type: ignore[override]
        return False


class Batch(torch.nn.Module):
    """Several cases side by side in one program."""

    def __init__(self, cases: list[Case]) -> None:
        super().__init__()
        self.calls = torch.nn.ModuleList(case.module for case in cases)
        self.counts = [len(case.inputs) for case in cases]

    def forward(self, *tensors: torch.Tensor) -> tuple[Any, ...]:
        outputs, start = [], 0
        for call, count in zip(self.calls, self.counts):
            outputs.append(call(*tensors[start : start + count]))
            start += count
        return tuple(outputs)


@dataclass
class Expected:
    """What ``ep.module()`` computes for one case, and whether it does so twice alike."""

    outputs: Any
    inputs_after: tuple[torch.Tensor, ...]
    deterministic: bool


@dataclass
class Group:
    """Cases exported as one program, with what ``ep.module()`` computes for each."""

    cases: list[Case]
    ep: torch.export.ExportedProgram
    expected: list[Expected]

    def run(self, program: Callable[..., Any]) -> tuple[tuple[Any, ...], list[tuple]]:
        """`program` on fresh copies of every case's inputs, from the seed: (outputs per
        case, inputs per case after the call)."""
        fresh = [case.fresh_inputs() for case in self.cases]
        torch.manual_seed(SEED)
        with torch.no_grad(), quiet():
            return program(*(t for group in fresh for t in group)), fresh


def export_group(cases: list[Case]) -> tuple[list[Group], Outcomes]:
    """`cases` exported together. When that fails, each alone: those torch.export
    (or the exported program itself) refuses get an ``export`` exclusion, the rest
    one group again."""
    try:
        return [_exported(cases)], {}
    except Exception as exc:
        if len(cases) == 1:
            reason = "torch.export fails" if isinstance(exc, _ExportFailed) else "ep.module() fails"
            cause = exc.__cause__ or exc
            return [], {
                cases[0].id: [Outcome("export", "excluded", f"{reason}: {_first_line(cause)}")]
            }
    groups, excluded = [], {}
    for case in cases:
        alone, outcome = export_group([case])
        groups += alone
        excluded.update(outcome)
    if len(groups) > 1:
        try:
            groups = [_exported([g.cases[0] for g in groups])]
        except Exception:
            pass  # they export alone but not together: keep them apart
    return groups, excluded


class _ExportFailed(Exception):
    pass


def _exported(cases: list[Case]) -> Group:
    inputs = tuple(t for case in cases for t in case.fresh_inputs())
    try:
        with quiet():
            ep = torch.export.export(Batch(cases), inputs, strict=False)
    except Exception as exc:
        raise _ExportFailed() from exc
    group = Group(cases, ep, [])
    module = ep.module()
    runs = [group.run(module) for _ in range(2)]
    for i, case in enumerate(cases):
        (first, after), (second, _) = (runs[0][0][i], runs[0][1][i]), (runs[1][0][i], None)
        same = difference(first, second, exact=True) is None
        group.expected.append(Expected(first, after, same and not case.nondeterministic))
    return group


def _per_case(group: Group, check: Callable[[Group], Outcomes]) -> Outcomes:
    """`check` on each case of `group` alone (to charge a group failure to its case)."""
    outcomes: Outcomes = {}
    for case in group.cases:
        alone, excluded = export_group([case])
        outcomes.update(excluded)
        for single in alone:
            outcomes.update(check(single))
    return outcomes


# -- the bit-exact paths -----------------------------------------------------------


def check_executor_and_reference(group: Group) -> Outcomes:
    """``executor``, ``reference`` and ``save/load`` outcomes of every case."""
    outcomes: Outcomes = {case.id: [] for case in group.cases}
    for path, run in (("executor", _executor), ("reference", _reference)):
        try:
            result = run(group)
        except Exception as exc:
            if len(group.cases) == 1:
                result = {group.cases[0].id: [Outcome(path, "error", _first_line(exc))]}
            else:
                result = _per_case(group, run)
        for case_id, found in result.items():
            outcomes.setdefault(case_id, []).extend(found)
    return outcomes


def _executor(group: Group) -> Outcomes:
    prog = fxdelegate.lower(group.ep, backend="reference", support=NoOps())
    if prog.partitions:
        raise AssertionError("a region was made though no op is supported")
    return _judged(group, prog, "executor", exact=True)


def _reference(group: Group) -> Outcomes:
    prog = fxdelegate.lower(group.ep, backend="reference", strict=True)
    outcomes = _judged(group, prog, "reference", exact=True)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "cases.pt2")
        try:
            prog.save(path)
            loaded = fxdelegate.load(path)
        except fxdelegate.ArchiveError:
            if len(group.cases) > 1:
                raise  # charged to its case, one by one
            reason = _torch_cannot_save(group.ep)
            if reason is None:
                raise
            case_id = group.cases[0].id
            return {case_id: [*outcomes[case_id], Outcome("save/load", "excluded", reason)]}
        after = _judged(group, loaded, "save/load", exact=True)
    return {case_id: [*outcomes[case_id], *after[case_id]] for case_id in outcomes}


def _torch_cannot_save(ep: torch.export.ExportedProgram) -> str | None:
    """Why torch's own ``torch.export.save`` / ``load`` fails on the program, or None."""
    buffer = io.BytesIO()
    try:
        with quiet():
            torch.export.save(ep, buffer)
            buffer.seek(0)
            torch.export.load(buffer)
    except Exception as exc:
        return f"torch.export.save/load fails on it too ({_first_line(exc)[:90]})"
    return None


def _judged(group: Group, program: Callable[..., Any], path: str, *, exact: bool) -> Outcomes:
    outputs, inputs = group.run(program)
    outcomes: Outcomes = {}
    for i, (case, expected) in enumerate(zip(group.cases, group.expected)):
        problem = _judge(outputs[i], inputs[i], expected, exact=exact)
        if problem:
            outcomes[case.id] = [Outcome(path, "differ", problem)]
        else:
            outcomes[case.id] = [
                Outcome(path, "agree" if expected.deterministic else "values undefined")
            ]
    return outcomes


def _judge(
    outputs: Any,
    inputs: tuple[torch.Tensor, ...],
    expected: Expected,
    *,
    exact: bool,
    name: str = "",
    float_reference: Any = None,
) -> str | None:
    """None when `outputs` (and the inputs after the call) agree with `expected`."""
    values = expected.deterministic
    problem = difference(outputs, expected.outputs, exact=exact, values=values, name=name)
    if problem and float_reference is not None and values:
        # Reduced precision: inductor computes in float32 and rounds once, so its
        # result may be nearer the float32 computation than eager's.
        if difference(outputs, float_reference(), exact=False, name=name) is None:
            problem = None
    if problem:
        return problem
    return difference(
        inputs, expected.inputs_after, exact=exact, values=values, label="input", name=name
    )


# Where inductor's own OpInfo tests accept more than the defaults for a compiled
# op, we do too: (OpInfo name, dtype) -> (rtol, atol).
TOLERANCE_OVERRIDES = {
    # Integer images: the compiled kernel rounds its float arithmetic once, eager's
    # fixed-point kernel differently: off by one.
    ("nn.functional.interpolate.bilinear", torch.uint8): (0.0, 1.0),
    ("nn.functional.upsample_bilinear", torch.uint8): (0.0, 1.0),
    ("nn.functional.interpolate.bicubic", torch.uint8): (0.0, 1.0),
    ("nn.functional.interpolate.bicubic", torch.float32): (0.0, 5e-3),
    # Series evaluated in another order.
    **{(f"polygamma.polygamma_n_{n}", torch.float32): (1e-4, 1e-3) for n in range(5)},
    ("special.polygamma.special_polygamma_n_0", torch.float32): (1e-4, 1e-3),
    # Accumulated with atomic adds in another order (inductor's test allows float16
    # rtol 1e-2; bfloat16 keeps three fewer bits).
    ("_unsafe_masked_index_put_accumulate", torch.bfloat16): (5e-2, 5e-2),
}


def tolerance(dtype: torch.dtype, name: str = "") -> tuple[float, float]:
    if (name, dtype) in TOLERANCE_OVERRIDES:
        return TOLERANCE_OVERRIDES[(name, dtype)]
    if dtype in (torch.float32, torch.complex64):
        return FLOAT32_TOLERANCE
    if dtype in REDUCED or dtype in (torch.float64, torch.complex128):
        return torch.testing._comparison.default_tolerances(dtype)  # type: ignore[attr-defined]
    return (0.0, 0.0)


def difference(
    actual: Any,
    expected: Any,
    *,
    exact: bool,
    values: bool = True,
    label: str = "output",
    name: str = "",
) -> str | None:
    """A description of the first way `actual` differs from `expected`, or None."""
    flat_a, spec_a = pytree.tree_flatten(actual)
    flat_e, spec_e = pytree.tree_flatten(expected)
    if spec_a != spec_e:
        return f"{label} structure {spec_a} vs {spec_e}"
    for i, (a, e) in enumerate(zip(flat_a, flat_e)):
        where = f"{label} {i}"
        if isinstance(a, torch.Tensor) != isinstance(e, torch.Tensor):
            return f"{where}: {type(a).__name__} vs {type(e).__name__}"
        if not isinstance(a, torch.Tensor):
            if values and a != e and not (a != a and e != e):  # NaN scalars agree
                return f"{where}: {a!r} vs {e!r}"
            continue
        if a.dtype != e.dtype or a.shape != e.shape or a.layout != e.layout:
            return (
                f"{where}: {a.dtype} {list(a.shape)} {a.layout} vs "
                f"{e.dtype} {list(e.shape)} {e.layout}"
            )
        if not values:
            continue
        if a.layout != torch.strided:
            a, e = a.to_dense(), e.to_dense()
        rtol, atol = (0.0, 0.0) if exact else tolerance(e.dtype, name)
        try:
            torch.testing.assert_close(a, e, rtol=rtol, atol=atol, equal_nan=True)
        except AssertionError as exc:
            return f"{where}: {_mismatch(exc)}"
    return None


def _mismatch(exc: AssertionError) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    keep = [line for line in lines if line.startswith(("Mismatched", "Greatest"))]
    return "; ".join(keep or lines[:2])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# -- compiled paths ----------------------------------------------------------------


def check_compiled(group: Group, path: str = "aoti", **lower_options: Any) -> Outcomes:
    """The group compiled through AOTInductor as one program (``strict``: a region
    that fails to compile is an error, never a silent fallback), each case judged at
    inductor's tolerances. A group that fails to compile or to run is split in
    halves until the failing cases are alone, each with its error. Each outcome's
    detail says whether the case's op was compiled or kept in the executor (and why)."""
    try:
        with quiet():
            prog = fxdelegate.lower(group.ep, backend="aoti", strict=True, **lower_options)
    except Exception as exc:
        if len(group.cases) == 1:
            return {group.cases[0].id: [_compile_failure(group, path, exc, lower_options)]}
        return _halves(group, path, lower_options)
    try:
        outputs, inputs = group.run(prog)
    except Exception as exc:  # a compiled region that fails when it runs
        if len(group.cases) == 1:
            return {group.cases[0].id: [Outcome(path, "error", _first_line(exc))]}
        return _halves(group, path, lower_options)
    compiled, kept = _placement(group.ep, prog)
    outcomes = {}
    for i, (case, expected) in enumerate(zip(group.cases, group.expected)):
        reference = case.float_reference if case.dtype in REDUCED else None
        problem = _judge(
            outputs[i], inputs[i], expected, exact=False, name=case.name, float_reference=reference
        )
        if problem:
            outcomes[case.id] = [Outcome(path, "differ", problem)]
            continue
        where = "compiled" if i in compiled else "no op"
        if kept.get(i):
            where = ("compiled; " if i in compiled else "") + "in the executor: " + kept[i]
        status = "agree" if expected.deterministic else "values undefined"
        outcomes[case.id] = [Outcome(path, status, where)]
    return outcomes


def _halves(group: Group, path: str, lower_options: Any) -> Outcomes:
    """`check_compiled` on each half of `group`, exported anew."""
    half = len(group.cases) // 2
    outcomes: Outcomes = {}
    for part in (group.cases[:half], group.cases[half:]):
        groups, excluded = export_group(part)
        outcomes.update(excluded)
        for again in groups:
            outcomes.update(check_compiled(again, path, **lower_options))
    return outcomes


def _compile_failure(group: Group, path: str, exc: Exception, lower_options: Any) -> Outcome:
    """One case AOTInductor cannot compile: a backend's limit, not a wrong value,
    provided that without ``strict`` the region stays in the executor, says so with
    a RegionFallbackWarning, and the program still agrees with eager exactly."""
    if not isinstance(exc, fxdelegate.BackendCompileError):
        return Outcome(path, "error", _first_line(exc))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prog = fxdelegate.lower(group.ep, backend="aoti", **lower_options)
    if not any(issubclass(w.category, fxdelegate.RegionFallbackWarning) for w in caught):
        return Outcome(
            path, "error", f"{_first_line(exc)}; no RegionFallbackWarning without strict"
        )
    outcome = _judged(group, prog, path, exact=True)[group.cases[0].id][0]
    if outcome.failed:
        return outcome
    cause = _first_line(exc.__cause__ or exc)
    return Outcome(
        path,
        "excluded",
        f"AOTInductor cannot compile it ({cause[:120]}); "
        "without strict it stays in the executor, with a warning, and agrees",
    )


def _case_index(node: torch.fx.Node) -> int | None:
    """Which case of a Batch a node computes (from the module call it was traced in)."""
    for qualified, _ in (node.meta.get("nn_module_stack") or {}).values():
        parts = qualified.split(".")
        if len(parts) >= 2 and parts[0] == "calls" and parts[1].isdigit():
            return int(parts[1])
    return None


def _placement(ep, prog) -> tuple[set[int], dict[int, str]]:
    """The cases with an op in a compiled region, and per case the ops the executor
    kept, with the report's reason."""
    nodes = {n.name: n for n in ep.graph.nodes}
    compiled = {
        index
        for region in prog.partitions
        for name in region.nodes
        if name in nodes and (index := _case_index(nodes[name])) is not None
    }
    kept: dict[int, list[str]] = {}
    lowered = {n.name: n for n in prog.exported_program.graph.nodes}
    for op in prog.summary.executor_ops:
        node = lowered.get(op.node)
        index = _case_index(node) if node is not None else None
        if index is not None and op.op != "getitem":
            kept.setdefault(index, []).append(f"{op.op} ({op.reason})")
    return compiled, {i: "; ".join(sorted(set(r))) for i, r in kept.items()}
