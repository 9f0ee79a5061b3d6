"""Passes of a user's own, good and deliberately broken, with the ops and models
they act on: for the pipeline's and the test kit's tests."""

from __future__ import annotations

import math
import operator

import torch
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from fxdelegate.passes import REGION_TAG, get_context

aten = torch.ops.aten


# Kernels of the user's own: the executor runs them as they are.
@torch.library.custom_op("fxdelegate_test::rms_norm", mutates_args=())
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


@rms_norm.register_fake
def _(x, weight, eps):
    return torch.empty_like(x)


@torch.library.custom_op("fxdelegate_test::gelu", mutates_args=())
def gelu(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x)


@gelu.register_fake
def _(x):
    return torch.empty_like(x)


@torch.library.custom_op("fxdelegate_test::no_fake", mutates_args=())
def no_fake(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@torch.library.custom_op("fxdelegate_test::gpu_only", mutates_args=())
def gpu_only(x: torch.Tensor) -> torch.Tensor:
    if x.device.type != "cuda":
        raise RuntimeError("gpu_only has a CUDA kernel only")
    return x.clone()


@gpu_only.register_fake
def _(x):
    return torch.empty_like(x)


class RMSNorm(torch.nn.Module):
    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.rand(d) + 0.5)
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class NormBlock(torch.nn.Module):
    """Linear -> RMSNorm -> Linear: one region, until RMSNorm leaves for a kernel."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.up, self.norm, self.down = torch.nn.Linear(d, 32), RMSNorm(32), torch.nn.Linear(32, d)

    def forward(self, x):
        return self.down(self.norm(self.up(x)))


class GeluBlock(torch.nn.Module):
    """Linear -> GELU -> Linear -> ReLU; with GELU excluded, two regions."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.up, self.down = torch.nn.Linear(d, 32), torch.nn.Linear(32, d)

    def forward(self, x):
        return self.down(torch.nn.functional.gelu(self.up(x))).relu()


def rms_norm_match(rsqrt: torch.fx.Node):
    """(x, weight, eps, nodes to erase) when `rsqrt` computes an RMSNorm, else None."""
    add = rsqrt.args[0]
    if add.target is not aten.add.Tensor or not isinstance(add.args[1], float):
        return None
    mean = add.args[0]
    if mean.target is not aten.mean.dim or list(mean.args[1]) != [-1]:
        return None
    square = mean.args[0]
    if square.target is not aten.pow.Tensor_Scalar or square.args[1] != 2:
        return None
    x = square.args[0]
    if len(rsqrt.users) != 1:
        return None
    (normed,) = rsqrt.users
    if normed.target is not aten.mul.Tensor or set(normed.args) != {x, rsqrt}:
        return None
    if len(normed.users) != 1:
        return None
    (scaled,) = normed.users
    if scaled.target is not aten.mul.Tensor or scaled.args[0] is not normed:
        return None
    if any(len(n.users) != 1 for n in (add, mean, square)):
        return None
    return x, scaled.args[1], add.args[1], [scaled, normed, rsqrt, add, mean, square]


class FuseRMSNorm(PassBase):
    """x * rsqrt(mean(x**2) + eps) * w -> fxdelegate_test.rms_norm(x, w, eps)."""

    def call(self, graph_module):
        graph = graph_module.graph
        fused = 0
        for rsqrt in graph.find_nodes(op="call_function", target=aten.rsqrt.default):
            match = rms_norm_match(rsqrt)
            if match is None:
                continue
            x, weight, eps, dead = match
            with graph.inserting_before(dead[0]):
                node = graph.call_function(
                    torch.ops.fxdelegate_test.rms_norm.default, (x, weight, eps)
                )
            dead[0].replace_all_uses_with(node)
            for n in dead:
                graph.erase_node(n)
            fused += 1
        return PassResult(graph_module, fused > 0)

    def ensures(self, graph_module):
        """No RMSNorm is left unfused."""
        for rsqrt in graph_module.graph.find_nodes(op="call_function", target=aten.rsqrt.default):
            assert rms_norm_match(rsqrt) is None, f"{rsqrt.name} is an unfused RMSNorm"


def decompose_gelu(graph_module: torch.fx.GraphModule) -> None:
    """gelu(x) -> 0.5 * x * (1 + erf(x / sqrt(2))): the new nodes carry no values
    (the pipeline computes them)."""
    graph = graph_module.graph
    for node in graph.find_nodes(op="call_function", target=aten.gelu.default):
        x = node.args[0]
        with graph.inserting_before(node):
            scaled = graph.call_function(aten.mul.Tensor, (x, 1 / math.sqrt(2)))
            erf = graph.call_function(aten.erf.default, (scaled,))
            one_plus = graph.call_function(aten.add.Tensor, (erf, 1.0))
            half = graph.call_function(aten.mul.Tensor, (x, 0.5))
            out = graph.call_function(aten.mul.Tensor, (half, one_plus))
        node.replace_all_uses_with(out)
        graph.erase_node(node)


