"""What the user reads: which regions were formed, and which ops stayed in the
executor and why. Built from plain records so that a saved archive carries it
(as JSON) and ``fxdelegate inspect`` can print it without loading any code."""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from fxdelegate.text_table import format_table

from .op_support import describe_target


@dataclass
class RegionSummary:
    name: str
    backend_id: str
    nodes: list[str]
    ops: dict[str, int]
    num_inputs: int
    num_outputs: int
    owned_state: list[str] = field(default_factory=list)
    owned_bytes: int = 0
    # With a remote cache: "local hit", "local hit, published" (the store lacked it),
    # "remote hit", "compiled" or "compiled, published".
    compile: str = ""

    @property
    def size(self) -> int:
        return sum(self.ops.values())


@dataclass
class ExecutorOp:
    node: str
    op: str
    reason: str


@dataclass
class LoweringSummary:
    backend_id: str
    regions: list[RegionSummary]
    executor_ops: list[ExecutorOp]
    # Snapshot of the partitioned graph for pictures (see graph_picture.py).
    graph: dict[str, Any] | None = None
    # Compile counts and time: regions, distinct, cache_hits, compiled, failed, seconds.
    compile: dict[str, Any] | None = None
    # Passes of the user's that ran in the pipeline: name, position, modified, checks.
    user_passes: list[dict[str, Any]] | None = None
    # Regions a backend failed to compile (their nodes went on to the next backend or
    # stayed in the executor), each with ``compile = "failed: <error>"``.
    failed_regions: list[RegionSummary] | None = None
    # lower(..., plan="measure"): every segment's decision with the alternatives measured
    # for it, and the chosen program timed whole against the rules' (measured_plan.py).
    plan: dict[str, Any] | None = None

    @property
    def delegated_nodes(self) -> int:
        return sum(r.size for r in self.regions)

    @property
    def executor_compute_nodes(self) -> int:
        return sum(1 for op in self.executor_ops if op.op != "getitem")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoweringSummary:
        return cls(
            backend_id=str(data["backend_id"]),
            regions=[RegionSummary(**r) for r in data["regions"]],
            executor_ops=[ExecutorOp(**o) for o in data["executor_ops"]],
            graph=data.get("graph"),
            compile=data.get("compile"),
            user_passes=data.get("user_passes"),
            failed_regions=[RegionSummary(**r) for r in data.get("failed_regions") or []] or None,
            plan=data.get("plan"),
        )

    @property
    def delegated_share(self) -> float:
        total = self.delegated_nodes + self.executor_compute_nodes
        return 100.0 * self.delegated_nodes / total if total else 0.0

    def headline(self) -> str:
        total = self.delegated_nodes + self.executor_compute_nodes
        backends = Counter(r.backend_id for r in self.regions)
        where = (
            "backends " + ", ".join(f"'{b}' ({n})" for b, n in backends.items())
            if len(backends) > 1
            else f"backend '{self.backend_id}'"
        )
        return (
            f"fxdelegate: {len(self.regions)} region(s) on {where}; "
            f"{self.delegated_nodes} of {total} compute nodes delegated ({self.delegated_share:.1f}%)"
        )

    def format(self) -> str:
        share = self.delegated_share
        lines = [
            self.headline(),
            "",
            "Regions",
        ]
        failed = self.failed_regions or []
        shown = self.regions + failed
        mixed = len({r.backend_id for r in shown}) > 1
        sourced = any(r.compile for r in shown)
        header = ["region", "backend", "nodes", "inputs", "outputs", "weights", "compile", "ops"]
        keep = [
            i
            for i, h in enumerate(header)
            if (h != "backend" or mixed) and (h != "compile" or sourced)
        ]
        rows = [[header[i] for i in keep]]
        for r in shown:
            ops = ", ".join(f"{_short_op(op)} x{n}" for op, n in r.ops.items())
            cells = [r.name, r.backend_id, str(r.size), _count(r.num_inputs), _count(r.num_outputs)]
            cells += [_bytes(r.owned_bytes), _short(r.compile) or "-", ops]
            rows.append([cells[i] for i in keep])
        lines += format_table(rows) if shown else ["  (none)"]
        lines += ["", f"Executor ops ({self.executor_compute_nodes})"]
        rows = [["node", "op", "reason"]]
        for op in self.executor_ops:
            if op.op != "getitem":
                rows.append([op.node, _short_op(op.op), op.reason])
        lines += format_table(rows) if len(rows) > 1 else ["  (none)"]
        reasons = Counter(
            op.reason.split(" (")[0] for op in self.executor_ops if op.op != "getitem"
        )
        if reasons:
            lines += ["", "Executor ops by reason"]
            lines += format_table(
                [["reason", "count"]] + [[k, str(v)] for k, v in reasons.most_common()]
            )
        if self.compile:
            c = self.compile
            lines += [
                "",
                f"Compile: {c['regions']} region(s), {c['distinct']} distinct structure(s); "
                f"{c['cache_hits']} from the compile cache"
                + (
                    f" ({c['remote_hits']} of them remote)"
                    if "remote_hits" in c and "published" in c
                    else ""
                )
                + (f" ({c['shared']} local, published to the store)" if c.get("shared") else "")
                + f", {c['compiled']} compiled"
                + (f" ({c['published']} published)" if "published" in c else "")
                + f", {c['failed']} failed ({c['seconds']} s)",
            ]
        if self.user_passes:
            lines += ["", "User passes (in the order they ran)"]
            lines += format_table(
                [["pass", "ran", "graph", "checked after it"]]
                + [
                    [
                        p["name"],
                        p["position"],
                        "modified" if p["modified"] else "unchanged",
                        ", ".join(p["checks"]) or "-",
                    ]
                    for p in self.user_passes
                ]
            )
        if self.plan:
            lines += ["", *format_plan(self.plan)]
        weights = sum(r.owned_bytes for r in self.regions)
        lines += [
            "",
            f"Totals: {len(self.regions)} region(s), {self.delegated_nodes} delegated / "
            f"{self.executor_compute_nodes} executor compute nodes ({share:.1f}% delegated), "
            f"{_bytes(weights)} of weights inside regions",
        ]
        return "\n".join(lines)


