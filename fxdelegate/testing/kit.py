"""The pass author's test kit: what the ``fxd`` pytest fixture hands each test."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import networkx as nx
import torch
import torch.utils._pytree as pytree
from torch.export import ExportedProgram

from fxdelegate.api import lower
from fxdelegate.errors import InvalidArgumentError
from fxdelegate.partitioner.op_support import OpSelector, OpSet, describe_target
from fxdelegate.passes.pipeline.pass_pipeline import PassLike, default_pipeline
from fxdelegate.passes.pipeline.program_invariants import first_line
from fxdelegate.passes.pipeline.program_outputs import compare_values
from fxdelegate.passes.pipeline.transform_program import transform_program
from fxdelegate.program import DelegatedProgram
from fxdelegate.runtime.lowered_module import LoweredBackendModule

from .inputs import InputSample, sample_inputs

Program = ExportedProgram | DelegatedProgram


class PassTestKit:
    """Export, run one pass, and compare, the way fxdelegate's pipeline does.

    Every random value comes from the kit's own generator, seeded per test: a
    failing test fails the same way when run again.
    """

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def export(
        self,
        model: torch.nn.Module,
        *args: Any,
        kwargs: dict[str, Any] | None = None,
        dynamic_shapes: Any = None,
        strict: bool = False,
    ) -> ExportedProgram:
        """``torch.export.export(model, args, kwargs, dynamic_shapes=...)``."""
        return torch.export.export(
            model, tuple(args), kwargs or {}, dynamic_shapes=dynamic_shapes, strict=strict
        )

    def randn(
        self, *shape: int | Sequence[int], dtype: torch.dtype = torch.float32, device: str = "cpu"
    ) -> torch.Tensor:
        """Normal values from the kit's generator: ``fxd.randn(2, 16)``."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        return torch.randn(shape, dtype=dtype, generator=self.generator).to(device)  # type: ignore[arg-type]

    def run_pass(
        self,
        pass_: PassLike,
        program: ExportedProgram,
        *,
        before: str | None = None,
        after: str | None = None,
        backend: str = "reference",
        check_outputs: bool = True,
    ) -> Program:
        """Run `pass_` as the pipeline would, with the checks it makes after a user pass.

        By default the pass runs on the prepared program, where a pass inserted
        before ``tag_regions`` runs, and the transformed ExportedProgram comes back.
        With `before` or `after` (a pass name of :func:`fxdelegate.default_pipeline`)
        the whole pipeline runs on `backend` with the pass at that place, and the
        lowered program comes back. A broken invariant raises PassInvariantError.
        """
        if before is None and after is None:
            return transform_program(program, [pass_], check_outputs=check_outputs)
        if before is not None and after is not None:
            raise InvalidArgumentError("give run_pass one place: before=... or after=..., not both")
        pipeline = default_pipeline(check_outputs=check_outputs)
        if before is not None:
            pipeline.insert_before(before, pass_)
        else:
            pipeline.insert_after(after, pass_)  # type: ignore[arg-type]
        return lower(program, backend=backend, pipeline=pipeline)

    def sample_inputs(
        self, program: Program, *, samples: int = 2, max_size: int = 1024
    ) -> list[InputSample]:
        """The inputs :meth:`assert_same_outputs` tries (see :func:`.inputs.sample_inputs`)."""
        return sample_inputs(_exported(program), self.generator, samples=samples, max_size=max_size)

    def assert_same_outputs(
        self,
        reference: Program | Callable[..., Any],
        candidate: Program | Callable[..., Any],
        *,
        inputs: Iterable[InputSample | tuple[Any, ...]] | None = None,
        samples: int = 2,
        max_size: int = 1024,
        rtol: float | None = None,
        atol: float | None = None,
    ) -> list[str]:
        """Call both on several inputs and require the same outputs and the same
        mutated inputs, tensors within the dtype's tolerance (``fxdelegate.passes.pipeline.
        program_outputs.TOLERANCES``; `rtol`/`atol` override it).

        `inputs` defaults to :meth:`sample_inputs` of whichever side is a program: the
        example inputs, fresh values, and the dynamic dimensions at both ends of their
        ranges. Inputs the reference refuses (a guard of the program, say) are left
        out; the candidate must run every input the reference ran. Calls go in order
        on both sides, each side from its own copy of the state, so buffers evolve
        alike. Returns the labels of the inputs compared.
        """
        if inputs is None:
            program = next((p for p in (reference, candidate) if _is_program(p)), None)
            if program is None:
                raise InvalidArgumentError(
                    "neither side is an exported or lowered program to take inputs from; "
                    "pass inputs=[...]"
                )
            inputs = self.sample_inputs(program, samples=samples, max_size=max_size)  # type: ignore[arg-type]
        cases = [
            case if isinstance(case, InputSample) else InputSample(f"inputs #{i + 1}", case, {})
            for i, case in enumerate(inputs)
        ]
        run_reference, run_candidate = _callable(reference), _callable(candidate)
        compared, refused, problems = [], [], []
        for case in cases:
            ref_args, ref_kwargs = case.cloned()
            try:
                expected = run_reference(*ref_args, **ref_kwargs)
            except Exception as exc:
                refused.append(f"{case.label}: {type(exc).__name__}: {first_line(exc)}")
                continue
            args, kwargs = case.cloned()
            try:
                got = run_candidate(*args, **kwargs)
            except Exception as exc:
                problems.append(
                    f"{case.label}: the candidate raised {type(exc).__name__}: {first_line(exc)} "
                    "where the reference ran"
                )
                continue
            compared.append(case.label)
            problems += [f"{case.label}: {p}" for p in _differences(expected, got, rtol, atol)]
            problems += [
                f"{case.label}: mutated input {p}"
                for p in _differences((ref_args, ref_kwargs), (args, kwargs), rtol, atol)
            ]
        if problems:
            raise AssertionError(
                "outputs differ from the reference:\n  "
                + "\n  ".join(problems)
                + (f"\n(inputs the reference refused: {refused})" if refused else "")
            )
        if not compared:
            raise AssertionError(f"the reference refused every input: {refused}")
        return compared

    def assert_no_op(self, program: Program | torch.fx.GraphModule, op: OpSelector) -> None:
        """No node of the program calls `op` (``"aten.rsqrt"``: every overload;
        ``"aten.rsqrt.default"``: that one), in the executor graph, in control-flow
        bodies or in any region's own program."""
        found = _find_op(program, op)
        if found:
            raise AssertionError(f"{op} is still in the program: {', '.join(found)}")

    def assert_has_op(
        self, program: Program | torch.fx.GraphModule, op: OpSelector, count: int | None = None
    ) -> None:
        """The program calls `op` (exactly `count` times, when given), wherever it runs."""
        found = _find_op(program, op)
        if (count is None and not found) or (count is not None and len(found) != count):
            want = "at least once" if count is None else f"{count} time(s)"
            raise AssertionError(
                f"expected {op} {want}, found it {len(found)} time(s)"
                + (f": {', '.join(found)}" if found else "")
            )

    def assert_regions(
        self, program: DelegatedProgram, count: int | None = None, *, convex: bool = True
    ) -> None:
        """The lowered program has `count` regions (when given), one delegate call
        each, and (with `convex`) no path leaves a region and comes back into it in
        the partitioned graph the report describes."""
        if not isinstance(program, DelegatedProgram):
            raise InvalidArgumentError(
                f"assert_regions takes what fxdelegate.lower returns, got {type(program).__name__}"
            )
        names = [r.name for r in program.partitions]
        calls = [
            n
            for n in program.exported_program.graph.nodes
            if n.op == "call_function"
            and n.target is torch.ops.higher_order.executorch_call_delegate
        ]
        if len(calls) != len(names):
            raise AssertionError(
                f"{len(names)} region(s) reported ({names}) but {len(calls)} delegate call(s) in the graph"
            )
        if count is not None and len(names) != count:
            raise AssertionError(
                f"expected {count} region(s), got {len(names)}: {names}\n{program.summary.format()}"
            )
        if convex:
            snapshot = program.summary.graph
            if snapshot is None:
                raise AssertionError("the program keeps no partition picture to check convexity on")
            broken = non_convex_regions(snapshot)
            if broken:
                raise AssertionError(
                    "regions that are not convex (node outside the region, on a path from it "
                    f"back into it): {broken}"
                )


