"""A picture of the partition: regions as coloured clusters, executor ops in red.

The lowering stores a compact snapshot of the partitioned graph (node names,
ops, region, edges) in the archive's JSON metadata, so ``fxdelegate inspect
model.pt2 --graph out.svg`` can draw it without loading any code. networkx
holds the graph; graphviz's ``dot`` lays it out and renders it. Above a few
hundred nodes each region collapses into one box so the picture stays
readable.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
from collections import Counter
from typing import Any

import networkx as nx
import torch

from fxdelegate.errors import InvalidArgumentError

from .op_support import describe_target

# Nodes beyond which regions are drawn as single boxes.
COLLAPSE_ABOVE = 300
_PALETTE = [
    "#a6cee3", "#b2df8a", "#fdbf6f", "#cab2d6", "#ffff99", "#8dd3c7",
    "#bebada", "#80b1d3", "#fccde5", "#d9d9d9", "#ccebc5", "#ffed6f",
]  # fmt: skip
_EXECUTOR_FILL = "#fb8072"


def graph_snapshot(
    graph: torch.fx.Graph, region_of: dict[str, str], reasons: dict[str, str], user_inputs: set[str]
) -> dict[str, Any]:
    """JSON-serializable nodes and edges of `graph`, before delegation.

    Parameters, buffers and constants are left out (they would dominate the
    picture); their bytes appear in the report instead.
    """
    nodes: list[list[Any]] = []
    index: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "placeholder" and node.name not in user_inputs:
            continue
        if node.op == "call_function":
            kind, label = "op", describe_target(node.target)
        elif node.op == "placeholder":
            kind, label = "input", node.name
        elif node.op == "output":
            kind, label = "output", "output"
        else:
            continue
        index[node.name] = len(nodes)
        nodes.append([node.name, kind, label, region_of.get(node.name), reasons.get(node.name, "")])
    edges = []
    for node in graph.nodes:
        if node.name not in index:
            continue
        for arg in node.all_input_nodes:
            if arg.name in index:
                edges.append([index[arg.name], index[node.name]])
    return {"nodes": nodes, "edges": edges}


def snapshot_to_networkx(snapshot: dict[str, Any]) -> nx.DiGraph:
    g = nx.DiGraph()
    for i, (name, kind, label, region, reason) in enumerate(snapshot["nodes"]):
        g.add_node(i, name=name, kind=kind, label=label, region=region, reason=reason)
    g.add_edges_from(tuple(e) for e in snapshot["edges"])
    return g


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(g: nx.DiGraph, collapse: bool | None = None, title: str = "") -> str:
    """DOT text for `g`; regions collapse into boxes when `collapse` (default: when large)."""
    if collapse is None:
        collapse = g.number_of_nodes() > COLLAPSE_ABOVE
    regions = sorted({d["region"] for _, d in g.nodes(data=True) if d["region"]}, key=_region_order)
    color = {r: _PALETTE[i % len(_PALETTE)] for i, r in enumerate(regions)}
    lines = [
        "digraph partition {",
        "  rankdir=TB; newrank=true; fontname=Helvetica;",
        '  node [fontname=Helvetica, fontsize=10, shape=box, style="rounded,filled", fillcolor=white];',
        '  edge [color="#555555", arrowsize=0.6];',
    ]
    if title:
        lines.append(f"  labelloc=t; label={_q(title)};")

    def node_line(i: int, d: dict[str, Any]) -> str:
        if d["kind"] == "input":
            return f'  n{i} [label={_q(d["label"])}, shape=ellipse, fillcolor="#eeeeee"];'
        if d["kind"] == "output":
            return f'  n{i} [label="output", shape=doubleoctagon, fillcolor="#eeeeee"];'
        if d["region"] is None:
            tip = f"{d['name']}: {d['reason']}" if d["reason"] else d["name"]
            return (
                f'  n{i} [label={_q(d["label"])}, fillcolor="{_EXECUTOR_FILL}", penwidth=2, '
                f"tooltip={_q(tip)}];"
            )
        return f'  n{i} [label={_q(d["label"])}, fillcolor="{color[d["region"]]}", tooltip={_q(d["name"])}];'

    if collapse:
        members: dict[str, list[int]] = {r: [] for r in regions}
        for i, d in g.nodes(data=True):
            if d["region"]:
                members[d["region"]].append(i)
            else:
                lines.append(node_line(i, d))
        for r in regions:
            ops = Counter(
                g.nodes[i]["label"] for i in members[r] if g.nodes[i]["label"] != "getitem"
            )
            top = ", ".join(f"{op.removeprefix('aten.')} x{n}" for op, n in ops.most_common(3))
            label = f"{r}\n{sum(ops.values())} nodes\n{top}"
            lines.append(
                f'  {_region_id(r)} [label={_q(label)}, fillcolor="{color[r]}", penwidth=1.5];'
            )
        seen = set()
        for a, b in g.edges():
            ra, rb = g.nodes[a]["region"], g.nodes[b]["region"]
            src = _region_id(ra) if ra else f"n{a}"
            dst = _region_id(rb) if rb else f"n{b}"
            if src != dst and (src, dst) not in seen:
                seen.add((src, dst))
                lines.append(f"  {src} -> {dst};")
    else:
        for r in regions:
            lines.append(f"  subgraph cluster_{_region_id(r)} {{")
            lines.append(
                f'    label={_q(r)}; style="rounded,filled"; fillcolor="{color[r]}40"; color="{color[r]}";'
            )
            lines += ["  " + node_line(i, d) for i, d in g.nodes(data=True) if d["region"] == r]
            lines.append("  }")
        lines += [node_line(i, d) for i, d in g.nodes(data=True) if not d["region"]]
        lines += [f"  n{a} -> n{b};" for a, b in g.edges()]
    lines += [
        '  subgraph cluster_legend { label="legend"; fontsize=9; color="#bbbbbb";',
        f'    legend_region [label="delegated region", fillcolor="{_PALETTE[0]}"];',
        f'    legend_exec [label="executor op", fillcolor="{_EXECUTOR_FILL}", penwidth=2];',
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _region_order(name: str) -> tuple[int, str]:
    tail = name.rsplit("_", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (1 << 30, name)


def _region_id(region: str) -> str:
    return "r_" + "".join(c if c.isalnum() else "_" for c in region)


def render(
    snapshot: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    collapse: bool | None = None,
    title: str = "",
) -> str:
    """Write the picture to `path` (.dot, .svg, .png, .pdf or .html); returns the path."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".dot", ".svg", ".png", ".pdf", ".html"):
        raise InvalidArgumentError(
            f"graph picture must be .dot, .svg, .png, .pdf or .html, got {path!r}"
        )
    dot_text = to_dot(snapshot_to_networkx(snapshot), collapse, title)
    if ext == ".dot":
        with open(path, "w") as f:
            f.write(dot_text)
        return path
    fmt = "svg" if ext == ".html" else ext[1:]
    image = run_dot(dot_text, fmt)
    if ext == ".html":
        page = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title or 'fxdelegate partition')}</title></head><body>"
            "<p>Coloured clusters are delegated regions; red boxes are ops left in the executor "
            "(hover for the reason).</p>" + image.decode() + "</body></html>"
        )
        image = page.encode()
    with open(path, "wb") as f:
        f.write(image)
    return path


def run_dot(dot_text: str, fmt: str) -> bytes:
    exe = shutil.which("dot")
    if exe is None:
        raise InvalidArgumentError(
            "graphviz's 'dot' is not installed (Debian/Ubuntu: apt-get install graphviz); "
            "write a .dot file instead and render it elsewhere"
        )
    result = subprocess.run(
        [exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, timeout=600
    )
    if result.returncode != 0:
        raise InvalidArgumentError(f"dot failed: {result.stderr.decode(errors='replace')[:500]}")
    return result.stdout
