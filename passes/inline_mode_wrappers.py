"""Inline the bodies of grad-mode and disabled-autocast wrappers.

torch.export's training IR keeps ``with torch.no_grad():`` blocks as
``wrap_with_set_grad_enabled(False, body, *args)`` and
``with torch.autocast(..., enabled=False):`` blocks as
``wrap_with_autocast(..., False, ..., body, *args)``; rotary embeddings in
`transformers` models are written this way. For an inference program
neither changes a value: grad mode only decides what autograd records, and a
disabled autocast runs its ops as written (fxdelegate never runs a program
under an enclosing autocast). Inlining them leaves a flat graph that the
in-place functionalization can handle, instead of a whole-program re-trace.
An autocast that is enabled changes dtypes and is left alone.
"""

from __future__ import annotations

import operator

import torch

_GRAD = "wrap_with_set_grad_enabled"
_AUTOCAST = "wrap_with_autocast"


def inline_mode_wrappers(graph_module: torch.fx.GraphModule) -> int:
    """Inline every inlinable wrapper in `graph_module` (nested ones too).

    Returns how many were inlined; wrappers it cannot inline stay as they are."""
    inlined = 0
    while True:
        wrapper = next((n for n in graph_module.graph.nodes if _inlinable(n)), None)
        if wrapper is None:
            break
        _inline(graph_module, wrapper)
        inlined += 1
    if inlined:
        graph = graph_module.graph
        graph.eliminate_dead_code()
        used = {n.target for n in graph.nodes if n.op == "get_attr"}
        for name, child in list(graph_module.named_children()):
            if isinstance(child, torch.fx.GraphModule) and name not in used:
                delattr(graph_module, name)  # a body that is inlined now
        graph_module.recompile()
    return inlined


def _body_index(node: torch.fx.Node) -> int | None:
    """Where the body's get_attr sits in `node`'s arguments, if it is a wrapper we inline."""
    name = getattr(node.target, "__name__", None)
    if node.op != "call_function":
        return None
    if name == _GRAD:
        return 1
    if name == _AUTOCAST and len(node.args) > 4 and node.args[2] is False:
        return 4  # (device_type, dtype, enabled, cache_enabled, body, *args)
    return None


def _inlinable(node: torch.fx.Node) -> bool:
    index = _body_index(node)
    if index is None:
        return False
    body = node.args[index]
    # The wrapper returns a tuple that only getitems read.
    return (
        isinstance(body, torch.fx.Node)
        and body.op == "get_attr"
        and all(u.target is operator.getitem for u in node.users)
    )


def _inline(graph_module: torch.fx.GraphModule, wrapper: torch.fx.Node) -> None:
    index = _body_index(wrapper)
    assert index is not None
    body: torch.fx.GraphModule = getattr(graph_module, wrapper.args[index].target)
    operands = list(wrapper.args[index + 1 :])
    graph = graph_module.graph
    env: dict[torch.fx.Node, object] = {}
    placeholders = [n for n in body.graph.nodes if n.op == "placeholder"]
    env.update(zip(placeholders, operands))
    results: object = None
    with graph.inserting_before(wrapper):
        for node in body.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                results = torch.fx.map_arg(node.args[0], lambda n: env[n])
                continue
            if node.op == "get_attr":  # a nested body or constant of the wrapper's own
                attr = _unique_attr(graph_module, node.target)
                setattr(graph_module, attr, getattr(body, node.target))
                env[node] = graph.get_attr(attr)
                env[node].meta = dict(node.meta)
                continue
            env[node] = graph.node_copy(node, lambda n: env[n])
    outputs = list(results) if isinstance(results, (tuple, list)) else [results]
    for user in list(wrapper.users):
        user.replace_all_uses_with(outputs[user.args[1]])
        graph.erase_node(user)
    graph.erase_node(wrapper)


def _unique_attr(module: torch.nn.Module, name: str) -> str:
    candidate, i = name, 0
    while hasattr(module, candidate):
        i += 1
        candidate = f"{name}_inlined_{i}"
    return candidate
