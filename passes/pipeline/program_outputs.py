"""Run the graph the passes are transforming on concrete inputs, and compare results.

The output check after a user pass runs the program's graph as it stands at
that point in the pipeline: a functional ATen graph before delegation, or one
with ``executorch_call_delegate`` nodes after it (each runs its region's
loaded runner). Inputs follow the graph's current signature: the program's own
weights, then the example inputs it was exported with.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.export._tree_utils import reorder_kwargs
from torch.export.graph_signature import InputKind

from fxdelegate.runtime.backend import Runner, example_value
from fxdelegate.runtime.lowered_module import LoweredBackendModule

from ..context import LoweringContext

# (rtol, atol) per dtype: what separates a reordered sum from a wrong result.
# Integer and bool values must be equal.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-7),
    torch.complex128: (1e-7, 1e-7),
    torch.float32: (1e-5, 1e-5),
    torch.complex64: (1e-5, 1e-5),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
}


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """Default (rtol, atol) for comparing two results of `dtype`."""
    if dtype in TOLERANCES:
        return TOLERANCES[dtype]
    if dtype.is_floating_point:  # float8 and friends
        return (1.25e-1, 1e-1)
    return (0.0, 0.0)


def compare_values(
    expected: Sequence[Any],
    got: Sequence[Any],
    *,
    names: Sequence[str] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> list[str]:
    """Problems between two flat lists of results (empty when they match): tensors
    close within the dtype's tolerance (or `rtol`/`atol`), everything else equal."""
    if len(expected) != len(got):
        return [f"{len(got)} values where {len(expected)} were expected"]
    problems = []
    for i, (want, have) in enumerate(zip(expected, got)):
        label = names[i] if names is not None else f"output {i}"
        if isinstance(want, torch.Tensor):
            if not isinstance(have, torch.Tensor):
                problems.append(f"{label}: expected a tensor, got {type(have).__name__}")
                continue
            if have.shape != want.shape or have.dtype != want.dtype:
                problems.append(f"{label}: expected {_describe(want)}, got {_describe(have)}")
                continue
            default_rtol, default_atol = tolerance(want.dtype)
            try:
                torch.testing.assert_close(
                    have,
                    want,
                    rtol=default_rtol if rtol is None else rtol,
                    atol=default_atol if atol is None else atol,
                    equal_nan=True,
                    check_device=False,
                    check_layout=False,
                    check_stride=False,
                )
            except AssertionError as exc:
                detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
                problems.append(f"{label}: {detail}")
        elif not _equal(want, have):
            problems.append(f"{label}: expected {want!r}, got {have!r}")
    return problems


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return a is b


def _describe(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}"


def user_input_values(
    example_inputs: tuple[tuple[Any, ...], dict[str, Any]] | None,
    in_spec: pytree.TreeSpec | None,
    placeholders: Sequence[torch.fx.Node],
) -> list[Any]:
    """The program's example inputs, flat in graph order; made up from the input
    placeholders' values (sizes from their hints) when the program kept none."""
    if example_inputs is None:
        with fixed_seed():
            return [example_value(p.meta.get("val")) for p in placeholders]
    args, kwargs = example_inputs
    if in_spec is not None and kwargs:
        kwargs = reorder_kwargs(kwargs, in_spec)
    return pytree.tree_flatten((args, kwargs))[0]


def graph_inputs(context: LoweringContext, user_values: Sequence[Any]) -> list[Any]:
    """Flat inputs for the graph under `context`'s current signature. Buffers and
    user inputs are cloned: a region that writes one in place must not change the
    program's state or the caller's tensors."""
    users = iter(user_values)
    values = []
    for spec in context.signature.input_specs:
        target = spec.target
        if spec.kind == InputKind.USER_INPUT:
            value = next(users)
            values.append(value.clone() if isinstance(value, torch.Tensor) else value)
        elif spec.kind == InputKind.PARAMETER:
            values.append(context.state_dict[target])  # type: ignore[index]
        elif spec.kind == InputKind.BUFFER:
            buffer = (
                context.state_dict[target]  # type: ignore[index]
                if target in context.state_dict
                else context.constants[target]  # type: ignore[index]
            )
            values.append(buffer.clone())
        elif spec.kind == InputKind.TOKEN:
            values.append(torch.empty(0))  # what torch's unlifted module passes
        else:  # constant tensors, custom objects
            values.append(context.constants[target])  # type: ignore[index]
    return values


class GraphRun(torch.fx.Interpreter):
    """Interprets one graph node by node; a delegate node runs its region's runner
    (or, for a region lowered earlier, the region's own program)."""

    def __init__(
        self,
        owner: torch.fx.GraphModule,
        graph: torch.fx.Graph,
        attributes: dict[str, Any],
        runners: dict[str, Runner],
    ) -> None:
        super().__init__(owner, graph=graph)
        self.attributes = attributes
        self.runners = runners

    def fetch_attr(self, target: str) -> Any:
        if target in self.attributes:
            return self.attributes[target]
        return super().fetch_attr(target)

    def call_function(self, target: Any, args: Any, kwargs: Any) -> Any:
        if target is torch.ops.higher_order.executorch_call_delegate:
            module, *operands = args
            if isinstance(module, LoweredBackendModule):
                runner = self.runners.get(module.key)
                if runner is not None:
                    return tuple(runner(list(operands)))
                outputs = module.original_module.module()(*operands)
                return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
        return super().call_function(target, args, kwargs)


def run_graph(
    owner: torch.fx.GraphModule,
    graph: torch.fx.Graph,
    attributes: dict[str, Any],
    context: LoweringContext,
    user_values: Sequence[Any],
) -> list[Any]:
    """The flat outputs of `graph` (whose get_attr targets are in `attributes`, or
    on `owner`) on `user_values`, with the random generators seeded the same way
    for every run."""
    runners = {
        r.artifact.key: r.runner
        for r in context.regions
        if r.artifact is not None and r.runner is not None
    }
    inputs = graph_inputs(context, user_values)
    with fixed_seed(), torch.no_grad():
        outputs = GraphRun(owner, graph, attributes, runners).run(
            *inputs, enable_io_processing=False
        )
    return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]


def graph_attributes(graph_module: torch.fx.GraphModule, graph: torch.fx.Graph) -> dict[str, Any]:
    """What each get_attr node of `graph` reads now (a later pass may delete it)."""
    found = {}
    for node in graph.nodes:
        if node.op == "get_attr" and isinstance(node.target, str):
            try:
                found[node.target] = functools.reduce(getattr, node.target.split("."), graph_module)
            except AttributeError:
                pass  # the lint check reports it
    return found


@contextlib.contextmanager
def fixed_seed(seed: int = 0) -> Iterator[None]:
    """Seed every generator the run may draw from, and restore them afterwards."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
