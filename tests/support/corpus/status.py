"""The sweep's outcomes: kept per case while tests run, written as JSON, rendered
as the status table in the docs.

Tests call :func:`record`; with ``FXDELEGATE_SWEEP_RESULTS=<file.json>`` set,
every outcome so far is written there after each test (:func:`flush`).
Then::

    python tests/support/corpus/status.py [--notes notes.md] cpu.json [cuda.json ...] > docs/opinfo-status.md

renders the table: per corpus and path, how many cases agree, every case that
differs or raises, and every case left out, with the reason.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from collections import Counter, defaultdict
from typing import Any

# case id -> {"name", "kind", "dtype", "outcomes": {path: [status, detail]}}
RESULTS: dict[str, dict[str, Any]] = {}
# (kind, name) of every database entry swept in this process, cases or not
SWEPT: set[tuple[str, str]] = set()
PATHS = ("executor", "reference", "save/load", "aoti", "cuda", "cuda_graphs")


def record(case_id: str, kind: str, name: str, dtype: str, path: str, status: str, detail=""):
    entry = RESULTS.setdefault(
        case_id, {"kind": kind, "name": name, "dtype": dtype, "outcomes": {}}
    )
    entry["outcomes"][path] = [status, detail]


def flush() -> None:
    """Write every outcome so far to ``$FXDELEGATE_SWEEP_RESULTS`` (when set; one file
    per pytest-xdist worker), so that a run stopped at its time limit keeps them."""
    target = os.environ.get("FXDELEGATE_SWEEP_RESULTS")
    if not target or not RESULTS:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    write(target.replace(".json", f".{worker}.json") if worker else target)


def write(path: str) -> None:
    import torch

    facts = {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": _cpus(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "commit": _commit(),
    }
    with open(path, "w") as f:
        json.dump({"facts": facts, "results": RESULTS}, f, indent=0, sort_keys=True)


def _cpus() -> int:
    return os.cpu_count() or 0


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def render(runs: list[dict[str, Any]], notes: str = "") -> str:
    results: dict[str, dict[str, Any]] = {}
    for run in runs:
        for case_id, entry in run["results"].items():
            merged = results.setdefault(case_id, {**entry, "outcomes": {}})
            merged["outcomes"].update(entry["outcomes"])
    paths = [p for p in PATHS if any(p in e["outcomes"] for e in results.values())]
    lines = ["# OpInfo and ModuleInfo status", ""]
    lines += [
        "Every sample below is one call of one op (OpInfo) or one module (ModuleInfo) from "
        "torch's own test data, exported with `torch.export` and run every way fxdelegate "
        "runs programs, then compared with `ep.module()` on the same inputs: the executor "
        "and the reference backend bit for bit (the reference path includes save and "
        "load), AOTInductor within inductor's own OpInfo tolerances.",
        "",
        "Regenerate with the commands in the README's *Correctness against torch's test "
        "data* section. Runs:",
        "",
    ]
    for run in runs:
        f = run["facts"]
        lines.append(
            f"- torch {f['torch']}, {f['device']} ({f['cpus']} CPU cores, {f['machine']}), "
            f"commit {f['commit']}"
        )
    lines += ["", "## Summary", ""]
    header = ["corpus", "cases", "not exportable", *paths]
    rows = []
    for kind, label in (("op", "OpInfo"), ("module", "ModuleInfo")):
        entries = [e for e in results.values() if e["kind"] == kind]
        if not entries:
            continue
        exported = [e for e in entries if "export" not in e["outcomes"]]
        row = [label, str(len(entries)), str(len(entries) - len(exported))]
        for path in paths:
            counts = Counter(e["outcomes"][path][0] for e in exported if path in e["outcomes"])
            row.append(_counts(counts))
        rows.append(row)
    lines += _table(header, rows)
    lines += [
        "",
        "*agree*: equal (executor, reference) or within tolerance (compiled paths). "
        "*undefined*: the op's values differ between two eager runs on the same inputs "
        "and seed (`empty_like`, ops OpInfo marks nondeterministic), so shapes and dtypes "
        "are compared, not values. A path not run for a case (the AOTInductor sweep in CI "
        "covers a fixed subset) is not counted.",
        "",
    ]
    if notes:
        lines += ["## Since these runs", "", notes.strip(), ""]
    lines += _open(results)
    lines += _exclusions(results)
    lines += _per_op(results, paths)
    return "\n".join(lines) + "\n"


def _counts(counts: Counter) -> str:
    if not counts:
        return "-"
    order = ["agree", "values undefined", "excluded", "differ", "error"]
    names = {"values undefined": "undefined"}
    return ", ".join(f"{counts[k]} {names.get(k, k)}" for k in order if counts[k])


def _open(results: dict[str, dict[str, Any]]) -> list[str]:
    """Every case that disagreed or raised: what the sweep is there to find."""
    lines = ["## Open: cases that differ or raise", ""]
    rows = []
    for case_id, entry in sorted(results.items()):
        for path, (status, detail) in sorted(entry["outcomes"].items()):
            if status in ("differ", "error"):
                rows.append([case_id, path, status, detail.replace("|", "/")[:200]])
    if not rows:
        return [*lines, "None.", ""]
    return [*lines, *_table(["case", "path", "status", "detail"], rows), ""]


def _reason_class(detail: str) -> str:
    """`detail` without what differs from case to case (node names, unbacked symbols,
    sizes), so that one cause makes one row."""
    detail = re.sub(r"\b([A-Za-z_]+_)\d+\b", r"\1N", detail)
    detail = re.sub(r"\bu\d+\b", "uN", detail)
    detail = re.sub(r"\d+", "N", detail)
    return detail[:120]


def _exclusions(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## Known exclusions", ""]
    reasons: dict[str, list[str]] = defaultdict(list)
    for case_id, entry in sorted(results.items()):
        for path, (status, detail) in entry["outcomes"].items():
            if status == "excluded" or path == "export":
                reasons[f"{path}: {_reason_class(detail)}"].append(case_id)
    if not reasons:
        return [*lines, "None.", ""]
    rows = []
    for reason, cases in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
        names = sorted({c.rsplit("/", 2)[0] for c in cases})
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        rows.append([reason.replace("|", "/")[:200], str(len(cases)), shown])
    return [*lines, *_table(["path: reason", "cases", "ops / modules"], rows), ""]


def _per_op(results: dict[str, dict[str, Any]], paths: list[str]) -> list[str]:
    lines = ["## Per op and module", ""]
    by_name: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for entry in results.values():
        by_name[(entry["kind"], entry["name"])].append(entry)
    rows = []
    for (kind, name), entries in sorted(by_name.items()):
        dtypes = sorted({e["dtype"] for e in entries})
        row = [("" if kind == "op" else "module ") + name, " ".join(dtypes), str(len(entries))]
        exported = [e for e in entries if "export" not in e["outcomes"]]
        for path in paths:
            statuses = [e["outcomes"][path][0] for e in exported if path in e["outcomes"]]
            agree = sum(s in ("agree", "values undefined") for s in statuses)
            row.append(f"{agree}/{len(statuses)}" if statuses else "-")
        rows.append(row)
    return [*lines, *_table(["op", "dtypes", "samples", *paths], rows), ""]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def merged(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run of several files of one machine (pytest-xdist writes one per worker)."""
    results: dict[str, dict[str, Any]] = {}
    for run in runs:
        for case_id, entry in run["results"].items():
            results.setdefault(case_id, {**entry, "outcomes": {}})["outcomes"].update(
                entry["outcomes"]
            )
    return {"facts": runs[0]["facts"], "results": results}


if __name__ == "__main__":
    args = sys.argv[1:]
    merge_into = None
    notes = ""
    if args[:1] == ["--merge"]:  # --merge out.json worker files...: one machine's run
        merge_into, args = args[1], args[2:]
    if args[:1] == ["--notes"]:  # --notes notes.md runs...: what changed after the runs
        with open(args[1]) as f:
            notes = f.read()
        args = args[2:]
    runs = []
    for name in args:
        with open(name) as f:
            runs.append(json.load(f))
    if not runs:
        sys.exit(
            "usage: python tests/support/corpus/status.py results.json [more.json ...] > status.md\n"
            "       python tests/support/corpus/status.py --notes notes.md results.json [...] > status.md\n"
            "       python tests/support/corpus/status.py --merge out.json worker.json [...]"
        )
    if merge_into:
        with open(merge_into, "w") as f:
            json.dump(merged(runs), f, indent=0, sort_keys=True)
    else:
        sys.stdout.write(render(runs, notes))
