"""Which nodes a CUDA graph can record, and how the call is cut into segments.

Graphs here are built by hand with fake CUDA tensors as their values, so the
device rules are tested on a machine without a GPU.
"""

import operator

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from fxdelegate.runtime.cuda_graphs.capture_plan import (
    NodeKind,
    classify_node,
    plan_segments,
    region_host_sync,
)

CUDA = torch.device("cuda", 0)
aten = torch.ops.aten


@pytest.fixture
def fake():
    with FakeTensorMode() as mode:
        yield mode


def _node(graph, target, args, val, name=None):
    node = graph.call_function(target, args)
    node.meta["val"] = val
    if name:
        node.name = name
    return node


def _placeholder(graph, name, val):
    node = graph.placeholder(name)
    node.meta["val"] = val
    return node


def _never(node):
    return None


def test_device_rules(fake):
    g = torch.fx.Graph()
    x = _placeholder(g, "x", torch.empty(4, device="cuda"))
    host = _placeholder(g, "host", torch.empty(4))
    scale = _placeholder(g, "scale", torch.empty(()))  # a 0-d CPU weight
    counter = _placeholder(g, "counter", torch.empty(()))  # a 0-d CPU buffer the program mutates
    relu = _node(g, aten.relu.default, (x,), torch.empty(4, device="cuda"), "relu")
    to_cpu = _node(g, aten._to_copy.default, (relu,), torch.empty(4), "to_cpu")
    reads_host = _node(g, aten.add.Tensor, (relu, host), torch.empty(4, device="cuda"), "add")
    scaled = _node(g, aten.mul.Tensor, (relu, scale), torch.empty(4, device="cuda"), "scaled")
    counted = _node(g, aten.mul.Tensor, (relu, counter), torch.empty(4, device="cuda"), "counted")
    immovable = {scale}
    verdict = {
        n.name: classify_node(n, CUDA, immovable, _never)
        for n in (relu, to_cpu, reads_host, scaled, counted)
    }
    assert verdict["relu"] == (NodeKind.RECORD, "")
    assert verdict["to_cpu"][0] is NodeKind.EAGER and "on cpu" in verdict["to_cpu"][1]
    assert verdict["add"][0] is NodeKind.EAGER and "reads host" in verdict["add"][1]
    assert verdict["scaled"] == (NodeKind.RECORD, "")  # a fixed host scalar: a kernel argument
    assert verdict["counted"][0] is NodeKind.EAGER and "counter" in verdict["counted"][1]


def test_sparse_tensors_run_eagerly():
    """Their index and value buffers are sized by the data (the OpInfo sweep on a GPU
    found a recorded segment taking a sparse CSR input)."""
    device = torch.device("cpu")  # the rule comes before any device rule
    g = torch.fx.Graph()
    sparse = torch.eye(3).to_sparse_csr()
    a = _placeholder(g, "a", sparse)
    b = _placeholder(g, "b", torch.empty(3, 2))
    mm = _node(g, aten._sparse_mm.default, (a, b), torch.empty(3, 2), "mm")
    relu = _node(g, aten.relu.default, (mm,), torch.empty(3, 2), "relu")
    assert classify_node(mm, device, set(), _never) == (
        NodeKind.EAGER,
        "reads or makes a torch.sparse_csr tensor",
    )
    assert classify_node(relu, device, set(), _never) == (NodeKind.RECORD, "")


def test_host_reads_control_flow_and_tags_run_eagerly(fake):
    g = torch.fx.Graph()
    x = _placeholder(g, "x", torch.empty(4, device="cuda"))
    item = _node(g, aten.item.default, (x,), 1.0, "item")
    item.meta["unbacked_bindings"] = {"u0": ()}
    size = _node(g, aten.sym_size.int, (x, 0), 4, "size")
    arith = _node(g, operator.mul, (size, 2), 8, "arith")
    lib = torch.library.Library("fxd_plan_test", "FRAGMENT")
    lib.define("unsafe(Tensor x) -> Tensor", tags=(torch.Tag.cudagraph_unsafe,))
    unsafe = _node(
        g, torch.ops.fxd_plan_test.unsafe.default, (x,), torch.empty(4, device="cuda"), "unsafe"
    )
    cond = _node(g, torch.ops.higher_order.cond, (x, None, None, ()), None, "cond")
    kinds = {
        n.name: classify_node(n, CUDA, set(), _never) for n in (item, size, arith, unsafe, cond)
    }
    assert kinds["item"][0] is NodeKind.EAGER and "host" in kinds["item"][1]
    assert kinds["size"][0] is NodeKind.HOST
    assert kinds["arith"][0] is NodeKind.HOST
    assert kinds["unsafe"] == (NodeKind.EAGER, "the op is tagged cudagraph_unsafe")
    assert kinds["cond"][0] is NodeKind.EAGER and "predicate" in kinds["cond"][1]


def test_a_node_without_metadata_runs_eagerly_and_says_why(fake):
    g = torch.fx.Graph()
    x = _placeholder(g, "x", torch.empty(4, device="cuda"))
    bare = g.call_function(aten.relu.default, (x,))
    kind, reason = classify_node(bare, CUDA, set(), _never)
    assert kind is NodeKind.EAGER and "meta['val']" in reason


