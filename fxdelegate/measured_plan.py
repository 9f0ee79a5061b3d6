"""``lower(..., plan="measure")``: the compiler decides by timing.

1. The graph is partitioned with the union of the backends' supports: each
   maximal region is a *unit*, cut into blocks and candidate segments
   (:mod:`fxdelegate.partitioner.plan_search`).
2. Each segment is outlined into a program of its own (a ``reference``
   lowering restricted to its nodes), then lowered whole by each backend that
   supports it, once per option variant, and left whole in the executor. The
   candidates are timed side by side on the segment's example inputs
   (:mod:`fxdelegate.partitioner.measurement`). Times are cached by content
   key; a time budget bounds the work, and stretches left unmeasured follow
   the rules.
3. A shortest path over each unit's cut points picks the cheapest cover.
4. The chosen program is lowered and timed whole, on the program's example
   inputs, against the rules' program and against each backend of the list
   alone (with each option variant); the fastest is returned. So a measured
   plan is never slower than the default, or than any one backend by itself,
   on those inputs.

Everything measured and decided is in ``program.summary.plan``, shown by
``program.report()`` and saved with the archive.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable
from typing import Any

import sympy
import torch
from torch.export import ExportedProgram
from torch.fx.passes.operator_support import OperatorSupportBase

from fxdelegate.errors import BackendCompileError, InvalidArgumentError
from fxdelegate.partitioner import OpSet, partition_graph
from fxdelegate.partitioner.measurement import (
    InterleavedTimer,
    MeasurementCache,
    Timer,
    measurement_key,
)
from fxdelegate.partitioner.plan_search import (
    EXECUTOR,
    Choice,
    Decision,
    Segment,
    blocks_of,
    choose,
    segments_of,
)
from fxdelegate.passes.compile.region_key import region_key
from fxdelegate.passes.compile.remote_cache import RemoteCache, RemoteCacheOptions
from fxdelegate.passes.pipeline.backend_choice import BackendChoice
from fxdelegate.passes.prepare_program import prepare
from fxdelegate.runtime.backend import get_compiler

from .program import DelegatedProgram

log = logging.getLogger("fxdelegate")

LowerChoices = Callable[..., DelegatedProgram]


class NodeNames(OperatorSupportBase):
    """Support for exactly the named nodes (a plan's assignment)."""

    def __init__(self, names: set[str] | frozenset[str]) -> None:
        self.names = frozenset(names)

    def is_node_supported(self, submodules, node: torch.fx.Node) -> bool:  # type: ignore[override]
        return node.name in self.names

    def __repr__(self) -> str:
        return f"NodeNames({len(self.names)} nodes)"


class AnyOf(OperatorSupportBase):
    def __init__(self, supports: list[OperatorSupportBase]) -> None:
        self.supports = supports

    def is_node_supported(self, submodules, node: torch.fx.Node) -> bool:  # type: ignore[override]
        return any(s.is_node_supported(submodules, node) for s in self.supports)


def option_variants(backend_id: str) -> list[dict[str, Any]]:
    """Compile options worth measuring against a backend's defaults ({} first)."""
    compiler = get_compiler(backend_id)
    variants = getattr(compiler, "plan_variants", None)
    return [{}] + (list(variants()) if variants is not None else [])


def lower_measured(
    exported_program: ExportedProgram,
    backends: list[BackendChoice],
    lower_choices: LowerChoices,
    *,
    min_partition_size: int,
    exclude_ops: OpSet,
    strict: bool,
    cache_dir: str | None,
    remote: RemoteCacheOptions | None,
    budget_s: float,
    timer: Timer | None,
    cuda_graphs: bool = False,
) -> DelegatedProgram:
    start = time.perf_counter()
    timer = timer if timer is not None else InterleavedTimer()
    if not callable(getattr(timer, "measure", None)):
        raise InvalidArgumentError(
            f"measure_timer must have a measure(candidates) method, got {type(timer).__name__}"
        )
    cache = MeasurementCache(cache_dir, RemoteCache(remote) if remote is not None else None)
    order = [b.backend_id for b in backends]
    by_id = {b.backend_id: b for b in backends}
    variants = {b: option_variants(b) for b in order}

    units, segments = _units_and_segments(exported_program, backends, exclude_ops)
    costs: dict[Segment, dict[Choice, float]] = {}
    unmeasured: list[Segment] = []
    measured_now = 0
    try:
        from tqdm import tqdm

        progress = tqdm(total=len(segments), desc="fxdelegate: measuring", unit="segment")
    except ImportError:  # pragma: no cover - tqdm is a dependency
        progress = None
    for segment in segments:
        if time.perf_counter() - start > budget_s:
            unmeasured.append(segment)
            continue
        programs = _segment_programs(exported_program, segment, lower_choices)
        choices = [Choice(EXECUTOR)] + [
            Choice(b, v) for b in segment.backends for v in range(len(variants[b]))
        ]
        total = dict.fromkeys(choices, 0.0)
        for program in programs:
            seconds, fresh = _measure(
                program, choices, by_id, variants, lower_choices, cache, timer, strict, cuda_graphs
            )
            measured_now += fresh
            for choice in choices:
                total[choice] += seconds[choice]
        costs[segment] = total
        if progress is not None:
            progress.update()
    if progress is not None:
        progress.close()

    decisions: list[Decision] = []
    for unit, blocks in units.items():
        unit_costs = {s: c for s, c in costs.items() if s.unit == unit}
        executor_blocks = _executor_block_costs(blocks, unit_costs)
        if executor_blocks is None:  # not even the whole unit was measured
            continue
        for segment, first, stop, choice, seconds in choose(
            len(blocks), unit_costs, executor_blocks
        ):
            if segment is None:
                segment = next(
                    (s for s in unit_costs if s.start == first and s.stop == stop),
                    Segment(unit, first, stop, tuple(blocks[first]), ()),
                )
            alternatives = {
                c.label: t for c, t in unit_costs.get(segment, {}).items() if t != float("inf")
            }
            decisions.append(
                Decision(segment, choice, seconds, alternatives, _why(choice, alternatives))
            )

    planned = _choices_for(decisions, unmeasured, backends, variants)
    configurations = {
        "measured": lower_choices(exported_program, planned, 1, strict),
        "rules": lower_choices(exported_program, backends, min_partition_size, strict),
    }
    # Each backend alone, with each of its option variants, is a configuration a user
    # could have picked by hand: the plan must not lose to one of them either. One
    # that places regions as the rules do, with the same options, is the rules'
    # program and is not timed twice.
    rules_placement = _placement(configurations["rules"])
    for base in backends:
        for variant, extra in enumerate(variants[base.backend_id]):
            if len(backends) == 1 and variant == 0:
                continue  # the rules' program itself
            alone = lower_choices(
                exported_program,
                [BackendChoice(base.backend_id, base.support, {**base.compile_options, **extra})],
                min_partition_size,
                strict,
            )
            if variant == 0 and _placement(alone) == rules_placement:
                continue
            configurations[f"{Choice(base.backend_id, variant).label} alone"] = alone
    args, kwargs = exported_program.example_inputs
    whole = timer.measure(
        {label: (lambda p=program: p(*args, **kwargs)) for label, program in configurations.items()}
    )
    # The fastest whole call wins; a tie goes to the earlier label (measured first).
    best = min(configurations, key=lambda label: whole[label])
    kept = configurations.pop(best)
    configurations.clear()  # the others' regions and working folders go with them
    kept.summary.plan = {
        "kept": best,
        "measured_us": round(whole["measured"] * 1e6, 2),
        "rules_us": round(whole["rules"] * 1e6, 2),
        "whole_us": {label: round(t * 1e6, 2) for label, t in whole.items()},
        "budget_s": budget_s,
        "spent_s": round(time.perf_counter() - start, 2),
        "segments": len(segments),
        "measured_now": measured_now,
        "cache_hits": cache.hits,
        "unmeasured": [s.name for s in unmeasured],
        "decisions": [
            {
                "segment": d.segment.name,
                "nodes": len(d.segment.nodes),
                "first": d.segment.nodes[0] if d.segment.nodes else "",
                "last": d.segment.nodes[-1] if d.segment.nodes else "",
                "choice": d.choice.label,
                "options": variants[d.choice.backend_id][d.choice.variant]
                if d.choice.backend_id != EXECUTOR
                else {},
                "us": round(d.seconds * 1e6, 2),
                "alternatives_us": {k: round(v * 1e6, 2) for k, v in d.alternatives.items()},
                "why": d.why,
            }
            for d in decisions
        ],
    }
    return kept


def _placement(program: DelegatedProgram) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Which backend runs which nodes: equal for programs that place regions alike."""
    return tuple(sorted((r.backend_id, tuple(sorted(r.nodes))) for r in program.summary.regions))


def _units_and_segments(
    exported_program: ExportedProgram, backends: list[BackendChoice], exclude_ops: OpSet
) -> tuple[dict[int, list[list[str]]], list[Segment]]:
    """Units (as blocks of node names) and their candidate segments, whole units first."""
    graph_module = prepare(exported_program).graph_module
    submodules = dict(graph_module.named_modules())
    result = partition_graph(
        graph_module,
        AnyOf([b.support for b in backends]),
        exclude_ops=exclude_ops,
        min_partition_size=1,
        backend_id="plan",
    )
    position = {n: i for i, n in enumerate(graph_module.graph.nodes)}
    units: dict[int, list[list[str]]] = {}
    whole: list[Segment] = []
    parts: list[Segment] = []
    for index, partition in enumerate(result.partitions):
        nodes = sorted(partition.nodes, key=position.__getitem__)
        supported: list[tuple[str, ...]] = []
        for node in nodes:
            if node.target is operator.getitem and supported:
                supported.append(supported[-1])  # with its producer
                continue
            supported.append(
                tuple(
                    b.backend_id for b in backends if b.support.is_node_supported(submodules, node)
                )
            )
        names = [n.name for n in nodes]
        anchors = [_is_anchor(n) for n in nodes]
        units[index] = [names[a:b] for a, b in blocks_of(supported, anchors)]
        order = [b.backend_id for b in backends]
        for segment in segments_of(index, names, supported, order, anchors):
            (whole if segment.start == 0 and segment.stop == len(units[index]) else parts).append(
                segment
            )
    return units, whole + parts


def _is_anchor(node: torch.fx.Node) -> bool:
    """A node that starts a new group: any op but a pointwise one, a view or a getitem
    (those fuse into, or are free after, the op before them)."""
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
        return False
    return not (torch.Tag.pointwise in target.tags or target.is_view)


def _segment_programs(
    exported_program: ExportedProgram, segment: Segment, lower_choices: LowerChoices
) -> list[ExportedProgram]:
    """The segment outlined as programs of their own (one per connected piece)."""
    outlined = lower_choices(
        exported_program,
        [BackendChoice("reference", NodeNames(set(segment.nodes)))],
        1,
        True,
    )
    programs = [a.program for a in outlined.artifacts.values() if a.program is not None]
    if not programs:
        raise RuntimeError(
            f"measured plan: segment {segment.name} ({len(segment.nodes)} nodes) outlined to no "
            "region; the partition and the lowering disagree on node names"
        )
    return programs


def _measure(
    program: ExportedProgram,
    choices: list[Choice],
    by_id: dict[str, BackendChoice],
    variants: dict[str, list[dict[str, Any]]],
    lower_choices: LowerChoices,
    cache: MeasurementCache,
    timer: Timer,
    strict: bool,
    cuda_graphs: bool,
) -> tuple[dict[Choice, float], int]:
    """Seconds per call of `program` under each choice (cached ones not rerun)."""
    content = region_key(program, "reference", {})
    input_sets = inputs_at_sizes(program)
    shapes = [[list(getattr(a, "shape", ())) for a in args] for args in input_sets]
    keys: dict[Choice, str] = {}
    seconds: dict[Choice, float] = {}
    for choice in choices:
        options = (
            {
                **by_id[choice.backend_id].compile_options,
                **variants[choice.backend_id][choice.variant],
            }
            if choice.backend_id != EXECUTOR
            else {}
        )
        keys[choice] = measurement_key(
            {
                "program": content,
                "backend": choice.backend_id,
                "options": options,
                "shapes": shapes,
                "cuda_graphs": cuda_graphs,  # recorded and replayed, or launched one by one
            }
        )
        hit = cache.get(keys[choice])
        if hit is not None:
            seconds[choice] = hit
    todo = [c for c in choices if c not in seconds]
    if not todo:
        return seconds, 0
    runnable: dict[str, Callable[[], Any]] = {}
    for choice in todo:
        if choice.backend_id == EXECUTOR:
            lowered = lower_choices(
                program, [BackendChoice("reference", NodeNames(set()))], 1, True
            )
        else:
            base = by_id[choice.backend_id]
            try:
                lowered = lower_choices(
                    program,
                    [
                        BackendChoice(
                            base.backend_id,
                            base.support,
                            {**base.compile_options, **variants[base.backend_id][choice.variant]},
                        )
                    ],
                    1,
                    True,  # a candidate that fails to compile is no candidate
                )
            except BackendCompileError as exc:
                if strict:
                    raise
                log.warning("measured plan: %s is no candidate: %s", choice.label, exc)
                seconds[choice] = float("inf")
                continue
        lowered.check_inputs = False
        for i, args in enumerate(input_sets):
            runnable[f"{choice.label}@{i}" if i else choice.label] = lambda p=lowered, a=args: p(*a)
    measured = timer.measure(runnable)
    for choice in todo:
        if choice in seconds:  # failed to compile: not cached, tried again next time
            continue
        # the mean over the sizes measured: each counts alike
        times = [
            float(measured[f"{choice.label}@{i}" if i else choice.label])
            for i in range(len(input_sets))
        ]
        seconds[choice] = sum(times) / len(times)
        cache.put(keys[choice], seconds[choice])
    return seconds, len(todo)


def inputs_at_sizes(program: ExportedProgram) -> list[tuple[Any, ...]]:
    """The program's example inputs, and for a program with symbolic sizes, inputs with
    every size symbol at half and at twice its example value (clamped to its range)."""
    args, _ = program.example_inputs
    users = [
        n
        for n in program.graph.nodes
        if n.op == "placeholder" and n.name in program.graph_signature.user_inputs
    ]
    hints: dict[sympy.Symbol, int] = {}
    for node in users:
        val = node.meta.get("val")
        for size in getattr(val, "shape", ()):
            if isinstance(size, torch.SymInt) and isinstance(size.node.expr, sympy.Symbol):
                hint = size.node.hint
                if hint is not None:
                    hints[size.node.expr] = int(hint)
    if not hints or len(users) != len(args):
        return [tuple(args)]
    sets = [tuple(args)]
    for factor in (0.5, 2.0):
        values = {}
        for symbol, hint in hints.items():
            bounds = program.range_constraints.get(symbol)
            low = int(bounds.lower) if bounds is not None and bounds.lower.is_finite else 1
            high = int(bounds.upper) if bounds is not None and bounds.upper.is_finite else 2**31
            values[symbol] = min(max(round(hint * factor), low, 1), high)
        if values == hints:
            continue
        new_args = []
        for node, example in zip(users, args):
            val = node.meta["val"]
            if not isinstance(val, torch.Tensor):
                new_args.append(example)
                continue
            shape = [
                int(s.node.expr.xreplace(values)) if isinstance(s, torch.SymInt) else int(s)
                for s in val.shape
            ]
            if val.dtype.is_floating_point:
                new_args.append(torch.randn(shape, dtype=val.dtype, device=example.device))
            else:
                new_args.append(torch.zeros(shape, dtype=val.dtype, device=example.device))
        sets.append(tuple(new_args))
    return sets


def _executor_block_costs(
    blocks: list[list[str]], unit_costs: dict[Segment, dict[Choice, float]]
) -> list[float] | None:
    """Each block's executor seconds: measured alone where it was, else its share (by
    node count) of the whole unit's executor time."""
    whole = next((s for s in unit_costs if s.start == 0 and s.stop == len(blocks)), None)
    if whole is None:
        return None
    total_nodes = sum(len(b) for b in blocks)
    out = []
    for i, block in enumerate(blocks):
        alone = next((s for s in unit_costs if s.start == i and s.stop == i + 1), None)
        if alone is not None:
            out.append(unit_costs[alone][Choice(EXECUTOR)])
        else:
            out.append(unit_costs[whole][Choice(EXECUTOR)] * len(block) / total_nodes)
    return out


