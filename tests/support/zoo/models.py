"""Models of the zoo: common architectures and the graphs that break delegation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch._higher_order_ops.map import map as control_map


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(16, 32),
            torch.nn.ReLU(),
            torch.nn.Linear(32, 32),
            torch.nn.GELU(),
            torch.nn.Linear(32, 4),
        )

    def forward(self, x):
        return self.net(x)


class CNN(torch.nn.Module):
    """Conv + BatchNorm (eval) + ReLU + pooling + head."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(16)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.gelu(self.bn2(self.conv2(x)))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Encoder(torch.nn.Module):
    """A two-layer transformer encoder written out (attention, MLP, LayerNorm)."""

    def __init__(self, d=32, heads=4, layers=2, ff=None):
        super().__init__()
        self.heads = heads
        ff = ff or 2 * d
        self.blocks = torch.nn.ModuleList(
            torch.nn.ModuleDict(
                {
                    "ln1": torch.nn.LayerNorm(d),
                    "qkv": torch.nn.Linear(d, 3 * d),
                    "out": torch.nn.Linear(d, d),
                    "ln2": torch.nn.LayerNorm(d),
                    "fc1": torch.nn.Linear(d, ff),
                    "fc2": torch.nn.Linear(ff, d),
                }
            )
            for _ in range(layers)
        )

    def forward(self, x):
        b, s, d = x.shape
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["ln1"](x)).chunk(3, dim=-1)
            q, k, v = (
                t.reshape(b, s, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v)
            )
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1)
            x = x + blk["out"]((att @ v).transpose(1, 2).reshape(b, s, d))
            x = x + blk["fc2"](F.gelu(blk["fc1"](blk["ln2"](x))))
        return x


class LSTMLoop(torch.nn.Module):
    """An LSTM cell stepped over time in a Python loop (unrolled by export)."""

    def __init__(self, inp=8, hidden=16, steps=4):
        super().__init__()
        self.steps = steps
        self.ih = torch.nn.Linear(inp, 4 * hidden)
        self.hh = torch.nn.Linear(hidden, 4 * hidden)
        self.hidden = hidden

    def forward(self, xs):
        h = xs.new_zeros(xs.shape[0], self.hidden)
        c = xs.new_zeros(xs.shape[0], self.hidden)
        for t in range(self.steps):
            i, f, g, o = (self.ih(xs[:, t]) + self.hh(h)).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class KVDecoder(torch.nn.Module):
    """Embedding + attention decoding one token per call, with a KV cache buffer
    written by index_copy_ (keys) and slice assignment (values)."""

    def __init__(self, vocab=50, d=16, max_len=8):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, d)
        self.q = torch.nn.Linear(d, d)
        self.k = torch.nn.Linear(d, d)
        self.v = torch.nn.Linear(d, d)
        self.out = torch.nn.Linear(d, vocab)
        self.register_buffer("k_cache", torch.zeros(2, max_len, d))
        self.register_buffer("v_cache", torch.zeros(2, max_len, d))

    def forward(self, token, pos):
        e = self.emb(token)  # [2, d]
        self.k_cache.index_copy_(1, pos, self.k(e).unsqueeze(1))
        self.v_cache[:, pos] = self.v(e).unsqueeze(1)
        att = torch.softmax(torch.einsum("bd,btd->bt", self.q(e), self.k_cache) / 4.0, dim=-1)
        return self.out(torch.einsum("bt,btd->bd", att, self.v_cache))


class Counter(torch.nn.Module):
    """Buffer mutation inside a region and at a region boundary."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("running", torch.zeros(4))

    def forward(self, x):
        self.calls.add_(1)
        h = F.gelu(self.lin(x))
        self.running.mul_(0.5).add_(h.mean(0))
        return h * self.calls


class BatchNormTrain(torch.nn.Module):
    """BatchNorm in training mode: running statistics are buffers it mutates."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(6, 6)
        self.bn = torch.nn.BatchNorm1d(6)

    def forward(self, x):
        return F.gelu(self.bn(self.lin(x)))


class InputMutation(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x, acc):
        h = F.gelu(self.lin(x))
        acc.add_(h.sum(0))
        x.mul_(2)
        return h


