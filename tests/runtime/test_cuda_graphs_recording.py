"""The CUDA-graph runtime's logic on a machine without a GPU.

A stand-in capturer (tests/support/recording_capturer.py) records the ATen ops a
segment runs and replays them on the same tensors, with CUDA graphs' rules:
recording changes nothing, host code never reruns, host reads fail. With the
reference backend it exercises signatures, static buffers, output copies,
mutation, segments, failures, eviction and threads; tests/runtime/test_cuda_graphs.py
runs the same things on a GPU with real graphs and AOTInductor.
"""

import copy
import threading
import warnings

import pytest
import torch
from recording_capturer import RecordingCapturer
from torch.export import Dim

import fxdelegate
from fxdelegate import CUDAGraphOptions
from fxdelegate.demo import DemoModel, demo_inputs, export_demo
from fxdelegate.errors import InputMismatchError, InvalidArgumentError
from fxdelegate.runtime.backends.reference import ReferenceCompiler, ReferenceRuntime
from fxdelegate.runtime.cuda_graphs.cuda_graph_options import graph_device
from models import Counter, Sandwich


def _graphs(**options):
    return CUDAGraphOptions(capturer=RecordingCapturer(options.pop("fail_on", None)), **options)


def _lower(ep, **kwargs):
    kwargs.setdefault("exclude_ops", ["aten.gelu"])
    graphs = kwargs.pop("graphs", None) or _graphs()
    return fxdelegate.lower(ep, backend="reference", cuda_graphs=graphs, **kwargs)


@pytest.fixture
def demo():
    torch.manual_seed(0)
    model = DemoModel().eval()
    return model, _lower(export_demo(model))


@torch.no_grad()
def test_demo_warms_up_records_then_replays_per_signature(demo):
    model, prog = demo
    for batch in (3, 3, 3, 7, 7, 3):
        args, kwargs = demo_inputs(batch)
        torch.testing.assert_close(prog(*args, **kwargs), model(*args, **kwargs))
    (segment,) = prog.cuda_graphs.stats()
    assert segment["recorded"] and segment["regions"] == 4
    # batch 3: warm-up, record + replay, replay, replay; batch 7: warm-up, record + replay
    assert (segment["warmups"], segment["recordings"], segment["replays"]) == (2, 2, 4)
    assert segment["graphs"] == 2
    assert prog.cuda_graphs.pool_bytes() > 0


@torch.no_grad()
def test_outputs_are_copied_out_unless_asked_not_to():
    torch.manual_seed(0)
    model = DemoModel().eval()
    ep = export_demo(model)
    copied = _lower(ep, graphs=_graphs(warmup_calls=0))
    in_place = _lower(ep, graphs=_graphs(warmup_calls=0, copy_outputs=False))
    first_args, first_kwargs = demo_inputs(4)
    expected_first = model(*first_args, **first_kwargs)["logits"]
    for prog in (copied, in_place):
        first = prog(*first_args, **first_kwargs)["logits"]
        torch.testing.assert_close(first, expected_first)
        second = prog(*demo_inputs(4)[0], **demo_inputs(4)[1])["logits"]
        if prog is copied:
            torch.testing.assert_close(first, expected_first)  # untouched by the second call
            assert first.data_ptr() != second.data_ptr()
        else:
            assert first.data_ptr() == second.data_ptr()  # graph memory, reused


@torch.no_grad()
def test_buffer_and_input_mutation_match_eager_after_every_replay():
    torch.manual_seed(0)
    eager = Counter()
    ep = torch.export.export(copy.deepcopy(eager), (torch.randn(2, 4), torch.zeros(4)))
    prog = _lower(ep)
    state = prog.exported_program.state_dict | prog.exported_program.constants
    acc_mine, acc_eager = torch.zeros(4), torch.zeros(4)
    for step in range(5):
        x = torch.randn(2, 4)
        torch.testing.assert_close(prog(x, acc_mine), eager(x, acc_eager))
        torch.testing.assert_close(acc_mine, acc_eager)  # input mutation
        for name, buffer in eager.named_buffers():
            torch.testing.assert_close(state[name], buffer, msg=f"buffer {name}, call {step}")
    assert prog.cuda_graphs.stats()[0]["replays"] == 4


