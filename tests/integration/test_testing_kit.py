"""The pass author's kit, through the `fxd` fixture its pytest plugin provides."""

import copy

import pytest
import torch
from torch.export import Dim
from torch.fx.passes.infra.pass_base import PassBase, PassResult

import fxdelegate
from example_passes import FuseRMSNorm, GeluBlock, NormBlock, relu_to_gelu
from fxdelegate.errors import InvalidArgumentError, PassInvariantError
from fxdelegate.testing import PassTestKit
from models import Counter


def test_the_fixture_comes_from_the_installed_plugin(request, fxd):
    plugin = request.config.pluginmanager.get_plugin("fxdelegate")
    assert plugin.__name__ == "pytest_fxdelegate"
    assert isinstance(fxd, PassTestKit)


class FoldSizes(PassBase):
    """A wrong pass: it folds each size into the value it had in the example, so the
    program is right at the example's size only."""

    def call(self, graph_module):
        graph = graph_module.graph
        sizes = list(graph.find_nodes(op="call_function", target=torch.ops.aten.sym_size.int))
        for node in sizes:
            hint = node.meta["val"].node.hint
            for user in list(node.users):
                user.args = torch.fx.map_arg(
                    user.args, lambda a, n=node, h=hint: h if a is n else a
                )
            graph.erase_node(node)
        return PassResult(graph_module, bool(sizes))


class Average(torch.nn.Module):
    def forward(self, x):
        return x.sum(0) / x.shape[0]


def test_the_kit_rejects_a_pass_that_changes_outputs(fxd):
    ep = fxd.export(GeluBlock().eval(), fxd.randn(4, 16))
    with pytest.raises(PassInvariantError, match="pass 'relu_to_gelu'") as caught:
        fxd.run_pass(relu_to_gelu, ep)
    assert caught.value.invariant == "outputs"


def test_the_kit_rejects_a_pass_that_is_right_only_at_the_example_size(fxd):
    ep = fxd.export(Average(), fxd.randn(4, 8), dynamic_shapes=({0: Dim("batch", max=64)},))
    # The pipeline's own check runs the example inputs only: this pass gets through.
    after = fxd.run_pass(FoldSizes(), ep)
    fxd.assert_no_op(after, "aten.sym_size")
    with pytest.raises(AssertionError) as caught:
        fxd.assert_same_outputs(ep, after)
    message = str(caught.value)
    failing = sorted({line.split(" (")[0].strip() for line in message.splitlines()[1:]})
    assert failing == [
        "lower bounds of the dynamic dimensions",
        "upper bounds of the dynamic dimensions",
    ]
    assert "=64)" in message  # the upper bound itself


def test_a_right_pass_passes_on_every_input(fxd):
    model = NormBlock().eval()
    ep = fxd.export(model, fxd.randn(4, 16), dynamic_shapes=({0: Dim("batch", min=3, max=40)},))
    after = fxd.run_pass(FuseRMSNorm(), ep)
    compared = fxd.assert_same_outputs(ep, after)
    assert compared[:3] == ["the example inputs", "fresh values #1", "fresh values #2"]
    assert compared[3].startswith("lower bounds") and compared[3].endswith("=3)")
    assert compared[4].startswith("upper bounds") and compared[4].endswith("=40)")
    fxd.assert_same_outputs(model, after)  # the eager model as the reference
    fxd.assert_no_op(after, "aten.rsqrt")
    fxd.assert_has_op(after, "fxdelegate_test.rms_norm", count=1)
    lowered = fxdelegate.lower(after, backend="reference")
    fxd.assert_regions(lowered, count=2, convex=True)
    fxd.assert_same_outputs(model, lowered)


def test_tolerances_follow_the_dtype(fxd):
    def same(x):
        return x * 1.0

    def nudged(x):
        return x * (1 + 3e-4)

    half = fxd.randn(256, dtype=torch.float16)
    fxd.assert_same_outputs(same, nudged, inputs=[(half,)])
    fxd.assert_same_outputs(same, nudged, inputs=[(half.to(torch.bfloat16),)])
    with pytest.raises(AssertionError, match="Tensor-likes are not close"):
        fxd.assert_same_outputs(same, nudged, inputs=[(half.float(),)])
    fxd.assert_same_outputs(same, nudged, inputs=[(half.float(),)], rtol=1e-3, atol=1e-3)
    ints = torch.arange(5)
    with pytest.raises(AssertionError, match=r"not equal|not close"):
        fxd.assert_same_outputs(lambda x: x, lambda x: x + 1, inputs=[(ints,)])


