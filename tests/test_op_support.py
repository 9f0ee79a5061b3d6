import pytest
import torch

from fxdelegate.errors import InvalidArgumentError
from fxdelegate.partitioner import OpSet, resolve_op_selector
from fxdelegate.partitioner.op_support import CompilableAtenSupport, describe_target


@pytest.mark.parametrize(
    "selector, expected",
    [
        ("aten.gelu", torch.ops.aten.gelu),
        ("aten.gelu.default", torch.ops.aten.gelu.default),
        ("torch.ops.aten.add.Tensor", torch.ops.aten.add.Tensor),
        ("aten::mul", torch.ops.aten.mul),
        (torch.ops.aten.relu, torch.ops.aten.relu),
        (torch.ops.aten.relu.default, torch.ops.aten.relu.default),
    ],
)
def test_resolve_op_selector(selector, expected):
    assert resolve_op_selector(selector) is expected


@pytest.mark.parametrize(
    "selector, message",
    [
        ("gelu", "not of the form"),
        ("aten.no_such_op_here", "no operator named 'aten.no_such_op_here'"),
        ("aten.gelu.nosuchoverload", "has no overload 'nosuchoverload'"),
        (42, "got 42 of type int"),
        ("a.b.c.d", "not of the form"),
    ],
)
def test_resolve_op_selector_errors(selector, message):
    with pytest.raises(InvalidArgumentError, match=message):
        resolve_op_selector(selector)


def test_opset_packet_matches_every_overload_and_overload_only_itself():
    ops = OpSet(["aten.gelu", "aten.add.Tensor"])
    assert torch.ops.aten.gelu.default in ops
    assert torch.ops.aten.gelu.out in ops
    assert torch.ops.aten.add.Tensor in ops
    assert torch.ops.aten.add.Scalar not in ops
    assert torch.ops.aten.mul.Tensor not in ops
    assert "not an op" not in ops
    assert ops.names() == ["aten.add.Tensor", "aten.gelu"]
    assert not OpSet(())
    assert torch.ops.aten.relu.default in OpSet("aten.relu")


def _node(target, graph=None):
    graph = graph or torch.fx.Graph()
    x = graph.placeholder("x")
    return graph.call_function(target, (x,))


def test_default_support_rejects_data_dependent_random_and_non_aten():
    support = CompilableAtenSupport()
    assert support.is_node_supported({}, _node(torch.ops.aten.relu.default))
    assert not support.is_node_supported({}, _node(torch.ops.aten.nonzero.default))
    assert not support.is_node_supported({}, _node(torch.ops.aten.randn_like.default))
    assert not support.is_node_supported({}, _node(torch.relu))
    assert not support.is_node_supported({}, _node(torch.ops.higher_order.executorch_call_delegate))


def test_describe_target():
    import operator

    assert describe_target(torch.ops.aten.gelu.default) == "aten.gelu.default"
    assert describe_target(operator.getitem) == "getitem"
    assert describe_target(operator.mul) == "operator.mul"
    assert describe_target(torch.ops.higher_order.cond) == "higher_order.cond"