def test_a_delegate_is_recorded_only_when_its_backend_allows(fake):
    g = torch.fx.Graph()
    x = _placeholder(g, "x", torch.empty(4, device="cuda"))
    call = _node(
        g,
        torch.ops.higher_order.executorch_call_delegate,
        ("region_0-mine", x),
        [torch.empty(4, device="cuda")],
    )
    assert classify_node(call, CUDA, set(), _never) == (NodeKind.RECORD, "")
    assert classify_node(call, CUDA, set(), lambda n: "no recordable runner") == (
        NodeKind.EAGER,
        "no recordable runner",
    )


def _chain_graph():
    """a = relu(x); e1 = eager(x); b = sin(a); e2 = eager(x); c = b + e1 + e2.

    Cut in graph order this is three recorded segments; scheduling the eager
    nodes first makes it one.
    """
    g = torch.fx.Graph()
    x = _placeholder(g, "x", torch.empty(4, device="cuda"))
    a = _node(g, aten.relu.default, (x,), torch.empty(4, device="cuda"), "a")
    e1 = _node(g, aten._to_copy.default, (x,), torch.empty(4), "e1")
    b = _node(g, aten.sin.default, (a,), torch.empty(4, device="cuda"), "b")
    e2 = _node(g, aten._to_copy.default, (x,), torch.empty(4), "e2")
    back1 = _node(g, aten._to_copy.default, (e1,), torch.empty(4, device="cuda"), "back1")
    back2 = _node(g, aten._to_copy.default, (e2,), torch.empty(4, device="cuda"), "back2")
    s = _node(g, aten.add.Tensor, (b, back1), torch.empty(4, device="cuda"), "s")
    c = _node(g, aten.add.Tensor, (s, back2), torch.empty(4, device="cuda"), "c")
    g.output((c, a))
    return g


def test_schedule_has_the_fewest_recorded_segments(fake):
    plan = plan_segments(_chain_graph(), CUDA, state=set(), immovable=set(), delegate_reason=_never)
    kinds = [("R" if s.recorded else "E", [n.name for n in s.nodes]) for s in plan.segments]
    # back1/back2 read CPU tensors: they stay eager, so the two copies to the host and
    # back run first and the recordable nodes form one recorded segment.
    assert [k for k, _ in kinds] == ["E", "R"]
    assert set(kinds[0][1]) == {"e1", "e2", "back1", "back2"}
    assert kinds[1][1] == ["a", "b", "s", "c"]
    recorded = plan.segments[1]
    assert [n.name for n in recorded.inputs] == ["x", "back1", "back2"]
    assert [n.name for n in recorded.outputs] == ["a", "c"]
    assert {b.node for b in plan.breaks} == {"e1", "e2", "back1", "back2"}


def test_forced_eager_nodes_split_a_segment(fake):
    plan = plan_segments(
        _chain_graph(),
        CUDA,
        state=set(),
        immovable=set(),
        delegate_reason=_never,
        forced_eager={"b": "recording failed at run time (test)"},
    )
    recorded = [[n.name for n in s.nodes] for s in plan.segments if s.recorded]
    assert ["b"] not in recorded and all("b" not in r for r in recorded)
    assert any(b.node == "b" and "run time" in b.reason for b in plan.breaks)


def test_state_is_never_a_segment_input(fake):
    g = torch.fx.Graph()
    w = _placeholder(g, "w", torch.empty(4, device="cuda"))
    x = _placeholder(g, "x", torch.empty(4, device="cuda"))
    y = _node(g, aten.mul.Tensor, (x, w), torch.empty(4, device="cuda"), "y")
    g.output((y,))
    plan = plan_segments(g, CUDA, state={w}, immovable={w}, delegate_reason=_never)
    (segment,) = plan.segments
    assert segment.recorded and [n.name for n in segment.inputs] == ["x"]


def test_host_only_groups_are_not_recorded(fake):
    g = torch.fx.Graph()
    x = _placeholder(g, "x", torch.empty(4, 3, device="cuda"))
    size = _node(g, aten.sym_size.int, (x, 0), 4, "size")
    g.output((size,))
    plan = plan_segments(g, CUDA, state=set(), immovable=set(), delegate_reason=_never)
    assert [s.recorded for s in plan.segments] == [False]
    assert plan.breaks == []  # nothing was refused: there is simply no device work


def test_region_host_sync_finds_control_flow_in_a_region():
    class WithCond(torch.nn.Module):
        def forward(self, x):
            return torch.cond(x.sum() > 0, lambda t: t.sin(), lambda t: t.cos(), (x,))

    class Plain(torch.nn.Module):
        def forward(self, x):
            return x.sin()

    x = torch.randn(3)
    with_cond = torch.export.export(WithCond(), (x,)).graph_module
    plain = torch.export.export(Plain(), (x,)).graph_module
    assert "cond" in region_host_sync(with_cond)
    assert region_host_sync(plain) is None
