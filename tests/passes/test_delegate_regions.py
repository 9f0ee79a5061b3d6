import operator

import torch

from fxdelegate.passes import DelegateRegionsPass, VerifyDelegatedGraphPass
from fxdelegate.passes.delegate_regions import delete_unused_submodules
from fxdelegate.runtime import LoweredBackendModule
from models import SharedWeight
from pipeline_helpers import lowering_state

DELEGATE = torch.ops.higher_order.executorch_call_delegate


def test_one_delegate_call_per_region_with_getitems_and_state_moved():
    _, gm, ctx = lowering_state(
        SharedWeight(),
        (torch.randn(3, 6),),
        exclude=("aten.gelu", "aten.sum"),
        upto=DelegateRegionsPass,
    )
    calls = [n for n in gm.graph.nodes if n.target is DELEGATE]
    assert len(calls) == len(ctx.regions) == 3  # matmul | gelu | matmul, matmul | gelu | add
    for call, record in zip(calls, ctx.regions):
        module = getattr(gm, call.args[0].target)
        assert isinstance(module, LoweredBackendModule)
        assert module.key == f"{record.name}-reference" and module.original_module is record.program
        assert list(call.args[1:]) == record.inputs
        assert all(u.target is operator.getitem for u in call.users)
        assert len(call.users) == len(record.outputs)
    # the region-owned weight left the parent; the shared one stayed
    placeholders = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    assert placeholders == [s.arg.name for s in ctx.signature.input_specs]
    # (both stay stored once in the program; the region binds its own when loaded)
    assert "own" in ctx.state_dict and "w" in ctx.state_dict
    assert [r.name for r in ctx.regions if "own" in r.owned_state] == ["region_1"]
    assert "p_own" not in placeholders and "p_w" in placeholders
    # everything else still runs in the executor
    ops = {n.target for n in gm.graph.nodes if n.op == "call_function"}
    assert torch.ops.aten.gelu.default in ops and torch.ops.aten.sum.default in ops
    assert not any(n.meta.get("fxdelegate_region") for n in gm.graph.nodes)


def test_verify_passes_on_the_result():
    lowering_state(
        SharedWeight(), (torch.randn(3, 6),), exclude=("aten.gelu",), upto=VerifyDelegatedGraphPass
    )


def test_a_buffer_the_region_writes_in_place_is_no_longer_copied_back():
    from test_outline_regions import Cache

    model = Cache()
    args = (torch.randn(1, 4), torch.tensor([3]))
    _, gm, ctx = lowering_state(model, args, upto=VerifyDelegatedGraphPass)
    kinds = [s.kind.name for s in ctx.signature.output_specs]
    assert kinds == ["USER_OUTPUT"]  # the BUFFER_MUTATION is the region's job now
    (call,) = [n for n in gm.graph.nodes if n.target is DELEGATE]
    assert "b_cache" in [a.name for a in call.args[1:]]  # the buffer itself is passed in


def test_unused_submodules_go_as_torch_would_drop_them():
    def build():
        root = torch.nn.Module()
        root.a = torch.nn.Module()
        root.a.b = torch.nn.Linear(2, 2)
        root.a.unused = torch.nn.Linear(2, 2)
        root.c = torch.nn.Linear(2, 2)
        root.d = torch.nn.Sequential(torch.nn.ReLU())
        graph = torch.fx.Graph()
        x = graph.placeholder("x")
        w = graph.get_attr("a.b.weight")
        y = graph.call_module("d", (graph.call_function(torch.matmul, (x, w)),))
        graph.output(y)
        return torch.fx.GraphModule(root, graph)

    ours, theirs = build(), build()
    delete_unused_submodules(ours)
    theirs.delete_all_unused_submodules()
    names = [n for n, _ in ours.named_modules()]
    assert names == [n for n, _ in theirs.named_modules()]
    assert "c" not in names and "a.b" in names and "d.0" in names
