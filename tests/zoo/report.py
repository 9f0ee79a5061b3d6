"""Print the zoo's status as a Markdown table (through AOTInductor, first setting).

python tests/zoo/report.py
"""

from __future__ import annotations

import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("FXDELEGATE_CACHE_DIR", str(HERE.parent.parent / ".cache" / "fxdelegate"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(HERE.parent.parent / ".cache" / "inductor"))

import fxdelegate  # noqa: E402
from zoo import ZOO  # noqa: E402
from zoo.compare import check_program, export_case  # noqa: E402


def main() -> None:
    print("| model | setting | regions | ops in executor | max abs error |")
    print("|---|---|---|---|---|")
    for case in ZOO:
        eager, ep = export_case(case)
        setting = case.settings[0]
        prog = fxdelegate.lower(ep, backend="aoti", strict=True, **setting)
        error = check_program(case, prog, eager)
        ops = sorted(
            {op.op.removeprefix("aten.") for op in prog.summary.executor_ops if op.op != "getitem"}
        )
        label = ", ".join(f"{k}={v}" for k, v in setting.items()) or "default"
        print(
            f"| {case.name} | {label} | {len(prog.partitions)} | {', '.join(ops) or '-'} | {error:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
