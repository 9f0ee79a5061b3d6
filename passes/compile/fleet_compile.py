"""One compile per fleet: machines that miss the same regions split them.

Each machine claims (in Redis, with a timeout it keeps refreshing while it
compiles) at most as many regions as it compiles at once, compiles them and
publishes the results, then claims the next regions nobody holds. Regions
claimed by others are fetched once published. A claim whose holder died
expires and is taken over; a machine that has waited `wait_seconds` without
progress compiles what is left itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fxdelegate.runtime.backend import RegionArtifact

from .parallel_compile import CompileJob
from .tiered_cache import RegionCache

log = logging.getLogger("fxdelegate.cache")


def compile_across_fleet(
    jobs: list[CompileJob],
    cache: RegionCache,
    compile_batch: Callable[[list[CompileJob]], None],
    fetched: Callable[[CompileJob, RegionArtifact], None],
    batch_size: int,
) -> None:
    """Resolve every job: compiled here (`compile_batch`) or fetched (`fetched`)."""
    remote = cache.remote
    assert remote is not None
    pending = list(jobs)
    progress = time.monotonic()

    def fetch(job: CompileJob) -> bool:
        artifact = cache.lookup_remote(job.key) if remote.has(job.key) else None
        if artifact is None:
            return False
        fetched(job, artifact)
        return True

    while pending:
        if remote.down:
            compile_batch(pending)
            return
        done = {job.key for job in pending if fetch(job)}
        claimed: list[CompileJob] = []
        for job in pending:
            if len(claimed) == batch_size:
                break
            if job.key in done or not remote.claim(job.key):
                continue
            if fetch(job):  # published between our look and our claim
                remote.release(job.key)
                done.add(job.key)
                continue
            claimed.append(job)
        if claimed:
            log.info("compiling %d region(s) that no other machine has claimed", len(claimed))
            with remote.holding([job.key for job in claimed]):
                compile_batch(claimed)
            done.update(job.key for job in claimed)
        pending = [job for job in pending if job.key not in done]
        if done:
            progress = time.monotonic()
            continue
        if time.monotonic() - progress > remote.options.wait_seconds:
            log.warning(
                "waited %.0f s for other machines' compiles of %d region(s); compiling them here",
                remote.options.wait_seconds,
                len(pending),
            )
            compile_batch(pending)
            return
        time.sleep(remote.options.poll_seconds)
