import torch

from fxdelegate.passes import EXECUTOR, AssignConstantOwnersPass
from models import Counter, SharedWeight
from pipeline_helpers import lowering_state


def test_shared_parameter_stays_with_executor_and_private_one_moves():
    _, _, ctx = lowering_state(
        SharedWeight(),
        (torch.randn(3, 6),),
        exclude=("aten.gelu", "aten.sum"),
        upto=AssignConstantOwnersPass,
    )
    assert ctx.owners["w"] == EXECUTOR  # two regions and an executor op read it
    owner = ctx.owners["own"]
    assert owner != EXECUTOR
    region = ctx.region(owner)
    assert region.owned_state == ["own"]
    assert region.owned_bytes == 6 * 6 * 4
    others = [r for r in ctx.regions if r.name != owner]
    assert all(r.owned_state == [] for r in others)


def test_mutated_buffers_stay_with_executor():
    _, _, ctx = lowering_state(
        Counter(),
        (torch.randn(2, 4), torch.zeros(4)),
        exclude=("aten.gelu",),
        upto=AssignConstantOwnersPass,
    )
    assert ctx.owners["calls"] == EXECUTOR
    assert ctx.owners["running"] == EXECUTOR
    assert ctx.owners["lin.weight"] != EXECUTOR  # read by one region only
