"""Models the benchmarks share."""

from __future__ import annotations

import torch


class GeluBlocks(torch.nn.Module):
    """`blocks` x (Linear -> LayerNorm -> GELU) with residuals."""

    def __init__(self, blocks: int = 8, width: int = 128):
        super().__init__()
        self.linears = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(blocks))
        self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(width) for _ in range(blocks))

    def forward(self, x):
        for lin, norm in zip(self.linears, self.norms):
            x = x + torch.nn.functional.gelu(norm(lin(x)))
        return x


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
