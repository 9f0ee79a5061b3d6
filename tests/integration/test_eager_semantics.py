"""Programs must stay valid in eager: the executor and the reference backend run
ops eagerly, so a lowering must not change what an op returns (its layout
included) compared with the user's own program."""

import pytest
import torch

import fxdelegate


@torch.library.custom_op("fxd_semantics::column_major_double", mutates_args=())
def column_major_double(x: torch.Tensor) -> torch.Tensor:
    return (x * 2).t().contiguous().t()  # eager: a column-major result


@column_major_double.register_fake
def _(x):
    # The tracer's guess differs from eager, as real meta kernels sometimes do.
    return torch.empty_like(x, memory_format=torch.contiguous_format)


class LayoutGuess(torch.nn.Module):
    """`reshape` after an op whose traced layout is not its eager layout: a re-trace
    turns the reshape into a `view` that is invalid in eager."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls.add_(1)  # a mutation the lowering must functionalize
        y = column_major_double(torch.relu(x))
        return torch.tanh(y.reshape(-1)) + self.calls


@pytest.mark.parametrize("pinned", [(), ("aten.reshape", "aten.view")])
def test_a_program_valid_in_eager_stays_valid_after_lowering(pinned):
    x = torch.randn(3, 4)
    model = LayoutGuess()
    ep = torch.export.export(LayoutGuess(), (x,))
    # pinned: the reshape runs in the executor, on the custom op's own output
    prog = fxdelegate.lower(ep, backend="reference", exclude_ops=pinned)
    assert "column_major_double" in {op.node for op in prog.summary.executor_ops}
    for _ in range(2):
        torch.testing.assert_close(prog(x), model(x))
    torch.testing.assert_close(prog.exported_program.state_dict["calls"], model.calls)
