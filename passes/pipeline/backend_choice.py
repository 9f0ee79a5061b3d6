"""Which backends a lowering tries, in priority order, each with its support and options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch.fx.passes.operator_support import OperatorSupportBase

from fxdelegate.errors import InvalidArgumentError
from fxdelegate.runtime.backend import get_compiler, get_runtime


@dataclass(frozen=True)
class BackendChoice:
    """One backend of a lowering: it takes, as convex regions, the nodes that its
    `support` accepts and no backend before it took."""

    backend_id: str
    support: OperatorSupportBase
    compile_options: dict[str, Any] = field(default_factory=dict)


def resolve_backends(
    backend: str | Sequence[str],
    support: OperatorSupportBase | Mapping[str, OperatorSupportBase] | None,
    compile_options: Mapping[str, Any] | None,
) -> list[BackendChoice]:
    """Check `lower`'s backend arguments and pair each backend with its support and options.

    With one backend, `support` and `compile_options` are that backend's. With a
    list, both are dicts keyed by backend id (a backend left out gets its default
    support and no options): one support object cannot mean the same for all.
    """
    ids = [backend] if isinstance(backend, str) else backend
    if not isinstance(ids, Sequence) or not ids or not all(isinstance(b, str) for b in ids):
        raise InvalidArgumentError(
            f"backend must be a backend id or a non-empty list of them, got {backend!r}"
        )
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise InvalidArgumentError(f"backend lists a backend twice: {ids}")
    if compile_options is not None and not isinstance(compile_options, Mapping):
        raise InvalidArgumentError(
            f"compile_options must be a dict, got {type(compile_options).__name__}"
        )
    several = len(ids) > 1
    supports = _per_backend("support", support, ids, several)
    options = _per_backend("compile_options", compile_options, ids, several)
    choices = []
    for backend_id in ids:
        compiler = get_compiler(backend_id)
        get_runtime(backend_id)
        chosen = supports.get(backend_id)
        if chosen is None:
            chosen = compiler.default_support()
        if not isinstance(chosen, OperatorSupportBase):
            raise InvalidArgumentError(
                f"support for backend '{backend_id}' must be a "
                "torch.fx.passes.operator_support.OperatorSupportBase, "
                f"got {type(chosen).__name__}"
            )
        backend_options = options.get(backend_id) or {}
        if not isinstance(backend_options, Mapping):
            raise InvalidArgumentError(
                f"compile_options for backend '{backend_id}' must be a dict, "
                f"got {type(backend_options).__name__}"
            )
        choices.append(BackendChoice(backend_id, chosen, dict(backend_options)))
    return choices


def _per_backend(what: str, value: Any, ids: list[str], several: bool) -> dict[str, Any]:
    if value is None:
        return {}
    if not several:
        return {ids[0]: value}
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(
            f"with several backends ({', '.join(ids)}), {what} must be a dict keyed by "
            f"backend id, e.g. {{{ids[0]!r}: ...}}; got {type(value).__name__}"
        )
    unknown = sorted(set(value) - set(ids))
    if unknown:
        raise InvalidArgumentError(
            f"{what} names backend(s) {unknown} that are not in the backend list {ids}"
        )
    return dict(value)