def non_convex_regions(snapshot: dict[str, Any]) -> dict[str, str]:
    """Region -> a node outside it on a path from the region back into it, in a
    report's partition picture (``summary.graph``)."""
    graph = nx.DiGraph()
    graph.add_nodes_from(range(len(snapshot["nodes"])))
    graph.add_edges_from(tuple(e) for e in snapshot["edges"])
    regions: dict[str, set[int]] = {}
    for i, entry in enumerate(snapshot["nodes"]):
        if entry[3] is not None:
            regions.setdefault(entry[3], set()).add(i)
    broken = {}
    for name, members in regions.items():
        below = set().union(*(nx.descendants(graph, m) for m in members)) - members
        above = set().union(*(nx.ancestors(graph, m) for m in members)) - members
        between = below & above
        if between:
            broken[name] = snapshot["nodes"][min(between)][0]
    return broken


def _is_program(value: Any) -> bool:
    return isinstance(value, (ExportedProgram, DelegatedProgram))


def _exported(program: Program) -> ExportedProgram:
    if isinstance(program, DelegatedProgram):
        return program.exported_program
    if isinstance(program, ExportedProgram):
        return program
    raise InvalidArgumentError(
        f"expected an ExportedProgram or a DelegatedProgram, got {type(program).__name__}"
    )


