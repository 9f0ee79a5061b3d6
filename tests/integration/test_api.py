"""The public API end to end on the reference backend (fast); test_aoti_end_to_end.py
does the same through real AOTInductor."""

import pytest
import torch

import fxdelegate
from fxdelegate.errors import InvalidArgumentError, UnsupportedProgramError
from models import NestedIO, export_nested, nested_inputs


@pytest.fixture(scope="module")
def nested():
    model = NestedIO().eval()
    return model, fxdelegate.lower(
        export_nested(model), backend="reference", exclude_ops=("aten.gelu",)
    )


def test_nested_pytrees_round_trip_at_several_sizes(nested):
    model, prog = nested
    for batch in (2, 9, 128):
        args, kwargs = nested_inputs(batch)
        out = prog(*args, **kwargs)
        expected = model(*args, **kwargs)
        assert (
            isinstance(out, dict)
            and isinstance(out["parts"], list)
            and isinstance(out["parts"][1], tuple)
        )
        torch.testing.assert_close(out, expected)


def test_program_structure_and_report(nested):
    _, prog = nested
    delegate = torch.ops.higher_order.executorch_call_delegate
    calls = [n for n in prog.exported_program.graph.nodes if n.target is delegate]
    assert len(calls) == len(prog.partitions) >= 2
    names = [p.name for p in prog.partitions]
    assert names == [f"region_{i}" for i in range(len(names))]
    report = prog.report()
    for p in prog.partitions:
        assert p.name in report
    executor_ops = [
        n
        for n in prog.exported_program.graph.nodes
        if n.op == "call_function" and n.target is not delegate and "getitem" not in n.name
    ]
    for node in executor_ops:
        assert node.name in report
    assert "excluded by exclude_ops" in report
    assert "delegated" in report and "%" in report


def test_bad_arguments_are_explained():
    ep = export_nested(NestedIO())
    with pytest.raises(InvalidArgumentError, match=r"no operator named 'aten\.not_an_op'"):
        fxdelegate.lower(ep, backend="reference", exclude_ops=["aten.not_an_op"])
    with pytest.raises(InvalidArgumentError, match="min_partition_size"):
        fxdelegate.lower(ep, backend="reference", min_partition_size=0)
    with pytest.raises(InvalidArgumentError, match="OperatorSupportBase"):
        fxdelegate.lower(ep, backend="reference", support="all")  # type: ignore[arg-type]
    with pytest.raises(UnsupportedProgramError, match="ExportedProgram"):
        fxdelegate.lower(NestedIO(), backend="reference")  # type: ignore[arg-type]


def test_min_partition_size_moves_small_regions_to_the_executor(nested):
    model, default = nested
    smallest = min(p.size for p in default.partitions)
    prog = fxdelegate.lower(
        export_nested(model),
        backend="reference",
        exclude_ops=("aten.gelu",),
        min_partition_size=smallest + 1,
    )
    assert len(prog.partitions) < len(default.partitions)
    assert all(p.size > smallest for p in prog.partitions)
    assert "region smaller than min_partition_size" in prog.report()
    args, kwargs = nested_inputs(5)
    torch.testing.assert_close(prog(*args, **kwargs), model(*args, **kwargs))