def test_mutated_inputs_and_buffers_are_compared(fxd):
    def in_place(x):
        x.add_(1)
        return x.sum()

    def copying(x):
        return (x + 1).sum()

    with pytest.raises(AssertionError, match="mutated input"):
        fxd.assert_same_outputs(in_place, copying, inputs=[(fxd.randn(4),)])
    # A buffer that counts calls: each side counts from its own copy of the state.
    torch.manual_seed(0)
    ep = fxd.export(Counter(), fxd.randn(3, 4), torch.zeros(4))
    lowered = fxdelegate.lower(copy.deepcopy(ep), backend="reference", exclude_ops=["aten.gelu"])
    fxd.assert_same_outputs(ep, lowered, samples=3)
    calls = lowered.exported_program.state_dict["calls"]
    assert calls.item() == 4  # the example and three fresh samples, in order


def test_sample_inputs_take_each_dynamic_dimension_to_its_bounds(fxd):
    class Mixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 8)

        def forward(self, x, ids, *, scale):
            return x * self.embed(ids).sum(1)[: x.shape[0]] * scale

    batch, tokens = Dim("batch", min=3, max=40), Dim("tokens")
    ep = fxd.export(
        Mixed(),
        fxd.randn(4, 8),
        torch.randint(2, 7, (4, 5)),
        kwargs={"scale": torch.tensor(2.0)},
        dynamic_shapes={"x": {0: batch}, "ids": {0: batch, 1: tokens}, "scale": None},
    )
    samples = fxd.sample_inputs(ep, samples=1)
    assert [s.label.split(" (")[0] for s in samples] == [
        "the example inputs",
        "fresh values #1",
        "lower bounds of the dynamic dimensions",
        "upper bounds of the dynamic dimensions",
    ]
    shapes = [(tuple(s.args[0].shape), tuple(s.args[1].shape)) for s in samples]
    # tokens has no upper bound: twice its example size plus one.
    assert shapes == [((4, 8), (4, 5)), ((4, 8), (4, 5)), ((3, 8), (3, 2)), ((40, 8), (40, 11))]
    for sample in samples:
        ids = sample.args[1]
        assert ids.dtype == torch.int64 and 2 <= ids.min() and ids.max() <= 6
        assert list(sample.kwargs) == ["scale"]
    assert not torch.equal(samples[0].args[0], samples[1].args[0])
    assert len(fxd.assert_same_outputs(ep, ep)) == 5  # the example, two fresh, two bounds


def test_op_assertions_look_into_every_graph(fxd):
    ep = fxd.export(GeluBlock().eval(), fxd.randn(4, 16))
    lowered = fxdelegate.lower(ep, backend="reference", exclude_ops=["aten.gelu"])
    fxd.assert_has_op(lowered, "aten.linear", count=2)  # inside the regions' programs
    fxd.assert_has_op(lowered, "aten.gelu.default", count=1)  # in the executor
    with pytest.raises(
        AssertionError, match=r"aten.relu is still in the program: relu .* in region region_1"
    ):
        fxd.assert_no_op(lowered, "aten.relu")
    with pytest.raises(AssertionError, match=r"expected aten\.erf at least once, found it 0 time"):
        fxd.assert_has_op(ep, "aten.erf")
    with pytest.raises(InvalidArgumentError, match=r"no operator named 'aten\.not_an_op'"):
        fxd.assert_no_op(ep, "aten.not_an_op")


def test_region_assertions_check_count_calls_and_convexity(fxd):
    ep = fxd.export(GeluBlock().eval(), fxd.randn(4, 16))
    lowered = fxdelegate.lower(ep, backend="reference", exclude_ops=["aten.gelu"])
    fxd.assert_regions(lowered, count=2)
    with pytest.raises(AssertionError, match="expected 3 region"):
        fxd.assert_regions(lowered, count=3)
    # A partition picture where region_0 reaches around the executor's GELU.
    picture = copy.deepcopy(lowered.summary.graph)
    for entry in picture["nodes"]:
        if entry[0] == "linear_1":
            entry[3] = "region_0"
    lowered.summary.graph = picture
    with pytest.raises(AssertionError, match=r"not convex.*'region_0': 'gelu'"):
        fxd.assert_regions(lowered, count=2)
    with pytest.raises(InvalidArgumentError, match=r"takes what fxdelegate\.lower returns"):
        fxd.assert_regions(ep, count=2)


def test_run_pass_at_a_place_in_the_pipeline_lowers(fxd):
    model = NormBlock().eval()
    ep = fxd.export(model, fxd.randn(4, 16))
    lowered = fxd.run_pass(FuseRMSNorm(), ep, before="tag_regions")
    assert isinstance(lowered, fxdelegate.DelegatedProgram)
    assert lowered.summary.user_passes[0]["name"] == "fuse_rms_norm"
    fxd.assert_regions(lowered, count=2)
    fxd.assert_same_outputs(model, lowered)
    with pytest.raises(InvalidArgumentError, match="one place"):
        fxd.run_pass(FuseRMSNorm(), ep, before="tag_regions", after="tag_regions")
