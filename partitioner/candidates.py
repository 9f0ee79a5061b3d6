"""Which nodes may go into a region at all, and why the others may not.

A node is a *candidate* when the backend supports it and its values can cross
a region boundary as tensors. Everything else stays in the executor, with a
reason the report shows to the user.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from enum import Enum

import torch
from torch._ops import HigherOrderOperator, OpOverload
from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols
from torch.fx.passes.operator_support import OperatorSupportBase

from fxdelegate.errors import InvalidArgumentError

from .fake_values import misreported
from .op_support import (
    COMPILABLE_NAMESPACES,
    OpSet,
    control_flow_bodies,
    describe_target,
    has_data_dependent_shape,
    is_random,
)
from .symbolic import SizeSource, is_derivable, size_expr, symbol_sources


class RejectReason(str, Enum):
    """Why a node stays in the executor."""

    EXCLUDED = "excluded by exclude_ops"
    UNSUPPORTED = "not supported by the backend"
    ALREADY_DELEGATED = "already delegated"
    NO_TENSOR_OUTPUT = "no tensor output"
    SYMBOLIC_SCALAR = "scalar or size computation"
    DATA_DEPENDENT = "data-dependent shape"
    NON_STRIDED = "sparse or other non-strided layout"
    EMPTY = "zero-element tensor"
    MISREPORTED = "reads a value whose fake metadata is wrong"
    NON_TENSOR_INPUT = "consumes a non-tensor value from the executor"
    WHOLE_TUPLE_USE = "multi-output value used without getitem"
    PRODUCER_IN_EXECUTOR = "its producer stays in the executor"
    TOO_SMALL = "region smaller than min_partition_size"

    def __str__(self) -> str:
        return self.value


class ValueKind(str, Enum):
    TENSOR = "tensor"
    TENSORS = "tensors"  # tuple/list of tensors (multi-output op), read through getitem
    SYMBOLIC = "symbolic"  # int / SymInt / SymBool / SymFloat
    NONE = "none"
    OTHER = "other"


def value_kind(val: object) -> ValueKind:
    if isinstance(val, torch.Tensor):
        return ValueKind.TENSOR
    if isinstance(val, (tuple, list)):
        if all(v is None or isinstance(v, torch.Tensor) for v in val) and val:
            return ValueKind.TENSORS
        return ValueKind.OTHER
    if isinstance(val, (int, float, bool, torch.SymInt, torch.SymFloat, torch.SymBool)):
        return ValueKind.SYMBOLIC
    if val is None:
        return ValueKind.NONE
    return ValueKind.OTHER


def _plain(val: object) -> bool:
    """A strided tensor with elements, whose sizes and strides are plain ints: any
    region may take it. (Written out where it runs once per node.)"""
    return (
        isinstance(val, torch.Tensor)
        and val.layout is torch.strided
        and not val._has_symbolic_sizes_strides
        and val.numel() != 0
    )


def _empty(val: object) -> bool:
    """A tensor (or one of a tuple's) with no elements, by its static shape. There is
    nothing to compute, and compiled reductions over nothing can disagree with eager
    (inductor's ``var_mean`` gives a mean of 0 where eager gives NaN)."""
    values = val if isinstance(val, (tuple, list)) else (val,)
    return any(
        isinstance(v, torch.Tensor)
        and not v._has_symbolic_sizes_strides
        and v.layout is torch.strided
        and v.numel() == 0
        for v in values
    )


def _non_strided(val: object) -> torch.layout | None:
    """The layout of a sparse (or other non-strided) tensor in `val`, else None: compiled
    regions index strided memory, so such values stay in the executor."""
    values = val if isinstance(val, (tuple, list)) else (val,)
    for v in values:
        if isinstance(v, torch.Tensor) and v.layout is not torch.strided:
            return v.layout
    return None


def has_unbacked_symbols(val: object) -> bool:
    # Fast path: a tensor with only plain-int sizes and strides carries no symbols
    # at all (the flag is read without building the shape).
    if isinstance(val, torch.Tensor) and not val._has_symbolic_sizes_strides:
        return False
    if isinstance(val, (int, float, bool)) or val is None:
        return False
    try:
        return bool(free_unbacked_symbols(val))
    except Exception:  # values free_unbacked_symbols cannot walk carry no symbols we can use
        return False


@dataclass(frozen=True)
class Verdict:
    candidate: bool
    reason: RejectReason | None = None
    detail: str = ""


def _delegate_target() -> object:
    return torch.ops.higher_order.executorch_call_delegate


@dataclass
class JudgedGraph:
    """The graph as index lists, with every call_function node judged.

    The partitioner's later steps run on these lists alone: on large graphs
    the time goes to touching FX nodes, so each node is read once, here.
    """

    nodes: list[torch.fx.Node]  # in graph (topological) order
    inputs: list[list[int]]  # each node's input nodes, as indices
    candidate: list[bool]  # may the node join a region
    glue: list[int]  # a getitem: its producer's index (they stay together); else -1
    verdicts: list[Verdict | None]  # each call_function node's; None for other nodes
    # Used call_function nodes with no ``meta["val"]`` (the partition needs them all).
    missing_values: list[str]


def judge_graph(
    graph: torch.fx.Graph,
    support: OperatorSupportBase,
    excluded: OpSet,
    submodules: dict[str, torch.nn.Module],
    backend_id: str = "backend",
) -> JudgedGraph:
    """Judge every node in one pass. Whether a region may read a value (it is a
    tensor, or a size the region can recompute) is worked out once, when the
    value is produced, and looked up by index by each of its readers."""
    sizes = symbol_sources(graph.find_nodes(op="placeholder"))
    judge = _NodeJudge(support, excluded, submodules, backend_id)
    nodes = list(graph.nodes)
    index: dict[torch.fx.Node, int] = {}
    inputs: list[list[int]] = []
    candidate: list[bool] = []
    glue: list[int] = []
    as_input: list[Verdict | None] = []  # why a region cannot read the node's value
    verdicts: list[Verdict | None] = []
    missing: list[str] = []
    getitem = operator.getitem
    tensor, strided = torch.Tensor, torch.strided
    for i, node in enumerate(nodes):
        index[node] = i
        try:
            # `_input_nodes` is what `all_input_nodes` copies into a new list each call.
            ins = [index[arg] for arg in node._input_nodes]
        except KeyError as exc:
            raise InvalidArgumentError(
                f"node {node.name} reads {exc.args[0]}, which does not come before it in the "
                "graph: the graph must be in topological order (graph.lint() checks it)"
            ) from None
        inputs.append(ins)
        val = node.meta.get("val")
        if (
            isinstance(val, tensor)
            and val.layout is strided
            and not val._has_symbolic_sizes_strides
            and val.numel()
        ):
            as_input.append(None)  # a plain tensor (see _plain): any region may read it
        else:
            as_input.append(_problem_as_input(node, val, sizes))
        if node.op != "call_function":
            candidate.append(False)
            glue.append(-1)
            verdicts.append(None)
            continue
        if node.target is getitem:
            producer = node.args[0]
            j = index.get(producer, -1) if isinstance(producer, torch.fx.Node) else -1  # type: ignore[arg-type]
            verdict = judge.getitem(val, verdicts[j] if j >= 0 else None)
            glue.append(j)
        else:
            if val is None and "val" not in node.meta and node.users:
                missing.append(node.name)  # (an assert has no users and no value)
            problem = None
            for j in ins:
                problem = as_input[j]
                if problem is not None:
                    break
            verdict = judge.compute_node(node, val, problem)
            glue.append(-1)
        verdicts.append(verdict)
        candidate.append(verdict.candidate)
    _distrust_misreported(nodes, inputs, candidate, glue, verdicts)
    return JudgedGraph(nodes, inputs, candidate, glue, verdicts, missing)


def _distrust_misreported(
    nodes: list[torch.fx.Node],
    inputs: list[list[int]],
    candidate: list[bool],
    glue: list[int],
    verdicts: list[Verdict | None],
) -> None:
    """Candidates that would read, across a region boundary, a value whose executor
    op's fake kernel misreports it (see :mod:`.fake_values`) stay in the executor,
    and so do the getitems of their outputs. Repeated until nothing changes: a node
    moved out may itself feed a region."""
    probed: dict[int, dict[int, str]] = {}
    changed = True
    while changed:
        changed = False
        for i, ins in enumerate(inputs):
            if not candidate[i] or glue[i] >= 0:
                continue
            for j in ins:
                producer = glue[j] if glue[j] >= 0 else j
                node = nodes[producer]
                if candidate[producer] or node.op != "call_function":
                    continue
                if producer not in probed:
                    probed[producer] = misreported(node)
                wrong = probed[producer]
                # a getitem reads one output, anything else all of them
                index = nodes[j].args[1] if glue[j] >= 0 else None
                reason = wrong.get(index) if index is not None else next(iter(wrong.values()), None)
                if reason:
                    detail = f"{node.name} ({describe_target(node.target)}): {reason}"
                    verdicts[i] = Verdict(False, RejectReason.MISREPORTED, detail)
                    candidate[i] = False
                    changed = True
                    for k, source in enumerate(glue):
                        if source == i and candidate[k]:
                            candidate[k] = False
                            verdicts[k] = Verdict(False, RejectReason.PRODUCER_IN_EXECUTOR)
                    break


def judge_nodes(
    graph: torch.fx.Graph,
    support: OperatorSupportBase,
    excluded: OpSet,
    submodules: dict[str, torch.nn.Module],
    backend_id: str = "backend",
) -> dict[torch.fx.Node, Verdict]:
    """A verdict for every call_function node, in graph order."""
    judged = judge_graph(graph, support, excluded, submodules, backend_id)
    return {n: v for n, v in zip(judged.nodes, judged.verdicts) if v is not None}


class _NodeJudge:
    """The verdict on one node, given what its inputs are."""

    def __init__(
        self,
        support: OperatorSupportBase,
        excluded: OpSet,
        submodules: dict[str, torch.nn.Module],
        backend_id: str,
    ) -> None:
        self.support = support
        self.excluded = excluded
        self.submodules = submodules
        self.backend_id = backend_id
        # id(target) -> whether the op alone lets a node join a region (not excluded,
        # not a delegate, not control flow): asked once per op, not once per node.
        self._ordinary: dict[int, bool] = {}
        self._delegate = _delegate_target()

    def getitem(self, val: object, producer: Verdict | None) -> Verdict:
        if producer is not None and producer.candidate and isinstance(val, torch.Tensor):
            return _CANDIDATE
        if value_kind(val) is ValueKind.SYMBOLIC:
            return Verdict(False, RejectReason.SYMBOLIC_SCALAR)
        return Verdict(False, RejectReason.PRODUCER_IN_EXECUTOR)

    def compute_node(
        self, node: torch.fx.Node, val: object, input_problem: Verdict | None
    ) -> Verdict:
        """`input_problem`: why a region cannot read the first input it cannot read."""
        target = node.target
        ordinary = self._ordinary.get(id(target))
        if ordinary is None:
            ordinary = self._ordinary[id(target)] = (
                target is not self._delegate
                and not isinstance(target, HigherOrderOperator)
                and target not in self.excluded
            )
        verdict: Verdict | None
        if (
            ordinary
            and isinstance(val, _TENSOR)
            and val.layout is _STRIDED
            and not val._has_symbolic_sizes_strides
            and val.numel()
        ):
            verdict = None  # the common case (see _plain), decided without a call
        else:
            kind = ValueKind.TENSOR if isinstance(val, torch.Tensor) else value_kind(val)
            excluded = target in self.excluded
            verdict = _judge_node(
                node, val, kind, excluded, self.submodules, self.excluded, self._delegate
            )
        return verdict or input_problem or self._judge_support(node)

    def _judge_support(self, node: torch.fx.Node) -> Verdict:
        try:
            supported = self.support.is_node_supported(self.submodules, node)
        except Exception as exc:  # a user predicate that fails must not abort lowering
            return Verdict(
                False,
                RejectReason.UNSUPPORTED,
                f"support predicate raised {type(exc).__name__}: {exc}",
            )
        if not supported:
            explain = getattr(self.support, "why_unsupported", None)
            reason = explain(node) if callable(explain) else None
            return Verdict(
                False,
                RejectReason.UNSUPPORTED,
                f"backend '{self.backend_id}': {reason or why_unsupported(node.target)}",
            )
        return _CANDIDATE


_CANDIDATE = Verdict(True)
_TENSOR, _STRIDED = torch.Tensor, torch.strided


def _judge_node(
    node: torch.fx.Node,
    val: object,
    kind: ValueKind,
    excluded_target: bool,
    submodules: dict[str, torch.nn.Module],
    excluded: OpSet,
    delegate: object,
) -> Verdict | None:
    """Why `node` itself (its op and its value) must stay in the executor, or None."""
    if node.target is delegate:
        return Verdict(False, RejectReason.ALREADY_DELEGATED)
    if excluded_target:
        return Verdict(False, RejectReason.EXCLUDED)
    if isinstance(node.target, HigherOrderOperator):
        for body in control_flow_bodies(node, submodules):
            for inner in _body_call_nodes(body):
                if inner.target in excluded:
                    return Verdict(
                        False,
                        RejectReason.EXCLUDED,
                        f"its body runs {describe_target(inner.target)}",
                    )
    if kind is ValueKind.SYMBOLIC:
        return Verdict(False, RejectReason.SYMBOLIC_SCALAR)
    if kind in (ValueKind.NONE, ValueKind.OTHER):
        return Verdict(False, RejectReason.NO_TENSOR_OUTPUT)
    if kind is ValueKind.TENSORS and any(u.target is not operator.getitem for u in node.users):
        return Verdict(False, RejectReason.WHOLE_TUPLE_USE)
    layout = _non_strided(val)
    if layout is not None:
        return Verdict(False, RejectReason.NON_STRIDED, f"its output is {layout}")
    if _empty(val):
        return Verdict(False, RejectReason.EMPTY, "its output has no elements")
    if has_unbacked_symbols(val):
        return Verdict(False, RejectReason.DATA_DEPENDENT, "output shape depends on tensor values")
    return None


def _problem_as_input(
    arg: torch.fx.Node, arg_val: object, sizes: dict[object, SizeSource]
) -> Verdict | None:
    """Why a region cannot read `arg` (whose value is `arg_val`) as an input, or None."""
    arg_kind = value_kind(arg_val)
    layout = _non_strided(arg_val)
    if layout is not None:
        return Verdict(False, RejectReason.NON_STRIDED, f"input {arg.name} is {layout}")
    if _empty(arg_val):
        return Verdict(False, RejectReason.EMPTY, f"input {arg.name} has no elements")
    if arg_kind is ValueKind.TENSOR:
        if has_unbacked_symbols(arg_val):
            return Verdict(
                False, RejectReason.DATA_DEPENDENT, f"input {arg.name} has a data-dependent shape"
            )
        return None
    if arg_kind is ValueKind.SYMBOLIC:
        if has_unbacked_symbols(arg_val):
            return Verdict(
                False, RejectReason.DATA_DEPENDENT, f"size {arg.name} depends on tensor values"
            )
        expr = size_expr(arg_val)
        if expr is None or not is_derivable(expr, sizes):
            return Verdict(
                False,
                RejectReason.NON_TENSOR_INPUT,
                f"scalar {arg.name} cannot be recomputed from the graph's input shapes",
            )
        return None
    if arg.op == "get_attr":
        return None
    return Verdict(False, RejectReason.NON_TENSOR_INPUT, f"input {arg.name} is {arg_kind.value}")


def _body_call_nodes(body: torch.fx.GraphModule):
    inner = dict(body.named_modules())
    for n in body.graph.nodes:
        if n.op == "call_function":
            yield n
            if isinstance(n.target, HigherOrderOperator):
                for sub in control_flow_bodies(n, inner):
                    yield from _body_call_nodes(sub)


def why_unsupported(target: object) -> str:
    """The likely reason a default-support predicate refused `target`, for the report."""
    if isinstance(target, HigherOrderOperator):
        return "higher-order op (or a control-flow body holding an unsupported op)"
    if isinstance(target, OpOverload):
        if is_random(target):
            return "random op, kept in eager to follow its RNG stream"
        if has_data_dependent_shape(target):
            return "output shape depends on tensor values"
        if target.namespace not in COMPILABLE_NAMESPACES:
            return f"op namespace '{target.namespace}' has no compiled kernels"
        return "op refused by the support predicate"
    return (
        "not an ATen operator (a torch-level call, as symbolic_trace records; "
        "torch.export gives ATen ops)"
    )
