"""Which nodes the ``aoti`` backend takes by default: what every compiling backend
takes, less what AOTInductor is known to compute wrongly, to fail on at run time,
or to fail to compile.

Each refusal below was found by the OpInfo/ModuleInfo sweeps
(``tests/integration/test_opinfo_sweep.py``, ``tests/integration/test_moduleinfo_sweep.py``): the
compiled region disagreed with ``ep.module()`` (or raised) where the executor
and the reference backend agreed bit for bit. Such nodes run in eager PyTorch instead,
and the report gives the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree
from torch._ops import OpOverload

from fxdelegate.partitioner import CompilableAtenSupport


@dataclass(frozen=True)
class Miscompiled:
    op: str  # "aten::fractional_max_pool3d"
    reason: str
    device: str | None = None  # only where a tensor it reads or makes is on this device
    when: Callable[[torch.fx.Node, list[torch.Tensor]], bool] | None = None  # narrower still

    def applies(self, node: torch.fx.Node, tensors: list[torch.Tensor]) -> bool:
        if node.target._schema.name != self.op:  # type: ignore[union-attr]
            return False
        if self.device is not None and not any(t.device.type == self.device for t in tensors):
            return False
        return self.when is None or self.when(node, tensors)


def _bf16_with_default_alpha(node: torch.fx.Node, tensors: list[torch.Tensor]) -> bool:
    return "alpha" not in node.kwargs and any(t.dtype == torch.bfloat16 for t in tensors)


def _bf16_mean(node: torch.fx.Node, tensors: list[torch.Tensor]) -> bool:
    reduce = node.kwargs.get("reduce", node.args[4] if len(node.args) > 4 else None)
    return reduce == "mean" and any(t.dtype == torch.bfloat16 for t in tensors)


def _zero_dim_index(node: torch.fx.Node, tensors: list[torch.Tensor]) -> bool:
    index = node.args[1] if len(node.args) > 1 else node.kwargs.get("index")
    val = index.meta.get("val") if isinstance(index, torch.fx.Node) else None
    return isinstance(val, torch.Tensor) and val.dim() == 0


# AOTInductor runs ops it has no C shim for through its "proxy executor", which
# (torch 2.11-2.13) fails at run time with "Mismatch between ints consumed and
# num_ints" when the node leaves a keyword-only int or Scalar argument at its
# default: the generated code passes the default, the node's serialized form
# omits it. Inductor falls back this way for hash_tensor always and for
# bfloat16 index_add (which index_reduce's "mean" decomposes into).
PROXY_EXECUTOR_DEFAULTS = (
    "the compiled code fails when run (AOTInductor's proxy executor miscounts the "
    "defaulted keyword-only arguments of ops it has no C shim for; torch 2.11-2.13)"
)


MISCOMPILED = (
    Miscompiled(
        "aten::fractional_max_pool3d",
        "inductor's kernel disagrees with eager (torch 2.13: by up to 1.9 on torch's own "
        "FractionalMaxPool3d sample; torch.compile too)",
    ),
    Miscompiled(
        "aten::hash_tensor",
        "AOTInductor's CUDA code returns no tensor for it (torch 2.11)",
        device="cuda",
    ),
    Miscompiled("aten::hash_tensor", PROXY_EXECUTOR_DEFAULTS),
    Miscompiled("aten::index_add", PROXY_EXECUTOR_DEFAULTS, when=_bf16_with_default_alpha),
    Miscompiled("aten::index_reduce", PROXY_EXECUTOR_DEFAULTS, when=_bf16_mean),
    Miscompiled(
        "aten::take",
        "AOTInductor cannot compile it with a 0-d index (inductor's decomposition reads "
        "the index as a data-dependent size and fails; torch 2.13)",
        when=_zero_dim_index,
    ),
)
_COMPLEX = (torch.complex32, torch.complex64, torch.complex128)


class AOTInductorSupport(CompilableAtenSupport):
    def is_node_supported(self, submodules, node: torch.fx.Node) -> bool:  # type: ignore[override]
        return super().is_node_supported(submodules, node) and self._refusal(node) is None

    def why_unsupported(self, node: torch.fx.Node) -> str | None:
        return self._refusal(node)

    def _refusal(self, node: torch.fx.Node) -> str | None:
        if not isinstance(node.target, OpOverload):
            return None
        tensors = _tensors(node)
        if any(t.device.type == "cuda" and t.dtype in _COMPLEX for t in tensors):
            # Seen with 0-d results (complex64 came back as complex128, complex128 as
            # bool; torch 2.11, while torch.compile gets them right); the cause is not
            # established, so every complex node on CUDA stays eager.
            return "complex tensors on CUDA: AOTInductor returns them with the wrong dtype"
        for entry in MISCOMPILED:
            if entry.applies(node, tensors):
                return entry.reason
        return None


def _tensors(node: torch.fx.Node) -> list[torch.Tensor]:
    values = [node.meta.get("val"), *(a.meta.get("val") for a in node.all_input_nodes)]
    return [v for v in pytree.tree_leaves(values) if isinstance(v, torch.Tensor)]
