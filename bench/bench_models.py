"""Models the benchmarks share."""

from __future__ import annotations

import torch

from models import GeluBlocks  # shared with the tests

__all__ = ["BigIntermediates", "CheapOps", "GeluBlocks", "TinyMLP"]


class TinyMLP(torch.nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.a = torch.nn.Linear(width, width)
        self.b = torch.nn.Linear(width, width)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class CheapOps(torch.nn.Module):
    """`n` cheap elementwise ops on a tiny tensor: pure per-node overhead."""

    def __init__(self, n: int = 1000):
        super().__init__()
        self.n = n

    def forward(self, x):
        for i in range(self.n):
            x = x * 1.0001 if i % 2 else x + 0.5
        return x


class BigIntermediates(torch.nn.Module):
    """Large temporaries that die quickly: peak memory depends on releasing them."""

    def forward(self, x):
        h = (
            x.unsqueeze(-1).expand(-1, -1, 512).contiguous()
        )  # 256 x 512 x 512 floats = 256 MiB? no: see bench
        a = torch.nn.functional.gelu(h) * 2
        b = a.sum(-1)
        c = torch.nn.functional.gelu(h + 1).mean(-1)
        return b + c
