"""Pause Python's cyclic garbage collector while a large graph is being built.

Partitioning and lowering allocate a few small objects per node (lists, dicts,
FX nodes, generated code). With the collector on, every few hundred
allocations trigger a collection, and the oldest generation, which holds the
whole FX graph, is rescanned again and again: time that grows with the square
of the graph. Nothing these steps build is garbage until they finish, so the
collector waits until then.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic collection inside the block (nests; restores the previous state)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
