"""One "machine" of the remote-cache tests: lower a program, print what happened as JSON.

python tests/support/remote_cache_worker.py '{"url": ..., "local": ..., "backend": "packaged", ...}'
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch

import fxdelegate


def main(config: dict) -> dict:
    backend = config.get("backend", "packaged")
    if backend == "packaged":
        from packaged_backend import DistinctBlocks, register

        register()
        torch.manual_seed(0)
        model = DistinctBlocks().eval()
        args, kwargs = (torch.randn(3, 8),), {}
        ep = torch.export.export(model, args)
        exclude = ["aten.relu"]
    else:
        from fxdelegate.demo import DemoModel, demo_inputs, export_demo

        torch.manual_seed(0)
        model = DemoModel().eval()
        args, kwargs = demo_inputs(4)
        ep = export_demo(model)
        exclude = ["aten.gelu"]
    barrier = config.get("barrier")
    if barrier:  # start lowering together with the other processes
        import redis

        client = redis.Redis.from_url(config["url"])
        client.incr(barrier["key"])
        while int(client.get(barrier["key"])) < barrier["count"]:
            time.sleep(0.01)
    options = fxdelegate.RemoteCacheOptions(
        config["url"], secret=config.get("secret", "fleet-secret"), **config.get("options", {})
    )
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", fxdelegate.RemoteCacheWarning)
        prog = fxdelegate.lower(
            ep,
            backend=backend,
            exclude_ops=exclude,
            cache_dir=config["local"],
            remote_cache=options,
            compile_workers=config.get("workers", 1),
            strict=True,
        )
    seconds = time.perf_counter() - start
    torch.testing.assert_close(prog(*args, **kwargs), model(*args, **kwargs))
    return {
        "pid": os.getpid(),
        "seconds": seconds,
        "sources": {r.name: r.compile for r in prog.partitions},
        "stats": prog.summary.compile,
        "warnings": [str(w.message) for w in caught],
        "report": prog.report(),
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
