"""Models the benchmarks share."""

from __future__ import annotations

import torch

from models import GeluBlocks  # shared with the tests

__all__ = [
    "BigIntermediates",
    "CheapOps",
    "ConvNet",
    "DecodeStep",
    "DiffusionResBlocks",
    "Fragmented",
    "GeluBlocks",
    "TinyMLP",
    "WideMLPScan",
]


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


class ConvNet(torch.nn.Module):
    """A small image classifier: four 3x3 conv -> BatchNorm -> ReLU stages, pooling, a head."""

    def __init__(self, width: int = 32, classes: int = 10):
        super().__init__()

        def stage(cin: int, cout: int) -> list[torch.nn.Module]:
            return [
                torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                torch.nn.BatchNorm2d(cout),
                torch.nn.ReLU(),
            ]

        self.features = torch.nn.Sequential(
            *stage(3, width),
            *stage(width, width),
            torch.nn.MaxPool2d(2),
            *stage(width, 2 * width),
            *stage(2 * width, 2 * width),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )
        self.head = torch.nn.Linear(2 * width, classes)

    def forward(self, x):
        return self.head(self.features(x))


# An op no backend can take (a custom kernel of the user's, say): it is outside the
# namespaces the backends compile, so it stays in the executor wherever it appears.
@torch.library.custom_op("fxdelegate_bench::soft_clip", mutates_args=())
def soft_clip(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-3.0, 3.0)


@soft_clip.register_fake
def _(x):
    return torch.empty_like(x)


class Fragmented(torch.nn.Module):
    """A backbone worth compiling, then a tail where an op no backend can take sits
    after every cheap op (a post-processing stage with a custom kernel, say): the
    rules cut the tail into `tail` one-op regions whose calls cost more than the
    ops they run."""

    def __init__(self, tail: int = 16, width: int = 64, depth: int = 6):
        super().__init__()
        self.depth = depth
        # One parameter per tail block: the blocks differ only in weights, so one
        # compiled region (and one measurement) serves them all.
        self.scales = torch.nn.ParameterList(
            torch.nn.Parameter(torch.rand(width) + 0.5) for _ in range(tail)
        )

    def forward(self, x):
        for _ in range(self.depth):  # pointwise work a backend fuses into one loop
            x = torch.tanh(x * 1.5 + 0.1) * torch.sigmoid(x) + 0.25 * x
        x = x.mean(0, keepdim=True)
        for scale in self.scales:
            x = soft_clip(x * scale)
        return x


class WideMLPScan(torch.nn.Module):
    """Two stages that want different backends: a wide MLP over a small batch (its
    weights are far larger than its activations, so it runs at memory speed where
    the GEMM kernel streams prepacked weights) and a scan over a long sequence (a
    layout change and running sums, where a generated loop beats a library's)."""

    def __init__(self, width: int = 1024, hidden: int = 4096):
        super().__init__()
        self.up = torch.nn.Linear(width, hidden)
        self.down = torch.nn.Linear(hidden, width)

    def forward(self, x, seq):
        h = self.down(torch.nn.functional.gelu(self.up(x)))  # (batch, width)
        gate = torch.sigmoid(h.mean(0))  # (width,)
        steps = seq.permute(2, 1, 0).contiguous()  # (channels, width, time)
        return h, (steps * gate[:, None]).cumsum(-1)


class DecodeStep(torch.nn.Module):
    """One decoding step of a pre-norm transformer layer: a batch of sequences
    each adds one token, attends over its key/value cache (appended with cat,
    as a plain cache does) and runs the MLP. The projections stream large
    weights for a few rows; the attention streams the cache."""

    def __init__(self, width: int = 1024, heads: int = 16, hidden: int = 4096):
        super().__init__()
        self.heads = heads
        self.norm1 = torch.nn.LayerNorm(width)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.out = torch.nn.Linear(width, width)
        self.norm2 = torch.nn.LayerNorm(width)
        self.up = torch.nn.Linear(width, hidden)
        self.down = torch.nn.Linear(hidden, width)

    def forward(self, x, k_cache, v_cache):
        # x: (batch, width); caches: (batch, heads, length, head_dim)
        batch, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, 3, self.heads, -1).unbind(1)
        keys = torch.cat([k_cache, k[:, :, None]], dim=2)
        values = torch.cat([v_cache, v[:, :, None]], dim=2)
        scores = (q[:, :, None] @ keys.transpose(-1, -2)) * q.shape[-1] ** -0.5
        attended = (scores.softmax(-1) @ values).reshape(batch, width)
        x = x + self.out(attended)
        x = x + self.down(torch.nn.functional.gelu(self.up(self.norm2(x))))
        return x, keys, values


class _TimeConditionedResBlock(torch.nn.Module):
    def __init__(self, channels: int, embedding: int):
        super().__init__()
        self.norm1 = torch.nn.GroupNorm(32, channels)
        self.conv1 = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.time = torch.nn.Linear(embedding, channels)
        self.norm2 = torch.nn.GroupNorm(32, channels)
        self.conv2 = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, emb):
        silu = torch.nn.functional.silu
        h = self.conv1(silu(self.norm1(x))) + self.time(silu(emb))[:, :, None, None]
        return x + self.conv2(silu(self.norm2(h)))


class DiffusionResBlocks(torch.nn.Module):
    """A denoiser step in the style of a diffusion U-Net's residual blocks: a
    sinusoidal timestep embedding through a two-layer MLP (one row, wide
    weights) conditions GroupNorm -> SiLU -> conv blocks over a feature map."""

    def __init__(self, channels: int = 64, embedding: int = 1280, blocks: int = 2):
        super().__init__()
        self.embed1 = torch.nn.Linear(320, embedding)
        self.embed2 = torch.nn.Linear(embedding, embedding)
        self.blocks = torch.nn.ModuleList(
            _TimeConditionedResBlock(channels, embedding) for _ in range(blocks)
        )

    def forward(self, x, timestep):
        half = self.embed1.in_features // 2
        freqs = torch.exp(-torch.arange(half, dtype=torch.float32) * (9.21 / half))
        angles = timestep[:, None] * freqs[None]
        emb = torch.cat([angles.sin(), angles.cos()], -1)
        emb = self.embed2(torch.nn.functional.silu(self.embed1(emb)))
        for block in self.blocks:
            x = block(x, emb)
        return x
