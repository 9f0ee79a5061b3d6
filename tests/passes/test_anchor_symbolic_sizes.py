import operator

import torch
from torch.export import Dim

from fxdelegate.passes import AnchorSymbolicSizesPass
from fxdelegate.runtime import ProgramExecutor
from pipeline_helpers import lowering_state


class Sizes(torch.nn.Module):
    def forward(self, x):
        y = torch.relu(x)
        a = y.reshape(y.shape[0], -1)
        c = torch.cat([x, x], 0)
        b = c.reshape(c.shape[0] // 2, -1)  # size 2*s0 // 2, read from an intermediate
        return a.sum(1) + b.sum(1)


def test_every_size_is_read_from_a_graph_input():
    b = Dim("b", min=2, max=64)
    prepared, gm, _ = lowering_state(
        Sizes(), (torch.randn(4, 3, 2),), dynamic_shapes=({0: b},), upto=AnchorSymbolicSizesPass
    )
    size_reads = [n for n in gm.graph.nodes if n.target is torch.ops.aten.sym_size.int]
    assert size_reads, "the exported graph reads sizes"
    for node in size_reads:
        assert node.args[0].op == "placeholder", node.format_node()
    # arithmetic on sizes reads only other size nodes
    for node in gm.graph.nodes:
        if node.target in (operator.mul, operator.floordiv, operator.add):
            assert all(
                a.op == "placeholder"
                or a.target is torch.ops.aten.sym_size.int
                or a.target in (operator.mul, operator.floordiv, operator.add)
                for a in node.all_input_nodes
            )
    # and the program still computes the same thing
    for batch in (2, 5):
        x = torch.randn(batch, 3, 2)
        torch.testing.assert_close(ProgramExecutor(prepared)(x), Sizes()(x))


def test_static_program_is_left_alone():
    _, gm, _ = lowering_state(Sizes(), (torch.randn(4, 3, 2),), upto=AnchorSymbolicSizesPass)
    assert not [n for n in gm.graph.nodes if n.target is torch.ops.aten.sym_size.int]
