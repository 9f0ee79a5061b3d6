"""ONNX Runtime vs OpenVINO as a second CPU backend, against eager and whole-graph AOTInductor.

    python bench/compare_cpu_backends.py [--threads 1 2] [--models tiny_mlp gpt2] [--no-aoti]

Each model is exported once; each backend converts the ExportedProgram (ORT through
`torch.onnx.export(ep, dynamo=True)`, OpenVINO through `openvino.convert_model(ep)`),
every output is checked against eager, then all are timed side by side (`interleaved`),
torch tensors in and out, through the cheapest call each runtime offers. A backend whose
package is missing is skipped. Prints markdown tables: medians per call and ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", "/tmp/ovcache")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests" / "support")]

import torch  # noqa: E402
from bench_models import ConvNet, Fragmented, GeluBlocks, TinyMLP  # noqa: E402
from ratios import fmt_seconds, interleaved, median  # noqa: E402

try:
    import onnxruntime as ort
except ImportError:
    ort = None
try:
    import openvino as ov
except ImportError:
    ov = None


class FragmentedClamp(Fragmented):
    """Fragmented with its custom op replaced by the `clamp` it computes: convertible."""

    def forward(self, x):
        for i in range(self.blocks):
            x = torch.tanh(x * self.scales[i] + 0.1).clamp(-3.0, 3.0)
        return x


def _plain(make, shape):
    def build():
        torch.manual_seed(0)
        model = make().eval()
        inputs = {"x": torch.randn(shape)}
        return model, torch.export.export(model, (inputs["x"],)), [inputs], {}, False

    return build


def _hf(name):
    def build():
        from zoo.transformers_models import HF_ZOO, export_hf_case  # needs transformers

        case = next(c for c in HF_ZOO if c.name == name)
        eager, ep = export_hf_case(case)  # dynamic sequence length
        checks = []
        for size in case.sizes:  # exported at the first, checked at both
            torch.manual_seed(size)
            checks.append(case.inputs(size))
        return eager, ep, checks, case.tol, True

    return build


MODELS = {
    "gelu_blocks": _plain(lambda: GeluBlocks(8, 128), (32, 128)),
    "convnet": _plain(ConvNet, (1, 3, 64, 64)),
    "fragmented": _plain(Fragmented, (8, 64)),
    "fragmented_clamp": _plain(FragmentedClamp, (8, 64)),
    "tiny_mlp": _plain(lambda: TinyMLP(16), (4, 16)),
    "gpt2": _hf("gpt2"),
    "bert": _hf("bert"),
}


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def convert(ep, backend: str):
    """The backend's converted model (what a lowered program would store)."""
    if backend == "ort":
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
            return torch.onnx.export(ep, dynamo=True, verbose=False).model_proto.SerializeToString()
    if backend == "openvino":
        model = ov.convert_model(ep)
        # convert_model makes every input dim dynamic: give back the exported shapes
        # (a symbolic dim stays dynamic), which runs faster than all-dynamic.
        shapes = [
            [d if isinstance(d, int) else -1 for d in n.meta["val"].shape]
            for n in ep.graph.nodes
            if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs
        ]
        model.reshape({i: ov.PartialShape(s) for i, s in enumerate(shapes)})
        return model
    path = tempfile.mktemp(suffix=".pt2")  # as bench/baselines.py's whole_graph_aoti
    return torch._inductor.aoti_compile_and_package(ep, package_path=path)


