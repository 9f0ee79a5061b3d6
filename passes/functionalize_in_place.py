"""Make a training-IR program functional without re-tracing it.

torch.export's default IR keeps in-place ops in the graph (``add_``,
``index_copy_``), and mutations of buffers and inputs are not in the
signature. The passes need a functional graph. torch's own way is a re-trace
of the whole program (``run_decompositions({})``). That costs time that
grows faster than the program, and it lets fake-tensor layout guesses rewrite
ops that eager code relies on. For example, ``contiguous`` becomes nothing
when the tracer believes a tensor is already contiguous, and a later ``view``
then fails in eager (pytorch#136543).

Most inference programs mutate in the simplest way: an in-place op on a
tensor that nothing else aliases. One pass over the graph rewrites each such
op into its out-of-place twin and points every later reader at the new
value. A buffer or user input written this way becomes a mutation output in
the signature, as the re-trace would make it. Anything else is left to the
re-trace, which :func:`functionalize_in_place` signals by returning None:
writes through views, an op that writes an argument other than its first,
mutated parameters, mutations inside control-flow bodies, and higher-order
ops the IR carries for grad or autocast modes.
"""

from __future__ import annotations

import functools
import operator

import torch
from torch._ops import HigherOrderOperator, OpOverload
from torch.export.graph_signature import (
    ExportGraphSignature,
    InputKind,
    OutputKind,
    OutputSpec,
    SymIntArgument,
    TensorArgument,
)

# Higher-order ops whose presence does not stop the rewrite (their bodies are checked).
_KNOWN_HOPS = {"cond", "map_impl", "while_loop"}


def functionalize_in_place(
    graph_module: torch.fx.GraphModule, signature: ExportGraphSignature
) -> ExportGraphSignature | None:
    """Rewrite `graph_module`'s in-place ops (modifying it) and return the signature
    of the functional result, or None when a re-trace is needed (the graph may then
    be half rewritten). The caller verifies the result when anything was rewritten."""
    graph = graph_module.graph
    if not _rewritable(graph_module):
        return None
    mutating = []
    for node in graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, OpOverload):
            continue
        if _may_hide_a_write(node.target) and _hides_a_write(node):
            return None
        if node.target._schema.is_mutable:
            mutating.append(node)
    if not mutating:
        return signature  # already functional: nothing to rewrite
    kinds = {s.arg.name: s for s in signature.input_specs}
    position = {node: i for i, node in enumerate(graph.nodes)}
    root_of: dict[torch.fx.Node, torch.fx.Node] = {}
    latest: dict[torch.fx.Node, torch.fx.Node] = {}  # mutated placeholder -> its last value
    for node in mutating:
        functional = _out_of_place(node.target)  # type: ignore[arg-type]
        target = node.args[0] if node.args else None
        if functional is None or not isinstance(target, torch.fx.Node):
            return None
        root = root_of.get(target, target)
        if target not in root_of and not _owns_its_memory(target, kinds):
            return None
        if any(_aliases(user) for user in target.users if user is not node):
            return None  # a view of it would see the write
        with graph.inserting_before(node):
            new = graph.call_function(functional, node.args, dict(node.kwargs))
        new.meta = dict(node.meta)
        position[new] = position[node]
        node.replace_all_uses_with(new)
        for user in list(target.users):
            if user is not new and position[user] > position[node]:
                user.replace_input_with(target, new)
        graph.erase_node(node)
        root_of[new] = root
        if root.op == "placeholder":
            latest[root] = new
    return _with_mutation_outputs(graph, signature, latest, kinds)


def _rewritable(graph_module: torch.fx.GraphModule) -> bool:
    for node in graph_module.graph.nodes:
        if isinstance(node.target, HigherOrderOperator):
            if node.target.__name__ not in _KNOWN_HOPS:
                return False
    for name, module in graph_module.named_modules():
        if not name or not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:  # a control-flow body must be functional already
            if isinstance(node.target, OpOverload) and node.target._schema.is_mutable:
                return False
            if (
                isinstance(node.target, HigherOrderOperator)
                and node.target.__name__ not in _KNOWN_HOPS
            ):
                return False
    return True


# Batch norm's composite schemas write the running statistics without saying
# so: `batch_norm(..., Tensor? running_mean, ...)` in training mode updates it.
_RUNNING_STATS = ("running_mean", "running_var")
_TRAINING_FLAGS = ("training", "use_input_stats")
_STATELESS_SUFFIXES = ("_functional", "_no_update", "_no_training", "_backward")


