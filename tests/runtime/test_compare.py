"""prog.compare: which region is wrong (reference backend; one AOTInductor case)."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

import fxdelegate
from fxdelegate.demo import demo_inputs
from fxdelegate.errors import RegionProgramMissingError
from fxdelegate.runtime.archive.archive_io import read_metadata
from fxdelegate.runtime.backends.reference import ReferenceCompiler, ReferenceRuntime

WRONG_REGION = "region_2"


class Counting(torch.nn.Module):
    """Three blocks with ReLU pinned, and a buffer that a region updates in place."""

    def __init__(self) -> None:
        super().__init__()
        self.linears = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(3))
        self.register_buffer("total", torch.zeros(8))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for linear in self.linears:
            x = x + torch.nn.functional.gelu(linear(x)).relu()
        self.total.add_(x.sum(0))
        return x, self.total * 2


class PerturbingRuntime(ReferenceRuntime):
    """Runs regions eagerly, but adds 1e-2 to every float output of WRONG_REGION."""

    def load(self, artifact, constants):
        run = super().load(artifact, constants)
        if not artifact.key.startswith(f"{WRONG_REGION}-"):
            return run
        return lambda inputs: [
            o + 1e-2 if isinstance(o, torch.Tensor) and o.is_floating_point() else o
            for o in run(inputs)
        ]


class PerturbingCompiler(ReferenceCompiler):
    backend_id = "perturbing"


fxdelegate.register_backend(
    "perturbing", runtime=PerturbingRuntime(), compiler=PerturbingCompiler(), replace=True
)


def _lower(backend: str) -> tuple[Counting, fxdelegate.DelegatedProgram]:
    model = Counting().eval()
    ep = torch.export.export(model, (torch.randn(4, 8),))
    return model, fxdelegate.lower(ep, backend=backend, exclude_ops=["aten.relu"])


def test_a_correct_program_reports_every_region_within_tolerance():
    _, prog = _lower("reference")
    report = prog.compare(torch.randn(4, 8))
    assert [s.kind for s in report.steps] == ["region", "executor"] * 3 + ["region"]
    assert [s.name for s in report.regions] == [f"region_{i}-reference" for i in range(4)]
    assert report.first_divergence() is None and report.outputs_match()
    assert all(d.max_abs == 0 for s in report.steps for d in (s.local or []) + s.drift)
    assert [d.label for d in report.outputs] == ["output 0", "output 1"]
    assert "Every region is within tolerance (4 compared)" in str(report)


def test_the_bisect_names_exactly_the_wrong_region_and_errors_do_not_smear():
    _, prog = _lower("perturbing")
    report = prog.compare(torch.randn(4, 8))
    first = report.first_divergence(rtol=1e-3, atol=1e-5)
    assert first is not None and first.name == f"{WRONG_REGION}-perturbing"
    wrong = [s.name for s in report.regions if not s.within(1e-3, 1e-5)]
    assert wrong == [first.name]  # regions after it get the same inputs as their own graph
    assert first.worst().max_abs == pytest.approx(1e-2, rel=1e-3)
    later = report.steps[first.step + 1 :]
    assert later and all(s.worst("drift").max_abs > 1e-4 for s in later)  # drift does carry on
    assert not report.outputs_match()
    assert f"First divergence: {first.name}" in str(report)
    # Large enough tolerances accept it.
    assert report.first_divergence(rtol=0, atol=0.02) is None


def test_compare_changes_no_state():
    model, prog = _lower("reference")
    model = copy.deepcopy(model)  # the program shares the model's buffer
    x = torch.randn(4, 8)
    before = prog.exported_program.state_dict["total"].clone()
    x_before = x.clone()
    prog.compare(x)
    torch.testing.assert_close(prog.exported_program.state_dict["total"], before)
    torch.testing.assert_close(x, x_before)
    # and the program still runs as the model does
    expected = model(x)
    torch.testing.assert_close(prog(x)[1], expected[1])


def test_compare_checks_inputs_like_a_call():
    _, prog = _lower("reference")
    with pytest.raises(fxdelegate.InputMismatchError):
        prog.compare(torch.randn(4, 9))


def test_a_loaded_reference_program_compares_its_regions(tmp_path):
    _, prog = _lower("perturbing")
    prog.save(tmp_path / "p.pt2")
    loaded = fxdelegate.load(tmp_path / "p.pt2")
    first = loaded.compare(torch.randn(4, 8)).first_divergence()
    assert first is not None and first.name == f"{WRONG_REGION}-perturbing"


@pytest.mark.aoti
def test_aoti_regions_compare_in_memory_and_from_an_archive(demo_aoti, demo_model, tmp_path):
    args, kwargs = demo_inputs(5)
    report = demo_aoti.compare(*args, **kwargs)
    assert len(report.regions) == len(demo_aoti.partitions)
    assert report.first_divergence(rtol=1e-4, atol=1e-5) is None, report
    assert report.outputs_match(rtol=1e-4, atol=1e-5)

    # An archive keeps compiled code only, unless asked to keep the region graphs.
    demo_aoti.save(tmp_path / "plain.pt2")
    with pytest.raises(RegionProgramMissingError, match="keep_region_programs=True"):
        fxdelegate.load(tmp_path / "plain.pt2").compare(*args, **kwargs)
    demo_aoti.save(tmp_path / "kept.pt2", keep_region_programs=True)
    loaded = fxdelegate.load(tmp_path / "kept.pt2")
    assert loaded.compare(*args, **kwargs).first_divergence(rtol=1e-4, atol=1e-5) is None
    # The kept region programs' weights are the program's, stored once and one
    # tensor again after loading.
    assert read_metadata(tmp_path / "kept.pt2")["shared_weights"]
    parent = {t.data_ptr() for t in loaded.exported_program.state_dict.values()}
    kept = [t for a in loaded.artifacts.values() for t in a.program.state_dict.values()]
    assert kept and {t.data_ptr() for t in kept} <= parent
    with torch.no_grad():
        torch.testing.assert_close(loaded(*args, **kwargs), demo_model(*args, **kwargs))

    # A compiled region that goes wrong after loading is named.
    key = sorted(loaded.artifacts)[1]
    runner = loaded._runners[key]
    loaded._runners[key] = lambda inputs: [o * 1.01 for o in runner(inputs)]
    first = loaded.compare(*args, **kwargs).first_divergence()
    assert first is not None and first.name == key

    # The command line: exit 0 when every region agrees, the table on stdout.
    torch.save({"args": args, "kwargs": kwargs}, tmp_path / "inputs.pt")
    cli = [sys.executable, "-m", "fxdelegate.cli", "-q", "compare"]
    done = subprocess.run(
        [*cli, str(tmp_path / "kept.pt2"), str(tmp_path / "inputs.pt"), "--rtol", "1e-4"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Every region is within tolerance" in done.stdout
    done = subprocess.run(
        [*cli, str(tmp_path / "plain.pt2"), str(tmp_path / "inputs.pt")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "keep_region_programs=True" in done.stderr


class Loss(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(self.linear(x).relu(), target) * 2


def _plant_unreduced_mse_loss(monkeypatch) -> None:
    """The executor's code generator picks torch._C._nn.mse_loss for every mse_loss
    node: a binding whose default is no reduction, where the schema's is the mean."""
    from fxdelegate.runtime.codegen import plan

    real = plan.python_binding

    def wrong(node):
        if node.target is torch.ops.aten.mse_loss.default:
            return torch._C._nn.mse_loss
        return real(node)

    monkeypatch.setattr(plan, "python_binding", wrong)