def _callable(side: Any) -> Callable[..., Any]:
    """A callable with its own copy of the state (a DelegatedProgram runs as it is)."""
    if isinstance(side, ExportedProgram):
        with warnings.catch_warnings():  # torch's deep copy warns about its own LeafSpec
            warnings.filterwarnings("ignore", ".*LeafSpec.*deprecated", FutureWarning)
            return copy.deepcopy(side).module()
    if isinstance(side, torch.nn.Module):
        return copy.deepcopy(side)
    if callable(side):
        return side
    raise InvalidArgumentError(
        f"expected a program, a module or a callable to compare, got {type(side).__name__}"
    )


def _differences(expected: Any, got: Any, rtol: float | None, atol: float | None) -> list[str]:
    expected_leaves, expected_spec = pytree.tree_flatten(expected)
    got_leaves, got_spec = pytree.tree_flatten(got)
    if expected_spec != got_spec:
        return [f"the structure differs: expected {expected_spec}, got {got_spec}"]
    paths = [
        pytree.keystr(path) or "output" for path, _ in pytree.tree_flatten_with_path(expected)[0]
    ]
    return compare_values(expected_leaves, got_leaves, names=paths, rtol=rtol, atol=atol)


def _find_op(program: Program | torch.fx.GraphModule, op: OpSelector) -> list[str]:
    wanted = OpSet([op])
    found = []
    for where, graph in _graphs(program):
        for node in graph.nodes:
            if node.op == "call_function" and node.target in wanted:
                found.append(f"{node.name} ({describe_target(node.target)}) in {where}")
    return found


def _graphs(program: Program | torch.fx.GraphModule) -> Iterator[tuple[str, torch.fx.Graph]]:
    """Every graph the program runs: its own, control-flow bodies, regions' programs."""
    if isinstance(program, DelegatedProgram):
        yield from _module_graphs("the executor graph", program.exported_program.graph_module)
        seen = {
            id(m.original_module)
            for m in program.exported_program.graph_module.modules()
            if isinstance(m, LoweredBackendModule)
        }
        for key, artifact in program.artifacts.items():
            if artifact.program is not None and id(artifact.program) not in seen:
                yield from _module_graphs(f"region {key}", artifact.program.graph_module)
        return
    if isinstance(program, ExportedProgram):
        program = program.graph_module
    if not isinstance(program, torch.fx.GraphModule):
        raise InvalidArgumentError(
            f"expected a program or a GraphModule, got {type(program).__name__}"
        )
    yield from _module_graphs("the graph", program)


def _module_graphs(where: str, module: torch.nn.Module) -> Iterator[tuple[str, torch.fx.Graph]]:
    for name, sub in module.named_modules():
        if isinstance(sub, LoweredBackendModule):
            yield from _module_graphs(f"region {sub.module_name}", sub.original_module.graph_module)
        elif isinstance(sub, torch.fx.GraphModule):
            yield (f"{where} ({name})" if name else where), sub.graph
