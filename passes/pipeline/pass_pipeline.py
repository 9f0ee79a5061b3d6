"""The lowering pipeline as a public, named, ordered list of passes.

``fxdelegate.default_pipeline()`` is exactly what ``fxdelegate.lower`` runs.
A user adds passes of their own by name (``insert_before("tag_regions", p)``);
``lower(ep, pipeline=pipeline)`` runs them in place, composed with torch's
``PassManager`` like the built-in ones. Each user pass is wrapped in a
:class:`~.checked_pass.CheckedUserPass`, which checks the program's invariants
right after it (see :mod:`.user_pass_checks`); built-in passes carry their
own ``requires``/``ensures``.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from fxdelegate.errors import InvalidArgumentError

from .builtin_passes import BUILTIN_PASSES

if TYPE_CHECKING:
    from .user_pass_checks import UserPassChecker

# What a pipeline accepts: a PassBase, or a plain function over the graph module.
PassLike = PassBase | Callable[[torch.fx.GraphModule], PassResult | None]

# The invariants checked after every user pass, in the order they are checked.
INVARIANTS = ("lint", "values", "regions", "weights", "signature", "outputs")


def builtin_steps() -> list[PipelineStep]:
    """The built-in passes (:data:`.builtin_passes.BUILTIN_PASSES`) under their public names."""
    return [PipelineStep(name, cls(), user=False) for name, cls in BUILTIN_PASSES]


@dataclass(frozen=True)
class PipelineStep:
    """One pass of a pipeline under its name; `user` marks passes the user added."""

    name: str
    pass_: PassBase
    user: bool


class FunctionPass(PassBase):
    """A plain function ``GraphModule -> None | PassResult`` as a PassBase.

    None means "may have changed the graph": the pipeline then checks it."""

    def __init__(self, function: Callable[[torch.fx.GraphModule], PassResult | None]) -> None:
        self.function = function

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult | None:
        return self.function(graph_module)

    def __repr__(self) -> str:
        return f"FunctionPass({_qualified_name(self.function)})"


class PassPipeline:
    """An ordered list of named passes, run by ``fxdelegate.lower(ep, pipeline=...)``.

    Start from :func:`default_pipeline` and add passes with :meth:`insert_before`,
    :meth:`insert_after` or :meth:`append`. ``print(pipeline)`` lists the passes
    in order with what each requires and ensures.

    `check_outputs` (default True): after each user pass that changed the graph,
    run the graph on the program's example inputs, before and after the pass, and
    require the same outputs. Turn it off for programs too big to run twice per
    pass; the structural checks (lint, values, regions, weights, signature) stay on.
    """

    def __init__(self, steps: Iterable[PipelineStep] = (), *, check_outputs: bool = True) -> None:
        self._steps: list[PipelineStep] = list(steps)
        self.check_outputs = check_outputs

    @property
    def names(self) -> list[str]:
        return [s.name for s in self._steps]

    @property
    def steps(self) -> list[PipelineStep]:
        return list(self._steps)

    @property
    def user_passes(self) -> list[str]:
        return [s.name for s in self._steps if s.user]

    def __len__(self) -> int:
        return len(self._steps)

    def __iter__(self) -> Iterator[PipelineStep]:
        return iter(list(self._steps))

    def __contains__(self, name: object) -> bool:
        return any(s.name == name for s in self._steps)

    def __getitem__(self, name: str) -> PassBase:
        return self._steps[self._index(name)].pass_

    def insert_before(self, where: str, pass_: PassLike, *, name: str | None = None) -> str:
        """Run `pass_` right before the pass named `where`; returns the new pass's name."""
        return self._insert(self._index(where), pass_, name)

    def insert_after(self, where: str, pass_: PassLike, *, name: str | None = None) -> str:
        """Run `pass_` right after the pass named `where`; returns the new pass's name."""
        return self._insert(self._index(where) + 1, pass_, name)

    def append(self, pass_: PassLike, *, name: str | None = None) -> str:
        """Run `pass_` after every pass already in the pipeline; returns its name."""
        return self._insert(len(self._steps), pass_, name)

    def remove(self, name: str) -> None:
        """Take a user pass out again (built-in passes cannot be removed)."""
        index = self._index(name)
        if not self._steps[index].user:
            raise InvalidArgumentError(
                f"{name!r} is a built-in pass: lowering needs it; only passes added by "
                f"the user can be removed ({', '.join(self.user_passes) or 'none so far'})"
            )
        del self._steps[index]

    def copy(self) -> PassPipeline:
        return copy.copy(self)

    def __copy__(self) -> PassPipeline:
        return PassPipeline(self._steps, check_outputs=self.check_outputs)

    def position_of(self, name: str) -> str:
        """Where pass `name` runs, said by its neighbours: 'before tag_regions'."""
        index = self._index(name)
        following = [s for s in self._steps[index + 1 :] if not s.user]
        if following:
            return f"before {following[0].name}"
        preceding = [s for s in self._steps[:index] if not s.user]
        return f"after {preceding[-1].name}" if preceding else "before lowering"

    def manager_passes(self, checker: UserPassChecker) -> list[PassBase]:
        """The passes for torch's PassManager: built-in ones as they are, user
        passes wrapped so that `checker` checks the program right after each."""
        from .checked_pass import CheckedUserPass

        return [
            CheckedUserPass(s.pass_, s.name, self.position_of(s.name), checker)
            if s.user
            else s.pass_
            for s in self._steps
        ]

    def __str__(self) -> str:
        checks = ", ".join(i for i in INVARIANTS if self.check_outputs or i != "outputs")
        lines = [
            f"PassPipeline: {len(self._steps)} passes; after each user pass that changes "
            f"the graph: {checks}"
        ]
        labels = [s.name + (" (user)" if s.user else "") for s in self._steps]
        width = max(map(len, labels), default=0)
        for i, (step, label) in enumerate(zip(self._steps, labels), 1):
            lines.append(f"  {i:>2}. {label.ljust(width)}  {_describe_pass(step.pass_)}")
            contract = _contract(step.pass_)
            if not contract:
                lines.append(f"      {'':{width}}  (no requires/ensures)")
            for kind, text in contract:
                lines.append(f"      {'':{width}}  {kind}: {text}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"PassPipeline({self.names!r}, check_outputs={self.check_outputs})"

    def _index(self, name: str) -> int:
        for i, step in enumerate(self._steps):
            if step.name == name:
                return i
        if not isinstance(name, str):
            raise InvalidArgumentError(f"passes are named by strings, got {name!r}")
        raise InvalidArgumentError(
            f"no pass named {name!r} in the pipeline; its passes are: {', '.join(self.names)}"
        )

    def _insert(self, index: int, pass_: PassLike, name: str | None) -> str:
        as_pass = as_pass_base(pass_)
        if name is None:
            base = default_pass_name(pass_)
            name, n = base, 1
            while name in self:
                n += 1
                name = f"{base}_{n}"
        elif not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w.-]*", name):
            raise InvalidArgumentError(f"a pass name is a non-empty identifier, got {name!r}")
        elif name in self:
            raise InvalidArgumentError(
                f"the pipeline already has a pass named {name!r}; give this one another name"
            )
        self._steps.insert(index, PipelineStep(name, as_pass, user=True))
        return name


