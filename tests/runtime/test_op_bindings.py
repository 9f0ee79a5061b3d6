import pytest
import torch
from torch.fx.passes.operator_support import OperatorSupportBase

import fxdelegate
from fxdelegate.runtime.codegen.op_bindings import python_binding


class _Nothing(OperatorSupportBase):
    def is_node_supported(self, submodules, node):
        return False


class ManyOps(torch.nn.Module):
    def forward(self, x, y):
        a = x + 2
        b = a * y
        s = torch.sum(b, dim=1, keepdim=True)
        g = torch.nn.functional.gelu(b, approximate="tanh")
        parts = x.split(2, dim=1)
        top = torch.max(x, 1)
        return (
            s,
            torch.cat([g, g])[1:5],
            torch.where(x > 0, x, y).transpose(0, 1).contiguous(),
            top[0],
            top[1],
            parts[0],
            torch.softmax(x, -1),
            x.to(torch.float64),
            x.new_zeros(3),
            torch.clamp(x, min=0.1),
            2 - x.pow(2),
            torch.rsqrt(x.abs() + 1),
        )


@pytest.fixture(scope="module")
def many_ops():
    args = (torch.randn(4, 6), torch.randn(4, 6))
    return torch.export.export(ManyOps(), args).run_decompositions(), args


def _bound(ep):
    return {str(n.target): python_binding(n) for n in ep.graph.nodes if n.op == "call_function"}


def test_common_ops_get_their_binding_and_the_rest_keep_the_op_handle(many_ops):
    ep, _ = many_ops
    bound = _bound(ep)
    for name, binding in [
        ("aten.add.Tensor", torch.add),
        ("aten.mul.Tensor", torch.mul),
        ("aten.sum.dim_IntList", torch.sum),
        ("aten.gelu.default", torch._C._nn.gelu),
        ("aten.max.dim", torch.max),
    ]:
        assert bound[name] is binding, name
    # a factory (no tensor input), an op torch has no binding for, getitem
    assert bound["aten.full.default"] is None
    assert bound["aten._to_copy.default"] is None
    assert bound["<built-in function getitem>"] is None


def test_a_binding_that_would_pick_another_overload_is_refused():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    x.meta["val"] = torch.empty(3)
    # torch.add(x, 2) dispatches add.Tensor, not add.Scalar
    node = graph.call_function(torch.ops.aten.add.Scalar, (x, 2))
    assert python_binding(node) is None
    tensor_add = graph.call_function(torch.ops.aten.add.Tensor, (x, 2))
    assert python_binding(tensor_add) is torch.add


def test_a_node_without_values_keeps_the_op_handle():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")  # no meta["val"]: nothing to probe with
    node = graph.call_function(torch.ops.aten.relu.default, (x,))
    assert python_binding(node) is None


def test_the_executor_computes_bit_for_bit_what_the_op_handles_compute(many_ops):
    ep, args = many_ops
    prog = fxdelegate.lower(ep, backend="reference", support=_Nothing())
    assert not prog.partitions
    assert "_op" in prog.generated_code
    expected = ep.module()(*args)
    for got, want in zip(prog(*args), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
