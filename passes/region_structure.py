"""When two regions outline to the same program, up to their weights.

A model made of repeated blocks has many regions that differ only in which
weights they read. Outlining each of them builds an FX graph, generates its
code twice and verifies it; hashing each one for the compile cache walks it
again. Instead, every region gets a *structure*: a hashable description,
read off the parent graph, of everything its outlined program depends on.
Regions with equal structures share one outlined program, one content key
and one compiled artifact; each binds its own weights.

The description is exact, not canonical, where exactness is cheap and safe:
size symbols keep their identity (two regions whose batch dims are different
symbols are not merged), control-flow bodies are named, and an argument of a
type not listed below is compared by identity. It covers what
:func:`.compile.region_key.region_key` covers, so equal structures always have equal
content keys.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch
from torch.export.graph_signature import InputSpec

from .region_boundary import RegionBoundary

_BY_VALUE = (torch.dtype, torch.device, torch.layout, torch.memory_format)


def region_structure(boundary: RegionBoundary, specs_by_name: dict[str, InputSpec]) -> Hashable:
    """A hashable description of the program `boundary`'s region outlines to."""
    index: dict[torch.fx.Node, int] = {}
    inputs: list[Hashable] = []
    for value in boundary.owned:
        spec = specs_by_name[value.name]
        index[value] = len(index)
        inputs.append(("owned", spec.kind, spec.persistent, describe_value(value.meta.get("val"))))
    for kind, values in (("runtime", boundary.runtime), ("size", boundary.sizes)):
        for value in values:
            index[value] = len(index)
            inputs.append((kind, describe_value(value.meta.get("val"))))
    for value in boundary.bodies:
        index[value] = len(index)
        inputs.append(("body", value.target))
    nodes = []
    for node in boundary.members:
        index[node] = len(index)
        nodes.append(
            (
                node.op,
                node.target,
                _argument(node.args, index),
                _argument(dict(node.kwargs), index),
                describe_value(node.meta.get("val")),
            )
        )
    return (
        tuple(inputs),
        tuple(nodes),
        tuple(index[n] for n in boundary.outputs),
        tuple((index[new], index[old]) for new, old in boundary.written.items()),
    )


def describe_value(val: Any) -> Hashable:
    """A node's value as the outlined program sees it: tensor metadata, sizes, literals."""
    if isinstance(val, torch.Tensor):
        strided = val.layout == torch.strided  # other layouts have no strides
        return (
            "T",
            val.dtype,
            val.device,
            val.layout,
            val.requires_grad,
            tuple(_size(s) for s in val.shape),
            tuple(_size(s) for s in val.stride()) if strided else None,
        )
    if isinstance(val, (tuple, list)):
        return (type(val).__name__, tuple(describe_value(v) for v in val))
    if isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return ("S", type(val).__name__, val.node.expr)
    return _literal(val)


def _size(size: Any) -> Hashable:
    return size.node.expr if isinstance(size, torch.SymInt) else size


def _argument(arg: Any, index: dict[torch.fx.Node, int]) -> Hashable:
    if isinstance(arg, torch.fx.Node):
        return ("n", index[arg])
    if isinstance(arg, (tuple, list)):
        return (type(arg).__name__, tuple(_argument(a, index) for a in arg))
    if isinstance(arg, dict):
        return ("dict", tuple((k, _argument(v, index)) for k, v in arg.items()))
    return _literal(arg)


def _literal(value: Any) -> Hashable:
    # The type is part of the description: True == 1 == 1.0 in Python.
    if value is None or isinstance(value, (bool, int, str)):
        return (type(value).__name__, value)
    if isinstance(value, float):
        return ("float", repr(value))  # nan != nan, and 0.0 == -0.0
    if isinstance(value, _BY_VALUE):
        return (type(value).__name__, str(value))
    return ("object", id(value))  # alive as long as the graph refers to it
