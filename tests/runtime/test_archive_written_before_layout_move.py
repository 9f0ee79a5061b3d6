"""An archive saved before the layout move (issue 27) must still load: module paths moved,
the archive format did not. ``program.pt2`` was written by ``python <this file>`` at
commit 9c21cfa, before any file moved; ``expected.pt`` holds the inputs and what eager
PyTorch returned for them. Do not rewrite them with newer code: that would test nothing."""

from __future__ import annotations

import pathlib
import sys

import torch

import fxdelegate

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "archive_written_before_layout_move"


class PinnedGelu(torch.nn.Module):
    """Two delegated regions around a GELU pinned to the executor, and a buffer updated
    in place, so the archive holds region programs, executor ops and a mutation."""

    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(4, 8)
        self.down = torch.nn.Linear(8, 4)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls.add_(1)
        h = torch.nn.functional.gelu(torch.relu(self.up(x)))
        return self.down(h) * 2 + self.calls


def _inputs(batch: int) -> tuple[torch.Tensor]:
    return (torch.randn(batch, 4),)


def write_archive() -> None:
    torch.manual_seed(0)
    model = PinnedGelu().eval()
    batch = torch.export.Dim("batch", min=2, max=64)
    ep = torch.export.export(model, _inputs(3), dynamic_shapes=({0: batch},))
    prog = fxdelegate.lower(ep, backend="reference", exclude_ops=("aten.gelu",))
    prog.save(DATA / "program.pt2")
    inputs = [_inputs(b) for b in (2, 5)]
    # Each call adds one to the buffer: the expected outputs are eager's, call after call.
    expected = [model(*args) for args in inputs]
    torch.save({"inputs": inputs, "expected": expected}, DATA / "expected.pt")


def test_archive_written_before_layout_move_loads():
    loaded = fxdelegate.load(DATA / "program.pt2")
    data = torch.load(DATA / "expected.pt", weights_only=True)
    assert [r.backend_id for r in loaded.partitions] == ["reference", "reference"]
    assert [op.op for op in loaded.summary.executor_ops] == ["aten.gelu.default"]
    for args, expected in zip(data["inputs"], data["expected"], strict=True):
        torch.testing.assert_close(loaded(*args), expected)


if __name__ == "__main__":
    sys.exit(write_archive())
