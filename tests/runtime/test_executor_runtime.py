"""Executor behaviour under threads, its profile, its memory, and its generated fast path."""

import threading

import pytest
import torch

import fxdelegate
from fxdelegate.demo import demo_inputs
from fxdelegate.runtime.debug.memory import peak_allocated_bytes
from models import NestedIO, export_nested, nested_inputs


def _hammer(prog, model, make_inputs, threads=8, calls=20):
    errors = []

    def work(seed):
        try:
            gen = torch.Generator().manual_seed(seed)
            for i in range(calls):
                torch.manual_seed(seed * 1000 + i)
                args, kwargs = make_inputs(2 + (seed + i) % 7)
                with torch.no_grad():
                    torch.testing.assert_close(prog(*args, **kwargs), model(*args, **kwargs))
            del gen
        except Exception as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(s,)) for s in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


@pytest.mark.aoti
def test_one_loaded_program_from_eight_threads(demo_archive, demo_model):
    prog = fxdelegate.load(demo_archive)
    _hammer(prog, demo_model, demo_inputs)


def test_reference_program_from_eight_threads():
    model = NestedIO().eval()
    prog = fxdelegate.lower(export_nested(model), backend="reference", exclude_ops=["aten.gelu"])
    _hammer(prog, model, nested_inputs)


def test_profile_times_every_node_and_region():
    model = NestedIO().eval()
    prog = fxdelegate.lower(export_nested(model), backend="reference", exclude_ops=["aten.gelu"])
    args, kwargs = nested_inputs(4)
    report = prog.profile(*args, runs=5, **kwargs)
    regions = report.regions
    assert len(regions) == len(prog.partitions)
    assert all(r.calls == 5 and r.total_s > 0 for r in report.rows)
    labels = [r.label for r in report.rows]
    assert "fxdelegate::region_0-reference" in labels
    assert any("aten.gelu.default (gelu)" in label for label in labels)
    text = report.format()
    assert "region_0-reference" in text and "us per unprofiled call" in text
    # the nodes' times are read from one clock in sequence: they add up to the body,
    # which lies inside the whole profiled calls
    assert 0 < report.node_total_s <= report.wall_s and report.plain_wall_s > 0
    # ranges for torch.profiler traces only when asked for
    with torch.profiler.profile() as trace:
        prog.profile(*args, runs=1, **kwargs)
    assert "fxdelegate::region_0-reference" not in {e.name for e in trace.events()}
    with torch.profiler.profile() as trace:
        prog.profile(*args, runs=1, trace=True, **kwargs)
    assert "fxdelegate::region_0-reference" in {e.name for e in trace.events()}
    # profiling does not change results or the fast path
    torch.testing.assert_close(prog(*args, **kwargs), model(*args, **kwargs))


class Big(torch.nn.Module):
    def forward(self, x):
        h = x.unsqueeze(-1).expand(-1, -1, 64).contiguous()
        a = torch.nn.functional.gelu(h) * 2
        b = a.sum(-1)
        c = (h + 1).mean(-1)
        return b + c


def test_intermediates_are_released_at_their_last_use():
    model = Big()
    x = torch.randn(64, 256)
    ep = torch.export.export(model, (x,))
    prog = fxdelegate.lower(ep, backend="reference", exclude_ops=["aten.gelu"])
    with torch.no_grad():
        torch.testing.assert_close(prog(x), model(x))
        eager = peak_allocated_bytes(lambda: model(x))
        lowered = peak_allocated_bytes(lambda: prog(x))
    assert lowered <= eager
    # the generated code frees each big temporary right after its last use
    assert "del " in prog.generated_code


def test_fast_path_is_generated_and_falls_back_for_errors_and_subclasses():
    model = NestedIO().eval()
    prog = fxdelegate.lower(export_nested(model), backend="reference", exclude_ops=["aten.gelu"])
    code = prog.generated_code
    assert code.startswith("def entry(*args, **kwargs):") and "_slow(args, kwargs)" in code
    args, kwargs = nested_inputs(3)
    # a Parameter is a tensor subclass: the generic path takes it, same result
    args = (torch.nn.Parameter(args[0], requires_grad=False), *args[1:])
    torch.testing.assert_close(prog(*args, **kwargs), model(*args, **kwargs))
    # dict keys in another order are accepted
    a, b, cfg = args
    torch.testing.assert_close(
        prog(a, b, {"extra": cfg["extra"], "w": cfg["w"]}, **kwargs), model(*args, **kwargs)
    )
