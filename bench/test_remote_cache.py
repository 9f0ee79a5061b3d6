"""A second machine lowering the demo program from a warm remote cache, against a cold compile.

    pytest -s bench/test_remote_cache.py      (needs redis-server; about 2 minutes)

Each "machine" is a fresh process with an empty local folder and an empty
inductor cache, so the cold one pays every compile (C++ included) and the
warm one only fetches and loads. Times are of `fxdelegate.lower` inside the
process (the interpreter's start and `import torch` are left out).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest
from ratios import fmt_seconds, record

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "support"))
from redis_server import RedisServer

WORKER = os.path.join(os.path.dirname(__file__), "..", "tests", "support", "remote_cache_worker.py")


def _machine(url: str) -> dict:
    config = {"url": url, "local": tempfile.mkdtemp(), "backend": "aoti", "workers": 2}
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp()}
    done = subprocess.run(
        [sys.executable, WORKER, json.dumps(config)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_warm_remote_cache_vs_cold_compile(benchmark):
    try:
        server = RedisServer(tempfile.mkdtemp())
    except RuntimeError as exc:
        pytest.skip(str(exc))
    try:
        cold = _machine(server.url)
        warm = _machine(server.url)
    finally:
        server.stop()
    assert cold["stats"]["compiled"] == cold["stats"]["distinct"]
    assert warm["stats"]["compiled"] == 0
    ratio = warm["seconds"] / cold["seconds"]
    table = "remote compile cache: the demo program on a second machine (AOTInductor, CPU)"
    record(
        table,
        {
            "machine": "cold: empty local folder, remote and inductor caches",
            "lower": fmt_seconds(cold["seconds"]),
            "compiled / remote hits": f"{cold['stats']['compiled']} / 0",
            "ratio": "1.00x",
            "target": "",
        },
    )
    record(
        table,
        {
            "machine": "second: empty local folder and inductor cache, warm remote",
            "lower": fmt_seconds(warm["seconds"]),
            "compiled / remote hits": f"0 / {warm['stats']['remote_hits']}",
            "ratio": f"{ratio:.3f}x",
            "target": "<= 0.1x",
        },
    )
    benchmark.extra_info.update(cold_seconds=cold["seconds"], warm_seconds=warm["seconds"])
    benchmark.pedantic(lambda: None, rounds=1)