def default_pipeline(*, check_outputs: bool = True) -> PassPipeline:
    """The passes ``fxdelegate.lower`` runs, in order, ready for passes of your own.

    `check_outputs=False` skips running the program before and after each user pass
    (see :class:`PassPipeline`)."""
    return PassPipeline(builtin_steps(), check_outputs=check_outputs)


def as_pass_base(pass_: object) -> PassBase:
    """`pass_` as a PassBase: PassBase instances as they are, functions wrapped."""
    if isinstance(pass_, PassBase):
        return pass_
    if isinstance(pass_, type) and issubclass(pass_, PassBase):
        raise InvalidArgumentError(
            f"got the class {pass_.__name__}; pass an instance of it: {pass_.__name__}()"
        )
    if callable(pass_):
        return FunctionPass(pass_)  # type: ignore[arg-type]
    raise InvalidArgumentError(
        "a pass is a torch.fx.passes.infra.pass_base.PassBase or a function "
        f"GraphModule -> None | PassResult; got {type(pass_).__name__}"
    )


def default_pass_name(pass_: object) -> str:
    """`fuse_rms_norm` for FuseRMSNorm() or FuseRMSNormPass(); a function's own name."""
    if isinstance(pass_, FunctionPass):
        pass_ = pass_.function
    if isinstance(pass_, PassBase):
        raw = type(pass_).__name__.removesuffix("Pass") or type(pass_).__name__
    else:
        raw = getattr(pass_, "__name__", None) or type(pass_).__name__
    if not raw.isidentifier():  # a lambda, a partial
        raise InvalidArgumentError(
            f"cannot name the pass {pass_!r} from its code; give it one: insert_before(..., name='...')"
        )
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", raw)
    return snake.lower()


def _describe_pass(pass_: PassBase) -> str:
    if isinstance(pass_, FunctionPass):
        return _qualified_name(pass_.function) + "()"
    cls = type(pass_)
    if cls.__module__.startswith("fxdelegate."):
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def _qualified_name(function: object) -> str:
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", None) or repr(function)
    return f"{module}.{name}" if module and module != "__main__" else name


def _contract(pass_: PassBase) -> list[tuple[str, str]]:
    """('requires'|'ensures', description) for each check the pass defines: the
    first paragraph of the method's docstring, or a note that it has none."""
    found = []
    for kind in ("requires", "ensures"):
        method = getattr(type(pass_), kind, None)
        if method is None or method is getattr(PassBase, kind):
            continue
        doc = inspect.cleandoc(method.__doc__) if method.__doc__ else ""  # not inherited
        text = " ".join(doc.split("\n\n")[0].split()) if doc else "(checked; undocumented)"
        found.append((kind, text))
    return found
