"""The pipeline as a public, named, ordered list of passes."""

import pytest
import torch
from torch.fx.passes.infra.pass_base import PassBase, PassResult

import fxdelegate
from example_passes import FuseRMSNorm, NormBlock, decompose_gelu
from fxdelegate.errors import InvalidArgumentError
from fxdelegate.passes import lowering_passes

BUILTIN = [
    "anchor_symbolic_sizes",
    "tag_regions",
    "assign_constant_owners",
    "outline_regions",
    "lower_regions",
    "delegate_regions",
    "verify_delegated",
]


def test_the_default_pipeline_is_what_lower_runs():
    pipeline = fxdelegate.default_pipeline()
    assert pipeline.names == BUILTIN and pipeline.user_passes == []
    assert [type(s.pass_) for s in pipeline] == [type(p) for p in lowering_passes()]
    assert pipeline.check_outputs is True
    ep = torch.export.export(NormBlock(), (torch.randn(3, 16),))
    plain = fxdelegate.lower(ep, backend="reference")
    piped = fxdelegate.lower(ep, backend="reference", pipeline=pipeline)
    assert piped.partitions == plain.partitions
    assert piped.summary.executor_ops == plain.summary.executor_ops
    assert piped.summary.user_passes is None  # no user pass: the report has no section for them
    x = torch.randn(3, 16)
    torch.testing.assert_close(piped(x), plain(x), rtol=0, atol=0)


def test_passes_go_in_by_name():
    pipeline = fxdelegate.default_pipeline()
    assert pipeline.insert_before("tag_regions", FuseRMSNorm()) == "fuse_rms_norm"
    assert pipeline.insert_after("delegate_regions", decompose_gelu) == "decompose_gelu"
    assert pipeline.insert_before("tag_regions", FuseRMSNorm()) == "fuse_rms_norm_2"
    assert pipeline.append(lambda gm: None, name="last") == "last"
    assert pipeline.names == [
        "anchor_symbolic_sizes",
        "fuse_rms_norm",
        "fuse_rms_norm_2",
        "tag_regions",
        *BUILTIN[2:6],
        "decompose_gelu",
        "verify_delegated",
        "last",
    ]
    assert pipeline.user_passes == ["fuse_rms_norm", "fuse_rms_norm_2", "decompose_gelu", "last"]
    assert pipeline.position_of("decompose_gelu") == "before verify_delegated"
    assert pipeline.position_of("last") == "after verify_delegated"
    assert isinstance(pipeline["fuse_rms_norm"], FuseRMSNorm)
    pipeline.remove("fuse_rms_norm_2")
    assert "fuse_rms_norm_2" not in pipeline
    copied = pipeline.copy()
    copied.insert_after("tag_regions", decompose_gelu, name="other")
    assert "other" not in pipeline and len(copied) == len(pipeline) + 1


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: p.insert_before("tag_region", FuseRMSNorm()), "no pass named 'tag_region'"),
        (lambda p: p.insert_after("tag_regions", FuseRMSNorm), "pass an instance of it"),
        (lambda p: p.insert_after("tag_regions", 3), "got int"),
        (lambda p: p.insert_after("tag_regions", lambda gm: None), "give it one"),
        (lambda p: p.insert_after("tag_regions", decompose_gelu, name="tag_regions"), "already"),
        (lambda p: p.insert_after("tag_regions", decompose_gelu, name="a b"), "identifier"),
        (lambda p: p.remove("lower_regions"), "built-in pass"),
    ],
)
def test_bad_requests_name_what_was_wrong(call, message):
    with pytest.raises(InvalidArgumentError, match=message):
        call(fxdelegate.default_pipeline())


def test_lower_refuses_a_pipeline_that_is_not_one():
    ep = torch.export.export(NormBlock(), (torch.randn(3, 16),))
    with pytest.raises(InvalidArgumentError, match="pipeline must be a PassPipeline"):
        fxdelegate.lower(ep, backend="reference", pipeline=[FuseRMSNorm()])


class Contracted(PassBase):
    def requires(self, graph_module):
        """The graph has placeholders."""

    def call(self, graph_module):
        return PassResult(graph_module, False)

    def ensures(self, graph_module):
        pass


def test_printing_shows_names_order_and_each_contract():
    pipeline = fxdelegate.default_pipeline()
    pipeline.insert_before("tag_regions", Contracted())
    pipeline.insert_after("delegate_regions", decompose_gelu)
    text = str(pipeline)
    lines = text.splitlines()
    assert lines[0] == (
        "PassPipeline: 9 passes; after each user pass that changes the graph: "
        "lint, values, regions, weights, signature, outputs"
    )
    numbered = [line.split()[1] for line in lines if line.strip()[:2].rstrip(".").isdigit()]
    assert numbered == pipeline.names
    assert "2. contracted (user)" in text and "test_pass_pipeline.Contracted" in text
    assert "requires: The graph has placeholders." in text
    assert "ensures: (checked; undocumented)" in text  # overridden without a docstring
    assert "example_passes.decompose_gelu()" in text
    assert "requires: The regions are tagged (tag_regions ran)." in text
    after_verify = text.split("verify_delegated")[1]
    assert "(no requires/ensures)" in after_verify
    off = fxdelegate.default_pipeline(check_outputs=False)
    assert str(off).splitlines()[0].endswith("lint, values, regions, weights, signature")
    assert repr(off).startswith("PassPipeline(['anchor_symbolic_sizes'")
