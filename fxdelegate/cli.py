"""Command line: `fxdelegate demo`, `fxdelegate inspect model.pt2`, `fxdelegate compare model.pt2 inputs.pt`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import defaultdict

from fxdelegate.errors import FxDelegateError


def _inspect(args: argparse.Namespace) -> int:
    from fxdelegate.partitioner.report import LoweringSummary
    from fxdelegate.runtime.archive.archive_io import archive_members, read_metadata

    metadata = read_metadata(args.path)
    summary = LoweringSummary.from_dict(metadata["summary"])
    print(
        f"{args.path}: fxdelegate archive v{metadata['format_version']}, written with torch {metadata.get('torch_version')}"
    )
    print()
    print(summary.format())
    groups: dict[str, int] = defaultdict(int)
    for name, size in archive_members(args.path):
        parts = name.split("/")
        key = (
            "/".join(parts[:3]) + "/"
            if parts[0] == "data" and parts[1] == "aotinductor"
            else "/".join(parts[:2])
        )
        groups[key] += size
    if args.graph:
        from fxdelegate.partitioner.graph_picture import render

        if summary.graph is None:
            raise FxDelegateError(f"{args.path} carries no graph snapshot to draw")
        collapse = {"auto": None, "yes": True, "no": False}[args.collapse]
        render(
            summary.graph, args.graph, collapse=collapse, title=f"{args.path}: {summary.headline()}"
        )
        print(f"\nwrote {args.graph}")
    print("\nArchive layout")
    width = max(len(k) for k in groups)
    for key in sorted(groups):
        print(f"  {key.ljust(width)}  {groups[key] / 1e6:8.3f} MB")
    return 0


def _run_saved(args: argparse.Namespace) -> int:
    """Load an archive and run it on saved inputs (used by the demo's fresh-process check)."""
    import time

    import torch

    import fxdelegate

    start = time.perf_counter()
    prog = fxdelegate.load(args.path)
    load_seconds = time.perf_counter() - start
    cases = torch.load(args.inputs, weights_only=True)
    with torch.no_grad():
        outputs = {label: prog(*a, **kw) for label, (a, kw) in cases.items()}
    torch.save(outputs, args.outputs)
    print(f"reloaded {args.path} in a fresh process in {load_seconds:.2f} s (no compiler on PATH)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    """Compare each region of a saved program with its own graph on saved inputs."""
    import torch

    import fxdelegate

    prog = fxdelegate.load(args.path)
    try:
        saved = torch.load(args.inputs, weights_only=True)
    except Exception as exc:
        raise FxDelegateError(f"cannot read inputs from {args.inputs}: {exc}") from exc
    if isinstance(saved, dict) and set(saved) <= {"args", "kwargs"}:
        call_args, call_kwargs = tuple(saved.get("args", ())), dict(saved.get("kwargs", {}))
    elif isinstance(saved, (tuple, list)):
        call_args, call_kwargs = tuple(saved), {}
    else:
        raise FxDelegateError(
            f"{args.inputs} holds a {type(saved).__name__}; expected a tuple of positional "
            "inputs or {'args': (...), 'kwargs': {...}} saved with torch.save"
        )
    with torch.no_grad():
        report = prog.compare(*call_args, rtol=args.rtol, atol=args.atol, **call_kwargs)
    print(report)
    return 0 if report.first_divergence() is None and report.outputs_match() else 1


def _cache(args: argparse.Namespace) -> int:
    """Entries and bytes of the local compile cache and the remote store; or clear them."""
    from fxdelegate.passes.compile.local_cache import CompileCache, default_cache_dir
    from fxdelegate.passes.compile.remote_cache import RemoteCache, RemoteCacheOptions

    local = CompileCache(os.path.expanduser(args.dir or default_cache_dir()))
    url = args.remote or os.environ.get("FXDELEGATE_REMOTE_CACHE")
    if args.action == "clear":
        print(f"local {local.root}: removed {local.clear()} entries")
    else:
        stats = local.stats()
        print(f"local {local.root}: {stats['entries']} entries, {stats['bytes'] / 1e6:.1f} MB")
    if url:
        # Nothing is loaded from the store here, so no secret is needed.
        remote = RemoteCache(RemoteCacheOptions(url, insecure=True))
        try:
            if args.action == "clear":
                print(f"remote {url}: removed {remote.clear()} keys")
            else:
                stats = remote.stats()
                print(
                    f"remote {url}: {stats['entries']} entries, {stats['chunks']} chunks, "
                    f"{stats['bytes'] / 1e6:.1f} MB"
                )
        except (remote._redis.RedisError, OSError) as exc:
            raise FxDelegateError(f"the remote cache at {url} failed: {exc}") from exc
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fxdelegate", description=__doc__)
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings and errors in the log"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="lower, save, reload and time the built-in example model")
    demo.add_argument(
        "--out", help="where to write the demo archive (default: ./fxdelegate-demo.pt2)"
    )
    demo.add_argument("--runs", type=int, default=200, help="calls per latency measurement")
    demo.add_argument("--backend", default="aoti", help="backend id (default: aoti)")

    inspect = sub.add_parser("inspect", help="print the report of a saved .pt2 archive")
    inspect.add_argument("path")
    inspect.add_argument(
        "--graph",
        metavar="OUT",
        help="draw the partition to OUT (.svg, .png, .pdf, .html need graphviz; .dot)",
    )
    inspect.add_argument(
        "--collapse",
        choices=["auto", "yes", "no"],
        default="auto",
        help="draw each region as one box (auto: above 300 nodes)",
    )

    run_saved = sub.add_parser(
        "run-saved", help="load an archive and run it on inputs saved with torch.save"
    )
    run_saved.add_argument("path")
    run_saved.add_argument("inputs", help="torch.save'd {label: (args, kwargs)}")
    run_saved.add_argument("outputs", help="where to torch.save {label: outputs}")

    compare = sub.add_parser(
        "compare",
        help="run a saved program once and compare every region with its own graph and "
        "every executor op with its eager call (exit 1 when one diverges)",
    )
    compare.add_argument("path", help="an archive saved with keep_region_programs=True")
    compare.add_argument(
        "inputs", help="torch.save'd tuple of positional inputs, or {'args': ..., 'kwargs': ...}"
    )
    compare.add_argument("--rtol", type=float, default=1e-3)
    compare.add_argument("--atol", type=float, default=1e-5)

    cache = sub.add_parser(
        "cache", help="entries in the local compile cache and the remote store, or clear them"
    )
    cache.add_argument("action", choices=["stats", "clear"])
    cache.add_argument(
        "--dir", help="the local folder (default: $FXDELEGATE_CACHE_DIR or ~/.cache/fxdelegate)"
    )
    cache.add_argument("--remote", help="redis:// URL (default: $FXDELEGATE_REMOTE_CACHE)")

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="[%(name)s] %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "demo":
            from fxdelegate.demo import run_demo

            status = run_demo(args.out, runs=args.runs, backend=args.backend)
        elif args.command == "inspect":
            status = _inspect(args)
        elif args.command == "compare":
            status = _compare(args)
        elif args.command == "cache":
            status = _cache(args)
        else:
            status = _run_saved(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except FxDelegateError as exc:
        print(f"fxdelegate: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader stopped early (`fxdelegate inspect m.pt2 | head`), as a pager
        # or `head` does: stop quietly, with the exit status of a process that
        # SIGPIPE ended, and keep the interpreter's last flush from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13


if __name__ == "__main__":
    sys.exit(main())
