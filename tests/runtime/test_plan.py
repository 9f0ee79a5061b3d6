import math

import torch

from fxdelegate.runtime import build_plan


def test_generated_function_matches_fx_and_releases_values():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    a = graph.call_function(torch.ops.aten.mul.Tensor, (x, 2.0))
    b = graph.call_function(torch.ops.aten.add.Tensor, (a, a))
    c = graph.call_function(torch.ops.aten.sum.dim_IntList, (b, [0]), {"keepdim": True})
    d = graph.call_function(torch.ops.aten.clamp.default, (c,), {"min": -math.inf, "max": 5.0})
    e = graph.call_function(torch.ops.aten.to.dtype, (d, torch.float64))
    graph.output((e, a))
    plan = build_plan(graph)
    t = torch.randn(3, 2)
    expected = torch.fx.GraphModule(torch.nn.Module(), graph)(t)
    got = plan.fn([t])
    for g, e_ in zip(got, expected):
        torch.testing.assert_close(g, e_)
    assert got[0].dtype == torch.float64
    # b (t1) is dead after c (t2): released right there; a (t0) is an output: never released
    lines = plan.source.splitlines()
    b_line = next(i for i, line in enumerate(lines) if "t1 = " in line)
    assert "(t0, t0)" in lines[b_line]
    assert lines[b_line + 2].strip() == "del t1"
    assert not [line for line in lines if line.strip().startswith("del") and "t0" in line]


def test_delegate_nodes_call_their_runner_with_a_flat_list():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    call = graph.call_function(
        torch.ops.higher_order.executorch_call_delegate, ("region_0-test", x, x)
    )
    out = graph.call_function(__import__("operator").getitem, (call, 0))
    graph.output((out,))
    seen = []

    def runner(inputs):
        seen.append(inputs)
        return [inputs[0] + inputs[1]]

    plan = build_plan(graph, {"region_0-test": runner})
    t = torch.ones(2)
    (result,) = plan.fn([t])
    assert isinstance(seen[0], list) and len(seen[0]) == 2
    torch.testing.assert_close(result, t * 2)


def test_a_delegate_call_unpacks_its_outputs_and_drops_the_unread_one():
    import operator

    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    call = graph.call_function(
        torch.ops.higher_order.executorch_call_delegate, ("region_0-test", x)
    )
    call.meta["val"] = (None, None, None)  # three outputs; the middle one is never read
    first = graph.call_function(operator.getitem, (call, 0))
    last = graph.call_function(operator.getitem, (call, 2))
    released = []

    def add_once_released(a, b):
        assert released, "the unread output is still alive"
        return a + b

    graph.output((graph.call_function(add_once_released, (first, last)),))

    class Tracked(torch.Tensor):
        def __del__(self):
            released.append(True)

    def runner(inputs):
        unread = torch.zeros(1).as_subclass(Tracked)
        return [inputs[0], unread, inputs[0] * 2]

    plan = build_plan(graph, {"region_0-test": runner})
    assert "t1, _, t2 = " in plan.source and "del _" in plan.source
    (result,) = plan.fn([torch.ones(2)])
    torch.testing.assert_close(result, torch.full((2,), 3.0))


def test_missing_runner_is_reported():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    call = graph.call_function(
        torch.ops.higher_order.executorch_call_delegate, ("region_9-aoti", x)
    )
    graph.output((call,))
    try:
        build_plan(graph, {})
    except KeyError as exc:
        assert "region_9-aoti" in str(exc)
    else:
        raise AssertionError("expected KeyError")
