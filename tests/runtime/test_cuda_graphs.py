"""CUDA graphs across the delegated program, on a GPU, through AOTInductor.

Skipped on machines without CUDA (CI has none; tests/runtime/test_cuda_graphs_recording.py
covers the same logic there with a stand-in capturer). Run on the device
machine with ``pytest tests/runtime/test_cuda_graphs.py``.
"""

import copy
import gc
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest
import torch

import fxdelegate
from fxdelegate import CUDAGraphOptions
from fxdelegate.demo import DemoModel, demo_inputs, export_demo
from fxdelegate.errors import InputMismatchError
from models import Counter, LlamaDecoder, Sandwich

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


def _to(tree, device=CUDA):
    return torch.utils._pytree.tree_map_only(torch.Tensor, lambda t: t.to(device), tree)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    torch.manual_seed(0)
    model = DemoModel().eval().to(CUDA)
    prog = fxdelegate.lower(
        export_demo(model), exclude_ops=["aten.gelu"], cuda_graphs=True, strict=True
    )
    path = tmp_path_factory.mktemp("graphs") / "demo.pt2"
    prog.save(path)
    return model, prog, path


@torch.no_grad()
def test_demo_records_once_per_batch_size_and_matches_eager(demo):
    model, prog, _ = demo
    for batch in (1, 37, 1024, 37, 1, 37):
        args, kwargs = _to(demo_inputs(batch))
        for _ in range(3):
            torch.testing.assert_close(prog(*args, **kwargs), model(*args, **kwargs))
    (segment,) = prog.cuda_graphs.stats()
    assert segment["recorded"] and segment["regions"] == 4 and segment["graphs"] == 3
    assert segment["recordings"] == 3 and segment["replays"] >= 12
    assert prog.cuda_graphs.pool_bytes() > 0
    report = prog.report()
    assert "CUDA graphs: on (cuda" in report and "1 recorded, 0 eager" in report
    args, kwargs = _to(demo_inputs(2000))
    with pytest.raises(InputMismatchError, match=r"\[1, 1024\]"):
        prog(*args, **kwargs)


@torch.no_grad()
def test_outputs_of_earlier_calls_are_not_overwritten(demo):
    model, prog, _ = demo
    first_in = _to(demo_inputs(8))
    first = prog(*first_in[0], **first_in[1])
    for _ in range(3):
        args, kwargs = _to(demo_inputs(8))
        prog(*args, **kwargs)
    torch.testing.assert_close(first, model(*first_in[0], **first_in[1]))


@torch.no_grad()
def test_buffer_and_input_mutation_match_eager_after_every_replay():
    torch.manual_seed(0)
    eager = Counter().to(CUDA)
    ep = torch.export.export(
        copy.deepcopy(eager), (torch.randn(2, 4, device=CUDA), torch.zeros(4, device=CUDA))
    )
    prog = fxdelegate.lower(ep, exclude_ops=["aten.gelu"], cuda_graphs=True, strict=True)
    state = prog.exported_program.state_dict | prog.exported_program.constants
    mine, theirs = torch.zeros(4, device=CUDA), torch.zeros(4, device=CUDA)
    for call in range(6):
        x = torch.randn(2, 4, device=CUDA)
        torch.testing.assert_close(prog(x, mine), eager(x, theirs))
        torch.testing.assert_close(mine, theirs)
        for name, buffer in eager.named_buffers():
            torch.testing.assert_close(state[name], buffer, msg=f"{name} after call {call}")
    assert prog.cuda_graphs.stats()[0]["replays"] == 5


def _host_sync(h):
    return h * h[h > 0.1].mean()  # the mask's size is read on the host


@torch.no_grad()
def test_a_host_sync_splits_the_call_into_recorded_segments():
    torch.manual_seed(0)
    model = Sandwich(_host_sync).eval().to(CUDA)
    ep = torch.export.export(model, (torch.randn(8, 16, device=CUDA),))
    prog = fxdelegate.lower(ep, cuda_graphs=True, strict=True)
    for _ in range(5):
        x = torch.randn(8, 16, device=CUDA)
        torch.testing.assert_close(prog(x), model(x))
    stats = prog.cuda_graphs.stats()
    assert stats[0]["recorded"] and stats[0]["replays"] == 4
    assert any(not s["recorded"] for s in stats)
    assert "reads tensor values on the host" in prog.report()


