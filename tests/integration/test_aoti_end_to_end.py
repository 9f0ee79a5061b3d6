"""Every capability once through real AOTInductor (compiled programs are session fixtures)."""

import copy
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

import fxdelegate
from fxdelegate.demo import demo_inputs
from fxdelegate.errors import InputMismatchError
from fxdelegate.runtime.archive.archive_io import archive_members, read_metadata
from fxdelegate.runtime.codegen.op_bindings import python_binding
from models import Counter, nested_inputs

pytestmark = pytest.mark.aoti
DELEGATE = torch.ops.higher_order.executorch_call_delegate


def test_demo_has_one_delegate_per_region_and_gelu_in_the_executor(demo_aoti):
    graph = demo_aoti.exported_program.graph
    calls = [n for n in graph.nodes if n.target is DELEGATE]
    assert len(calls) == len(demo_aoti.partitions) == 4
    executor_ops = [
        n.target
        for n in graph.nodes
        if n.op == "call_function" and n.target is not DELEGATE and "getitem" not in n.name
    ]
    assert executor_ops == [torch.ops.aten.gelu.default] * 3
    report = demo_aoti.report()
    assert report.count("excluded by exclude_ops") == 4  # 3 rows + the by-reason summary
    assert "4 region(s) on backend 'aoti'" in report


def test_demo_matches_eager_at_three_batch_sizes(demo_aoti, demo_model):
    with torch.no_grad():
        for batch in (1, 37, 1024):
            args, kwargs = demo_inputs(batch)
            torch.testing.assert_close(demo_aoti(*args, **kwargs), demo_model(*args, **kwargs))


def test_demo_calls_bindings_unpacks_regions_and_compiles_them_with_the_defaults(
    demo_aoti, demo_model
):
    graph = demo_aoti.exported_program.graph
    gelus = [n for n in graph.nodes if n.target is torch.ops.aten.gelu.default]
    # dynamic batch: the probe stands in with the example sizes
    assert gelus and all(python_binding(n) is torch._C._nn.gelu for n in gelus)
    assert re.search(r"t\d+, t\d+ = _d\d+\(\[", demo_aoti.generated_code)
    specs = {
        tuple(m.compile_specs) for _, m in demo_aoti.exported_program.graph_module.named_children()
    }
    assert specs == {("cpp.min_chunk_size=4096",)}
    args, kwargs = demo_inputs(37)
    with torch.no_grad():
        torch.testing.assert_close(demo_aoti(*args, **kwargs), demo_model(*args, **kwargs))


def test_out_of_range_batch_is_refused_before_running(demo_aoti):
    args, kwargs = demo_inputs(1025)
    with pytest.raises(InputMismatchError, match=r"range \[1, 1024\], got 1025"):
        demo_aoti(*args, **kwargs)


def test_nested_pytrees_and_kwargs(nested_aoti, nested_model):
    assert len(nested_aoti.partitions) >= 2
    for batch in (2, 5, 128):
        args, kwargs = nested_inputs(batch)
        torch.testing.assert_close(nested_aoti(*args, **kwargs), nested_model(*args, **kwargs))


def test_archive_layout_stores_each_distinct_region_and_each_weight_once(demo_archive, demo_aoti):
    names = [n for n, _ in archive_members(demo_archive)]
    assert "models/model.json" in names and "extra/fxdelegate.json" in names
    regions = {r["key"]: r for r in read_metadata(demo_archive)["regions"]}
    # blocks 1 and 2 are identical in structure: one compiled library serves both
    assert (
        regions["region_1-aoti"]["package_key"]
        == regions["region_2-aoti"]["package_key"]
        == "region_1-aoti"
    )
    folders = {n.split("/")[2] for n in names if n.startswith("data/aotinductor/")}
    assert folders == {"region_0-aoti", "region_1-aoti", "region_3-aoti"}
    for folder in folders:
        assert any(n.startswith(f"data/aotinductor/{folder}/") and n.endswith(".so") for n in names)
    assert not [
        n for n in names if n.startswith("models/region_")
    ]  # AOTI regions keep no graph copy
    # every weight of the model is stored exactly once, in the program's state
    bound = [c[1] for r in regions.values() for c in r["meta"]["constants"]]
    assert len(bound) == len(set(bound)) == len(demo_aoti.exported_program.state_dict)


