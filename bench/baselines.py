"""What fxdelegate is measured against."""

from __future__ import annotations

import tempfile

import torch


def whole_graph_aoti(
    ep: torch.export.ExportedProgram,
    single_threaded: bool = True,
    inductor_configs: dict | None = None,
):
    """The exported graph compiled whole by AOTInductor, called through its loader's run.

    By default loaded single-threaded, as fxdelegate loads its regions: the
    cheapest plain call AOTInductor offers, so the baseline is the strictest one.
    With False, the default container (what `aoti_load_package` gives).
    `inductor_configs` compiles it with other options (None: AOTInductor's defaults).
    """
    path = tempfile.mktemp(suffix=".pt2")
    torch._inductor.aoti_compile_and_package(
        ep, package_path=path, inductor_configs=inductor_configs
    )
    loader = torch._C._aoti.AOTIModelPackageLoader(path, "model", single_threaded, 1, -1)
    return loader.run


def region_options() -> dict:
    """The inductor options fxdelegate compiles its AOTInductor regions with."""
    from fxdelegate.runtime.backends.aoti_compiler import AOTICompiler

    return AOTICompiler().default_options()


def pinned_ops_alone(model: torch.nn.Module, inputs: tuple, packets: list[str]):
    """The ops a program pins, as eager `model(*inputs)` calls them, replayable alone.

    Records every call of an op in `packets` (``"aten.gelu"``) with its actual
    arguments while the model runs once, and returns a function that calls
    exactly those ops on those arguments: the pinned half of the floor, with
    the real shapes and no model around it.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    wanted = {p.split(".", 1)[1] for p in packets}
    calls: list[tuple] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func.overloadpacket.__name__ in wanted:
                calls.append((func, *_detached((args, kwargs))))
            return func(*args, **kwargs)

    with torch.no_grad(), Record():
        model(*inputs)
    if not calls:
        raise ValueError(f"the model never called {packets}")

    def run(*_ignored):
        return [func(*args, **kwargs) for func, args, kwargs in calls]

    return run


def _detached(tree):
    return torch.utils._pytree.tree_map_only(torch.Tensor, lambda t: t.detach().clone(), tree)