@functools.cache
def _may_hide_a_write(op: OpOverload) -> bool:
    """Whether `op`'s schema takes running statistics it does not mark as written."""
    schema = op._schema
    if schema.name.endswith(_STATELESS_SUFFIXES):
        return False
    return any(
        a.name in _RUNNING_STATS and (a.alias_info is None or not a.alias_info.is_write)
        for a in schema.arguments
    )


def _hides_a_write(node: torch.fx.Node) -> bool:
    """Whether `node` updates running statistics its schema does not mark as written."""
    if not isinstance(node.target, OpOverload):
        return False
    schema = node.target._schema
    if schema.name.endswith(_STATELESS_SUFFIXES):
        return False
    values = dict(zip((a.name for a in schema.arguments), node.args))
    values.update(node.kwargs)
    has_stats = any(
        a.name in _RUNNING_STATS
        and (a.alias_info is None or not a.alias_info.is_write)
        and values.get(a.name) is not None
        for a in schema.arguments
    )
    training = [values.get(flag) for flag in _TRAINING_FLAGS if flag in values]
    return has_stats and any(flag is not False for flag in training)


def _out_of_place(op: OpOverload) -> OpOverload | None:
    """`aten.add.Tensor` for `aten.add_.Tensor`: only when the op writes its first
    argument alone and the twin takes the same arguments."""
    schema = op._schema
    written = [a for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write]
    if len(written) != 1 or written[0] is not schema.arguments[0]:
        return None
    namespace, name = schema.name.split("::")
    if not name.endswith("_") or name.startswith("_"):
        return None
    packet = getattr(getattr(torch.ops, namespace), name[:-1], None)
    twin = getattr(packet, op._overloadname, None) if packet is not None else None
    if not isinstance(twin, OpOverload) or twin._schema.is_mutable:
        return None
    if [a.name for a in twin._schema.arguments] != [a.name for a in schema.arguments]:
        return None
    return twin


def _aliases(node: torch.fx.Node) -> bool:
    """Whether `node`'s result may share memory with one of its inputs."""
    if node.target is operator.getitem:
        return False
    if isinstance(node.target, OpOverload):
        return any(r.alias_info is not None for r in node.target._schema.returns)
    return node.op == "call_function"  # anything else: assume it may


def _owns_its_memory(value: torch.fx.Node, kinds: dict) -> bool:
    """A value no other value aliases: a fresh op result, a buffer or a user input."""
    if value.op == "placeholder":
        spec = kinds.get(value.name)
        return spec is not None and spec.kind in (InputKind.BUFFER, InputKind.USER_INPUT)
    if value.op == "call_function" and value.target is operator.getitem:
        value = value.args[0]  # one result of a multi-output op (topk's values, say)
    if value.op != "call_function" or not isinstance(value.target, OpOverload):
        return False
    return not _aliases(value)


def _with_mutation_outputs(
    graph: torch.fx.Graph,
    signature: ExportGraphSignature,
    latest: dict[torch.fx.Node, torch.fx.Node],
    kinds: dict,
) -> ExportGraphSignature:
    """The signature with the written buffers and inputs as leading outputs, and
    the output node returning their last values first."""
    output = graph.output_node()
    returned = list(output.args[0])
    mutations, values = [], []
    order = {spec.arg.name: i for i, spec in enumerate(signature.input_specs)}
    for placeholder in sorted(latest, key=lambda p: order[p.name]):  # inputs' order
        value = latest[placeholder]
        spec = kinds[placeholder.name]
        if spec.kind == InputKind.BUFFER:
            mutations.append(
                OutputSpec(OutputKind.BUFFER_MUTATION, TensorArgument(value.name), spec.target)
            )
        else:
            mutations.append(
                OutputSpec(
                    OutputKind.USER_INPUT_MUTATION, TensorArgument(value.name), placeholder.name
                )
            )
        values.append(value)
    output.args = (tuple(values + returned),)
    renamed = []
    for spec, value in zip(signature.output_specs, returned):
        arg = spec.arg
        if isinstance(value, torch.fx.Node) and isinstance(arg, (TensorArgument, SymIntArgument)):
            arg = type(arg)(value.name)  # a returned tensor that was written later
        renamed.append(OutputSpec(spec.kind, arg, spec.target))
    return ExportGraphSignature(signature.input_specs, mutations + renamed)