LOAD_AND_RUN = textwrap.dedent(
    """
    import sys
    # Loading must not compile: inductor's entry point and its C++ builder raise,
    # and PATH (set by the test) holds no compiler binary.
    import torch, fxdelegate
    import torch._inductor
    import torch._inductor.cpp_builder as cpp_builder

    def refuse(*args, **kwargs):
        raise AssertionError("a compile was attempted while loading")

    cpp_builder.CppBuilder.build = refuse
    torch._inductor.aot_compile = refuse
    prog = fxdelegate.load(sys.argv[1])
    delegate = torch.ops.higher_order.executorch_call_delegate
    keys = [n.args[0] for n in prog.exported_program.graph.nodes if n.target is delegate]
    assert all(isinstance(k, str) and k.endswith("-aoti") for k in keys), keys
    cases = torch.load(sys.argv[2], weights_only=True)
    with torch.no_grad():
        torch.save({b: prog(*a, **k) for b, (a, k) in cases.items()}, sys.argv[3])
    assert "fxdelegate.runtime.backends.aoti_compiler" not in sys.modules
    print("ok", len(keys))
    """
)


def test_saved_program_loads_and_runs_in_a_fresh_process_without_compiling(
    demo_archive, demo_model, tmp_path
):
    cases = {b: demo_inputs(b) for b in (1, 8, 100)}
    torch.save(cases, tmp_path / "in.pt")
    script = tmp_path / "run.py"
    script.write_text(LOAD_AND_RUN)
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(demo_archive),
            str(tmp_path / "in.pt"),
            str(tmp_path / "out.pt"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": ""},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok 4")
    outputs = torch.load(tmp_path / "out.pt", weights_only=True)
    with torch.no_grad():
        for b, (args, kwargs) in cases.items():
            torch.testing.assert_close(outputs[b], demo_model(*args, **kwargs))


def test_loaded_program_in_process(demo_archive, demo_model, demo_aoti):
    loaded = fxdelegate.load(demo_archive)
    assert loaded.report() == demo_aoti.report()
    args, kwargs = demo_inputs(3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(*args, **kwargs), demo_model(*args, **kwargs))


def test_buffer_and_input_mutation_through_aoti(tmp_path):
    eager = Counter()
    ep = torch.export.export(copy.deepcopy(eager), (torch.randn(2, 4), torch.zeros(4)))
    prog = fxdelegate.lower(ep, backend="aoti", exclude_ops=["aten.gelu"])
    prog.save(tmp_path / "counter.pt2")
    loaded = fxdelegate.load(tmp_path / "counter.pt2")
    for program in (prog, loaded):
        reference = copy.deepcopy(eager)
        acc, acc_ref = torch.zeros(4), torch.zeros(4)
        for _ in range(2):
            x = torch.randn(2, 4)
            torch.testing.assert_close(program(x, acc), reference(x, acc_ref))
            torch.testing.assert_close(acc, acc_ref)
            torch.testing.assert_close(
                program.exported_program.state_dict["running"], reference.running
            )
            torch.testing.assert_close(
                program.exported_program.state_dict["calls"], reference.calls
            )


def test_cli_inspect_and_demo(demo_archive, tmp_path):
    inspect = subprocess.run(
        [sys.executable, "-m", "fxdelegate.cli", "inspect", str(demo_archive)],
        capture_output=True,
        text=True,
    )
    assert inspect.returncode == 0, inspect.stderr
    assert "data/aotinductor/region_0-aoti/" in inspect.stdout and "gelu" in inspect.stdout
    demo = subprocess.run(
        [
            sys.executable,
            "-m",
            "fxdelegate.cli",
            "-q",
            "demo",
            "--runs",
            "5",
            "--out",
            str(tmp_path / "d.pt2"),
        ],
        capture_output=True,
        text=True,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "demo passed" in demo.stdout and "MISMATCH" not in demo.stdout
    assert (tmp_path / "d.pt2").exists()
