"""Call specs that torch's program serializer cannot name.

A program that returns what ``torch.max(x, 1)`` or ``torch.linalg.lu(a)``
returns has a ``torch.return_types`` structseq in its output treespec, and
torch's serializer refuses every pytree node type without a serialized name
(``torch.export.save`` fails on such a program too). The archive stores those
nodes as tuples, records where they were (per program, per call-spec: the
node's position in a pre-order walk and the structseq's name), and the reader
puts them back.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.export import ExportedProgram

from fxdelegate.errors import ArchiveError

# {"<entry>.<in|out>": [[pre-order position, structseq name], ...]}
Replaced = dict[str, list[list[Any]]]


def _unnamed_structseq(node_type: type) -> bool:
    if not pytree.is_structseq_class(node_type):
        return False
    entry = pytree.SUPPORTED_SERIALIZED_TYPES.get(node_type)
    name = getattr(entry, "serialized_type_name", None)
    return name in (None, pytree.NO_SERIALIZED_TYPE_NAME_FOUND)


def _walk(spec: pytree.TreeSpec, visit) -> pytree.TreeSpec:
    """`spec` rebuilt bottom-up, each node passed through `visit(position, node)`."""
    position = 0

    def rebuild(node: pytree.TreeSpec) -> pytree.TreeSpec:
        nonlocal position
        here = position
        position += 1
        if node.is_leaf():
            return node
        children = [rebuild(child) for child in node.children()]
        node_type, context = visit(here, node)
        return pytree.TreeSpec(node_type, context, children)

    return rebuild(spec)


def portable_specs(program: ExportedProgram) -> tuple[ExportedProgram, Replaced]:
    """`program` with its structseq call-spec nodes as tuples (a shallow copy, when
    there are any), and where they were."""
    replaced: Replaced = {}
    entries = []
    for index, entry in enumerate(program.module_call_graph):
        signature = entry.signature
        if signature is None:
            entries.append(entry)
            continue
        specs = {}
        for side in ("in", "out"):
            found: list[list[Any]] = []

            def visit(position, node, found=found):
                if _unnamed_structseq(node.type):
                    found.append([position, node.type.__name__])
                    return tuple, None
                return node.type, node.context

            spec = getattr(signature, f"{side}_spec")
            specs[f"{side}_spec"] = _walk(spec, visit)
            if found:
                replaced[f"{index}.{side}"] = found
        entries.append(
            dataclasses.replace(entry, signature=dataclasses.replace(signature, **specs))
        )
    if not replaced:
        return program, replaced
    portable = copy.copy(program)
    portable._module_call_graph = entries
    return portable, replaced


def restore_specs(program: ExportedProgram, replaced: Replaced, where: str) -> None:
    """Put back, in place, the structseq nodes `portable_specs` stored as tuples."""
    for key, found in replaced.items():
        try:
            index, side = key.split(".")
            signature = program.module_call_graph[int(index)].signature
            kinds = {int(position): getattr(torch.return_types, name) for position, name in found}
        except (ValueError, IndexError, AttributeError, TypeError) as exc:
            raise ArchiveError(
                f"{where}: a stored call spec ({key}) cannot be restored: {exc}"
            ) from exc

        def visit(position, node, kinds=kinds):
            if position in kinds:
                return kinds[position], None
            return node.type, node.context

        attribute = f"{side}_spec"
        setattr(signature, attribute, _walk(getattr(signature, attribute), visit))
