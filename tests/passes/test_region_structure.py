"""Regions of one structure are outlined once and share their program's graph;
each keeps its own weights, inputs and outputs."""

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.export import Dim
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import fxdelegate
from fxdelegate.passes import LowerRegionsPass, OutlineRegionsPass
from fxdelegate.passes.compile.region_key import region_key
from fxdelegate.passes.region_structure import describe_value, region_structure
from fxdelegate.runtime import ProgramExecutor
from models import GeluBlocks
from pipeline_helpers import lowering_state


class TwoWidths(torch.nn.Module):
    """The same ops on two widths: equal graphs up to shapes, so two structures."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
        self.c, self.d = torch.nn.Linear(8, 16), torch.nn.Linear(16, 16)

    def forward(self, x):
        x = torch.nn.functional.gelu(self.a(x))
        x = torch.nn.functional.gelu(self.b(x))
        x = torch.nn.functional.gelu(self.c(x))
        return self.d(x)


def test_identical_blocks_share_one_program_with_their_own_weights():
    model = GeluBlocks(4, 8)
    _, _, ctx = lowering_state(
        model, (torch.randn(3, 8),), exclude=("aten.gelu",), upto=OutlineRegionsPass
    )
    structures = [r.structure for r in ctx.regions]
    # The first block reads x directly and the last region is the final add: the
    # three middle blocks (residual add + linear + norm) share one structure.
    assert structures[1] == structures[2] == structures[3]
    assert len(set(structures)) == 3
    first, *others = ctx.regions[1:4]
    for record in others:
        assert record.program.graph_module is first.program.graph_module
        assert record.program is not first.program
        assert record.program.state_dict is not first.program.state_dict
        for i, fqn in enumerate(record.owned_state):
            assert record.program.state_dict[f"weight_{i}"] is ctx.state_dict[fqn]
        assert record.inputs != first.inputs  # its own parent values


def test_a_shared_program_computes_each_block_with_its_weights():
    model = GeluBlocks(4, 8).eval()
    _, _, ctx = lowering_state(
        model, (torch.randn(3, 8),), exclude=("aten.gelu",), upto=OutlineRegionsPass
    )
    a, b = torch.randn(3, 8), torch.randn(3, 8)
    for i in (1, 2, 3):  # region i: block i's residual add, then its linear and norm
        *_, normed = ProgramExecutor(ctx.regions[i].program)(a, b)
        with torch.no_grad():
            torch.testing.assert_close(normed, model.norms[i](model.linears[i](a + b)))


def test_equal_structures_have_equal_content_keys_and_hash_once(monkeypatch):
    import fxdelegate.passes.lower_regions as lower_regions

    calls = []

    def counting_key(program, backend_id, options):
        calls.append(program)
        return region_key(program, backend_id, options)

    monkeypatch.setattr(lower_regions, "region_key", counting_key)
    _, _, ctx = lowering_state(
        GeluBlocks(6, 8), (torch.randn(3, 8),), exclude=("aten.gelu",), upto=LowerRegionsPass
    )
    assert len(calls) == len({r.structure for r in ctx.regions}) == 3
    keys = {}
    for record in ctx.regions:
        key = region_key(record.program, "reference", {})
        assert keys.setdefault(record.structure, key) == key


def test_shapes_and_symbols_separate_structures():
    _, _, ctx = lowering_state(
        TwoWidths(), (torch.randn(3, 8),), exclude=("aten.gelu",), upto=OutlineRegionsPass
    )
    structures = [r.structure for r in ctx.regions]
    assert structures[0] == structures[1] and len(set(structures)) == 3

    # A dynamic batch is one symbol in every block: the blocks still share.
    _, _, ctx = lowering_state(
        GeluBlocks(4, 8),
        (torch.randn(3, 8),),
        dynamic_shapes={"x": {0: Dim("batch", max=64)}},
        exclude=("aten.gelu",),
        upto=OutlineRegionsPass,
    )
    assert ctx.regions[1].structure == ctx.regions[2].structure == ctx.regions[3].structure
    # Sizes of different symbols are different structures, even with equal ranges.
    mode = FakeTensorMode(shape_env=ShapeEnv())
    a, b = mode.from_tensor(torch.empty(3, 4)), mode.from_tensor(torch.empty(5, 4))
    assert a.shape[0].node.expr != b.shape[0].node.expr
    assert describe_value(a) != describe_value(b)


def test_literals_are_described_with_their_type():
    assert describe_value(True) != describe_value(1) != describe_value(1.0)
    assert describe_value(0.0) != describe_value(-0.0)
    assert describe_value(torch.float32) == describe_value(torch.float32)
    assert describe_value(torch.float32) != describe_value(torch.float16)
    assert describe_value(torch.empty(2, 3)) != describe_value(torch.empty(3, 2))
    assert describe_value(torch.empty(2, 3)) != describe_value(torch.empty(3, 2).t())
    assert region_structure  # the module's entry point is importable


def test_lowered_blocks_match_eager_after_save_load_and_weight_updates(tmp_path):
    model = GeluBlocks(5, 8).eval()
    x = torch.randn(3, 8)
    ep = torch.export.export(model, (x,))
    prog = fxdelegate.lower(ep, backend="reference", exclude_ops=["aten.gelu"])
    with torch.no_grad():
        torch.testing.assert_close(prog(x), model(x))
        prog.save(tmp_path / "blocks.pt2")
        torch.testing.assert_close(fxdelegate.load(tmp_path / "blocks.pt2")(x), model(x))
        # New weights for one block of a shared structure change that block only.
        new_weight = torch.randn(8, 8)
        prog.update_weights({"linears.3.weight": new_weight})
        model.linears[3].weight.copy_(new_weight)
        torch.testing.assert_close(prog(x), model(x))
    # Lowered again, the earlier regions keep their own node names in the report.
    again = fxdelegate.lower(prog, backend="reference").partitions
    assert [r.nodes for r in again[: len(prog.partitions)]] == [r.nodes for r in prog.partitions]