class SharedParam(torch.nn.Module):
    """One parameter read by two regions and by an executor op."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(6, 6))

    def forward(self, x):
        a = x @ self.w
        b = F.gelu(a)
        c = b @ self.w
        return F.gelu(c) + F.gelu(self.w).sum()


class CondModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        y = self.lin(x)
        z = torch.cond(y.sum() > 0, lambda t: t.sin() * 2, lambda t: t.cos() + 1, (y,))
        return F.gelu(z) + y


class MapModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, xs):
        h = self.lin(xs)
        return control_map(lambda x, w: torch.relu(x) * w, h, h.mean(0)).sum(0)


class TwoDims(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x):  # [batch, seq, 8]
        h = F.gelu(self.lin(x))
        return h.reshape(x.shape[0] * x.shape[1], 8).softmax(-1), h.mean(1)


class DerivedDim(torch.nn.Module):
    def forward(self, x, y):  # x: [b, 4], y: [2b, 4]
        z = torch.cat([x, x], dim=0) + y
        return F.gelu(z).sum(0), z[: x.shape[0]] * 2


class DimThroughExecutor(torch.nn.Module):
    """A dynamic dimension computed in the executor (gelu) flows into a region."""

    def forward(self, x):
        g = F.gelu(x)  # executor
        return (g.reshape(-1) * 2).reshape(g.shape[0], -1).sum(1)


class KwargsOnly(torch.nn.Module):
    def forward(self, *, a, b, scale):
        return F.gelu(a * scale) + b


class NoneIO(torch.nn.Module):
    def forward(self, x, maybe, pair):
        y = F.gelu(x) if maybe is None else x
        return {"y": y * 2, "nothing": None, "pair": (pair[0] + 1, None)}


class ScalarOutputs(torch.nn.Module):
    def forward(self, x):
        y = F.gelu(x * 2)
        return y, x.shape[0], 3.5, y.shape[1] * 2


class AliasingOutputs(torch.nn.Module):
    def forward(self, x):
        y = x * 2
        view = y.view(-1)
        return x, y, view, y, F.gelu(y).t()


class EmptyTensors(torch.nn.Module):
    def forward(self, x, e):  # e is [0, 4]
        return F.gelu(x) + 1, torch.cat([e, x]) * 2, e.sum(0)


class ZeroDim(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.5))

    def forward(self, x, s):
        return F.gelu(x * s) * self.scale, (s * 2).sin()


class NonContiguous(torch.nn.Module):
    def forward(self, x):
        return F.gelu(x * 2 + 1) - x.sum(0)


class HalfPrecision(torch.nn.Module):
    def __init__(self, dtype=torch.float16):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8).to(dtype)

    def forward(self, x):
        return F.gelu(self.lin(x)) * 2


class IntBool(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(20, 6)

    def forward(self, idx, mask):
        e = self.emb(idx)
        keep = mask & (idx > 3)
        counts = keep.long().sum(-1)
        return F.gelu(e) * keep.unsqueeze(-1), counts * 2, idx.remainder(7)


@torch.library.custom_op("fxdelegate_zoo::scaled_tanh", mutates_args=())
def scaled_tanh(x: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.tanh(x) * scale


@scaled_tanh.register_fake
def _(x, scale):
    return torch.empty_like(x)


class CustomOp(torch.nn.Module):
    """A Python custom op between two regions: it must stay in the executor."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(6, 6)
        self.b = torch.nn.Linear(6, 6)

    def forward(self, x):
        return self.b(scaled_tanh(self.a(x), 1.5)) + 1


class DataDependent(torch.nn.Module):
    def forward(self, x):
        y = x * 2
        nz = torch.nonzero(y > 0)
        uniq = torch.unique(torch.round(y))
        picked = torch.masked_select(y, y > 0.5)
        return nz.shape[0] + picked.sum(), uniq.float().mean() + y.sum(), F.gelu(y)


class ResidualBlocks(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lins = torch.nn.ModuleList(torch.nn.Linear(16, 16) for _ in range(3))
        self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(16) for _ in range(3))

    def forward(self, x):
        for lin, norm in zip(self.lins, self.norms):
            x = x + F.gelu(norm(lin(x)))
        return x


class TiedWeights(torch.nn.Module):
    """An embedding and an output projection sharing one weight."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(30, 8)
        self.mid = torch.nn.Linear(8, 8)

    def forward(self, idx):
        h = F.gelu(self.mid(self.emb(idx)))
        return h @ self.emb.weight.t()


class Depthwise(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.dw = torch.nn.Conv1d(8, 8, 3, padding=1, groups=8)
        self.pw = torch.nn.Conv1d(8, 4, 1)

    def forward(self, x):
        return self.pw(F.gelu(self.dw(x))).max(dim=-1).values


_DEFAULT_OFFSET = torch.linspace(-1.0, 1.0, 8)


class TensorConstants(torch.nn.Module):
    """Tensors made while tracing: a default argument, a 0-d `torch.tensor`,
    and both read inside `cond` branches (they become the program's constants)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x, offset=_DEFAULT_OFFSET):
        scale = torch.tensor(0.5)
        h = F.gelu(self.lin(x))

        def wide(h):
            return h * scale + offset

        def narrow(h):
            return h - offset

        return torch.cond(h.shape[0] > 3, wide, narrow, (h,)) + scale