def executor_ops_of(graph: torch.fx.Graph, reasons: dict[str, str]) -> list[ExecutorOp]:
    """One row per call_function node that the executor runs (delegate calls excluded)."""
    delegate = torch.ops.higher_order.executorch_call_delegate
    rows = []
    for node in graph.nodes:
        if node.op != "call_function" or node.target is delegate:
            continue
        if node.target is operator.getitem and isinstance(node.args[0], torch.fx.Node):
            if node.args[0].target is delegate:
                continue
        rows.append(
            ExecutorOp(
                node.name, describe_target(node.target), reasons.get(node.name, "not a candidate")
            )
        )
    return rows


def _short_op(op: str) -> str:
    return op[len("aten.") :] if op.startswith("aten.") else op


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _count(n: int) -> str:
    return str(n) if n >= 0 else "-"  # -1: not known (a region that failed to compile)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_plan(plan: dict[str, Any]) -> list[str]:
    """The measured plan's section of the report: one row per segment decided."""
    whole = plan.get("whole_us") or {"measured": plan["measured_us"], "rules": plan["rules_us"]}
    lines = [
        f"Measured plan: kept the {plan['kept']} program "
        f"(whole calls: {', '.join(f'{label} {us} us' for label, us in whole.items())}); "
        f"{plan['segments']} segment(s), {plan['measured_now']} candidate(s) timed now, "
        f"{plan['cache_hits']} from the measurement cache, {plan['spent_s']} s of "
        f"{plan['budget_s']} s"
    ]
    rows = [["segment", "nodes", "from .. to", "decision", "us", "alternatives (us)", "why"]]
    for d in plan["decisions"]:
        others = ", ".join(f"{k} {v}" for k, v in d["alternatives_us"].items())
        rows.append(
            [
                d["segment"],
                str(d["nodes"]),
                f"{d['first']} .. {d['last']}",
                d["choice"],
                str(d["us"]),
                others or "-",
                d["why"],
            ]
        )
    lines += format_table(rows)
    if plan["unmeasured"]:
        lines.append(
            f"  not measured (budget spent), so following the rules: {', '.join(plan['unmeasured'])}"
        )
    return lines
