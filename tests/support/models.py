"""Small models shared by the tests."""

from __future__ import annotations

import torch
from torch.export import Dim


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


class Sandwich(torch.nn.Module):
    """Linear -> ReLU -> `middle` -> Linear: usually a region, the executor, a region."""

    def __init__(self, middle, width: int = 16):
        super().__init__()
        self.a = torch.nn.Linear(width, width)
        self.b = torch.nn.Linear(width, width)
        self.middle = middle

    def forward(self, x):
        return self.b(self.middle(self.a(x).relu()))


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


class RMSNorm(torch.nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class DecoderLayer(torch.nn.Module):
    def __init__(self, d: int, heads: int, ff: int, batch: int, max_len: int):
        super().__init__()
        self.heads, self.hd = heads, d // heads
        self.attn_norm, self.mlp_norm = RMSNorm(d), RMSNorm(d)
        self.q, self.k, self.v, self.o = (torch.nn.Linear(d, d, bias=False) for _ in range(4))
        self.gate, self.up = (torch.nn.Linear(d, ff, bias=False) for _ in range(2))
        self.down = torch.nn.Linear(ff, d, bias=False)
        self.register_buffer("k_cache", torch.zeros(batch, heads, max_len, self.hd))
        self.register_buffer("v_cache", torch.zeros(batch, heads, max_len, self.hd))

    def forward(self, x, pos, cos, sin, mask):
        b = x.shape[0]
        h = self.attn_norm(x)
        q, k, v = (
            p(h).view(b, 1, self.heads, self.hd).transpose(1, 2) for p in (self.q, self.k, self.v)
        )
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        self.k_cache.index_copy_(2, pos, k)  # the static cache, written in place
        self.v_cache.index_copy_(2, pos, v)
        scores = q @ self.k_cache.transpose(-1, -2) / self.hd**0.5 + mask
        attn = torch.softmax(scores, dim=-1) @ self.v_cache
        x = x + self.o(attn.transpose(1, 2).reshape(b, 1, -1))
        h = self.mlp_norm(x)
        return x + self.down(torch.nn.functional.silu(self.gate(h)) * self.up(h))


def _rotate(t, cos, sin):
    half = t.shape[-1] // 2
    rotated = torch.cat((-t[..., half:], t[..., :half]), dim=-1)
    return t * cos + rotated * sin


class LlamaDecoder(torch.nn.Module):
    """A Llama-like decoder for one decode step: RMSNorm, rotary embeddings, a SiLU-gated
    MLP and a static KV cache (buffers written with ``index_copy_``)."""

    def __init__(self, layers=4, d=512, heads=8, ff=1408, vocab=1024, batch=1, max_len=256):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d)
        self.layers = torch.nn.ModuleList(
            DecoderLayer(d, heads, ff, batch, max_len) for _ in range(layers)
        )
        self.norm = RMSNorm(d)
        self.head = torch.nn.Linear(d, vocab, bias=False)
        hd = d // heads
        freq = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        angles = torch.outer(torch.arange(max_len).float(), freq).repeat(1, 2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        self.register_buffer("positions", torch.arange(max_len), persistent=False)

    def forward(self, token, pos):
        """token: [batch, 1] ids; pos: [1] int64, the position being written."""
        x = self.embed(token)
        cos, sin = self.cos[pos], self.sin[pos]
        mask = torch.where(self.positions <= pos, 0.0, float("-inf"))
        for layer in self.layers:
            x = layer(x, pos, cos, sin, mask)
        return self.head(self.norm(x))
