import copy

import pytest
import torch

import fxdelegate
from fxdelegate.errors import InputMismatchError
from fxdelegate.passes import prepare_program
from fxdelegate.runtime import ProgramExecutor
from models import Counter


def test_buffers_and_mutated_inputs_hold_what_eager_leaves():
    eager = Counter()
    exported = copy.deepcopy(eager)
    ep = torch.export.export(exported, (torch.randn(2, 4), torch.zeros(4)))
    prog = fxdelegate.lower(ep, backend="reference", exclude_ops=["aten.gelu"])
    acc_eager, acc_prog = torch.zeros(4), torch.zeros(4)
    for _ in range(3):
        x = torch.randn(2, 4)
        torch.testing.assert_close(prog(x, acc_prog), eager(x, acc_eager))
        torch.testing.assert_close(acc_prog, acc_eager)
        state = prog.exported_program.state_dict
        torch.testing.assert_close(state["calls"], eager.calls)
        torch.testing.assert_close(state["running"], eager.running)
    assert eager.calls.item() == 3


def test_executor_runs_a_plain_exported_program_like_module():
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    ep = prepare_program(torch.export.export(model, (torch.randn(3, 4),)))
    executor = ProgramExecutor(ep)
    x = torch.randn(3, 4)
    torch.testing.assert_close(executor(x), model(x))
    assert "del" in executor.plan.source


class _Scale(torch.nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return torch.relu(x) * self.factor


def test_each_program_calls_its_own_entry_through_every_change():
    # A program's class holds its generated entry as __call__: two programs must
    # not share one, and toggling checks or swapping weights installs the new one.
    x = torch.randn(3)
    one, two = (
        fxdelegate.lower(torch.export.export(_Scale(f), (x,)), backend="reference")
        for f in (2.0, 3.0)
    )
    assert type(one) is not type(two) and isinstance(one, fxdelegate.DelegatedProgram)
    torch.testing.assert_close(one(x), torch.relu(x) * 2)
    torch.testing.assert_close(two(x), torch.relu(x) * 3)
    one.check_inputs = False
    torch.testing.assert_close(one(x), torch.relu(x) * 2)
    assert type(one).__call__ is one._executor._call
    one.check_inputs = True
    with pytest.raises(InputMismatchError, match="dimension 0 must be 3"):
        one(torch.randn(4))
    torch.testing.assert_close(two(x), torch.relu(x) * 3)
