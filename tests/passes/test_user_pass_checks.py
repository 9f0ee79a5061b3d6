"""A user pass that breaks the program is caught right after it runs, by name."""

import pytest
import torch
from torch.fx.passes.infra.pass_base import PassBase, PassResult

import fxdelegate
from example_passes import (
    CloneInsideRegion,
    DropBias,
    GeluBlock,
    NormBlock,
    ReadRegionWeightOutside,
    call_op_without_fake,
    decompose_gelu,
    raise_error,
    relu_in_place,
    relu_to_gelu,
    return_half_precision,
    use_before_definition,
)
from fxdelegate.errors import PassFailedError, PassInvariantError, UnsupportedProgramError
from fxdelegate.passes import transform_program
from fxdelegate.passes.pipeline import program_outputs
from models import NestedIO, export_nested, nested_inputs


def _lower(pass_, *, before=None, after=None, check_outputs=True, model=None, exclude=()):
    pipeline = fxdelegate.default_pipeline(check_outputs=check_outputs)
    if before:
        pipeline.insert_before(before, pass_)
    else:
        pipeline.insert_after(after, pass_)
    torch.manual_seed(0)
    ep = torch.export.export((model or GeluBlock)().eval(), (torch.randn(4, 16),))
    return fxdelegate.lower(ep, backend="reference", pipeline=pipeline, exclude_ops=exclude)


@pytest.mark.parametrize(
    "pass_, where, invariant, message",
    [
        (CloneInsideRegion(), {"after": "tag_regions"}, "regions", "region_0 is no longer convex"),
        (DropBias(), {"before": "tag_regions"}, "weights", "parameter 'up.bias' was dropped"),
        (
            ReadRegionWeightOutside(),
            {"after": "assign_constant_owners"},
            "weights",
            "it would be owned twice",
        ),
        (relu_to_gelu, {"before": "tag_regions"}, "outputs", "output 0 (relu): Tensor-likes"),
        (
            relu_to_gelu,
            {"after": "delegate_regions", "exclude": ["aten.relu"]},
            "outputs",
            "output 0 (relu): Tensor-likes",
        ),
        (return_half_precision, {"before": "tag_regions"}, "signature", "was float32[4, 16]"),
        (use_before_definition, {"before": "tag_regions"}, "lint", "used before"),
        (relu_in_place, {"before": "tag_regions"}, "lint", "aten.relu_.default, which writes in"),
        (call_op_without_fake, {"before": "tag_regions"}, "values", "torch.library.register_fake"),
    ],
    ids=[
        "non-convex region",
        "dropped weight",
        "weight owned twice",
        "changed outputs",
        "changed outputs after delegation",
        "signature",
        "lint",
        "in place",
        "values",
    ],
)
def test_a_broken_pass_is_caught_by_name(pass_, where, invariant, message):
    with pytest.raises(PassInvariantError) as caught:
        _lower(pass_, **where)
    error = caught.value
    name = fxdelegate.passes.pipeline.pass_pipeline.default_pass_name(pass_)
    assert error.pass_name == name and error.invariant == invariant
    assert str(error).startswith(f"pass {name!r} (")
    assert f"broke the {invariant!r} invariant" in str(error)
    assert message in str(error)
    assert all(
        p.split(":")[0] in {"lint", "values", "regions", "weights", "signature", "outputs"}
        for p in error.problems
    )


def test_a_dropped_weight_is_reported_before_the_signature_it_also_breaks():
    with pytest.raises(PassInvariantError) as caught:
        _lower(DropBias(), before="tag_regions")
    kinds = [p.split(":")[0] for p in caught.value.problems]
    assert kinds == ["weights", "signature"]
    assert "removed ['p_up_bias']" in caught.value.problems[1]


def test_a_pass_that_raises_is_named_with_its_stage():
    with pytest.raises(
        PassFailedError, match="pass 'raise_error' \\(before tag_regions\\) failed in call"
    ) as caught:
        _lower(raise_error, before="tag_regions")
    assert caught.value.stage == "call" and isinstance(caught.value.__cause__, ValueError)

    class Unhappy(PassBase):
        def call(self, graph_module):
            return PassResult(graph_module, False)

        def ensures(self, graph_module):
            raise AssertionError("postcondition not met")

    with pytest.raises(
        PassFailedError, match="failed in ensures: AssertionError: postcondition"
    ) as caught:
        _lower(Unhappy(), after="tag_regions")
    assert caught.value.pass_name == "unhappy"

    def returns_int(graph_module):
        return 3

    with pytest.raises(PassFailedError, match="returned int; a pass returns None or a PassResult"):
        _lower(returns_int, before="tag_regions")