def _host_sync(h):
    return h * h[h > 0].sum()  # indexing with a mask: its size is read on the host


@torch.no_grad()
def test_a_host_sync_in_the_middle_splits_the_call_into_segments():
    torch.manual_seed(0)
    model = Sandwich(_host_sync).eval()
    prog = _lower(torch.export.export(model, (torch.randn(4, 16),)), exclude_ops=())
    for _ in range(4):
        x = torch.randn(4, 16)
        torch.testing.assert_close(prog(x), model(x))
    kinds = [s["recorded"] for s in prog.cuda_graphs.stats()]
    assert kinds[0] and not kinds[1] and kinds[-1]
    report = prog.report()
    assert "aten.index.Tensor" in report and "reads tensor values on the host" in report


@torch.no_grad()
def test_a_recording_that_fails_at_run_time_runs_that_node_eagerly_with_one_warning():
    torch.manual_seed(0)
    model = Sandwich(torch.tanh).eval()
    ep = torch.export.export(model, (torch.randn(3, 16),))
    # tanh is excluded, so it runs in the executor; its recording fails "at run time"
    prog = _lower(ep, exclude_ops=["aten.tanh"], graphs=_graphs(fail_on={"aten::tanh"}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(5):
            x = torch.randn(3, 16)
            torch.testing.assert_close(prog(x), model(x))
    messages = [str(w.message) for w in caught if "CUDA graphs" in str(w.message)]
    assert len(messages) == 1 and "node tanh" in messages[0]
    stats = prog.cuda_graphs.stats()
    assert [s["recorded"] for s in stats] == [True, False, True]
    assert all(s["replays"] > 0 for s in stats if s["recorded"])
    assert "recording failed at run time" in prog.report()


@torch.no_grad()
def test_signatures_are_evicted_least_recent_first_and_thrashing_stops_recording(demo):
    model, _ = demo
    prog = _lower(export_demo(model), graphs=_graphs(max_graphs=2, warmup_calls=0))
    for batch in (2, 3, 4, 2):
        args, kwargs = demo_inputs(batch)
        torch.testing.assert_close(prog(*args, **kwargs), model(*args, **kwargs))
    (segment,) = prog.cuda_graphs.stats()
    assert segment["graphs"] == 2 and segment["evictions"] == 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for batch in (5, 6, 7):
            args, kwargs = demo_inputs(batch)
            torch.testing.assert_close(prog(*args, **kwargs), model(*args, **kwargs))
    (segment,) = prog.cuda_graphs.stats()
    assert not segment["recorded"] and "changed signature" in segment["eager_reason"]
    assert segment["graphs"] == 0
    assert any("now runs eagerly" in str(w.message) for w in caught)


@torch.no_grad()
def test_calls_from_eight_threads_each_get_their_own_outputs(demo):
    model, prog = demo
    inputs = [demo_inputs(2 + i % 3) for i in range(8)]
    expected = [model(*a, **k) for a, k in inputs]
    results: list = [None] * 8

    def work(i):
        for _ in range(5):
            results[i] = prog(*inputs[i][0], **inputs[i][1])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        torch.testing.assert_close(got, want)


def test_a_size_out_of_range_is_refused_before_anything_runs(demo):
    _, prog = demo
    args, kwargs = demo_inputs(2000)  # batch Dim is [1, 1024]
    with pytest.raises(InputMismatchError, match=r"\[1, 1024\]"):
        prog(*args, **kwargs)
    (segment,) = prog.cuda_graphs.stats()
    assert segment["warmups"] == segment["recordings"] == 0


@torch.no_grad()
def test_save_and_load_with_graphs(demo, tmp_path):
    model, prog = demo
    prog.save(tmp_path / "demo.pt2")
    loaded = fxdelegate.load(tmp_path / "demo.pt2", cuda_graphs=_graphs())
    for batch in (5, 5, 5):
        args, kwargs = demo_inputs(batch)
        torch.testing.assert_close(loaded(*args, **kwargs), model(*args, **kwargs))
    assert loaded.cuda_graphs.stats()[0]["replays"] == 2


@torch.no_grad()
def test_new_weights_drop_recorded_graphs(demo):
    model, prog = demo
    args, kwargs = demo_inputs(3)
    for _ in range(3):
        prog(*args, **kwargs)
    changed = copy.deepcopy(model)
    changed.head.weight.mul_(-2)
    prog.update_weights({"head.weight": changed.head.weight})
    for _ in range(3):
        torch.testing.assert_close(prog(*args, **kwargs), changed(*args, **kwargs))


class _PlainRuntime(ReferenceRuntime):
    backend_id = "plain"

    def load_recordable(self, artifact, constants):
        return None  # this backend's runners cannot be recorded


class _PlainCompiler(ReferenceCompiler):
    backend_id = "plain"


@torch.no_grad()
def test_regions_whose_backend_cannot_be_recorded_run_between_segments():
    fxdelegate.register_backend(
        "plain", runtime=_PlainRuntime(), compiler=_PlainCompiler(), replace=True
    )
    torch.manual_seed(0)
    model = DemoModel().eval()
    prog = fxdelegate.lower(
        export_demo(model), backend="plain", exclude_ops=["aten.gelu"], cuda_graphs=_graphs()
    )
    for _ in range(3):
        args, kwargs = demo_inputs(4)
        torch.testing.assert_close(prog(*args, **kwargs), model(*args, **kwargs))
    report = prog.report()
    assert "backend 'plain' has no runner a CUDA graph can record" in report
    kinds = [s["recorded"] for s in prog.cuda_graphs.stats()]
    assert kinds.count(True) == 3  # the GELUs between the four regions
    assert prog.profile(*demo_inputs(4)[0], **demo_inputs(4)[1], runs=2).rows


def test_bad_options_and_programs_are_refused_clearly():
    ep = export_demo(DemoModel())
    with pytest.raises(InvalidArgumentError, match="cuda_graphs must be"):
        fxdelegate.lower(ep, backend="reference", cuda_graphs="yes")
    with pytest.raises(InvalidArgumentError, match="max_graphs must be an int >= 1"):
        CUDAGraphOptions(max_graphs=0)
    with pytest.raises(InvalidArgumentError, match="runs on cpu"):
        graph_device(ep, "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgumentError, match="needs a CUDA device"):
            fxdelegate.lower(ep, backend="reference", cuda_graphs=True)


def test_report_says_when_graphs_are_off():
    prog = fxdelegate.lower(export_demo(DemoModel()), backend="reference")
    assert "CUDA graphs: off (the program runs on the CPU)" in prog.report()
    assert prog.cuda_graphs is None


@torch.no_grad()
def test_dynamic_dims_and_unchecked_inputs():
    class TwoDims(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 8)

        def forward(self, x):
            return torch.nn.functional.gelu(self.lin(x)).sum(1)

    torch.manual_seed(0)
    model = TwoDims().eval()
    b, s = Dim("b", min=1, max=16), Dim("s", min=2, max=32)
    ep = torch.export.export(model, (torch.randn(2, 4, 8),), dynamic_shapes=({0: b, 1: s},))
    prog = _lower(ep, check_inputs=False)
    for shape in ((2, 4), (3, 9), (2, 4), (3, 9), (1, 2)):
        x = torch.randn(*shape, 8)
        torch.testing.assert_close(prog(x), model(x))
    assert prog.cuda_graphs.stats()[0]["graphs"] == 2
