"""Print the zoo's status as Markdown tables.

python tests/support/zoo/report.py                 # the hard-graph zoo, through AOTInductor (first setting)
python tests/support/zoo/report.py transformers    # the transformers zoo, on both backends
"""

from __future__ import annotations

import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("FXDELEGATE_CACHE_DIR", str(HERE.parents[2] / ".cache" / "fxdelegate"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(HERE.parents[2] / ".cache" / "inductor"))

import fxdelegate  # noqa: E402
from zoo import ZOO  # noqa: E402
from zoo.compare import check_program, export_case  # noqa: E402


def transformers_table() -> None:
    import torch

    from zoo.transformers_models import HF_ZOO, export_hf_case

    print("| model | family | pinned | regions | max abs error, reference | max abs error, aoti |")
    print("|---|---|---|---|---|---|")
    for case in HF_ZOO:
        eager, ep = export_hf_case(case)
        errors, regions = {}, None
        for backend in ("reference", "aoti"):
            prog = fxdelegate.lower(ep, backend=backend, exclude_ops=case.pinned, strict=True)
            regions = len(prog.partitions)
            worst = 0.0
            with torch.no_grad():
                for size in case.sizes:
                    inputs = case.inputs(size)
                    got, expected = prog(**inputs), eager(**inputs)
                    torch.testing.assert_close(got, expected, **case.tol)
                    worst = max(worst, (got.double() - expected.double()).abs().max().item())
            errors[backend] = worst
        pinned = ", ".join(p.removeprefix("aten.") for p in case.pinned)
        print(
            f"| {case.name} | {case.family} | {pinned} | {regions} | "
            f"{errors['reference']:.1e} | {errors['aoti']:.1e} |",
            flush=True,
        )


def main() -> None:
    if sys.argv[1:] == ["transformers"]:
        transformers_table()
        return
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