def test_turning_the_output_check_off_keeps_the_structural_ones():
    prog = _lower(relu_to_gelu, before="tag_regions", check_outputs=False)  # wrong, but unchecked
    assert prog.summary.user_passes[0]["checks"] == [
        "lint",
        "values",
        "regions",
        "weights",
        "signature",
    ]
    assert prog(torch.randn(4, 16)).min() < 0  # a GELU where the model has a ReLU
    with pytest.raises(PassInvariantError, match="'weights' invariant"):
        _lower(DropBias(), before="tag_regions", check_outputs=False)


def test_an_unmodified_pass_costs_nothing_after_it(monkeypatch):
    runs = []
    real = program_outputs.run_graph

    def counting(*args, **kwargs):
        runs.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr("fxdelegate.passes.pipeline.user_pass_checks.run_graph", counting)

    def lies(graph_module):  # breaks the graph but says it did nothing: trusted
        relu_to_gelu(graph_module)
        return PassResult(graph_module, False)

    _lower(lies, before="tag_regions")
    assert runs == []
    # A pass that changes the graph: one run before it, one after.
    _lower(decompose_gelu, before="tag_regions")
    assert len(runs) == 2
    # Two in a row: the second starts from the first one's outputs.
    runs.clear()
    pipeline = fxdelegate.default_pipeline()
    pipeline.insert_before("tag_regions", decompose_gelu)
    pipeline.insert_before("tag_regions", DropNothingButRebuild())
    ep = torch.export.export(GeluBlock(), (torch.randn(4, 16),))
    fxdelegate.lower(ep, backend="reference", pipeline=pipeline)
    assert len(runs) == 3


class DropNothingButRebuild(PassBase):
    """Rewrites x * 0.5 as x / 2: same values, a changed graph."""

    def call(self, graph_module):
        graph = graph_module.graph
        changed = False
        for node in graph.find_nodes(op="call_function", target=torch.ops.aten.mul.Tensor):
            if node.args[1] == 0.5:
                node.target, node.args = torch.ops.aten.div.Tensor, (node.args[0], 2.0)
                changed = True
        return PassResult(graph_module, changed)


def test_a_program_that_cannot_run_says_how_to_turn_the_check_off():
    class GpuKernel(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.gelu(torch.ops.fxdelegate_test.gpu_only(x))

    ep = torch.export.export(GpuKernel(), (torch.randn(2, 16),))
    with pytest.raises(UnsupportedProgramError, match="check_outputs=False"):
        transform_program(ep, [decompose_gelu])
    after = transform_program(ep, [decompose_gelu], check_outputs=False)
    assert not any(n.target is torch.ops.aten.gelu.default for n in after.graph.nodes)


def test_transform_program_checks_like_the_pipeline_and_leaves_the_input_alone():
    torch.manual_seed(0)
    model = NormBlock().eval()
    ep = torch.export.export(model, (torch.randn(4, 16),))
    before = [n.format_node() for n in ep.graph.nodes]
    with pytest.raises(PassInvariantError, match="pass 'drop_bias' \\(before lowering\\)"):
        transform_program(ep, [DropBias()])
    assert [n.format_node() for n in ep.graph.nodes] == before
    with pytest.raises(fxdelegate.InvalidArgumentError, match="runs passes of your own only"):
        transform_program(ep, fxdelegate.default_pipeline())


def test_outputs_are_checked_on_nested_inputs_or_made_up_ones():
    torch.manual_seed(0)
    model = NestedIO().eval()
    ep = export_nested(model)
    pipeline = fxdelegate.default_pipeline()
    pipeline.insert_before("tag_regions", decompose_gelu)
    prog = fxdelegate.lower(ep, backend="reference", pipeline=pipeline)
    args, kwargs = nested_inputs(5)
    torch.testing.assert_close(prog(*args, **kwargs), model(*args, **kwargs))
    wrong = fxdelegate.default_pipeline()
    wrong.insert_before("tag_regions", relu_to_gelu)
    with pytest.raises(PassInvariantError, match="'outputs' invariant"):
        fxdelegate.lower(ep, backend="reference", pipeline=wrong)
    # A program that kept no example inputs is run on values made from its inputs' specs.
    ep.example_inputs = None
    with pytest.raises(PassInvariantError, match="'outputs' invariant"):
        fxdelegate.lower(ep, backend="reference", pipeline=wrong)