def test_compare_names_an_executor_op_whose_fast_path_is_wrong(monkeypatch):
    model = Loss().eval()
    args = (torch.randn(4, 8), torch.randn(4, 8))
    ep = torch.export.export(model, args)
    _plant_unreduced_mse_loss(monkeypatch)
    prog = fxdelegate.lower(ep, backend="reference", exclude_ops=["aten.mse_loss"])
    assert prog(*args).shape == (4, 8)  # the planted bug: unreduced, silently
    report = prog.compare(*args)
    first = report.first_divergence()
    assert first is not None and first.kind == "executor"
    assert first.name == "aten.mse_loss.default", report
    assert "shape (4, 8) vs ()" in first.worst().label
    assert not report.outputs_match()
    assert f"First divergence: aten.mse_loss.default (node {first.node}" in str(report)


def test_the_reference_backend_shares_no_fast_path_with_the_executor(monkeypatch):
    """The same planted bug leaves reference regions right: they are the oracle."""
    model = Loss().eval()
    args = (torch.randn(4, 8), torch.randn(4, 8))
    ep = torch.export.export(model, args)
    _plant_unreduced_mse_loss(monkeypatch)
    prog = fxdelegate.lower(ep, backend="reference")
    assert [p.ops for p in prog.partitions] and "aten.mse_loss.default" in str(prog.partitions)
    torch.testing.assert_close(prog(*args), model(*args), rtol=0, atol=0)
    report = prog.compare(*args)
    assert report.first_divergence() is None and report.outputs_match(rtol=0, atol=0), report


def test_random_ops_are_compared_from_the_same_random_state():
    class Noisy(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.dropout(x.relu(), 0.5, training=True) + torch.rand_like(x)

    x = torch.randn(4, 8)
    prog = fxdelegate.lower(torch.export.export(Noisy(), (x,)), backend="reference")
    report = prog.compare(x)
    assert report.first_divergence() is None and report.outputs_match(rtol=0, atol=0), report
    assert all(d.max_abs == 0 for s in report.steps for d in s.drift), report
