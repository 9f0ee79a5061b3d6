"""Choose, from measured costs, which backend (or the executor) runs each stretch of a region.

A *unit* is a maximal convex region of nodes that some backend of the list
supports. Its nodes, in graph order, fall into *blocks*: runs of nodes that
the same set of backends supports, cut further where an anchor op (a
convolution, a matmul, a norm: see :func:`blocks_of`) begins. Any run of consecutive blocks
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


def blocks_of(
    supported_by: list[tuple[str, ...]],
    anchors: list[bool] | None = None,
    max_per_run: int = 4,
) -> list[tuple[int, int]]:
    """The unit's blocks as [(first, stop), ...] node ranges.

    A block never mixes backend sets: runs of consecutive nodes with the same set
    are cut apart first. With `anchors`, a run is cut further into *groups*: each
    anchor node (one whose kernel a backend does not fuse into its neighbours: a
    convolution, a matmul, a pooling, a norm) starts a group, and the nodes after
    it up to the next anchor (its pointwise epilogue, views) join it. Each group
    is a place where one backend may hand over to another. Because every block
    costs compiles to measure, a run's groups are merged into at most
    `max_per_run` blocks of equal numbers of groups (the first blocks take one
    more where they do not divide evenly).
    """
    runs: list[tuple[int, int]] = []
    for i, backends in enumerate(supported_by):
        if runs and supported_by[runs[-1][0]] == backends:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    if anchors is None:
        return runs
    blocks: list[tuple[int, int]] = []
    for first, stop in runs:
        starts = [first] + [i for i in range(first + 1, stop) if anchors[i]]
        groups = [(a, b) for a, b in zip(starts, [*starts[1:], stop])]
        count = min(max_per_run, len(groups))
        size, extra = divmod(len(groups), count)
        at = 0
        for b in range(count):
            take = size + (1 if b < extra else 0)
            blocks.append((groups[at][0], groups[at + take - 1][1]))
            at += take
    return blocks


def segments_of(
    unit: int,
    nodes: list[str],
    supported_by: list[tuple[str, ...]],
    backend_order: list[str],
    anchors: list[bool] | None = None,
    max_blocks: int = 8,
) -> list[Segment]:
    """Every run of at most `max_blocks` consecutive blocks that some backend supports
    whole, in the order a time budget should measure them: the whole unit first
    (when a backend supports all of it), then each block alone (with those, the
    search can already hand over between backends at every block), then longer
    runs before shorter ones (they keep what a backend fuses across blocks)."""
    blocks = blocks_of(supported_by, anchors)
    lengths = [len(blocks)] + ([1] if len(blocks) > 1 else []) + list(range(len(blocks) - 1, 1, -1))
    found = []
    for length in lengths:
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