def _why(choice: Choice, alternatives: dict[str, float]) -> str:
    if len(alternatives) < 2:
        return "only candidate measured"
    ranked = sorted(alternatives.items(), key=lambda kv: kv[1])
    mine = alternatives.get(choice.label)
    if mine is None:
        return "cheaper as part of a neighbouring segment's plan"
    runner_up = next((kv for kv in ranked if kv[0] != choice.label), None)
    if runner_up is None:
        return "fastest measured"
    return f"fastest measured, {runner_up[1] / mine:.2f}x faster than {runner_up[0]}"


def _choices_for(
    decisions: list[Decision],
    unmeasured: list[Segment],
    backends: list[BackendChoice],
    variants: dict[str, list[dict[str, Any]]],
) -> list[BackendChoice]:
    """The plan as backend runs: one per (backend, variant), taking exactly its nodes.
    Units left unmeasured go to their first supporting backend, as under the rules."""
    assigned: dict[tuple[str, int], set[str]] = {}
    for d in decisions:
        if d.choice.backend_id != EXECUTOR:
            assigned.setdefault((d.choice.backend_id, d.choice.variant), set()).update(
                d.segment.nodes
            )
    decided = {n for d in decisions for n in d.segment.nodes}
    for segment in unmeasured:
        if segment.backends and not decided.intersection(segment.nodes):
            assigned.setdefault((segment.backends[0], 0), set()).update(segment.nodes)
            decided.update(segment.nodes)
    choices = []
    for base in backends:
        for variant in range(len(variants[base.backend_id])):
            nodes = assigned.get((base.backend_id, variant))
            if nodes:
                choices.append(
                    BackendChoice(
                        base.backend_id,
                        NodeNames(nodes),
                        {**base.compile_options, **variants[base.backend_id][variant]},
                    )
                )
    return choices
