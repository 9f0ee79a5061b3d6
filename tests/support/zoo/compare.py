"""Lower a zoo case and check it against eager, call by call, state included."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.utils._pytree as pytree

import fxdelegate

from . import ZooCase


def export_case(case: ZooCase) -> tuple[torch.nn.Module, torch.export.ExportedProgram]:
    """The eager model and an export of an identical copy (state is not shared)."""
    torch.manual_seed(0)
    eager = case.make()
    eager.train(case.train)
    exported = copy.deepcopy(eager)
    args, kwargs = case.inputs(case.sizes[0])
    dynamic = case.dynamic() if case.dynamic else None
    return eager, torch.export.export(exported, args, kwargs, dynamic_shapes=dynamic)


def assert_same(got: Any, expected: Any, tol: dict[str, float]) -> float:
    """Same pytree structure, tensors close, other leaves equal; returns max abs error."""
    got_leaves, got_spec = pytree.tree_flatten(got)
    exp_leaves, exp_spec = pytree.tree_flatten(expected)
    assert got_spec == exp_spec, f"structure {got_spec} != {exp_spec}"
    worst = 0.0
    for g, e in zip(got_leaves, exp_leaves):
        if isinstance(e, torch.Tensor):
            assert isinstance(g, torch.Tensor), f"expected a tensor, got {type(g).__name__}"
            torch.testing.assert_close(g, e, **tol)
            if e.numel() and e.dtype.is_floating_point:
                worst = max(worst, (g.double() - e.double()).abs().max().item())
        else:
            assert g == e, f"{g!r} != {e!r}"
    return worst


def check_program(
    case: ZooCase, prog: fxdelegate.DelegatedProgram, eager: torch.nn.Module
) -> float:
    """Run both side by side for every size and call: outputs, mutated inputs and buffers."""
    worst = 0.0
    state = {**prog.exported_program.state_dict, **prog.exported_program.constants}
    for size in case.sizes:
        for call in range(case.calls):
            torch.manual_seed(1000 * size + call)
            args, kwargs = case.inputs(size)
            mine = pytree.tree_map_only(
                torch.Tensor, lambda t: t.clone().as_strided(t.shape, t.stride()), (args, kwargs)
            )
            got = prog(*mine[0], **mine[1])
            expected = eager(*args, **kwargs)
            worst = max(worst, assert_same(got, expected, case.tol))
            assert_same(mine, (args, kwargs), case.tol)  # mutated inputs
            for name, buffer in eager.named_buffers():
                if name in state:
                    assert_same(state[name], buffer, case.tol)
    return worst
