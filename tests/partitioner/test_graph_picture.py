import os
import shutil
import subprocess
import sys

import pytest
import torch

import fxdelegate
from fxdelegate.errors import InvalidArgumentError
from fxdelegate.partitioner.graph_picture import (
    COLLAPSE_ABOVE,
    render,
    snapshot_to_networkx,
    to_dot,
)
from models import NestedIO, export_nested


@pytest.fixture(scope="module")
def prog():
    return fxdelegate.lower(
        export_nested(NestedIO()), backend="reference", exclude_ops=["aten.gelu"]
    )


def needs_dot():
    if shutil.which("dot") is None:
        if os.environ.get("CI"):
            pytest.fail("graphviz 'dot' must be installed in CI (.ci/run installs it)")
        pytest.skip("graphviz 'dot' is not installed")


def test_snapshot_has_every_op_with_its_region_or_reason(prog):
    snap = prog.summary.graph
    ops = [n for n in snap["nodes"] if n[1] == "op"]
    by_region = {}
    for name, _, _, region, reason in ops:
        if region is None:
            assert reason, name
        by_region.setdefault(region, []).append(name)
    assert set(by_region) - {None} == {p.name for p in prog.partitions}
    for p in prog.partitions:
        assert set(p.nodes) <= set(by_region[p.name])
    assert [n[0] for n in snap["nodes"] if n[1] == "input"] == [
        "x",
        "pair_0",
        "pair_1",
        "cfg_w",
        "cfg_extra_0",
        "cfg_extra_1",
        "bias",
    ]


def test_dot_draws_regions_as_clusters_and_executor_ops_apart(prog):
    g = snapshot_to_networkx(prog.summary.graph)
    text = to_dot(g, collapse=False)
    for p in prog.partitions:
        assert f"cluster_r_{p.name}" in text
    assert text.count('fillcolor="#fb8072"') == 1 + 1  # gelu + the legend
    collapsed = to_dot(g, collapse=True)
    assert "cluster_r_" not in collapsed
    for p in prog.partitions:
        assert f'r_{p.name} [label="{p.name}\\n{p.size} nodes' in collapsed


def test_large_graphs_collapse_by_default():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    for _ in range(COLLAPSE_ABOVE + 10):
        x = graph.call_function(torch.ops.aten.relu.default, (x,))
    graph.output(x)
    snap = {
        "nodes": [[n.name, "op", "aten.relu.default", "region_0", ""] for n in graph.nodes],
        "edges": [],
    }
    assert "cluster_r_" not in to_dot(snapshot_to_networkx(snap))


def test_render_svg_html_and_refuse_unknown_formats(prog, tmp_path):
    needs_dot()
    svg = prog.draw(tmp_path / "p.svg")
    text = open(svg).read()
    assert "<svg" in text and "region_0" in text and "aten.gelu.default" in text
    page = prog.draw(tmp_path / "p.html")
    assert "<svg" in open(page).read()
    with pytest.raises(InvalidArgumentError, match=r"\.dot, \.svg"):
        render(prog.summary.graph, tmp_path / "p.jpg")


def test_inspect_draws_from_the_archive(prog, tmp_path):
    needs_dot()
    prog.save(tmp_path / "m.pt2")
    out = tmp_path / "m.svg"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fxdelegate.cli",
            "inspect",
            str(tmp_path / "m.pt2"),
            "--graph",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert out.exists() and "<svg" in out.read_text()
    dot_out = tmp_path / "m.dot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fxdelegate.cli",
            "inspect",
            str(tmp_path / "m.pt2"),
            "--graph",
            str(dot_out),
            "--collapse",
            "yes",
        ],
        check=True,
        capture_output=True,
    )
    assert "digraph partition" in dot_out.read_text()
