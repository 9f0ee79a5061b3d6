"""Peak allocator bytes of a call, from torch.profiler's memory events.

Every CPU allocation through c10's allocator is reported while profiling
(those made inside AOTInductor-compiled code as well), with a timestamp and
a signed size. Replaying them in time order gives the peak of live bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.profiler import ProfilerActivity, profile


def peak_allocated_bytes(fn: Callable[[], Any]) -> int:
    """Highest number of bytes allocated at once while `fn` runs (its result included)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
        del result
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak
