import pytest
import torch

from fxdelegate.passes import DelegateRegionsPass, VerifyDelegatedGraphPass, get_context
from models import SharedWeight
from pipeline_helpers import lowering_state


def _delegated():
    _, gm, ctx = lowering_state(
        SharedWeight(),
        (torch.randn(3, 6),),
        exclude=("aten.gelu", "aten.sum"),
        upto=DelegateRegionsPass,
    )
    return gm, ctx


def test_clean_graph_verifies():
    gm, _ = _delegated()
    VerifyDelegatedGraphPass()(gm)


def test_orphan_state_is_reported():
    gm, ctx = _delegated()
    ctx.state_dict["stray"] = torch.zeros(1)
    with pytest.raises(AssertionError, match="orphan state 'stray'"):
        VerifyDelegatedGraphPass()(gm)


def test_state_owned_twice_is_reported():
    gm, ctx = _delegated()
    owner = next(r for r in ctx.regions if r.owned_state)
    other = next(r for r in ctx.regions if r is not owner)
    other.owned_state.append(owner.owned_state[0])
    with pytest.raises(AssertionError, match=f"'{owner.owned_state[0]}' is owned by both"):
        VerifyDelegatedGraphPass()(gm)


def test_signature_mismatch_is_reported():
    gm, ctx = _delegated()
    ctx.signature.input_specs.pop(0)
    with pytest.raises(AssertionError, match="differ from signature inputs"):
        VerifyDelegatedGraphPass()(gm)
    assert get_context(gm) is ctx
