"""The graph executor: runs a (partly delegated) ExportedProgram serially.

Everything that can be decided once is decided at construction: where each
placeholder's value comes from, the generated straight-line function
(:mod:`.plan`), which outputs write back into buffers or user inputs, and the
input checks. A call then flattens the user's inputs, checks them, runs the
function and unflattens the outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from fxdelegate.errors import InputMismatchError, UnsupportedProgramError

from .backend import Runner
from .input_check import InputChecker
from .plan import GraphPlan, build_plan


def describe_spec(spec: pytree.TreeSpec) -> str:
    """A treespec as Python-looking structure with `*` for each leaf."""
    return repr(pytree.tree_unflatten([_Leaf()] * spec.num_leaves, spec))


class _Leaf:
    def __repr__(self) -> str:
        return "*"


def input_paths(in_spec: pytree.TreeSpec) -> list[str]:
    """Readable names of the flat inputs: args[0], kwargs['mask'], args[1]['z'][0]..."""
    tree = pytree.tree_unflatten(list(range(in_spec.num_leaves)), in_spec)
    paths = []
    for path, _ in pytree.tree_flatten_with_path(tree)[0]:
        head, rest = path[0], path[1:]
        prefix = "args" if getattr(head, "idx", None) == 0 else "kwargs"
        if prefix == "kwargs" and rest and isinstance(rest[0], pytree.MappingKey):
            paths.append(f"kwargs[{rest[0].key!r}]" + pytree.keystr(rest[1:]))
        else:
            paths.append(prefix + pytree.keystr(rest))
    return paths


class ProgramExecutor:
    """Callable that runs `program` with the same pytree interface as ``program.module()``."""

    def __init__(
        self,
        program: ExportedProgram,
        runners: Mapping[str, Runner] | None = None,
        *,
        check_inputs: bool = True,
    ) -> None:
        self.program = program
        self.check_inputs = check_inputs
        self.in_spec: pytree.TreeSpec = program.call_spec.in_spec
        self.out_spec: pytree.TreeSpec = program.call_spec.out_spec
        sig = program.graph_signature
        placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != len(sig.input_specs):
            raise UnsupportedProgramError(
                f"graph has {len(placeholders)} placeholders but the signature lists {len(sig.input_specs)} inputs"
            )

        # Where each placeholder's value comes from: the program's own state, or the user.
        self._state: list[Any] = []
        self._user_index_of_input: dict[str, int] = {}
        user_names, user_vals = [], []
        layout: list[tuple[str, int]] = []
        for node, spec in zip(placeholders, sig.input_specs):
            if spec.kind == InputKind.USER_INPUT:
                self._user_index_of_input[node.name] = len(user_names)
                layout.append(("user", len(user_names)))
                user_names.append(node.name)
                user_vals.append(node.meta.get("val"))
            else:
                layout.append(("state", len(self._state)))
                self._state.append(self._state_value(spec))
        self._state_first = all(kind == "state" for kind, _ in layout[: len(self._state)])
        self._layout = layout

        n_user = len(user_names)
        if self.in_spec.num_leaves != n_user:
            raise UnsupportedProgramError(
                f"input treespec has {self.in_spec.num_leaves} leaves but the program has {n_user} user inputs"
            )
        self.input_names = input_paths(self.in_spec)
        structure = pytree.tree_unflatten([None] * n_user, self.in_spec)
        self._kwarg_names: list[str] = (
            list(structure[1]) if isinstance(structure, tuple) and len(structure) == 2 else []
        )
        self.checker = InputChecker.from_placeholders(
            self.input_names, user_vals, program.range_constraints
        )

        # Outputs: write-backs first (buffers, user inputs), then the user's outputs.
        self._write_back: list[tuple[int, str, Any]] = []
        self._user_outputs: list[int] = []
        for pos, spec in enumerate(sig.output_specs):
            if spec.kind == OutputKind.USER_OUTPUT:
                self._user_outputs.append(pos)
            elif spec.kind == OutputKind.BUFFER_MUTATION:
                self._write_back.append((pos, "state", self._buffer(spec.target)))
            elif spec.kind == OutputKind.USER_INPUT_MUTATION:
                self._write_back.append((pos, "user", self._user_index_of_input[spec.target]))
            else:
                raise UnsupportedProgramError(
                    f"output kind {spec.kind.name} is not supported by the executor"
                )

        self.plan: GraphPlan = build_plan(program.graph, runners or {}, owner=program.graph_module)

    def _state_value(self, spec) -> Any:
        target = spec.target
        if spec.kind == InputKind.PARAMETER:
            return self.program.state_dict[target]
        if spec.kind == InputKind.BUFFER:
            if target in self.program.state_dict:
                return self.program.state_dict[target]
            return self.program.constants[target]
        if spec.kind in (InputKind.CONSTANT_TENSOR, InputKind.CUSTOM_OBJ):
            return self.program.constants[target]
        raise UnsupportedProgramError(
            f"input kind {spec.kind.name} ({spec.arg}) is not supported by the executor"
        )

    def _buffer(self, target: str) -> torch.Tensor:
        if target in self.program.state_dict:
            return self.program.state_dict[target]
        return self.program.constants[target]

    def flatten_inputs(self, args: tuple, kwargs: dict) -> list[Any]:
        if kwargs:
            expected = self._kwarg_names
            unknown = set(kwargs) - set(expected)
            if unknown:
                raise InputMismatchError(
                    f"unexpected keyword argument(s) {sorted(unknown)}; the program takes {expected}"
                )
            kwargs = {k: kwargs[k] for k in expected if k in kwargs}
        flat, spec = pytree.tree_flatten((args, kwargs))
        if spec != self.in_spec:
            raise InputMismatchError(
                f"inputs are structured as {describe_spec(spec)}, but the program was exported "
                f"for {describe_spec(self.in_spec)} (args, kwargs)"
            )
        return flat

    def run_flat(self, flat: list[Any]) -> list[Any]:
        """Run on flat user inputs; returns flat user outputs after applying write-backs."""
        if self.check_inputs:
            self.checker.check(flat)
        if self._state_first:
            inputs = self._state + flat
        else:
            inputs = [self._state[i] if kind == "state" else flat[i] for kind, i in self._layout]
        outs = self.plan.fn(inputs)
        for pos, kind, where in self._write_back:
            target = where if kind == "state" else flat[where]
            target.copy_(outs[pos])
        return [outs[i] for i in self._user_outputs]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        flat = self.flatten_inputs(args, kwargs)
        return pytree.tree_unflatten(self.run_flat(flat), self.out_spec)
