"""The ``onnxruntime`` backend: regions exported with torch.onnx, run by ONNX Runtime.

Each model is lowered with ``strict=True`` (a region that fails to compile or
load is an error here) and compared with ``ep.module()``, at the exported
sizes and at others. Weights stay out of the ONNX model: they are bound when
a region is loaded, so identical regions share one model and updated weights
take effect without a compile.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch
from torch.export import Dim

import fxdelegate
from fxdelegate.errors import BackendCompileError, BackendError, InputMismatchError
from fxdelegate.partitioner import SupportedOps
from fxdelegate.runtime.backend import RegionToCompile, get_compiler
from fxdelegate.runtime.weight_update import rebound_program
from models import GeluBlocks

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

ORT = "onnxruntime"


class ConvNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1),
            torch.nn.BatchNorm2d(16),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
        )
        self.head = torch.nn.Linear(16, 5)
        for m in self.modules():  # running statistics that are not the identity
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def _mlp() -> tuple[GeluBlocks, torch.export.ExportedProgram]:
    torch.manual_seed(3)
    model = GeluBlocks(blocks=4, width=32).eval()
    ep = torch.export.export(
        model, (torch.randn(4, 32),), dynamic_shapes=({0: Dim("batch", min=2, max=64)},)
    )
    return model, ep


@pytest.fixture(scope="module")
def mlp():
    model, ep = _mlp()
    return model, ep, fxdelegate.lower(ep, backend=ORT, strict=True)


def _assert_all_on_ort(prog) -> None:
    assert prog.partitions, prog.report()
    assert {r.backend_id for r in prog.partitions} == {ORT}, prog.report()
    assert not prog.summary.failed_regions, prog.report()


@torch.no_grad()
def test_mlp_every_region_on_onnxruntime_at_other_batch_sizes(mlp):
    _, ep, prog = mlp
    _assert_all_on_ort(prog)
    assert prog.summary.executor_compute_nodes == 0, prog.report()
    for batch in (4, 7, 33):  # exported at 4; the ONNX model's batch is symbolic
        x = torch.randn(batch, 32)
        torch.testing.assert_close(prog(x), ep.module()(x))


@torch.no_grad()
def test_conv_net_with_a_dynamic_batch():
    torch.manual_seed(4)
    model = ConvNet().eval()
    ep = torch.export.export(
        model, (torch.randn(2, 3, 16, 16),), dynamic_shapes=({0: Dim("batch", min=1, max=32)},)
    )
    prog = fxdelegate.lower(ep, backend=ORT, strict=True)
    _assert_all_on_ort(prog)
    assert prog.summary.executor_compute_nodes == 0, prog.report()
    for batch in (2, 5, 1):
        x = torch.randn(batch, 3, 16, 16)
        torch.testing.assert_close(prog(x), ep.module()(x), atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_tiny_transformers_model():
    pytest.importorskip("transformers")
    from zoo.transformers_models import HF_ZOO, export_hf_case

    case = next(c for c in HF_ZOO if c.name == "gpt2")
    eager, ep = export_hf_case(case)
    prog = fxdelegate.lower(ep, backend=ORT, strict=True)
    _assert_all_on_ort(prog)
    # Only the exporter's shape checks stay out (no tensor output), as on every backend.
    assert {op.reason for op in prog.summary.executor_ops} <= {"no tensor output"}, prog.report()
    for size in case.sizes:  # two sequence lengths: the model's is symbolic
        torch.manual_seed(size)
        inputs = case.inputs(size)
        torch.testing.assert_close(prog(**inputs), eager(**inputs), **case.tol)


@torch.no_grad()
def test_dtypes_zero_dim_and_strided_inputs():
    class Mixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(10, 8)
            self.lin = torch.nn.Linear(8, 8)
            self.lin16 = torch.nn.Linear(8, 8).half()

        def forward(self, ids, mask, scale, h):
            y = self.lin(self.emb(ids)) * scale  # int64 indices, a 0-d input
            y = y.masked_fill(mask.unsqueeze(-1), 0.0)  # a bool mask
            return y, self.lin16(h), (ids * 2).sum(-1), mask.logical_not()

    torch.manual_seed(5)
    model = Mixed().eval()
    args = (
        torch.randint(0, 10, (3, 5)),
        torch.rand(3, 5) > 0.5,
        torch.tensor(1.5),
        torch.randn(8, 3).half().t(),  # float16, not contiguous
    )
    ep = torch.export.export(model, args)
    prog = fxdelegate.lower(ep, backend=ORT, strict=True)
    _assert_all_on_ort(prog)
    assert prog.summary.executor_compute_nodes == 0, prog.report()
    got, want = prog(*args), ep.module()(*args)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w)


def test_bfloat16_and_float64_stay_out():
    for dtype in (torch.bfloat16, torch.float64):
        model = torch.nn.Linear(8, 8).to(dtype)
        ep = torch.export.export(model, (torch.randn(2, 8, dtype=dtype),))
        prog = fxdelegate.lower(ep, backend=ORT, strict=True)
        assert not prog.partitions
        (op,) = prog.summary.executor_ops
        assert str(dtype) in op.reason and "ONNX Runtime" in op.reason, op.reason


def test_batch_norm_in_training_stays_out():
    """ONNX Runtime's inference build normalizes a training-mode BatchNormalization
    with the running statistics: such nodes stay in the executor, the rest of the
    model goes to ONNX Runtime, and outputs and running statistics match eager."""
    from zoo import ZOO
    from zoo.compare import check_program, export_case

    case = next(c for c in ZOO if c.name == "batchnorm_train")
    eager, ep = export_case(case)
    prog = fxdelegate.lower(ep, backend=ORT, strict=True)
    refused = [op for op in prog.summary.executor_ops if "training=True" in op.reason]
    assert [op.op for op in refused] == ["aten._native_batch_norm_legit_functional.default"]
    assert prog.partitions
    check_program(case, prog, eager)  # several calls: outputs and buffers


@torch.no_grad()
def test_with_the_reference_backend():
    model, ep = _mlp()
    prog = fxdelegate.lower(
        ep,
        backend=["reference", ORT],  # GELUs on the reference backend, the rest on ORT
        support={"reference": SupportedOps(["aten.gelu"])},
        strict=True,
    )
    counts = {}
    for region in prog.partitions:
        counts[region.backend_id] = counts.get(region.backend_id, 0) + 1
    assert counts["reference"] == 4 and counts[ORT] >= 4, prog.report()
    assert not prog.summary.executor_ops, prog.report()
    x = torch.randn(9, 32)
    torch.testing.assert_close(prog(x), model(x))


def test_identical_regions_share_one_model(tmp_path):
    model, ep = _mlp()
    prog = fxdelegate.lower(ep, backend=ORT, exclude_ops=["aten.gelu"], strict=True)
    artifacts = list(prog.artifacts.values())
    # linear + layer_norm; three of add + linear + layer_norm; the last add
    assert len(artifacts) == 5 and prog.summary.compile["distinct"] == 3
    packages = [(a.package_path, a.package_key) for a in artifacts]
    assert len(set(packages)) == 3 and len(set(packages[1:4])) == 1
    # each region binds its own weights to the shared model
    fqns = [tuple(fqn for _, fqn in a.constant_bindings) for a in artifacts[1:4]]
    assert len(set(fqns)) == 3
    with torch.no_grad():
        x = torch.randn(6, 32)
        torch.testing.assert_close(prog(x), model(x))
    path = tmp_path / "shared.pt2"
    prog.save(path)
    with zipfile.ZipFile(path) as archive:
        models = [n for n in archive.namelist() if n.endswith("/model.onnx")]
    assert len(models) == 3, models


def test_weights_are_not_in_the_model(mlp, tmp_path):
    """The same region with other weights compiles to the same bytes, which hold no weight."""
    _, _, prog = mlp
    (artifact,) = prog.artifacts.values()
    program = artifact.program
    compiler = get_compiler(ORT)
    packages = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        state = {
            k: torch.nn.Parameter(torch.randn_like(v), requires_grad=False)
            for k, v in program.state_dict.items()
        }
        variant = rebound_program(program, state, {})
        region = RegionToCompile("r", variant, variant.example_inputs[0])
        workdir = tmp_path / str(seed)
        workdir.mkdir()
        built = compiler.compile(region, compiler.default_options(), str(workdir))
        with zipfile.ZipFile(built.package_path) as archive:
            (name,) = [n for n in archive.namelist() if n.endswith("model.onnx")]
            packages.append(archive.read(name))
        for tensor in state.values():
            assert tensor.detach().numpy().tobytes() not in packages[-1]
    assert packages[0] == packages[1]
    weights = sum(t.numel() * t.element_size() for t in program.state_dict.values())
    assert len(packages[0]) < weights / 4  # 17 KiB of weights; the model is a few KiB


@torch.no_grad()
def test_update_weights_reaches_onnxruntime_regions():
    model, ep = _mlp()
    prog = fxdelegate.lower(ep, backend=ORT, strict=True)
    torch.manual_seed(9)
    new = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    prog.update_weights(new)
    model.load_state_dict(new)
    x = torch.randn(5, 32)
    torch.testing.assert_close(prog(x), model(x))


def test_a_failure_inside_onnxruntime_names_the_region(mlp):
    _, _, prog = mlp
    with pytest.raises(InputMismatchError):  # the program's own input check
        prog(torch.randn(4, 32, dtype=torch.float16))
    (key,) = prog._runners
    runner = prog._runners[key]
    with pytest.raises(BackendError, match=f"region {key}: ONNX Runtime failed to run it"):
        runner([torch.randn(4, 31)])  # a width the model was not exported for


def test_unknown_compile_option_is_refused(mlp):
    _, ep, _ = mlp
    with pytest.raises(BackendCompileError, match="unknown onnxruntime compile option"):
        fxdelegate.lower(ep, backend=ORT, compile_options={"threads": 2}, strict=True)


# Loading needs runtime/archive/archive_checks.check_region_files to accept a region folder that
# holds model.onnx (today it asks every backend for *.so or *.cpp): see
# OnnxRuntimeRuntime.package_suffixes.
@torch.no_grad()
def test_save_and_load_in_a_process_without_the_compiler(mlp, tmp_path):
    model, _, prog = mlp
    path = tmp_path / "mlp.pt2"
    prog.save(path)
    x = torch.randn(11, 32)
    torch.save(x, tmp_path / "x.pt")
    torch.save(model(x), tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys
        import torch
        import fxdelegate

        before = set(sys.modules)  # importing torch imports parts of torch.onnx already
        prog = fxdelegate.load({str(path)!r})
        out = prog(torch.load({str(tmp_path / "x.pt")!r}))
        torch.testing.assert_close(out, torch.load({str(tmp_path / "expected.pt")!r}))
        new = sorted(m for m in set(sys.modules) - before if "onnx" in m)
        assert all(m.split(".")[0] == "onnxruntime" or m.endswith("onnxruntime_runtime")
                   for m in new), new
        compiler = [m for m in sys.modules if m.split(".")[0] in ("onnx", "onnxscript", "onnx_ir")
                    or m.startswith("torch.onnx._internal.exporter._core")]
        assert not compiler, compiler
        print(sorted({{a.backend_id for a in prog.artifacts.values()}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['onnxruntime']"


def test_second_lowering_comes_from_the_compile_cache(tmp_path):
    _, ep = _mlp()
    first = fxdelegate.lower(ep, backend=ORT, strict=True, cache_dir=tmp_path)
    second = fxdelegate.lower(ep, backend=ORT, strict=True, cache_dir=tmp_path)
    assert first.summary.compile["compiled"] == 1
    assert second.summary.compile["cache_hits"] == 1 and second.summary.compile["compiled"] == 0
    x = torch.randn(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(second(x), first(x))
