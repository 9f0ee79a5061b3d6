"""Compile one region in its own process: ``python -m fxdelegate.passes.compile.compile_worker job.json``.

The job file names the backend, the saved region program, the options (as
Python literals) and where to write the result. The result is JSON: the
artifact's package, or the compiler's error.
"""

from __future__ import annotations

import ast
import json
import sys
import traceback


def main(job_path: str) -> int:
    with open(job_path) as f:
        job = json.load(f)
    try:
        import torch

        from fxdelegate.runtime.backend import RegionToCompile, get_compiler

        program = torch.export.load(job["program"])
        args, _ = program.example_inputs
        options = {k: ast.literal_eval(v) for k, v in job["options"].items()}
        region = RegionToCompile(job["name"], program, tuple(args))
        artifact = get_compiler(job["backend"]).compile(region, options, job["workdir"])
        result = {
            "key": artifact.key,
            "package_path": artifact.package_path,
            "package_key": artifact.package_key,
            "meta": artifact.meta,
        }
    except Exception as exc:
        result = {
            "error": str(exc),
            "error_type": type(exc).__name__,
            "traceback": traceback.format_exc()[-4000:],
        }
    with open(job["result"], "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
