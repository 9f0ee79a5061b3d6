"""Choose, from measured costs, which backend (or the executor) runs each stretch of a region.

A *unit* is a maximal convex region of nodes that some backend of the list
supports. Its nodes, in graph order, fall into *blocks*: maximal runs of
nodes that the same set of backends supports. Any run of consecutive blocks
is convex (a contiguous stretch of a topological order of a convex set), so
every such run is a candidate *segment*, and every backend that supports all
of it is a candidate to run it. The plan is a shortest path over the unit's
cut points 0..k: an edge i -> j is segment blocks[i:j] run by one candidate,
weighted by its measured seconds. Segments that were not measured (the time
budget ran out) are not edges; the whole unit in the executor always is.
Ties go to the earlier candidate in a fixed order (executor first, then the
backends in list order, then their option variants), so the same measurements
always give the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXECUTOR = "executor"


@dataclass(frozen=True)
class Segment:
    """Blocks `start`..`stop` (exclusive) of unit `unit`, with the node names they hold."""

    unit: int
    start: int
    stop: int
    nodes: tuple[str, ...]
    # Backends that support every node of the segment, in list order.
    backends: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"unit{self.unit}[{self.start}:{self.stop}]"


@dataclass(frozen=True)
class Choice:
    """Who runs a segment: the executor, or a backend with one option variant."""

    backend_id: str  # EXECUTOR for the executor
    variant: int = 0  # index into the backend's option variants

    @property
    def label(self) -> str:
        if self.backend_id == EXECUTOR:
            return EXECUTOR
        return self.backend_id if self.variant == 0 else f"{self.backend_id}#{self.variant}"


@dataclass
class Decision:
    """One segment of the chosen plan, with every alternative measured for it."""

    segment: Segment
    choice: Choice
    seconds: float
    alternatives: dict[str, float] = field(default_factory=dict)  # label -> seconds
    why: str = ""


def blocks_of(supported_by: list[tuple[str, ...]]) -> list[tuple[int, int]]:
    """Runs of consecutive nodes with the same backend set: [(first, stop), ...]."""
    runs: list[tuple[int, int]] = []
    for i, backends in enumerate(supported_by):
        if runs and supported_by[runs[-1][0]] == backends:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def segments_of(
    unit: int,
    nodes: list[str],
    supported_by: list[tuple[str, ...]],
    backend_order: list[str],
    max_blocks: int = 8,
) -> list[Segment]:
    """Every run of at most `max_blocks` consecutive blocks that some backend supports
    whole, the whole unit first (when a backend supports all of it), then longer runs
    before shorter ones: the order in which a time budget should measure them."""
    blocks = blocks_of(supported_by)
    found = []
    for length in range(len(blocks), 0, -1):
        if length > max_blocks and length != len(blocks):
            continue
        for start in range(len(blocks) - length + 1):
            stop = start + length
            common = set(supported_by[blocks[start][0]])
            for b in range(start, stop):
                common &= set(supported_by[blocks[b][0]])
            if not common:
                continue
            names = tuple(nodes[blocks[start][0] : blocks[stop - 1][1]])
            ordered = tuple(b for b in backend_order if b in common)
            found.append(Segment(unit, start, stop, names, ordered))
    return found


def choose(
    n_blocks: int,
    costs: dict[Segment, dict[Choice, float]],
    executor_block_costs: list[float],
) -> list[tuple[Segment | None, int, int, Choice, float]]:
    """The cheapest cover of blocks 0..n_blocks of one unit.

    `costs` holds the measured segments of this unit; `executor_block_costs[b]`
    is block b's cost in the executor (blocks left to the executor need no
    segment of their own). Returns (segment or None, start, stop, choice,
    seconds) in block order."""
    inf = float("inf")
    best = [inf] * (n_blocks + 1)
    back: list[tuple[int, Segment | None, Choice, float] | None] = [None] * (n_blocks + 1)
    best[0] = 0.0
    edges: dict[int, list[tuple[int, Segment | None, Choice, float]]] = {}
    for b in range(n_blocks):
        edges.setdefault(b, []).append((b + 1, None, Choice(EXECUTOR), executor_block_costs[b]))
    for segment in sorted(costs, key=lambda s: (s.start, s.stop)):
        for choice, seconds in costs[segment].items():
            if choice.backend_id != EXECUTOR:
                edges.setdefault(segment.start, []).append((segment.stop, segment, choice, seconds))
    for i in range(n_blocks):
        if best[i] == inf:
            continue
        for j, segment, choice, seconds in edges.get(i, []):
            # Strictly cheaper only: the first edge listed wins a tie.
            if best[i] + seconds < best[j]:
                best[j] = best[i] + seconds
                back[j] = (i, segment, choice, seconds)
    path = []
    j = n_blocks
    while j > 0:
        step = back[j]
        assert step is not None
        i, segment, choice, seconds = step
        path.append((segment, i, j, choice, seconds))
        j = i
    return path[::-1]
