"""The module an `executorch_call_delegate` node points at."""

from __future__ import annotations

from typing import Any

import torch
from torch.export import ExportedProgram


class LoweredBackendModule(torch.nn.Module):
    """One lowered region: the region's own ExportedProgram plus its compiled artifact.

    The class name matters: torch's serializer writes a get_attr to a module of
    this name as the string ``"<module_name>-<backend_id>"`` and torch's verifier
    accepts it as the first argument of ``executorch_call_delegate``.
    """

    def __init__(
        self,
        original_exported_program: ExportedProgram,
        backend_id: str,
        *,
        module_name: str,
        artifact: Any = None,
        compile_specs: list[Any] | None = None,
    ) -> None:
        super().__init__()
        self._backend_id = backend_id
        self._module_name = module_name
        self._original_exported_program = original_exported_program
        self.artifact = artifact
        # The verifier accepts non-"aoti" backend ids only with these two fields.
        self.processed_bytes = self.key.encode()
        self.compile_specs = list(compile_specs or [])

    @property
    def backend_id(self) -> str:
        return self._backend_id

    @property
    def module_name(self) -> str:
        return self._module_name

    @property
    def original_module(self) -> ExportedProgram:
        return self._original_exported_program

    @property
    def key(self) -> str:
        """The name the archive stores this region under: ``<module_name>-<backend_id>``."""
        return f"{self._module_name}-{self._backend_id}"

    def forward(self, *args: Any) -> Any:
        return torch.ops.higher_order.executorch_call_delegate(self, *args)


def delegate_key(first_arg: Any, owner: torch.nn.Module | None = None) -> str:
    """The region key of an executorch_call_delegate node's first argument.

    Before saving it is a get_attr node to a LoweredBackendModule; after loading
    an archive it is the string the serializer wrote.
    """
    if isinstance(first_arg, str):
        return first_arg
    if isinstance(first_arg, torch.fx.Node) and first_arg.op == "get_attr" and owner is not None:
        first_arg = getattr(owner, first_arg.target)  # type: ignore[arg-type]
    if isinstance(first_arg, LoweredBackendModule):
        return first_arg.key
    if type(first_arg).__name__ == "LoweredBackendModule":
        return f"{first_arg.module_name}-{first_arg.backend_id}"
    raise TypeError(f"cannot read a delegate key from {first_arg!r}")
