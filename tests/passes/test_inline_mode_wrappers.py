import torch
from torch._ops import HigherOrderOperator

from fxdelegate.passes.inline_mode_wrappers import inline_mode_wrappers


class Wrapped(torch.nn.Module):
    """A rotary-embedding style block: autocast off inside no_grad, as transformers writes it."""

    def __init__(self):
        super().__init__()
        self.register_buffer("freq", torch.linspace(0.1, 1.0, 8))

    def forward(self, x):
        with torch.no_grad():
            with torch.autocast("cpu", enabled=False):
                angles = x.float()[..., None] * self.freq
                cos, sin = angles.cos(), angles.sin()
        return (cos * 2 + sin).sum(-1)


class AutocastOn(torch.nn.Module):
    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return x @ x.t()


def _hops(gm):
    return [n for n in gm.graph.nodes if isinstance(n.target, HigherOrderOperator)]


def test_grad_mode_and_disabled_autocast_bodies_are_inlined():
    x = torch.randn(3, 5)
    ep = torch.export.export(Wrapped(), (x,))
    gm = ep.graph_module
    assert _hops(gm), "the premise: torch.export keeps the wrappers"
    expected = ep.module()(x)
    assert inline_mode_wrappers(gm) == 2  # the outer one, then the one its body held
    assert _hops(gm) == []
    assert not [m for name, m in gm.named_children() if isinstance(m, torch.fx.GraphModule)]
    gm.graph.lint()
    torch.testing.assert_close(ep.module()(x), expected)


def test_an_enabled_autocast_is_left_alone():
    x = torch.randn(4, 4)
    ep = torch.export.export(AutocastOn(), (x,))
    before = len(_hops(ep.graph_module))
    assert before == 1
    assert inline_mode_wrappers(ep.graph_module) == 0
    assert len(_hops(ep.graph_module)) == before
