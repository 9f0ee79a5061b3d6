"""fxdelegate's partitioner against torch's CapabilityBasedPartitioner.

    pytest bench/test_partitioner_speed.py

Random layered DAGs of aten ops (15% of nodes unsupported, long skip edges),
and one real exported graph. Reports the speed ratio and both region counts
at each size, then fxdelegate's scaling from 4,000 to 40,000 nodes on two
graph families: layered DAGs with long skip edges, and the same with hubs
(values read by hundreds of ops across the whole graph).
"""

from __future__ import annotations

import pytest
import torch
from ratios import fmt_seconds, interleaved, median, record
from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
from torch.fx.passes.operator_support import OperatorSupportBase

from fxdelegate.partitioner import CompilableAtenSupport, propose_partitions
from fxdelegate.passes import prepare_program
from graph_checks import RejectNames, random_hub_dag, random_layered_dag, random_rejections

UNSUPPORTED = 0.15
VS_TORCH = "partitioner vs CapabilityBasedPartitioner (same graph, same support)"
SCALING = "partitioner scaling (random DAGs, 15% unsupported)"


def _cbp(gm, support):
    return CapabilityBasedPartitioner(
        gm, support, allows_single_node_partition=True
    ).propose_partitions()


def _side_by_side(label, gm, support, rounds, warmup=1):
    """Both partitioners on the same graph and support, interleaved; records a row."""
    times = interleaved(
        {"ours": lambda: propose_partitions(gm, support), "torch": lambda: _cbp(gm, support)},
        rounds,
        warmup,
    )
    ours, theirs = len(propose_partitions(gm, support)), len(_cbp(gm, support))
    assert ours <= theirs
    ratio = median(times["torch"]) / median(times["ours"])
    record(
        VS_TORCH,
        {
            "graph": label,
            "fxdelegate": fmt_seconds(median(times["ours"])),
            "CapabilityBased": fmt_seconds(median(times["torch"])),
            "speedup": f"{ratio:.0f}x",
            "regions (ours / torch)": f"{ours} / {theirs}",
        },
    )
    return ratio, ours, theirs


@pytest.mark.parametrize("num_nodes, rounds", [(500, 5), (1000, 3), (2000, 3)])
def test_random_dag_vs_capability_based(benchmark, num_nodes, rounds):
    gm = random_layered_dag(num_nodes, seed=num_nodes)
    support = RejectNames(random_rejections(gm, UNSUPPORTED, seed=num_nodes))
    ratio, ours, theirs = _side_by_side(f"random DAG, {num_nodes} nodes", gm, support, rounds)
    benchmark.extra_info.update(speedup=ratio, regions=ours, torch_regions=theirs)
    benchmark.pedantic(propose_partitions, args=(gm, support), rounds=rounds, iterations=1)


class _Reject(OperatorSupportBase):
    """Default support minus a fixed random 15% of the nodes."""

    def __init__(self, names):
        self.default = CompilableAtenSupport()
        self.names = names

    def is_node_supported(self, submodules, node):
        return node.name not in self.names and self.default.is_node_supported(submodules, node)


class Deep(torch.nn.Module):
    def __init__(self, blocks: int, width: int = 16):
        super().__init__()
        self.blocks = torch.nn.ModuleList(
            torch.nn.ModuleDict(
                {
                    "q": torch.nn.Linear(width, width),
                    "k": torch.nn.Linear(width, width),
                    "ln": torch.nn.LayerNorm(width),
                }
            )
            for _ in range(blocks)
        )

    def forward(self, x):
        for b in self.blocks:
            attn = torch.softmax(b["q"](x) @ b["k"](x).transpose(-1, -2) / 4.0, dim=-1)
            x = b["ln"](x + torch.nn.functional.gelu(attn @ x))
        return x


def test_exported_graph_vs_capability_based(benchmark):
    ep = prepare_program(torch.export.export(Deep(240), (torch.randn(2, 8, 16),)))
    gm = ep.graph_module
    num_nodes = sum(1 for n in gm.graph.nodes if n.op == "call_function")
    support = _Reject(random_rejections(gm, UNSUPPORTED, seed=3))
    ratio, _, _ = _side_by_side(
        f"exported model, {num_nodes} nodes", gm, support, rounds=1, warmup=0
    )
    benchmark.extra_info.update(speedup=ratio, nodes=num_nodes)
    benchmark.pedantic(propose_partitions, args=(gm, support), rounds=3, iterations=1)


# Graph families for the scaling test, and the growth each must stay within.
FAMILIES = {
    # layers of 16 ops, each reading the layer before and now and then any earlier value
    "layered, long skip edges": (random_layered_dag, 15),
    # the same, plus hubs: a few values read by hundreds of ops across the whole graph
    "hubs: wide fan-out, long skip edges": (random_hub_dag, 12),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_scaling_4k_to_40k(benchmark, family):
    make, limit = FAMILIES[family]
    graphs = {}
    for n in (4000, 10000, 40000):
        gm = make(n, seed=n)
        graphs[n] = (gm, RejectNames(random_rejections(gm, UNSUPPORTED, seed=n)))
    times = interleaved(
        {n: (lambda g=g, s=s: propose_partitions(g, s)) for n, (g, s) in graphs.items()}, rounds=7
    )
    base = median(times[4000])
    for n in graphs:
        gm = graphs[n][0]
        record(
            SCALING,
            {
                "graph": family,
                "nodes": n,
                "time": fmt_seconds(median(times[n])),
                "time / time(4,000)": f"{median(times[n]) / base:.1f}",
                "regions": len(propose_partitions(*graphs[n])),
                "most readers of one value": max(len(v.users) for v in gm.graph.nodes),
            },
        )
    growth = median(times[40000]) / base
    benchmark.extra_info.update(growth_4k_to_40k=growth, seconds_40k=median(times[40000]))
    assert growth <= limit, f"time(40k)/time(4k) = {growth:.1f}"
    benchmark.pedantic(propose_partitions, args=graphs[40000], rounds=3, iterations=1)
