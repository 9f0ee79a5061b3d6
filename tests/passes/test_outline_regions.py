import torch
from torch.export import Dim
from torch.export.graph_signature import InputKind

from fxdelegate.passes import OutlineRegionsPass
from fxdelegate.runtime import ProgramExecutor
from pipeline_helpers import lowering_state


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        h = self.lin(x)
        g = torch.nn.functional.gelu(h)
        return (g * 2).reshape(g.shape[0], 2, 2)


def _dynamic():
    return {"x": {0: Dim("b", min=2, max=50)}}


def test_regions_get_flat_inputs_owned_weights_and_keep_dynamic_dims():
    _, gm, ctx = lowering_state(
        Block(),
        (torch.randn(5, 4),),
        dynamic_shapes=_dynamic(),
        exclude=("aten.gelu",),
        upto=OutlineRegionsPass,
    )
    parent_symbol = next(n for n in gm.graph.nodes if n.name == "x").meta["val"].shape[0].node.expr
    first, second = ctx.regions
    sig = first.program.graph_signature
    assert [s.kind for s in sig.input_specs] == [
        InputKind.PARAMETER,
        InputKind.PARAMETER,
        InputKind.USER_INPUT,
    ]
    assert set(first.program.state_dict) == {"weight_0", "weight_1"}  # canonical names
    assert sorted(first.owned_state) == ["lin.bias", "lin.weight"]
    for record in ctx.regions:
        program = record.program
        in_spec, out_spec = program.call_spec.in_spec, program.call_spec.out_spec
        assert in_spec.num_leaves == len(record.inputs) == len(record.example_inputs)
        assert out_spec.num_leaves == len(record.outputs)
        for ph in [n for n in program.graph.nodes if n.op == "placeholder"][
            len(program.state_dict) :
        ]:
            size = ph.meta["val"].shape[0]
            assert (
                isinstance(size, torch.SymInt) and size.node.expr == parent_symbol
            )  # still dynamic
        assert parent_symbol in program.range_constraints
        assert program.range_constraints[parent_symbol].upper == 50
    # no SymInt crosses into a region: the reshape's size is recomputed inside
    user_inputs = [n for n in second.program.graph.nodes if n.op == "placeholder"]
    assert all(isinstance(n.meta["val"], torch.Tensor) for n in user_inputs)
    assert any(n.target is torch.ops.aten.sym_size.int for n in second.program.graph.nodes)


def test_region_programs_compute_what_the_parent_computed():
    _, _, ctx = lowering_state(
        Block(),
        (torch.randn(5, 4),),
        dynamic_shapes=_dynamic(),
        exclude=("aten.gelu",),
        upto=OutlineRegionsPass,
    )
    model = Block()
    model.load_state_dict(
        {
            fqn: r.program.state_dict[f"weight_{i}"]
            for r in ctx.regions
            for i, fqn in enumerate(r.owned_state)
        }
    )
    x = torch.randn(7, 4)
    h = ProgramExecutor(ctx.regions[0].program)(x)[0]
    torch.testing.assert_close(h, model.lin(x))
    (out,) = ProgramExecutor(ctx.regions[1].program)(torch.nn.functional.gelu(h))
    torch.testing.assert_close(out, model(x))


class SizeFromElsewhere(torch.nn.Module):
    def forward(self, x, w):
        g = torch.nn.functional.gelu(w)  # static [1, 4]
        return g.expand(x.shape[0], 4) * 2


def test_symbol_missing_from_region_inputs_is_read_from_a_graph_input():
    _, _, ctx = lowering_state(
        SizeFromElsewhere(),
        (torch.randn(3, 4), torch.randn(1, 4)),
        dynamic_shapes={"x": {0: Dim("b", min=2, max=9)}, "w": None},
        exclude=("aten.gelu",),
        upto=OutlineRegionsPass,
    )
    (region,) = ctx.regions
    assert [n.name for n in region.inputs] == ["gelu", "x"]
    program = region.program
    x = torch.randn(6, 4)
    w = torch.randn(1, 4)
    (out,) = ProgramExecutor(program)(torch.nn.functional.gelu(w), x)
    torch.testing.assert_close(out, SizeFromElsewhere()(x, w))


def test_placeholder_names_that_shadow_builtins_survive_outlining():
    import fxdelegate

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU(), torch.nn.Linear(4, 2))
    ep = torch.export.export(model, (torch.randn(3, 4),))
    assert any(n.name == "input" for n in ep.graph.nodes)  # nn.Sequential names its input "input"
    prog = fxdelegate.lower(ep, backend="reference", exclude_ops=["aten.gelu"])
    x = torch.randn(3, 4)
    torch.testing.assert_close(prog(x), model(x))


class Cache(torch.nn.Module):
    """A static cache written with index_copy_; `peek` also reads its old value outside."""

    def __init__(self, peek: bool = False):
        super().__init__()
        self.register_buffer("cache", torch.zeros(8, 4))
        self.peek = peek

    def forward(self, x, pos):
        old = torch.nn.functional.gelu(self.cache) if self.peek else None
        self.cache.index_copy_(0, pos, x)
        out = self.cache.sum(0)
        return out if old is None else out + old.sum(0)


def _written(ctx):
    return [(fqn, old.name, new.name) for r in ctx.regions for fqn, old, new in r.in_place]


def test_a_buffer_read_only_inside_its_region_is_written_in_place():
    args = (torch.randn(1, 4), torch.tensor([3]))
    _, _, ctx = lowering_state(Cache(), args, upto=OutlineRegionsPass)
    assert [fqn for fqn, _, _ in _written(ctx)] == ["cache"]
    (region,) = ctx.regions
    specs = region.program.graph_signature.output_specs
    assert specs[0].kind.name == "USER_INPUT_MUTATION" and specs[0].target == "b_cache"
    assert len(region.outputs) == 1  # the new cache is not returned to the parent
    # gelu (excluded) reads the old value outside the region: the executor keeps the write-back
    _, _, ctx = lowering_state(
        Cache(peek=True), args, exclude=("aten.gelu",), upto=OutlineRegionsPass
    )
    assert _written(ctx) == []