def load(converted, backend: str, threads: int, ov_precision: str | None = "f32"):
    """A callable taking a flat list of torch tensors and returning one torch tensor."""
    if backend == "ort":
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        # no busy-waiting pool threads stealing the core from the next implementation timed
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(converted, opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        out = [sess.get_outputs()[0].name]
        # plain run() with numpy views beat run_with_ort_values and IO binding here
        return lambda xs: torch.from_numpy(
            sess.run(out, {n: x.numpy() for n, x in zip(names, xs)})[0]
        )
    if backend == "openvino":
        cfg = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if ov_precision:  # the default is bf16 on CPUs with AVX512_BF16 or AMX
            cfg["INFERENCE_PRECISION_HINT"] = ov_precision
        req = ov.Core().compile_model(converted, "CPU", cfg).create_infer_request()

        def run(xs):  # set_input_tensor + infer() beat InferRequest.infer(inputs, share_*)
            for i, x in enumerate(xs):
                req.set_input_tensor(i, ov.Tensor(x.numpy(), shared_memory=True))
            req.infer()
            return torch.from_numpy(req.get_output_tensor(0).data.copy())  # reused buffer

        return run
    # single-threaded runner container (the cheapest call); kernels use torch's threads
    loader = torch._C._aoti.AOTIModelPackageLoader(converted, "model", True, 1, -1)
    return lambda xs: loader.run(xs)[0]


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    for key in ("No ONNX function found for", "No conversion rule found", "Error"):
        if key in text:
            text = text[text.index(key) :]
            break
    return f"{type(err).__name__}: {text[:160]}"


def time_calls(calls, xs, rounds: int = 15) -> dict[str, float]:
    """Median seconds per call, interleaved; a sample is ~10 ms of back-to-back calls, so
    the gc.collect() before each sample (which leaves caches cold) is amortised."""
    eager = calls["eager"]
    n = max(1, int(0.01 / median(interleaved({"p": lambda: eager(xs)}, 5)["p"])))
    times = interleaved(
        {k: (lambda f=f: [f(xs) for _ in range(n)]) for k, f in calls.items()}, rounds
    )
    return {k: median(v) / n for k, v in times.items()}


def bench_model(name, backends, threads_list, rows, costs, notes) -> None:
    eager_model, ep, checks, tol, by_keyword = MODELS[name]()
    keys = list(checks[0])
    conv, cost = {}, {}
    for b in backends:
        try:
            conv[b], cost[f"{b} convert"] = _timed(lambda b=b: convert(ep, b))
        except Exception as err:  # what failed to convert is a result
            notes.append(f"{name}: {b} conversion failed: {_short(err)}")
    module = ep.module()
    for threads in threads_list:
        torch.set_num_threads(threads)
        calls = {
            "eager": (lambda xs: module(**dict(zip(keys, xs))))
            if by_keyword
            else (lambda xs: module(*xs))
        }
        for b in conv:
            calls[b], t_load = _timed(lambda b=b, t=threads: load(conv[b], b, t))
            cost.setdefault(f"{b} load", t_load)
        with torch.no_grad():
            for inputs in checks:
                xs, ref = list(inputs.values()), eager_model(**inputs)
                for b, fn in list(calls.items())[1:]:
                    try:
                        torch.testing.assert_close(fn(xs), ref, **tol)
                    except Exception as err:  # a mismatch, or a call that fails
                        notes.append(f"{name} ({threads}t): {b} check failed: {_short(err)}")
            if "openvino" in conv and threads == threads_list[0]:
                err = (load(conv["openvino"], "openvino", threads, None)(xs) - ref).abs().max()
                notes.append(f"{name}: OpenVINO default (bf16) precision max abs err {err:.2e}")
            rows.append((name, threads, time_calls(calls, list(checks[0].values()))))
    costs.append((name, cost))


def table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in body)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    p.add_argument("--no-aoti", action="store_true")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    backends = [b for b, mod in (("ort", ort), ("openvino", ov)) if mod is not None]
    backends += [] if args.no_aoti else ["aoti"]
    versions = {"torch": torch.__version__}
    versions.update({m.__name__: m.__version__ for m in (ort, ov) if m is not None})
    print("versions:", versions, "| skipped:", {"ort", "openvino"} - set(backends) or "none")
    rows, costs, notes = [], [], []
    for name in args.models:
        try:
            bench_model(name, backends, args.threads, rows, costs, notes)
        except ImportError as err:
            notes.append(f"{name}: skipped ({err})")
    others = [b for b in ("ort", "openvino") if b in backends]
    for threads in args.threads:
        timed = ["eager", *(["aoti"] if "aoti" in backends else []), *others]
        head = ["model", *timed, *(f"{b}/eager" for b in others)]
        head += [f"{b}/aoti" for b in others if "aoti" in backends]
        body = []
        for name, t, med in rows:
            if t != threads:
                continue
            cells = [name, *(fmt_seconds(med[k]) if k in med else "failed" for k in timed)]
            for k in head[len(cells) :]:
                b, base = k.split("/")
                ok = b in med and base in med
                cells.append(f"{med[b] / med[base]:.2f}" if ok else "-")
            body.append(cells)
        print(f"\n### Median per call, {threads} thread(s) (ratio < 1: backend faster)\n")
        print(table(head, body))
    keys = sorted({k for _, c in costs for k in c})
    body = [[n, *(fmt_seconds(c[k]) if k in c else "-" for k in keys)] for n, c in costs]
    print(
        "\n### Conversion and load times (first thread setting; the first model also pays imports)\n"
    )
    print(table(["model", *keys], body))
    print("\n### Failures and notes\n")
    print("\n".join(f"- {n}" for n in notes) or "- none")


if __name__ == "__main__":
    main()
