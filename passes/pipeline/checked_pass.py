"""A user pass inside the pipeline: run it, then check what it left behind."""

from __future__ import annotations

import torch
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from fxdelegate.errors import PassFailedError

from ..context import CONTEXT_KEY, get_context
from .user_pass_checks import UserPassChecker, UserPassRun


class CheckedUserPass(PassBase):
    """Runs a user's pass (its requires, call and ensures) and, unless it reports
    ``PassResult(modified=False)``, checks the program's invariants right after it.

    Failures name the pass: :class:`PassFailedError` when it raises,
    :class:`PassInvariantError` when it breaks an invariant.
    """

    def __init__(self, inner: PassBase, name: str, position: str, checker: UserPassChecker) -> None:
        self.inner = inner
        self.name = name
        self.position = position
        self.checker = checker

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        context = get_context(graph_module)
        facts = self.checker.before(graph_module)
        self._stage("requires", self.inner.requires, graph_module)
        result = self._stage("call", self.inner.call, graph_module)
        if result is None:
            result = PassResult(graph_module, True)  # it did not say: assume it changed things
        elif not isinstance(result, PassResult) or not isinstance(
            result.graph_module, torch.fx.GraphModule
        ):
            raise PassFailedError(
                f"pass {self.name!r} ({self.position}) returned {type(result).__name__}; a pass "
                "returns None or a PassResult(graph_module, modified)",
                pass_name=self.name,
                stage="call",
            )
        module = result.graph_module
        if module is not graph_module:  # a pass may hand back a new module
            module.meta[CONTEXT_KEY] = context
        self._stage("ensures", self.inner.ensures, module)
        if not result.modified:
            self.checker.runs.append(UserPassRun(self.name, self.position, False, ()))
            return PassResult(module, False)
        self.checker.after(module, facts, self.name, self.position)
        self.checker.runs.append(
            UserPassRun(self.name, self.position, True, self.checker.invariants)
        )
        return PassResult(module, True)

    def _stage(self, stage: str, method, graph_module: torch.fx.GraphModule):  # type: ignore[no-untyped-def]
        try:
            return method(graph_module)
        except Exception as exc:
            raise PassFailedError(
                f"pass {self.name!r} ({self.position}) failed in {stage}: "
                f"{type(exc).__name__}: {exc}",
                pass_name=self.name,
                stage=stage,
            ) from exc

    def __repr__(self) -> str:
        return f"CheckedUserPass({self.name!r}, {self.inner!r})"
