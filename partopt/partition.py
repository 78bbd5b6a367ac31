"""Partition dynamic programs shared by the heuristics.

A *partition* splits the chain's blocks into contiguous stages; it is given
by the cuts it takes (cut ``c`` separates block ``c`` from block ``c + 1``).
These functions choose partitions without looking at the cluster's links:

* :func:`min_sum_partition` — the partition the original work (SEIFER)
  places: fewest bytes sent in total, every stage within one capacity, and at
  most ``max_stages`` stages. The stage limit is part of the DP state, so a
  partition with more stages never hides a feasible one with fewer.
* :func:`min_max_partition` — the bottleneck-aware alternative: smallest
  largest transfer first, then the smallest sum.
* :func:`original_min_sum_partition` — the original code's DP with its
  defects available as switches (a memo keyed by start block only, so the
  stage limit is only checked after the fact; a memo that can outlive a
  call; a memory sum that skips one block per cut), for ``seifer-original``.

Every function returns the sorted cuts taken, or ``None`` when no partition
satisfies the constraints.

References
----------
Parthasarathy, A. and Krishnamachari, B. (2022). Partitioning and placement
of deep neural networks on distributed edge devices to maximize inference
throughput. ITNAC 2022 (arXiv:2210.12219). Section "Partitioning".
"""

from __future__ import annotations

import math

import numpy as np

from partopt.feasibility import farthest_ends, min_stages
from partopt.problem import Problem

__all__ = [
    "min_sum_partition",
    "min_max_partition",
    "original_min_sum_partition",
    "stage_fits_matrix",
    "stage_windows",
]


def stage_windows(
    problem: Problem, capacity_bytes: float, *, skip_block_memory: bool | str = False
) -> tuple[np.ndarray, np.ndarray]:
    """The valid stages for ``capacity_bytes`` as windows, ``O(B)`` memory.

    Returns ``(ends, last_ok)``: a stage of blocks ``i..j`` that is not the
    last one (``j < B - 1``) is valid iff ``i <= j <= ends[i]``; the last
    stage ``i..B-1`` is valid iff ``last_ok[i]``. ``ends`` never decreases
    with ``i`` (a stage that starts later needs no more memory), which is
    what lets the partition DPs take window minima instead of scanning a
    ``B x B`` table.

    ``skip_block_memory`` charges stages as :func:`stage_fits_matrix` says
    (``"after"``: blocks ``i+1..j``; ``True``/``"before"``: ``i..j-1`` for a
    stage that is not the last one).
    """
    b = problem.num_blocks
    far = farthest_ends(problem, capacity_bytes)
    if skip_block_memory == "after":
        # start i is charged from block i + 1 on; a one-block stage costs 0
        ends = np.maximum(np.append(far[1:], b - 1), np.arange(b))
        return np.minimum(ends, b - 2), ends >= b - 1
    if skip_block_memory not in (False, True, "before"):
        raise ValueError(
            f"skip_block_memory must be False, True, 'before' or 'after', got {skip_block_memory!r}"
        )
    ends = far + 1 if skip_block_memory else far
    return np.minimum(ends, b - 2), far >= b - 1


