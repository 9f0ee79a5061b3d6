"""Small models shared by the tests."""

from __future__ import annotations

import torch
from torch.export import Dim


class NestedIO(torch.nn.Module):
    """Nested pytree inputs and outputs: tuple, dict, list and a keyword-only tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x, pair, cfg, *, bias):
        a, b = pair
        h = torch.relu(self.proj(x) + a)
        g = torch.nn.functional.gelu(h * cfg["w"])
        y = g + cfg["extra"][0] * b + bias
        z = (y - cfg["extra"][1]).sum(dim=-1)
        return {"y": y, "parts": [h, (z, g.mean())]}


def nested_inputs(batch: int, device: str | torch.device = "cpu"):
    args = (
        torch.randn(batch, 8, device=device),
        (torch.randn(batch, 8, device=device), torch.randn(batch, 8, device=device)),
        {
            "w": torch.randn(8, device=device),
            "extra": [torch.randn(batch, 8, device=device), torch.randn(batch, 8, device=device)],
        },
    )
    return args, {"bias": torch.randn(8, device=device)}


def export_nested(
    model: NestedIO, batch: int = 4, device: str | torch.device = "cpu"
) -> torch.export.ExportedProgram:
    args, kwargs = nested_inputs(batch, device)
    b = Dim("b", min=2, max=128)
    dynamic = {
        "x": {0: b},
        "pair": ({0: b}, {0: b}),
        "cfg": {"w": None, "extra": [{0: b}, {0: b}]},
        "bias": None,
    }
    return torch.export.export(model, args, kwargs, dynamic_shapes=dynamic)


class Counter(torch.nn.Module):
    """Buffer mutation inside a region and at a region boundary, and input mutation."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("running", torch.zeros(4))

    def forward(self, x, acc):
        self.calls.add_(1)
        h = torch.nn.functional.gelu(self.lin(x))
        self.running.mul_(0.5).add_(h.mean(0))
        acc.add_(h.sum(0))
        return h * self.calls


class SharedWeight(torch.nn.Module):
    """One parameter read by two regions and by an executor op."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(6, 6))
        self.own = torch.nn.Parameter(torch.randn(6, 6))

    def forward(self, x):
        a = x @ self.w
        b = torch.nn.functional.gelu(a)
        c = (b @ self.own) @ self.w
        d = torch.nn.functional.gelu(c) + self.w.sum()
        return d


class SkipEdges(torch.nn.Module):
    """A long skip edge around an executor op: naive merging would create a cycle."""

    def forward(self, x):
        a = x * 2
        b = torch.nn.functional.gelu(a)  # excluded
        c = a + 1  # same level as a
        d = b * c  # must not join a's region through the gelu path
        return d + a


class Wide(torch.nn.Module):
    """`n` width x width linears, GELU between them (weights dominate the archive)."""

    def __init__(self, n: int = 5, width: int = 1024):
        super().__init__()
        self.lins = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(n))

    def forward(self, x):
        for lin in self.lins:
            x = torch.nn.functional.gelu(lin(x))
        return x
