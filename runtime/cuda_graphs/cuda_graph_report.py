"""The CUDA-graph section of a program's report."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.export import ExportedProgram

from fxdelegate.errors import InvalidArgumentError
from fxdelegate.text_table import format_table

from .cuda_graph_options import graph_device

if TYPE_CHECKING:
    from .cuda_graph_runner import CUDAGraphRunner


def format_report(runner: CUDAGraphRunner) -> str:
    """The CUDA-graph section of a program's report: segments, graphs, pool memory,
    eager nodes."""
    stats = runner.stats()
    recorded = sum(1 for s in stats if s["recorded"])
    graphs = sum(s["graphs"] for s in stats)
    lines = [
        f"CUDA graphs: on ({runner.device}); {len(stats)} segment(s): {recorded} recorded, "
        f"{len(stats) - recorded} eager; {graphs} graph(s) held (at most "
        f"{runner.options.max_graphs} per segment), {runner.pool_bytes() / 2**20:.1f} MiB in "
        f"graph pools; outputs {'copied out' if runner.options.copy_outputs else 'in graph memory'}",
    ]
    table = [["segment", "kind", "nodes", "regions", "graphs", "replays", "warm-ups"]]
    for s in stats:
        table.append(
            [
                str(s["segment"]),
                "recorded" if s["recorded"] else "eager",
                str(s["nodes"]),
                str(s["regions"]),
                str(s["graphs"]),
                str(s["replays"]),
                str(s["warmups"]),
            ]
        )
    lines += format_table(table)
    why = [["node", "op", "segment", "why it runs eagerly"]]
    for seg in runner.segments:
        for b in seg.spec.breaks:
            why.append([b.node, b.op, str(seg.spec.index), b.reason])
        if seg.eager_reason:
            why.append(["(all)", "", str(seg.spec.index), seg.eager_reason])
    if len(why) > 1:
        lines += ["", "Not recorded", *format_table(why)]
    return "\n".join(lines)


def describe_off(program: ExportedProgram) -> str:
    """The report line for a program that runs without graphs."""
    try:
        device = graph_device(program, "cuda")
    except InvalidArgumentError:
        return "CUDA graphs: off (the program runs on the CPU)"
    return (
        f"CUDA graphs: off; lower(..., cuda_graphs=True) or load(..., cuda_graphs=True) "
        f"records each call's work on {device} once and replays it"
    )