class RouteGeluToKernel(PassBase):
    """After delegation: the executor's GELUs call the user's kernel instead. Records
    how many delegate calls it saw."""

    def __init__(self) -> None:
        self.delegate_calls_seen: list[str] = []

    def call(self, graph_module):
        graph = graph_module.graph
        self.delegate_calls_seen = [
            n.name
            for n in graph.find_nodes(
                op="call_function", target=torch.ops.higher_order.executorch_call_delegate
            )
        ]
        nodes = list(graph.find_nodes(op="call_function", target=aten.gelu.default))
        for node in nodes:
            node.target = torch.ops.fxdelegate_test.gelu.default
        return PassResult(graph_module, bool(nodes))


# Deliberately broken passes: each breaks one invariant.


class CloneInsideRegion(PassBase):
    """After tag_regions: routes one edge inside a region through an executor node,
    so a path leaves the region and comes back."""

    def call(self, graph_module):
        graph = graph_module.graph
        for node in graph.nodes:
            region = node.meta.get(REGION_TAG)
            user = next((u for u in node.users if u.meta.get(REGION_TAG) == region), None)
            if region is None or user is None or node.target is operator.getitem:
                continue
            with graph.inserting_after(node):
                clone = graph.call_function(aten.clone.default, (node,))
            clone.meta["val"] = node.meta["val"]
            user.replace_input_with(node, clone)
            return PassResult(graph_module, True)
        return PassResult(graph_module, False)


class DropBias(PassBase):
    """linear(x, w, b) -> linear(x, w), erasing b's input: a weight is dropped."""

    def call(self, graph_module):
        graph = graph_module.graph
        for node in graph.find_nodes(op="call_function", target=aten.linear.default):
            if len(node.args) == 3:
                bias = node.args[2]
                node.args = node.args[:2]
                if not bias.users:
                    graph.erase_node(bias)
                return PassResult(graph_module, True)
        return PassResult(graph_module, False)


def relu_to_gelu(graph_module: torch.fx.GraphModule) -> PassResult:
    """A wrong rewrite: the outputs change."""
    nodes = list(graph_module.graph.find_nodes(op="call_function", target=aten.relu.default))
    for node in nodes:
        node.target = aten.gelu.default
    return PassResult(graph_module, bool(nodes))


class ReadRegionWeightOutside(PassBase):
    """After assign_constant_owners: a region's own weight is copied by an executor
    node on its way into the region, so two owners would read it."""

    def call(self, graph_module):
        ctx = get_context(graph_module)
        graph = graph_module.graph
        placeholders = {n.name: n for n in graph.nodes if n.op == "placeholder"}
        for spec in ctx.signature.input_specs:
            owner = (ctx.owners or {}).get(spec.target)
            node = placeholders.get(spec.arg.name)
            if node is None or owner in (None, "executor"):
                continue
            with graph.inserting_after(node):
                copied = graph.call_function(aten.clone.default, (node,))
            copied.meta["val"] = node.meta["val"]
            for user in list(node.users):
                if user is not copied:
                    user.replace_input_with(node, copied)
            return PassResult(graph_module, True)
        return PassResult(graph_module, False)


def return_half_precision(graph_module: torch.fx.GraphModule) -> None:
    """Returns the first output in float16: the signature no longer matches."""
    graph = graph_module.graph
    output = graph.output_node()
    first, *rest = output.args[0]
    with graph.inserting_before(output):
        half = graph.call_function(aten._to_copy.default, (first,), {"dtype": torch.float16})
    output.args = ((half, *rest),)


def use_before_definition(graph_module: torch.fx.GraphModule) -> None:
    """Moves a node ahead of one of its inputs: the graph no longer lints."""
    graph = graph_module.graph
    for node in graph.nodes:
        if node.op == "call_function" and any(
            a.op == "call_function" for a in node.all_input_nodes
        ):
            first = next(n for n in graph.nodes if n.op == "call_function")
            first.prepend(node)
            return


def relu_in_place(graph_module: torch.fx.GraphModule) -> None:
    """relu -> relu_: writes in place in a functional graph."""
    for node in graph_module.graph.find_nodes(op="call_function", target=aten.relu.default):
        node.target = aten.relu_.default


def call_op_without_fake(graph_module: torch.fx.GraphModule) -> None:
    """Inserts an op that has no fake implementation: its value cannot be computed."""
    graph = graph_module.graph
    output = graph.output_node()
    first, *rest = output.args[0]
    with graph.inserting_before(output):
        copied = graph.call_function(torch.ops.fxdelegate_test.no_fake.default, (first,))
    output.args = ((copied, *rest),)


def raise_error(graph_module: torch.fx.GraphModule) -> None:
    raise ValueError("this pass cannot handle the graph")
