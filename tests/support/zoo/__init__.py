"""The model zoo: each case is a model, how to make its inputs, its dynamic
shapes, the sizes it runs at after one lowering, and the lowering settings
it is checked under (the first through AOTInductor, the rest through the
reference backend)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.export import Dim

from . import models as m

Inputs = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass
class ZooCase:
    name: str
    make: Callable[[], torch.nn.Module]
    inputs: Callable[[int], Inputs]  # size -> fresh inputs
    sizes: tuple[int, ...] = (4,)  # exported at sizes[0], run at all of them
    dynamic: Callable[[], Any] | None = None
    settings: list[dict[str, Any]] = field(
        default_factory=lambda: [{"exclude_ops": ["aten.gelu"]}, {}, {"min_partition_size": 3}]
    )
    calls: int = 2  # calls per size (state carries over between them)
    tol: dict[str, float] = field(default_factory=dict)
    train: bool = False
    expect_in_executor: tuple[str, ...] = ()  # op names that must stay in the executor


def _batch(name="b", lo=2, hi=64):
    return Dim(name, min=lo, max=hi)


def r(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


ZOO: list[ZooCase] = [
    ZooCase(
        "mlp",
        m.MLP,
        lambda n: ((r(n, 16),), {}),
        sizes=(4, 9, 33),
        dynamic=lambda: ({0: _batch()},),
    ),
    ZooCase(
        "cnn_batchnorm_eval",
        m.CNN,
        lambda n: ((r(n, 3, 8, 8),), {}),
        sizes=(2, 5),
        dynamic=lambda: ({0: _batch()},),
    ),
    ZooCase(
        "transformer_encoder",
        m.Encoder,
        lambda n: ((r(n, 6, 32),), {}),
        sizes=(2, 3),
        dynamic=lambda: ({0: _batch()},),
    ),
    ZooCase(
        "lstm_loop",
        m.LSTMLoop,
        lambda n: ((r(n, 4, 8),), {}),
        sizes=(3, 7),
        dynamic=lambda: ({0: _batch()},),
    ),
    ZooCase(
        "kv_cache_decoder",
        m.KVDecoder,
        lambda n: ((torch.randint(0, 50, (2,)), torch.tensor([n % 8])), {}),
        sizes=(0, 1, 2, 5),
        calls=1,
        settings=[{}, {"exclude_ops": ["aten.softmax"]}, {"min_partition_size": 4}],
        expect_in_executor=(),
    ),
    ZooCase(
        "buffer_counter",
        m.Counter,
        lambda n: ((r(n, 4),), {}),
        sizes=(3, 5),
        calls=3,
        dynamic=lambda: ({0: _batch()},),
    ),
    ZooCase(
        "batchnorm_train",
        m.BatchNormTrain,
        lambda n: ((r(n, 6),), {}),
        sizes=(4,),
        calls=3,
        train=True,
        tol={"atol": 1e-4, "rtol": 1e-4},
    ),
    ZooCase(
        "input_mutation",
        m.InputMutation,
        lambda n: ((r(n, 4), torch.zeros(4)), {}),
        sizes=(3, 6),
        dynamic=lambda: ({0: _batch()}, None),
    ),
    ZooCase("shared_parameter", m.SharedParam, lambda n: ((r(n, 6),), {}), sizes=(3,)),
    ZooCase(
        "cond_inside_region",
        m.CondModel,
        lambda n: ((r(n, 4) * (1 if n % 2 else -1),), {}),
        sizes=(3, 4),
        dynamic=lambda: ({0: _batch()},),
        settings=[{}, {"exclude_ops": ["aten.sin"]}],
    ),
    ZooCase(
        "cond_across_boundary",
        m.CondModel,
        lambda n: ((r(n, 4),), {}),
        sizes=(3,),
        settings=[{"exclude_ops": ["aten.cos"]}, {"exclude_ops": ["aten.gelu"]}],
        expect_in_executor=("higher_order.cond",),
    ),
    ZooCase(
        "map",
        m.MapModel,
        lambda n: ((r(n, 4),), {}),
        sizes=(3,),
        settings=[{}, {"exclude_ops": ["aten.relu"]}],
    ),
    ZooCase(
        "two_dynamic_dims",
        m.TwoDims,
        lambda n: ((r(n, n + 3, 8),), {}),
        sizes=(2, 3, 6),
        dynamic=lambda: ({0: _batch("b"), 1: _batch("s", 2, 32)},),
    ),
    ZooCase(
        "derived_dim",
        m.DerivedDim,
        lambda n: ((r(n, 4), r(2 * n, 4)), {}),
        sizes=(2, 5, 9),
        dynamic=lambda: (lambda b: ({0: b}, {0: 2 * b}))(_batch()),
    ),
    ZooCase(
        "dim_through_executor",
        m.DimThroughExecutor,
        lambda n: ((r(n, 6),), {}),
        sizes=(2, 7),
        dynamic=lambda: ({0: _batch()},),
    ),
    ZooCase(
        "kwargs_only",
        m.KwargsOnly,
        lambda n: ((), {"a": r(n, 4), "b": r(n, 4), "scale": r(4)}),
        sizes=(3, 5),
        dynamic=lambda: {"a": {0: _batch()}, "b": {0: _batch()}, "scale": None},
    ),
    ZooCase(
        "none_inputs_outputs",
        m.NoneIO,
        lambda n: ((r(n, 4), None, (r(n, 2), None)), {}),
        sizes=(3,),
    ),
    ZooCase(
        "scalar_and_symint_outputs",
        m.ScalarOutputs,
        lambda n: ((r(n, 5),), {}),
        sizes=(3, 6),
        dynamic=lambda: ({0: _batch()},),
    ),
    ZooCase("aliasing_outputs", m.AliasingOutputs, lambda n: ((r(n, 3),), {}), sizes=(4,)),
    ZooCase(
        "empty_tensors", m.EmptyTensors, lambda n: ((r(n, 4), torch.empty(0, 4)), {}), sizes=(3,)
    ),
    ZooCase("zero_dim_tensors", m.ZeroDim, lambda n: ((r(n), torch.tensor(0.7)), {}), sizes=(5,)),
    ZooCase("non_contiguous_input", m.NonContiguous, lambda n: ((r(4, n).t(),), {}), sizes=(6,)),
    ZooCase(
        "float16",
        lambda: m.HalfPrecision(torch.float16),
        lambda n: ((r(n, 8, dtype=torch.float16),), {}),
        sizes=(3,),
        tol={"atol": 2e-3, "rtol": 2e-3},
    ),
    ZooCase(
        "bfloat16",
        lambda: m.HalfPrecision(torch.bfloat16),
        lambda n: ((r(n, 8, dtype=torch.bfloat16),), {}),
        sizes=(3,),
        tol={"atol": 2e-2, "rtol": 2e-2},
    ),
    ZooCase(
        "int64_and_bool",
        m.IntBool,
        lambda n: ((torch.randint(0, 20, (n, 5)), torch.rand(n, 5) > 0.3), {}),
        sizes=(3, 4),
        dynamic=lambda: ({0: _batch()}, {0: _batch()}),
    ),
    ZooCase(
        "python_custom_op",
        m.CustomOp,
        lambda n: ((r(n, 6),), {}),
        sizes=(3,),
        settings=[{}, {"min_partition_size": 2}],
        expect_in_executor=("fxdelegate_zoo.scaled_tanh.default",),
    ),
    ZooCase(
        "data_dependent_ops",
        m.DataDependent,
        lambda n: ((r(n, 6),), {}),
        sizes=(5,),
        expect_in_executor=("aten.nonzero.default", "aten.masked_select.default"),
    ),
    ZooCase(
        "residual_blocks",
        m.ResidualBlocks,
        lambda n: ((r(n, 16),), {}),
        sizes=(2, 9),
        dynamic=lambda: ({0: _batch()},),
    ),
    ZooCase(
        "tied_weights",
        m.TiedWeights,
        lambda n: ((torch.randint(0, 30, (n, 3)),), {}),
        sizes=(2, 4),
        dynamic=lambda: ({0: _batch()},),
    ),
    ZooCase(
        "depthwise_conv",
        m.Depthwise,
        lambda n: ((r(n, 8, 10),), {}),
        sizes=(2, 3),
        dynamic=lambda: ({0: _batch()},),
    ),
    ZooCase(
        "tensor_constants",
        m.TensorConstants,
        lambda n: ((r(n, 8),), {}),
        sizes=(5, 2),
        dynamic=lambda: ({0: _batch()},),
    ),
]
