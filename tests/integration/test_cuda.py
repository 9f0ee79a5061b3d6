"""The pipeline on a CUDA device: lower, run, save and load, against eager.

Skipped on machines without a GPU (CI has none); run on the device machine
with `pytest tests/integration/test_cuda.py`.
"""

import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fxdelegate
from fxdelegate.demo import DemoModel, demo_inputs, export_demo
from fxdelegate.errors import InputMismatchError
from models import Counter, NestedIO, SharedWeight, export_nested, nested_inputs

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


def _to(tree, device):
    return torch.utils._pytree.tree_map_only(torch.Tensor, lambda t: t.to(device), tree)


@pytest.fixture(scope="module")
def demo_cuda(tmp_path_factory):
    torch.manual_seed(0)
    model = DemoModel().eval().to(CUDA)
    prog = fxdelegate.lower(export_demo(model), exclude_ops=["aten.gelu"])
    path = tmp_path_factory.mktemp("cuda") / "demo_cuda.pt2"
    prog.save(path)
    return model, prog, path


@torch.no_grad()
def test_demo_on_cuda_matches_eager(demo_cuda):
    model, prog, _ = demo_cuda
    assert len(prog.partitions) == 4
    assert all(a.meta["device"].startswith("cuda") for a in prog.artifacts.values())
    for batch in (1, 37, 1024):
        args, kwargs = _to(demo_inputs(batch), CUDA)
        out = prog(*args, **kwargs)
        assert out["logits"].is_cuda
        torch.testing.assert_close(out, model(*args, **kwargs))


LOAD = textwrap.dedent(
    """
    import sys, torch, fxdelegate
    prog = fxdelegate.load(sys.argv[1])
    cases = torch.load(sys.argv[2], weights_only=True)
    with torch.no_grad():
        out = {b: prog(*[a.cuda() for a in args], **{k: v.cuda() for k, v in kw.items()}) for b, (args, kw) in cases.items()}
    torch.save(torch.utils._pytree.tree_map_only(torch.Tensor, lambda t: t.cpu(), out), sys.argv[3])
    """
)


def test_saved_cuda_program_loads_in_a_fresh_process(demo_cuda, tmp_path):
    model, _, path = demo_cuda
    cases = {b: demo_inputs(b) for b in (2, 64)}
    torch.save(cases, tmp_path / "in.pt")
    result = subprocess.run(
        [sys.executable, "-c", LOAD, str(path), str(tmp_path / "in.pt"), str(tmp_path / "out.pt")],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = torch.load(tmp_path / "out.pt", weights_only=True)
    with torch.no_grad():
        for b, (args, kwargs) in cases.items():
            expected = _to(model(*_to(args, CUDA), **_to(kwargs, CUDA)), "cpu")
            torch.testing.assert_close(outputs[b], expected)


def test_device_mismatch_is_refused(demo_cuda):
    _, prog, _ = demo_cuda
    args, kwargs = demo_inputs(4)  # CPU tensors for a CUDA program
    with pytest.raises(InputMismatchError, match="expected a tensor on cuda"):
        prog(*args, **kwargs)
    cpu_prog = fxdelegate.lower(
        export_demo(DemoModel()), backend="reference", exclude_ops=["aten.gelu"]
    )
    args, kwargs = _to(demo_inputs(4), CUDA)
    with pytest.raises(InputMismatchError, match="expected a tensor on cpu, got one on cuda"):
        cpu_prog(*args, **kwargs)


@torch.no_grad()
def test_dynamic_nested_model_on_cuda():
    torch.manual_seed(0)
    model = NestedIO().eval().to(CUDA)
    # export on CUDA: move example inputs and weights, keep the dynamic batch
    ep = export_nested(model, batch=4, device=CUDA)
    prog = fxdelegate.lower(ep, exclude_ops=["aten.gelu"])
    for batch in (2, 9, 128):
        args, kwargs = _to(nested_inputs(batch), CUDA)
        torch.testing.assert_close(prog(*args, **kwargs), model(*args, **kwargs))


@torch.no_grad()
def test_mutation_and_shared_weights_on_cuda(tmp_path):
    for make, inputs in (
        (Counter, lambda: (torch.randn(2, 4, device=CUDA), torch.zeros(4, device=CUDA))),
        (SharedWeight, lambda: (torch.randn(3, 6, device=CUDA),)),
    ):
        torch.manual_seed(0)
        eager = make().to(CUDA)
        ep = torch.export.export(copy.deepcopy(eager), inputs())
        prog = fxdelegate.lower(ep, exclude_ops=["aten.gelu"])
        prog.save(tmp_path / f"{make.__name__}.pt2")
        for program in (prog, fxdelegate.load(tmp_path / f"{make.__name__}.pt2")):
            reference = copy.deepcopy(eager)
            torch.manual_seed(1)
            a = inputs()
            torch.manual_seed(1)
            b = inputs()
            for _ in range(2):
                torch.testing.assert_close(program(*a), reference(*b))
                for x, y in zip(a, b):
                    torch.testing.assert_close(x, y)


@pytest.mark.parametrize("backend", ["reference", "aoti"])
def test_region_programs_share_cuda_weights_through_save_and_load(backend, tmp_path):
    # Region programs kept in the archive store CUDA weights as empty CPU stand-ins;
    # loading binds the parent's CUDA tensors back.
    for make, inputs in (
        (Counter, lambda: (torch.randn(2, 4, device=CUDA), torch.zeros(4, device=CUDA))),
        (SharedWeight, lambda: (torch.randn(3, 6, device=CUDA),)),
    ):
        torch.manual_seed(0)
        eager = make().to(CUDA)
        ep = torch.export.export(copy.deepcopy(eager), inputs())
        prog = fxdelegate.lower(ep, backend=backend, exclude_ops=["aten.gelu"], strict=True)
        path = tmp_path / f"{make.__name__}-{backend}.pt2"
        prog.save(path, keep_region_programs=True)
        loaded = fxdelegate.load(path)
        parent = {t.data_ptr() for t in loaded.exported_program.state_dict.values()}
        kept = [t for a in loaded.artifacts.values() for t in a.program.state_dict.values()]
        assert kept and all(t.is_cuda for t in kept)
        assert {t.data_ptr() for t in kept} <= parent
        reference = copy.deepcopy(eager)
        torch.manual_seed(1)
        a = inputs()
        torch.manual_seed(1)
        b = inputs()
        for _ in range(2):
            torch.testing.assert_close(loaded(*a), reference(*b))
        report = loaded.compare(*inputs())
        assert report.first_divergence(rtol=1e-4, atol=1e-5) is None, report
