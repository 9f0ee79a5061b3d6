import pytest
import torch
from torch._ops import OpOverload
from torch.fx._lazy_graph_module import _LazyGraphModule

from fxdelegate.errors import UnsupportedProgramError
from fxdelegate.passes import prepare, prepare_program
from models import Counter


def _mutable_ops(ep):
    return [
        n
        for n in ep.graph.nodes
        if n.op == "call_function"
        and isinstance(n.target, OpOverload)
        and n.target._schema.is_mutable
    ]


def test_training_ir_is_functionalized_and_user_program_untouched():
    ep = torch.export.export(Counter(), (torch.randn(2, 4), torch.zeros(4)))
    before = [n.name for n in ep.graph.nodes]
    assert _mutable_ops(ep)  # torch.export's default IR keeps in-place ops
    prepared = prepare_program(ep)
    assert not _mutable_ops(prepared)
    kinds = {s.kind.name for s in prepared.graph_signature.output_specs}
    assert {"BUFFER_MUTATION", "USER_INPUT_MUTATION", "USER_OUTPUT"} <= kinds
    assert [n.name for n in ep.graph.nodes] == before
    assert prepared.graph_module is not ep.graph_module


def test_functional_program_is_copied_not_shared():
    ep = torch.export.export(torch.nn.Linear(3, 3), (torch.randn(2, 3),)).run_decompositions({})
    prepared = prepare_program(ep)
    assert prepared.graph is not ep.graph
    assert [n.name for n in prepared.graph.nodes] == [n.name for n in ep.graph.nodes]
    assert prepared.state_dict["weight"] is ep.state_dict["weight"]  # no weight copies
    x = torch.randn(2, 3)
    torch.testing.assert_close(prepared.module()(x), ep.module()(x))


def test_rejects_non_programs():
    with pytest.raises(UnsupportedProgramError, match=r"torch\.export\.export"):
        prepare_program(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def test_a_program_without_in_place_ops_is_only_copied():
    ep = torch.export.export(torch.nn.Linear(3, 3), (torch.randn(2, 3),))  # training IR
    prepared = prepare(ep)
    assert [n.name for n in prepared.graph_module.graph.nodes] == [n.name for n in ep.graph.nodes]
    assert [v.dialect for v in prepared.verifiers] == ["ATEN"]
    assert prepared.graph_signature.input_specs[0].arg is not ep.graph_signature.input_specs[0].arg
    # Its code is generated when read, not after every pass that touches it.
    assert isinstance(prepared.graph_module, _LazyGraphModule)
    x = torch.randn(2, 3)
    torch.testing.assert_close(prepared.to_exported_program().module()(x), ep.module()(x))


def test_a_rewritten_program_keeps_its_graph_module():
    ep = torch.export.export(Counter(), (torch.randn(2, 4), torch.zeros(4)))
    prepared = prepare(ep)
    graph = prepared.graph_module.graph
    assert graph.owning_module is prepared.graph_module  # the passes add submodules to it
    assert not _mutable_ops(prepared.to_exported_program())
