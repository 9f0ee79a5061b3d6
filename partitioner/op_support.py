"""Which operators a backend may take: selectors, exclusion lists, default predicates.

Support predicates are ordinary `torch.fx.passes.operator_support.OperatorSupportBase`
objects, so predicates written for other projects plug in unchanged.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable

import torch
from torch._ops import HigherOrderOperator, OpOverload, OpOverloadPacket
from torch.fx.passes.operator_support import OperatorSupportBase

from fxdelegate.errors import InvalidArgumentError

OpSelector = str | OpOverload | OpOverloadPacket

# Ops whose output shape depends on tensor values. Compiled regions are
# specialised on symbolic shapes, so these run in the executor (and so do ops
# torch tags as reading values on the host: see `has_data_dependent_shape`).
DATA_DEPENDENT_OPS = frozenset(
    {
        "aten::nonzero",
        "aten::unique",
        "aten::_unique",
        "aten::_unique2",
        "aten::unique_dim",
        "aten::unique_consecutive",
        "aten::masked_select",
        "aten::item",
        "aten::_local_scalar_dense",
        "aten::repeat_interleave",
        "aten::bincount",
    }
)

# Random ops stay in the executor so that results follow eager PyTorch's
# generator state exactly (a compiled kernel draws from its own stream). Besides
# these names, every op torch tags ``nondeterministic_seeded`` (see `is_random`).
RANDOM_OPS = frozenset(
    {
        "aten::rand",
        "aten::rand_like",
        "aten::randn",
        "aten::randn_like",
        "aten::randint",
        "aten::randint_like",
        "aten::randperm",
        "aten::bernoulli",
        "aten::dropout",
        "aten::native_dropout",
        "aten::normal",
        "aten::uniform",
        "aten::multinomial",
        "aten::exponential",
        "aten::poisson",
    }
)


# Cached per op: asked for every node of graphs with tens of thousands of them.
@functools.cache
def is_random(target: OpOverload) -> bool:
    """The op draws from torch's random generator: torch tags every such op
    ``nondeterministic_seeded`` (``uniform``, ``cauchy``, ``normal``...)."""
    return torch.Tag.nondeterministic_seeded in target.tags or target._schema.name in RANDOM_OPS


@functools.cache
def has_data_dependent_shape(target: OpOverload) -> bool:
    """The op's output shape depends on tensor values (by name), or it reads tensor
    values on the host (torch tags those ``data_dependent_output``). Not by the
    ``dynamic_output_shape`` tag: ``aten.index.Tensor`` carries it for boolean masks,
    but with integer indices its shape is static; a node whose shape really depends
    on values has unbacked sizes in its ``meta["val"]``, which the partitioner reads."""
    return (
        torch.Tag.data_dependent_output in target.tags or target._schema.name in DATA_DEPENDENT_OPS
    )


# Namespaces whose ops compile without user-provided kernels.
COMPILABLE_NAMESPACES = frozenset({"aten", "prims"})


def op_key(target: object) -> str | None:
    """`"aten::gelu"` for aten.gelu.<any overload>, None for non-operator targets."""
    if isinstance(target, OpOverload):
        return target._schema.name
    if isinstance(target, OpOverloadPacket):
        return target._qualified_op_name
    return None


def resolve_op_selector(selector: OpSelector) -> OpOverload | OpOverloadPacket:
    """Turn `"aten.gelu"`, `"aten.gelu.default"`, an OpOverloadPacket or OpOverload into an op."""
    if isinstance(selector, (OpOverload, OpOverloadPacket)):
        return selector
    if not isinstance(selector, str):
        raise InvalidArgumentError(
            f"exclude_ops entries must be op names like 'aten.gelu' or 'aten.gelu.default', "
            f"OpOverload or OpOverloadPacket objects; got {selector!r} of type {type(selector).__name__}"
        )
    name = selector.strip().replace("::", ".")
    if name.startswith("torch.ops."):
        name = name[len("torch.ops.") :]
    parts = name.split(".")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidArgumentError(
            f"op name {selector!r} is not of the form 'namespace.op' or 'namespace.op.overload' "
            "(for example 'aten.gelu' or 'aten.gelu.default')"
        )
    try:
        packet = getattr(getattr(torch.ops, parts[0]), parts[1])
    except (AttributeError, RuntimeError) as exc:
        raise InvalidArgumentError(
            f"no operator named {'.'.join(parts[:2])!r} is registered (from exclude_ops entry {selector!r})"
        ) from exc
    if len(parts) == 2:
        return packet
    try:
        return getattr(packet, parts[2])
    except (AttributeError, RuntimeError) as exc:
        raise InvalidArgumentError(
            f"operator {'.'.join(parts[:2])!r} has no overload {parts[2]!r} "
            f"(known overloads: {', '.join(packet.overloads())})"
        ) from exc


class OpSet:
    """A set of operators given by packets (all overloads) and single overloads."""

    def __init__(self, selectors: Iterable[OpSelector] = ()) -> None:
        if isinstance(selectors, (str, OpOverload, OpOverloadPacket)):
            selectors = (selectors,)
        self.packets: set[str] = set()
        self.overloads: set[OpOverload] = set()
        for selector in selectors:
            op = resolve_op_selector(selector)
            if isinstance(op, OpOverloadPacket):
                self.packets.add(op._qualified_op_name)
            else:
                self.overloads.add(op)

    def __contains__(self, target: object) -> bool:
        if isinstance(target, OpOverload):
            return target in self.overloads or target._schema.name in self.packets
        return False

    def __bool__(self) -> bool:
        return bool(self.packets or self.overloads)

    def names(self) -> list[str]:
        packets = [p.replace("::", ".") for p in self.packets]
        return sorted(packets + [str(o) for o in self.overloads])


# Control flow a compiling backend takes when every op in its bodies is supported.
# AOTInductor compiles `map` from torch 2.13 on (2.11 fails with an internal assert).
CONTROL_FLOW_OPS = frozenset(
    {"cond", "while_loop"}
    | ({"map_impl"} if tuple(map(int, torch.__version__.split(".")[:2])) >= (2, 13) else set())
)


def control_flow_bodies(
    node: torch.fx.Node, submodules: dict[str, torch.nn.Module]
) -> list[torch.fx.GraphModule]:
    """The subgraphs a higher-order op node runs (its get_attr arguments)."""
    bodies = []
    for arg in node.all_input_nodes:
        if arg.op == "get_attr":
            module = submodules.get(arg.target)  # type: ignore[arg-type]
            if isinstance(module, torch.fx.GraphModule):
                bodies.append(module)
    return bodies


class CompilableAtenSupport(OperatorSupportBase):
    """Default support of compiling backends: ATen/prims ops without data-dependent
    shapes or randomness, and control flow (``cond``, ``map``, ``while_loop``)
    whose bodies hold only such ops. Existing delegates and Python-level
    builtins are not supported. A backend's own predicate can refuse more,
    with its reason (see :meth:`why_unsupported`)."""

    def is_node_supported(self, submodules, node: torch.fx.Node) -> bool:  # type: ignore[override]
        target = node.target
        if isinstance(target, HigherOrderOperator):
            if target.name() not in CONTROL_FLOW_OPS:
                return False
            return all(self._body_supported(body) for body in control_flow_bodies(node, submodules))
        if not isinstance(target, OpOverload):
            return False
        if target.namespace not in COMPILABLE_NAMESPACES:
            return False
        return not has_data_dependent_shape(target) and not is_random(target)

    def why_unsupported(self, node: torch.fx.Node) -> str | None:
        """The reason this predicate refuses `node` in particular, if it has one (the
        report shows it; otherwise it gives the general reason for the op)."""
        return None

    def _body_supported(self, body: torch.fx.GraphModule) -> bool:
        inner = dict(body.named_modules())
        for n in body.graph.nodes:
            if n.op != "call_function" or n.target.__module__ in ("_operator", "operator"):
                continue
            if not self.is_node_supported(inner, n):
                return False
        return True


class SupportedOps(OperatorSupportBase):
    """Support for exactly the given ops (``"aten.gelu"``, an overload, or their
    objects): for a backend that takes a small op set, such as one tried before
    AOTInductor in ``lower(ep, backend=[...])``."""

    def __init__(self, ops: Iterable[OpSelector]) -> None:
        self.ops = ops if isinstance(ops, OpSet) else OpSet(ops)
        if not self.ops:
            raise InvalidArgumentError("SupportedOps needs at least one op")

    def is_node_supported(self, submodules, node: torch.fx.Node) -> bool:  # type: ignore[override]
        return node.target in self.ops

    def __repr__(self) -> str:
        return f"SupportedOps({self.ops.names()})"


def describe_target(target: object) -> str:
    """Short printable name of a node target: 'aten.gelu.default', 'getitem'..."""
    if isinstance(target, OpOverload):
        return str(target)
    if isinstance(target, OpOverloadPacket):
        return target._qualified_op_name.replace("::", ".")
    if isinstance(target, HigherOrderOperator):
        return f"higher_order.{target.name()}"
    if target is operator.getitem:
        return "getitem"
    name = getattr(target, "__name__", None)
    module = getattr(target, "__module__", None)
    if name and module in ("_operator", "operator"):
        return f"operator.{name}"
    if name:
        return f"{module}.{name}" if module else name
    return str(target)