def _windows_from_fits(fits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`stage_windows` of a dense ``fits`` table; ``ValueError`` unless it has that shape."""
    fits = np.asarray(fits, dtype=bool)
    b = fits.shape[0]
    if fits.shape != (b, b):
        raise ValueError(f"fits must be a square table, got shape {fits.shape}")
    idx = np.arange(b)
    ends = np.full(b, -1)
    for i in range(b - 1):
        row = fits[i, i : b - 1]
        stop = np.flatnonzero(~row)
        ends[i] = i - 1 + (stop[0] if len(stop) else len(row))
    ends = np.maximum(ends, idx - 1)
    ends[b - 1 :] = b - 2
    rebuilt = _fits_from_windows(ends, fits[:, b - 1])
    if not np.array_equal(rebuilt, fits) or np.any(np.diff(ends) < 0):
        raise ValueError(
            "fits must describe windows: row i true exactly for i..end[i], end[i] non-decreasing"
        )
    return ends, fits[:, b - 1].copy()


def _fits_from_windows(ends: np.ndarray, last_ok: np.ndarray) -> np.ndarray:
    b = len(ends)
    idx = np.arange(b)
    fits = (idx[None, :] >= idx[:, None]) & (idx[None, :] <= ends[:, None])
    fits[:, b - 1] = last_ok
    return fits


def stage_fits_matrix(
    problem: Problem, capacity_bytes: float, *, skip_block_memory: bool | str = False
) -> np.ndarray:
    """``fits[i, j]``: a stage of blocks ``i..j`` fits ``capacity_bytes`` (false for ``j < i``).

    The dense ``B x B`` form of :func:`stage_windows` (same options), for
    small chains and tests; the DPs here work on the windows.

    ``skip_block_memory`` charges a stage less than its memory, as a defect:

    * ``"after"`` (the original code's): every stage is charged for blocks
      ``i+1..j`` only. Its ``partition_mems[k]`` covered the layers after
      cut point ``k`` up to point ``k + 1`` and a stage ``(i, j)`` summed
      ``partition_mems[i:j-1]``, so the segment right after each cut is
      free, and a one-block stage costs 0;
    * ``True`` or ``"before"``: a stage that is not the last one is charged
      for blocks ``i..j-1`` only (the segment before each cut is free).

    Examples
    --------
    >>> from partopt.chain import Chain
    >>> from partopt.cluster import Cluster
    >>> p = Problem(Chain.from_arrays([2, 2, 2], [1.0, 1.0]),
    ...             Cluster.uniform(2, memory_bytes=2, bandwidth_mbps=1.0))
    >>> stage_fits_matrix(p, 2).astype(int).tolist()
    [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    >>> stage_fits_matrix(p, 2, skip_block_memory=True).astype(int).tolist()
    [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    >>> stage_fits_matrix(p, 2, skip_block_memory="after").astype(int).tolist()
    [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    """
    return _fits_from_windows(
        *stage_windows(problem, capacity_bytes, skip_block_memory=skip_block_memory)
    )


def _allowed_mask(problem: Problem, allowed_cuts) -> np.ndarray:
    b = problem.num_blocks
    if allowed_cuts is None:
        return np.ones(b - 1, dtype=bool)
    allowed = np.asarray(allowed_cuts, dtype=bool)
    if allowed.shape != (b - 1,):
        raise ValueError(f"allowed_cuts needs {b - 1} entries, got {allowed.shape}")
    return allowed


def _range_argmin(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``argmin(values[lo[j] : hi[j] + 1]) + lo[j]`` for every ``j`` (first minimum on ties).

    A sparse table of argmins, ``O(B log B)``; requires ``lo <= hi``.
    """
    table = [np.arange(len(values))]
    k = 1
    while (1 << k) <= len(values):
        prev, half = table[-1], 1 << (k - 1)
        a, c = prev[: len(prev) - half], prev[half:]
        table.append(np.where(values[a] <= values[c], a, c))
        k += 1
    span = hi - lo + 1
    level = np.floor(np.log2(np.maximum(span, 1))).astype(int)
    out = np.empty(len(lo), dtype=int)
    for kk in np.unique(level):
        sel = level == kk
        a = table[kk][lo[sel]]
        c = table[kk][hi[sel] - (1 << kk) + 1]
        out[sel] = np.where(values[a] <= values[c], a, c)
    return out


def min_sum_partition(
    problem: Problem,
    capacity_bytes: float,
    max_stages: int,
    allowed_cuts=None,
    fits=None,
    *,
    windows: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[int] | None:
    """Cuts of the partition with the smallest total transfer and at most ``max_stages`` stages.

    Every stage must fit ``capacity_bytes`` (memory model of ``problem``),
    or, if given, lie in ``windows`` (see :func:`stage_windows`) or satisfy
    ``fits`` (the same windows as a dense table, :func:`stage_fits_matrix`);
    only cuts where ``allowed_cuts`` (boolean mask over the ``B - 1`` cuts)
    is true may be taken. Among partitions with the same total, the one with
    fewer stages wins, then the one whose last stages start earliest.

    The DP runs over "at most ``s`` stages" for ``s = 1, 2, ...``:
    ``cost_s[j]`` is the least total transfer covering blocks ``0..j`` with
    at most ``s`` stages, so the stage limit is respected exactly; it stops
    early once a round improves nothing (no later round can). The stages
    that may end at block ``j`` start in a window ``[lo_j, j]``, so every
    round is one range-minimum query per block: ``O(B log B)`` time and
    memory per round, never a ``B x B`` table.

    Examples
    --------
    >>> from partopt.chain import Chain
    >>> from partopt.cluster import Cluster
    >>> p = Problem(Chain.from_arrays([2, 2, 2, 2], [5.0, 1.0, 5.0]),
    ...             Cluster.uniform(3, memory_bytes=4, bandwidth_mbps=1.0))
    >>> min_sum_partition(p, 4, 3), min_sum_partition(p, 2, 3)
    ([1], None)
    """
    b = problem.num_blocks
    if max_stages < 1:
        return None
    t = problem.transfer_bytes
    allowed = _allowed_mask(problem, allowed_cuts)
    if windows is None:
        windows = (
            stage_windows(problem, capacity_bytes) if fits is None else _windows_from_fits(fits)
        )
    ends, last_ok = (np.asarray(w) for w in windows)
    if b == 1:
        return [] if last_ok[0] else None
    # Entering a stage that starts at block i > 0 costs the transfer of cut i - 1.
    enter = np.full(b, math.inf)
    enter[0] = 0.0
    enter[1:] = np.where(allowed, t, math.inf)

    inf = math.inf
    idx = np.arange(b)
    body = idx[: b - 1]  # stages ending before the last block
    lo = np.searchsorted(ends, body, side="left")  # first start whose window reaches j
    has_start = lo <= body
    lo_q, hi_q = np.minimum(lo, body), body
    last_starts = np.flatnonzero(last_ok)

    cost = np.full(b, inf)  # at most one stage
    cost[: b - 1] = np.where(ends[0] >= body, 0.0, inf)
    cost[b - 1] = 0.0 if last_ok[0] else inf
    parents: list[np.ndarray] = [np.full(b, -1)]  # start block of the last stage, per round
    rounds = [cost]
    for _ in range(2, min(max_stages, b) + 1):
        prev = rounds[-1]
        before = np.full(b, inf)
        before[1:] = prev[:-1]  # cover 0..i-1, then cut i-1
        start_cost = before + enter  # a new stage starting at block i
        best_start = np.zeros(b, dtype=int)
        best_start[: b - 1] = _range_argmin(start_cost, lo_q, hi_q)
        best = np.full(b, inf)
        best[: b - 1] = np.where(has_start, start_cost[best_start[: b - 1]], inf)
        if len(last_starts):
            k = int(last_starts[np.argmin(start_cost[last_starts])])
            best_start[b - 1], best[b - 1] = k, start_cost[k]
        improved = best < prev
        if not improved.any():
            break
        rounds.append(np.where(improved, best, prev))
        parents.append(np.where(improved, best_start, -2))  # -2: same as previous round
    s = len(rounds) - 1
    if not math.isfinite(rounds[s][b - 1]):
        return None
    cuts: list[int] = []
    j = b - 1
    while j >= 0:
        while s > 0 and parents[s][j] == -2:
            s -= 1
        if s == 0:
            break
        i = int(parents[s][j])
        cuts.append(i - 1)
        j, s = i - 1, s - 1
    return sorted(cuts)


def min_max_partition(problem: Problem, capacity_bytes: float, max_stages: int) -> list[int] | None:
    """Cuts of the partition whose largest transfer is smallest, ties broken by smallest sum.

    Binary search over the sorted distinct transfers: a threshold is
    achievable iff the greedy partition that only cuts where the transfer is
    at most the threshold needs at most ``max_stages`` stages
    (:func:`partopt.feasibility.min_stages`); then :func:`min_sum_partition`
    restricted to those cuts.

    Examples
    --------
    >>> from partopt.chain import Chain
    >>> from partopt.cluster import Cluster
    >>> p = Problem(Chain.from_arrays([2, 2, 2, 2], [3.0, 4.0, 3.0]),
    ...             Cluster.uniform(3, memory_bytes=4, bandwidth_mbps=1.0))
    >>> min_sum_partition(p, 4, 3), min_max_partition(p, 4, 3)
    ([1], [0, 2])
    """
    b = problem.num_blocks
    t = problem.transfer_bytes
    if min_stages(problem, capacity_bytes, np.zeros(b - 1, dtype=bool)) <= min(1, max_stages):
        return []
    values = np.unique(t)
    if len(values) == 0 or min_stages(problem, capacity_bytes) > max_stages:
        return None
    lo, hi = 0, len(values) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if min_stages(problem, capacity_bytes, t <= values[mid]) <= max_stages:
            hi = mid
        else:
            lo = mid + 1
    return min_sum_partition(problem, capacity_bytes, max_stages, t <= values[lo])


def original_min_sum_partition(
    problem: Problem,
    capacity_bytes: float,
    max_stages: int,
    *,
    memo: dict | None = None,
    skip_block_memory: bool | str = False,
) -> list[int] | None:
    """The original code's partition DP, defects included.

    The original builds a DAG of memory-feasible stages and finds, by
    memoised recursion, the minimum-sum path from every first stage to the
    end of the chain. Its memo is keyed by the block where the rest of the
    chain starts and holds the single cheapest continuation *regardless of
    how many stages it has*; the stage limit ``max_stages`` is only checked
    on the finished candidates (one per first stage), so an instance whose
    cheapest continuation has too many stages is declared infeasible even
    when a partition within the limit exists.

    Parameters
    ----------
    memo
        The memo, ``{start block: (stage starts, cost)}``. The original kept
        it on an object reused across calls and never cleared it, so entries
        computed under one capacity are reused under the next: pass the same
        dict to reproduce that (entries then ignore ``capacity_bytes``).
        ``None`` uses a fresh memo.
    skip_block_memory
        The memory sum that leaves one block per stage uncharged, as the
        original's ``partition_mems[i:j-1]`` did: ``"after"`` (the original's:
        the first block of every stage, the segment right after its cut) or
        ``True`` (the last block of every stage but the last); see
        :func:`stage_fits_matrix`.

    Returns
    -------
    The sorted cuts, or ``None`` (the original raised ``MemoryError``).
    Ties go to the shorter stage, as the original iterated stages in order
    and kept the first strictly better one.
    """
    b = problem.num_blocks
    memo = {} if memo is None else memo
    t = problem.transfer_bytes
    win_end, last_ok = stage_windows(problem, capacity_bytes, skip_block_memory=skip_block_memory)

    def stage_ends(i: int) -> list[int]:
        """Last blocks ``j`` of the valid stages ``i..j``, in order."""
        out = list(range(i, int(win_end[i]) + 1))
        return [*out, b - 1] if last_ok[i] else out

    def continuation(i: int, j: int) -> tuple[tuple[int, ...], float] | None:
        """Stages i..j then the memoised rest, or None if the rest is impossible."""
        if j == b - 1:
            return (i,), 0.0
        rest, cost = memo[j + 1]
        return ((i, *rest), float(t[j]) + cost) if rest else None

    def fill(root: int) -> None:
        """Fill ``memo`` for every start block reachable from ``root`` (the original recursion,
        made iterative so that long chains do not hit Python's recursion limit)."""
        stack = [root]
        while stack:
            i = stack[-1]
            if i in memo:
                stack.pop()
                continue
            ends = stage_ends(i)
            missing = [int(j) + 1 for j in ends if j < b - 1 and int(j) + 1 not in memo]
            if missing:
                stack.extend(reversed(missing))
                continue
            stack.pop()
            best: tuple[tuple[int, ...], float] = ((), math.inf)
            for j in ends:
                cand = continuation(i, int(j))
                if cand is not None and cand[1] < best[1]:
                    best = cand
            memo[i] = best

    best_starts: tuple[int, ...] = ()
    best_cost = math.inf
    for j in stage_ends(0):  # every first stage 0..j is a root of the original DAG
        if j < b - 1:
            fill(j + 1)
        cand = continuation(0, j)
        if cand is None or len(cand[0]) > max_stages:
            continue  # the stage limit, checked only here
        if cand[1] < best_cost:
            best_starts, best_cost = cand
    if not best_starts:
        return None
    return [s - 1 for s in best_starts[1:]]
