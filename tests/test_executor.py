import copy

import torch

import fxdelegate
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
