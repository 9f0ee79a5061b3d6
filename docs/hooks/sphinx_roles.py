"""Griffe extension: Sphinx roles in docstrings shown as code in the API reference.

The docstrings use reStructuredText roles (``:class:`PassPipeline```,
``:meth:`insert_before```), which Markdown would print as they are. Each
becomes inline code with the name it refers to (``~`` keeps the last part only,
as Sphinx does).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|exc|data|obj|const):`(~?)([^`]+)`")


def _as_code(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target.lstrip('.')}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_as_code, obj.docstring.value)
