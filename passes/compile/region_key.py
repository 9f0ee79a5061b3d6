"""A content hash of an outlined region: equal keys compile to interchangeable code.

The key covers everything the compiled code depends on, and nothing it does
not:

* the region's graph, canonicalized: nodes by position, not by name; ops and
  literal arguments; every value's dtype, device, shape and strides;
* the kind, shape and dtype of each input (weights are bound at load time, so
  their values are not part of the key), with size symbols renamed in order
  of first appearance and their ranges;
* the backend id, its compiler's `compile_version` and its options, the
  torch and fxdelegate versions, the machine's CPU architecture and vector
  ISA, and for CUDA regions the GPU's architecture and the CUDA version.

Two blocks of a transformer that differ only in their weights get the same
key, so one artifact serves both.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
from typing import Any

import sympy
import torch
from torch.export import ExportedProgram

from fxdelegate.runtime.backend import get_compiler
from fxdelegate.version import __version__

KEY_VERSION = 6


class _Canon:
    def __init__(self, symbols: dict[sympy.Symbol, str] | None = None) -> None:
        self.symbols: dict[sympy.Symbol, str] = symbols if symbols is not None else {}
        self.nodes: dict[str, int] = {}

    def expr(self, e: sympy.Expr) -> str:
        for s in sorted(e.free_symbols, key=str):
            if s not in self.symbols:
                self.symbols[s] = f"$s{len(self.symbols)}"
        return str(
            e.xreplace({s: sympy.Symbol(n) for s, n in self.symbols.items() if s in e.free_symbols})
        )

    def size(self, v: Any) -> Any:
        if isinstance(v, torch.SymInt):
            return self.expr(v.node.expr)
        if isinstance(v, (torch.SymFloat, torch.SymBool)):
            return self.expr(v.node.expr)
        return v

    def value(self, val: Any) -> Any:
        if isinstance(val, torch.Tensor):
            return [
                "T",
                str(val.dtype),
                val.device.type,
                [self.size(s) for s in val.shape],
                [self.size(s) for s in val.stride()],
            ]
        if isinstance(val, (tuple, list)):
            return [self.value(v) for v in val]
        if isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            return ["S", self.size(val)]
        return repr(val)

    def arg(self, a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            return ["n", self.nodes[a.name]]
        if isinstance(a, (tuple, list)):
            return [type(a).__name__, [self.arg(x) for x in a]]
        if isinstance(a, dict):
            return ["dict", [[k, self.arg(v)] for k, v in a.items()]]
        if isinstance(a, float):
            return ["f", repr(a)]
        if isinstance(a, (int, bool, str)) or a is None:
            return a
        return ["o", type(a).__name__, str(a)]


def _target(target: Any) -> str:
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", "") or ""
    return f"{module}.{getattr(target, '__qualname__', getattr(target, '__name__', str(target)))}:{target}"


def machine_fingerprint() -> dict[str, str]:
    """What a compiled CPU artifact is tied to besides its source: the architecture
    and the CPU's vector extensions. Read from the hardware, not by building test
    programs as inductor's ISA probe does (seconds of C++ compiles on a machine
    whose inductor cache is empty, which is every machine a remote cache serves)."""
    return {
        "machine": platform.machine(),
        "vec_isa": cpu_vector_features(),
        "torch": torch.__version__,
        "fxdelegate": __version__,
    }


# The x86 extensions compiled code may use; a machine lacking one that an artifact
# was built with must not share its key.
_X86_VECTOR_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl",
    "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip


@functools.cache
def cpu_vector_features() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(
                (line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None
            )
    except OSError:
        flags = None
    if flags:
        return ",".join(flag for flag in _X86_VECTOR_FLAGS if flag in flags) or "none"
    # Not Linux on x86: what ATen detected at start-up.
    return str(torch.backends.cpu.get_cpu_capability())


def _compile_version(backend_id: str) -> int:
    """The backend compiler's own version of what it generates (0 if unknown)."""
    try:
        return get_compiler(backend_id).compile_version
    except Exception:  # a key for a backend this process cannot compile with
        return 0


def _cuda_fingerprint(program: ExportedProgram) -> dict[str, str] | None:
    """The GPU a CUDA region is compiled for (its architecture and CUDA version)."""
    on_cuda = any(
        isinstance(val := node.meta.get("val"), torch.Tensor) and val.device.type == "cuda"
        for node in program.graph.nodes
    )
    if not on_cuda:
        return None
    major, minor = torch.cuda.get_device_capability()
    return {"arch": f"sm_{major}{minor}", "cuda": str(torch.version.cuda)}


def _describe(gm: torch.fx.GraphModule, canon: _Canon, kinds: dict[str, str]) -> list[Any]:
    nodes = []
    for i, node in enumerate(gm.graph.nodes):
        canon.nodes[node.name] = i
        entry: list[Any] = [node.op]
        if node.op == "placeholder":
            entry.append(kinds.get(node.name, "?"))
        elif node.op == "get_attr":
            body = getattr(gm, node.target)  # type: ignore[arg-type]
            if isinstance(body, torch.fx.GraphModule):
                # A control-flow body: its content, not its attribute name.
                entry.append(_describe(body, _Canon(symbols=canon.symbols), {}))
            else:
                entry.append(node.target)
        elif node.op == "call_function":
            entry.append(_target(node.target))
        entry.append(canon.arg(node.args))
        entry.append(canon.arg(dict(node.kwargs)))
        entry.append(canon.value(node.meta.get("val")))
        nodes.append(entry)
    return nodes


def region_key(program: ExportedProgram, backend_id: str, options: dict[str, Any]) -> str:
    """Hex sha256 over the canonical description of `program` (see module docstring)."""
    canon = _Canon()
    kinds = {s.arg.name: s.kind.name for s in program.graph_signature.input_specs}
    nodes = _describe(program.graph_module, canon, kinds)
    ranges = {
        name: [str(program.range_constraints[s].lower), str(program.range_constraints[s].upper)]
        for s, name in canon.symbols.items()
        if s in program.range_constraints
    }
    description = {
        "version": KEY_VERSION,
        "backend": backend_id,
        "compiler": _compile_version(backend_id),
        "options": {k: repr(v) for k, v in sorted(options.items())},
        "graph": nodes,
        # An input the region mutates in place changes what the artifact does.
        "outputs": [s.kind.name for s in program.graph_signature.output_specs],
        "ranges": ranges,
        "machine": machine_fingerprint(),
        "gpu": _cuda_fingerprint(program),
    }
    blob = json.dumps(description, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()