@torch.library.custom_op("fxdelegate_gpu_test::scale_by_max", mutates_args=())
def scale_by_max(x: torch.Tensor) -> torch.Tensor:
    return x / x.abs().max().item()  # .item(): a host sync no graph can record


@scale_by_max.register_fake
def _(x):
    return torch.empty_like(x)


@torch.no_grad()
def test_a_recording_that_fails_at_run_time_falls_back_with_one_warning():
    torch.manual_seed(0)
    model = Sandwich(scale_by_max).eval().to(CUDA)
    ep = torch.export.export(model, (torch.randn(4, 16, device=CUDA),))
    prog = fxdelegate.lower(ep, cuda_graphs=True, strict=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(6):
            x = torch.randn(4, 16, device=CUDA)
            torch.testing.assert_close(prog(x), model(x))
    messages = [str(w.message) for w in caught if "CUDA graphs" in str(w.message)]
    assert len(messages) == 1 and "scale_by_max" in messages[0], messages
    stats = prog.cuda_graphs.stats()
    assert [s["recorded"] for s in stats] == [True, False, True]
    assert all(s["replays"] >= 3 for s in stats if s["recorded"])
    torch.cuda.synchronize()  # the context survived the failed recording


@torch.no_grad()
def test_save_and_load_with_graphs_in_a_fresh_process(demo, tmp_path):
    model, _, path = demo
    loaded = fxdelegate.load(path, cuda_graphs=True)
    for batch in (3, 3, 3, 64):
        args, kwargs = _to(demo_inputs(batch))
        torch.testing.assert_close(loaded(*args, **kwargs), model(*args, **kwargs))
    assert loaded.cuda_graphs.stats()[0]["replays"] == 2
    cases = {b: demo_inputs(b) for b in (2, 2, 2)}
    torch.save(cases, tmp_path / "in.pt")
    script = textwrap.dedent(
        """
        import sys, torch, fxdelegate
        prog = fxdelegate.load(sys.argv[1], cuda_graphs=True)
        cases = torch.load(sys.argv[2], weights_only=True)
        outs = []
        with torch.no_grad():
            for _ in range(3):
                args, kw = cases[2]
                outs.append(prog(*[a.cuda() for a in args], **{k: v.cuda() for k, v in kw.items()}))
        assert prog.cuda_graphs.stats()[0]["replays"] == 2  # warm-up, record + replay, replay
        torch.save(torch.utils._pytree.tree_map_only(torch.Tensor, lambda t: t.cpu(), outs), sys.argv[3])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path / "in.pt"), str(tmp_path / "o.pt")],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    args, kwargs = cases[2]
    expected = _to(model(*_to(args), **_to(kwargs)), "cpu")
    for out in torch.load(tmp_path / "o.pt", weights_only=True):
        torch.testing.assert_close(out, expected)


@torch.no_grad()
def test_eight_threads_each_get_their_own_outputs(demo):
    model, prog, _ = demo
    inputs = [_to(demo_inputs((1, 37, 8)[i % 3])) for i in range(8)]
    expected = [model(*a, **k) for a, k in inputs]
    results: list = [None] * 8
    errors: list = []

    def work(i):
        try:
            for _ in range(10):
                results[i] = prog(*inputs[i][0], **inputs[i][1])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got, want in zip(results, expected):
        torch.testing.assert_close(got, want)


@torch.no_grad()
def test_decode_steps_with_a_static_kv_cache_match_eager():
    torch.manual_seed(0)
    eager = LlamaDecoder(layers=2, d=128, heads=4, ff=256, vocab=100, max_len=32).eval().to(CUDA)
    ep = torch.export.export(
        copy.deepcopy(eager),
        (torch.tensor([[1]], device=CUDA), torch.tensor([0], device=CUDA)),
    )
    prog = fxdelegate.lower(ep, exclude_ops=["aten.silu"], cuda_graphs=True, strict=True)
    state = prog.exported_program.state_dict | prog.exported_program.constants
    for step in range(12):
        token = torch.randint(0, 100, (1, 1), device=CUDA)
        pos = torch.tensor([step], device=CUDA)
        torch.testing.assert_close(prog(token, pos), eager(token, pos), rtol=1e-4, atol=1e-4)
    for name, buffer in eager.named_buffers():
        if name in state:
            torch.testing.assert_close(state[name], buffer, rtol=1e-4, atol=1e-4)
    assert prog.cuda_graphs.stats()[0]["replays"] == 11  # step 0 warms up, step 1 records


def _reserved_after_cleanup():
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return torch.cuda.memory_reserved()


@torch.no_grad()
def test_graph_pools_are_released_with_the_program():
    torch.manual_seed(0)
    model = DemoModel(width=256).eval().to(CUDA)
    ep = export_demo(model)

    def run_and_drop(batches):
        prog = fxdelegate.lower(
            ep, backend="reference", exclude_ops=["aten.gelu"], cuda_graphs=True
        )
        for batch in batches:
            args, kwargs = _to(demo_inputs(batch, width=256))
            for _ in range(3):
                prog(*args, **kwargs)
        return prog.cuda_graphs.pool_bytes()

    run_and_drop([8])  # per-stream library state (cuBLAS workspaces) is made once per process
    before = _reserved_after_cleanup()
    held = run_and_drop([512, 1024])
    assert held >= 1024 * 256 * 4  # at least one activation of the largest batch
    assert _reserved_after_cleanup() - before < held / 4


def test_cuda_graphs_on_a_cpu_program_is_refused():
    ep = torch.export.export(DemoModel(), *demo_inputs(2))
    with pytest.raises(fxdelegate.InvalidArgumentError, match="runs on cpu"):
        fxdelegate.lower(ep, backend="reference", cuda_graphs=True)


# Eager PyTorch itself cannot run these on a GPU: a default argument is a CPU tensor.
CPU_ONLY = {"tensor_constants"}


@pytest.mark.parametrize("warmup", [0, 2])
@torch.no_grad()
def test_zoo_with_real_graphs_on_the_reference_backend(warmup):
    """Every zoo model on the GPU, each region run by eager ATen inside real CUDA graphs."""
    import dataclasses

    from zoo import ZOO
    from zoo.compare import check_program

    failures = []
    for case in ZOO:
        if any(t.dtype == torch.bfloat16 for t in _leaves(case.inputs(case.sizes[0]))):
            continue  # checked on the CPU; bf16 kernels differ between devices
        if case.name in CPU_ONLY:
            continue
        try:
            eager, ep = _cuda_case(case)
            prog = fxdelegate.lower(
                ep,
                backend="reference",
                cuda_graphs=CUDAGraphOptions(warmup_calls=warmup),
                **case.settings[0],
            )
            moved = dataclasses.replace(
                case, inputs=lambda n, c=case: _to(c.inputs(n)), calls=warmup + 2
            )
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "CUDA graphs:")
                check_program(moved, prog, eager)
        except Exception as exc:
            failures.append(f"{case.name}: {type(exc).__name__}: {str(exc)[:300]}")
    assert not failures, "\n".join(failures)


def _leaves(tree):
    return [t for t in torch.utils._pytree.tree_leaves(tree) if isinstance(t, torch.Tensor)]


def _cuda_case(case):
    """The zoo case's model (seeded as the zoo seeds it) and its export, on the GPU."""
    torch.manual_seed(0)
    eager = case.make().to(CUDA)
    eager.train(case.train)
    args, kwargs = _to(case.inputs(case.sizes[0]))
    dynamic = case.dynamic() if case.dynamic else None
    exported = copy.deepcopy(eager)
    return eager, torch.export.export(exported, args, kwargs, dynamic_shapes=dynamic)
