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

from .op_support import (
    COMPILABLE_NAMESPACES,
    DATA_DEPENDENT_OPS,
    RANDOM_OPS,
    OpSet,
    control_flow_bodies,
    describe_target,
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


def has_unbacked_symbols(val: object) -> bool:
    # Fast path: a tensor with only plain-int sizes carries no symbols at all.
    if isinstance(val, torch.Tensor) and not any(type(s) is torch.SymInt for s in val.shape):
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


def judge_nodes(
    graph: torch.fx.Graph,
    support: OperatorSupportBase,
    excluded: OpSet,
    submodules: dict[str, torch.nn.Module],
    backend_id: str = "backend",
) -> dict[torch.fx.Node, Verdict]:
    """A verdict for every call_function node, in graph order."""
    verdicts: dict[torch.fx.Node, Verdict] = {}
    delegate = _delegate_target()
    sizes = symbol_sources([n for n in graph.nodes if n.op == "placeholder"])
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        val = node.meta.get("val")
        kind = value_kind(val)
        if node.target is operator.getitem:
            producer = node.args[0]
            parent = verdicts.get(producer) if isinstance(producer, torch.fx.Node) else None
            if parent is not None and parent.candidate and kind is ValueKind.TENSOR:
                verdicts[node] = Verdict(True)
            elif kind is ValueKind.SYMBOLIC:
                verdicts[node] = Verdict(False, RejectReason.SYMBOLIC_SCALAR)
            else:
                verdicts[node] = Verdict(False, RejectReason.PRODUCER_IN_EXECUTOR)
            continue
        verdicts[node] = _judge_compute_node(
            node, kind, support, excluded, submodules, delegate, sizes, backend_id
        )
    return verdicts


def _judge_compute_node(
    node: torch.fx.Node,
    kind: ValueKind,
    support: OperatorSupportBase,
    excluded: OpSet,
    submodules: dict[str, torch.nn.Module],
    delegate: object,
    sizes: dict[object, SizeSource],
    backend_id: str,
) -> Verdict:
    if node.target is delegate:
        return Verdict(False, RejectReason.ALREADY_DELEGATED)
    if node.target in excluded:
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
    if has_unbacked_symbols(node.meta.get("val")):
        return Verdict(False, RejectReason.DATA_DEPENDENT, "output shape depends on tensor values")
    for arg in node.all_input_nodes:
        arg_val = arg.meta.get("val")
        arg_kind = value_kind(arg_val)
        if arg_kind is ValueKind.TENSOR:
            if has_unbacked_symbols(arg_val):
                return Verdict(
                    False,
                    RejectReason.DATA_DEPENDENT,
                    f"input {arg.name} has a data-dependent shape",
                )
            continue
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
            continue
        if arg.op == "get_attr":
            continue
        return Verdict(
            False, RejectReason.NON_TENSOR_INPUT, f"input {arg.name} is {arg_kind.value}"
        )
    try:
        supported = support.is_node_supported(submodules, node)
    except Exception as exc:  # a user predicate that fails must not abort lowering
        return Verdict(
            False, RejectReason.UNSUPPORTED, f"support predicate raised {type(exc).__name__}: {exc}"
        )
    if not supported:
        return Verdict(
            False,
            RejectReason.UNSUPPORTED,
            f"backend '{backend_id}': {why_unsupported(node.target)}",
        )
    return Verdict(True)


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
        key = target._schema.name
        if key in RANDOM_OPS:
            return "random op, kept in eager to follow its RNG stream"
        if key in DATA_DEPENDENT_OPS:
            return "output shape depends on tensor values"
        if target.namespace not in COMPILABLE_NAMESPACES:
            return f"op namespace '{target.namespace}' has no compiled kernels"
        return "op refused by the support predicate"
    return "not an ATen operator"
