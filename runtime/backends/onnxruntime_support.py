"""Which nodes the ``onnxruntime`` backend takes by default.

What every compiling backend takes (:class:`CompilableAtenSupport`), narrowed
to what the region's compile can turn into a model ONNX Runtime's CPU
execution provider runs:

* ops that torch.onnx's exporter translates: those its torchlib registry has a
  function for, those it decomposes before translating (its decomposition
  table, and every CompositeImplicitAutograd op), and the checks it drops;
* no control flow (``cond``, ``map``, ``while_loop``): the exporter's ``If`` and
  ``Loop`` are not exercised here;
* CPU tensors of the dtypes ONNX Runtime's CPU kernels cover: float32,
  float16, int64, int32 and bool. bfloat16 has next to no CPU kernels (a
  bfloat16 Add fails when the session is made), float64 lacks common ones
  (Conv, Erf), the 8- and 16-bit integers some, and complex tensors are not
  ONNX tensors. float16 is taken: ONNX Runtime computes the nodes that have
  no float16 kernel in float32 through casts it inserts, so results differ
  from eager PyTorch's by float16 rounding.

Imports torch.onnx's registry, so only the compiler half uses it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Iterator

import torch
import torch.utils._pytree as pytree
from torch._ops import HigherOrderOperator, OpOverload

from fxdelegate.partitioner import CompilableAtenSupport

ORT_CPU_DTYPES = frozenset({torch.float32, torch.float16, torch.int64, torch.int32, torch.bool})


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Without torch.onnx's log lines (a note about torchvision each time its registry
    is built) and warnings."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@functools.cache
def registry():
    """torch.onnx's registry of ONNX functions, at the opset ``torch.onnx.export`` uses."""
    from torch.onnx._constants import ONNX_DEFAULT_OPSET
    from torch.onnx._internal.exporter import _registration

    with quiet_exporter():
        return _registration.ONNXRegistry.from_torchlib(opset_version=ONNX_DEFAULT_OPSET)


@functools.cache
def _decompositions() -> dict:
    from torch.onnx._internal.exporter import _decomp

    ops = set(_decomp.get_onnx_implemented_overloads(registry()))
    return _decomp.create_onnx_friendly_decomposition_table(ops)


# Checks the exporter drops before translating (torch.onnx's remove_assertion_nodes).
_ASSERTIONS = frozenset(
    {
        "aten::sym_constrain_range_for_size",
        "aten::_assert_async",
        "aten::_assert_scalar",
        "aten::_assert_tensor_metadata",
    }
)


@functools.cache
def exportable(target: OpOverload) -> bool:
    """Whether torch.onnx's exporter translates `target`: it has an ONNX function, or
    the exporter's decompositions (its table, and every CompositeImplicitAutograd op)
    turn it into ops that have one, or the exporter drops it (a check)."""
    return (
        registry().is_registered(target)
        or target in _decompositions()
        or torch._C._dispatch_has_kernel_for_dispatch_key(
            target.name(), "CompositeImplicitAutograd"
        )
        or target._schema.name in _ASSERTIONS
    )


class OnnxRuntimeSupport(CompilableAtenSupport):
    def is_node_supported(self, submodules, node: torch.fx.Node) -> bool:  # type: ignore[override]
        return super().is_node_supported(submodules, node) and self._refusal(node) is None

    def why_unsupported(self, node: torch.fx.Node) -> str | None:
        return self._refusal(node)

    def _refusal(self, node: torch.fx.Node) -> str | None:
        target = node.target
        if isinstance(target, HigherOrderOperator):
            return f"control flow ({target.name()}) is not exported to ONNX by this backend"
        if not isinstance(target, OpOverload):
            return None
        if not exportable(target):
            return f"torch.onnx has no ONNX translation or decomposition for {target}"
        if _training_norm(node):
            # BatchNormalization(training_mode=1): ONNX Runtime's inference build
            # normalizes with the running statistics instead of the batch's.
            return "batch statistics (training=True): ONNX Runtime normalizes with the running ones"
        for t in _tensors(node):
            if t.device.type != "cpu":
                return f"a tensor on {t.device}: the backend runs ONNX Runtime on the CPU"
            if t.dtype not in ORT_CPU_DTYPES:
                return f"{t.dtype} tensors: ONNX Runtime's CPU kernels do not cover them"
        return None


def _training_norm(node: torch.fx.Node) -> bool:
    """A batch norm in training mode (its ``training`` argument true)."""
    for i, arg in enumerate(node.target._schema.arguments):  # type: ignore[union-attr]
        if arg.name == "training":
            value = node.args[i] if i < len(node.args) else node.kwargs.get("training")
            return value is True
    return False


def _tensors(node: torch.fx.Node) -> list[torch.Tensor]:
    values = [node.meta.get("val"), *(a.meta.get("val") for a in node.all_input_nodes)]
    return [v for v in pytree.tree_leaves(values) if isinstance(v, torch.Tensor)]
