import pytest
import torch
from torch.export import Dim
from torch.testing._internal.two_tensor import TwoTensor

import fxdelegate
from fxdelegate.errors import InputMismatchError


class Two(torch.nn.Module):
    def forward(self, x, y, *, z):
        return x + y, torch.cat([x, z])


@pytest.fixture(scope="module")
def prog():
    b = Dim("b", min=2, max=16)
    ep = torch.export.export(
        Two(),
        (torch.randn(4, 3), torch.randn(4, 3)),
        {"z": torch.randn(8, 3)},
        dynamic_shapes={"x": {0: b}, "y": {0: b}, "z": {0: 2 * b}},
    )
    return fxdelegate.lower(ep, backend="reference")


def ok(b=4):
    return (torch.randn(b, 3), torch.randn(b, 3)), {"z": torch.randn(2 * b, 3)}


def test_accepts_every_size_in_range(prog):
    for b in (2, 5, 16):
        args, kwargs = ok(b)
        torch.testing.assert_close(prog(*args, **kwargs), Two()(*args, **kwargs))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda a, k: ((a[0].double(), a[1]), k),
            r"input args\[0\]: expected dtype torch.float32, got torch.float64",
        ),
        (lambda a, k: ((a[0][None], a[1]), k), r"input args\[0\]: expected rank 2"),
        (lambda a, k: ((a[0][:, :2], a[1]), k), r"input args\[0\]: dimension 1 must be 3"),
        (
            lambda a, k: ((torch.randn(17, 3), torch.randn(17, 3)), {"z": torch.randn(34, 3)}),
            r"dimension 0 is dynamic \(s\d+\) with range \[2, 16\], got 17",
        ),
        (
            lambda a, k: ((a[0], torch.randn(5, 3)), k),
            r"input args\[1\]: dimension 0 must equal args\[0\] dimension 0",
        ),
        (
            lambda a, k: (a, {"z": torch.randn(9, 3)}),
            r"input kwargs\['z'\]: dimension 0 must be 2\*s\d+ = 8, got 9",
        ),
        (lambda a, k: (a, {}), r"inputs are structured as"),
        (lambda a, k: (a, {**k, "w": 1}), r"unexpected keyword argument\(s\) \['w'\]"),
        (lambda a, k: ((a[0], 3.0), k), r"input args\[1\]: expected a tensor"),
        (lambda a, k: ((a[0],), k), r"inputs are structured as"),
        (
            lambda a, k: ((a[0].to_sparse_csr(), a[1]), k),
            r"input args\[0\]: expected a tensor of layout torch.strided, got torch.sparse_csr",
        ),
        (
            lambda a, k: ((TwoTensor(a[0], a[0].clone()), a[1]), k),
            r"input args\[0\]: a TwoTensor \(a tensor subclass that runs its ops in Python\)",
        ),
    ],
)
def test_rejects_with_a_message_naming_the_input(prog, mutate, message):
    args, kwargs = mutate(*ok())
    with pytest.raises(InputMismatchError, match=message):
        prog(*args, **kwargs)


def test_checks_can_be_switched_off(prog):
    args, kwargs = ok()
    prog.check_inputs = False
    try:
        torch.testing.assert_close(prog(*args, **kwargs), Two()(*args, **kwargs))
    finally:
        prog.check_inputs = True
    assert prog.check_inputs


def test_wrong_device_is_refused():
    ep = torch.export.export(
        Two(), (torch.randn(4, 3), torch.randn(4, 3)), {"z": torch.randn(8, 3)}
    )
    prog = fxdelegate.lower(ep, backend="reference")
    meta = torch.randn(4, 3, device="meta")
    with pytest.raises(InputMismatchError, match="expected a tensor on cpu, got one on meta"):
        prog(meta, torch.randn(4, 3), z=torch.randn(8, 3))


class SparseMatmul(torch.nn.Module):
    def forward(self, a, b):
        return torch.sparse.mm(a, b.relu()).sigmoid()


def test_sparse_inputs_stay_in_the_executor_with_their_reason_and_are_checked():
    a, b = torch.randn(5, 5).relu().to_sparse_csr(), torch.randn(5, 3)
    ep = torch.export.export(SparseMatmul(), (a, b))
    prog = fxdelegate.lower(ep, backend="reference")
    torch.testing.assert_close(prog(a, b), SparseMatmul()(a, b), rtol=0, atol=0)
    reasons = {op.op: op.reason for op in prog.summary.executor_ops}
    assert reasons["aten._sparse_mm.default"].startswith("sparse or other non-strided layout")
    assert "torch.sparse_csr" in reasons["aten._sparse_mm.default"]
    # relu and sigmoid take strided tensors: they are delegated
    assert {"aten.relu.default", "aten.sigmoid.default"} <= {
        op for p in prog.partitions for op in p.ops
    }
    with pytest.raises(InputMismatchError, match=r"expected a tensor of layout torch\.sparse_csr"):
        prog(a.to_dense(), b)


@pytest.mark.parametrize("layout", [torch.strided, torch.jagged], ids=["strided", "jagged"])
def test_nested_tensors_are_refused_by_name(prog, layout):
    nested = torch.nested.nested_tensor([torch.randn(4, 3), torch.randn(4, 3)], layout=layout)
    (x, _y), kwargs = ok()
    with pytest.raises(InputMismatchError, match=r"input args\[1\]: a nested tensor"):
        prog(x, nested, **kwargs)
