"""Valid lower bounds on the optimal bottleneck (seconds per inference).

Every function here returns a number that no valid plan can beat; the
argument is in each docstring.  :func:`lower_bound_s` is the best of them.

(a) :func:`transfer_bound_s` - the best achievable largest transfer over the
    best link in the cluster;
(b) :func:`distinct_links_bound_s` - the cuts of a plan use *distinct*
    links (node pairs) of one simple path, so the ``j``-th largest transfer
    goes over a link no better than the ``j``-th best node pair;
(c) :func:`compute_bound_s` - with the ``max`` objective, the compute time
    of the stages (fastest node, and total work over total speed).

All are relaxations that keep the memory rule (with the largest node's
capacity) and the stage limit ``N``; all return 0 when one stage can hold
the whole chain under the communication objective, and ``inf`` only when
no partition at all exists.

Examples
--------
>>> from partopt import Chain, Cluster, Problem
>>> import numpy as np
>>> bw = np.array([[0, 8.0, 1.0], [8.0, 0, 1.0], [1.0, 1.0, 0]])
>>> p = Problem(Chain.from_arrays([2, 2, 2], [1e6, 1e6]),
...             Cluster(("a", "b", "c"), np.full(3, 2.0), bw))
>>> transfer_bound_s(p), distinct_links_bound_s(p)
(1.0, 8.0)
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from partopt.feasibility import farthest_ends, greedy_stage_count, min_stages
from partopt.problem import Problem

if TYPE_CHECKING:
    from partopt.dag import DagProblem

__all__ = [
    "min_max_transfer_bytes",
    "transfer_bound_s",
    "distinct_links_bound_s",
    "compute_bound_s",
    "lower_bound_s",
    "pair_bandwidths_mbps",
]

MATCH_DEPTH = 8
"""How many of the largest transfers bound (b) matches against the best node pairs."""


def min_max_transfer_bytes(problem: Problem) -> float:
    """Smallest possible largest transfer (bytes) over memory-feasible partitions.

    A partition is memory-feasible here when it has at most ``N`` stages and
    every stage fits the *largest* node (a relaxation of the real rule).
    Binary search over the sorted distinct transfers: a threshold ``t`` is
    achievable iff the greedy partition that only cuts where the transfer is
    at most ``t`` needs ``<= N`` stages. Returns 0 when one stage suffices
    and ``inf`` when no partition exists.
    """
    cap = float(problem.cluster.memory_bytes.max())
    n = problem.num_nodes
    t = problem.transfer_bytes
    if min_stages(problem, cap, np.zeros(len(t), dtype=bool)) <= 1:
        return 0.0
    values = np.unique(t)
    if len(values) == 0:  # one block that fits no node
        return float("inf")
    lo, hi = 0, len(values) - 1
    if min_stages(problem, cap, t <= values[hi]) > n:
        return float("inf")
    while lo < hi:
        mid = (lo + hi) // 2
        if min_stages(problem, cap, t <= values[mid]) <= n:
            hi = mid
        else:
            lo = mid + 1
    return float(values[lo])


def transfer_bound_s(problem: Problem) -> float:
    """Bound (a): the min-max transfer over the fastest link in the cluster.

    Any plan with two or more stages sends its largest cut over some link,
    which is no faster than the best link; a one-stage plan is only possible
    when the bound's partition search says so (then the bound is 0).
    """
    tmax = min_max_transfer_bytes(problem)
    if tmax == 0.0:
        return 0.0
    best = float(problem.cluster.bandwidth_mbps.max())
    if best <= 0:
        return float("inf")
    return tmax * 8.0 / (best * 1e6)


# -- bound (b) --------------------------------------------------------------


def pair_bandwidths_mbps(problem: Problem, most: int | None = None) -> np.ndarray:
    """Best bandwidth of every linked unordered node pair, sorted from best to worst.

    A pair ``{u, v}`` counts once with ``max(bw[u, v], bw[v, u])``: a simple
    path crosses a pair at most once, in one direction. With ``most``, only
    the ``most`` best pairs are returned. The matrix is read in row blocks,
    each keeping its ``most`` best pairs (``numpy.argpartition``), so the
    extra memory is one block plus ``most`` values, not a copy of the matrix.
    """
    bw = problem.cluster.bandwidth_mbps
    n = problem.num_nodes
    keep = None if most is None else max(0, int(most))
    rows = max(1, 2**20 // max(n, 1))
    cols = np.arange(n)
    parts: list[np.ndarray] = []
    best = np.empty(0)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        block = np.maximum(bw[r0:r1], bw[:, r0:r1].T)
        upper = cols[None, :] > np.arange(r0, r1)[:, None]  # each unordered pair once
        vals = block[upper & (block > 0)]
        if keep is None:
            parts.append(vals)
            continue
        vals = np.concatenate([best, vals])
        if keep == 0:
            vals = vals[:0]
        elif len(vals) > keep:
            vals = vals[np.argpartition(vals, len(vals) - keep)[len(vals) - keep :]]
        best = vals
    out = np.concatenate(parts) if keep is None and parts else best
    return np.sort(out)[::-1]


def _compute_ends(
    problem: Problem, mem_end: np.ndarray, speed: float, limit_s: float
) -> np.ndarray:
    """``mem_end`` shortened so that every stage also computes within ``limit_s`` on ``speed``."""
    b = problem.num_blocks
    p = problem._flops_prefix
    first = np.arange(b)
    lo, hi = first - 1, np.full(b, b)
    while True:
        open_ = hi - lo > 1
        if not open_.any():
            break
        mid = (lo + hi) // 2
        ok = (p[np.clip(mid, 0, b - 1) + 1] - p[first]) / speed <= limit_s
        lo = np.where(open_ & ok, mid, lo)
        hi = np.where(open_ & ~ok, mid, hi)
    return np.minimum(mem_end, lo)


def _min_marked_cuts(ends: np.ndarray, allowed: np.ndarray, marked: np.ndarray) -> float:
    """Fewest ``marked`` cuts over partitions with windows ``ends`` that cut only where ``allowed``.

    Dynamic program over stage starts with a sliding-window minimum: the
    stages that may end at cut ``j`` start in ``[first(j), j]`` because the
    windows are monotone.
    """
    b = len(ends)
    inf = math.inf
    d = [inf] * b  # d[i]: fewest marked cuts before a stage starting at block i
    d[0] = 0.0
    window: deque[int] = deque()  # starts with increasing d, candidates for the current cut
    nxt = 0  # next start to push
    for j in range(b - 1):  # cut j ends a stage, the next stage starts at j + 1
        while nxt <= j:
            if d[nxt] < inf and ends[nxt] >= nxt:
                while window and d[window[-1]] >= d[nxt]:
                    window.pop()
                window.append(nxt)
            nxt += 1
        while window and ends[window[0]] < j:
            window.popleft()
        if allowed[j] and window:
            d[j + 1] = d[window[0]] + (1.0 if marked[j] else 0.0)
    best = inf
    for i in range(b):
        if ends[i] >= b - 1 and d[i] < best:
            best = d[i]
    return best


def _relaxation_feasible(problem, theta, pairs, depth, mem_end, smax) -> bool:
    """Whether the relaxation of bound (b) (and (c) with compute) admits bottleneck ``theta``."""
    t = problem.transfer_bytes
    ends = mem_end if smax is None else _compute_ends(problem, mem_end, smax, theta)
    if (ends < np.arange(len(ends))).any():
        return False  # some block cannot start a stage at all
    # ok[j, c]: cut c could cross the (j+1)-th best pair within theta.
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (t[None, :] * 8.0) / (pairs[: depth + 1, None] * 1e6) <= theta
    kappa = ok.sum(axis=0)  # pairs good enough for each cut, capped at depth + 1
    allowed = kappa >= 1
    if greedy_stage_count(ends, allowed) > problem.num_nodes:
        return False
    for r in range(1, min(depth, len(pairs)) + 1):
        marked = kappa <= r
        if not marked.any():
            break
        if _min_marked_cuts(ends, allowed, marked) > r:
            return False
    return True


def distinct_links_bound_s(problem: Problem, depth: int = MATCH_DEPTH) -> float:
    """Bound (b): sorted transfers against sorted node-pair bandwidths.

    Argument. Let :math:`b_1 \\ge b_2 \\ge \\dots` be the best bandwidths of
    the linked unordered node pairs (:func:`pair_bandwidths_mbps`). The
    cuts of a plan are sent over the consecutive pairs of a simple path,
    which are distinct. The ``j`` largest transfers of the plan, each at
    least :math:`T_{(j)}`, use ``j`` distinct pairs, and at most ``j - 1``
    pairs are better than :math:`b_j`; so some cut sends at least
    :math:`T_{(j)}` bytes over a link of at most :math:`b_j` Mbit/s and the
    bottleneck is at least :math:`\\max_j 8 T_{(j)} / (b_j 10^6)`.

    Made valid over all partitions: a threshold :math:`\\theta` survives
    only if some partition (stages fitting the largest node, at most ``N``
    of them) satisfies the matching condition. With
    :math:`\\kappa_c` = number of pairs over which cut :math:`c` alone takes
    :math:`\\le \\theta`, the condition is Hall's: for every ``r``, at most
    ``r`` chosen cuts have :math:`\\kappa_c \\le r` (and none has
    :math:`\\kappa_c = 0`). The test checks the stage limit with the
    allowed cuts (greedy) and, for each ``r <= depth`` separately, the
    fewest cuts with :math:`\\kappa_c \\le r` any partition needs (a
    dynamic program); checking the conditions separately is a relaxation,
    so the bound stays valid. The smallest surviving candidate value
    :math:`8 T_c / (b_j 10^6)` (``j <= depth + 1``) is the bound. With
    ``r = 0`` only, this is bound (a).

    Under the ``max`` objective the same test also requires every stage to
    compute within :math:`\\theta` on the fastest node, so the bound covers
    communication and compute together.
    """
    b = problem.num_blocks
    cap = float(problem.cluster.memory_bytes.max())
    mem_end = farthest_ends(problem, cap)
    speeds = problem.cluster.flops_per_s
    smax = float(speeds.max()) if problem.uses_compute and speeds is not None else None
    depth = max(0, int(depth))
    pairs = pair_bandwidths_mbps(problem, most=depth + 1)
    # Missing pairs count as bandwidth 0 (never good enough): with fewer than
    # depth + 1 pairs the test still demands "no more cuts than pairs".
    pairs_padded = np.concatenate([pairs, np.zeros(depth + 1)])[: depth + 1]
    t = problem.transfer_bytes
    vals = [np.array([0.0])]
    if b > 1 and len(pairs):
        with np.errstate(divide="ignore", invalid="ignore"):
            v = (t[None, :] * 8.0) / (pairs_padded[:, None] * 1e6)
        vals.append(v[np.isfinite(v)].ravel())
    if smax is not None:
        p = problem._flops_prefix
        first = np.repeat(np.arange(b), b)
        last = np.tile(np.arange(b), b)
        keep = (last >= first) & (last <= mem_end[first])
        vals.append((p[last[keep] + 1] - p[first[keep]]) / smax)
    cands = np.unique(np.concatenate(vals))

    def feasible(theta: float) -> bool:
        return _relaxation_feasible(problem, theta, pairs_padded, depth, mem_end, smax)

    if not feasible(float(cands[-1])):
        # The largest candidate allows every cut that has any link at all.
        return float("inf")
    lo, hi = 0, len(cands) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if feasible(float(cands[mid])):
            hi = mid
        else:
            lo = mid + 1
    return float(cands[lo])


# -- bound (c) --------------------------------------------------------------


def compute_bound_s(problem: Problem) -> float:
    """Bound (c): compute time of the stages (``max`` objective; 0 otherwise).

    Argument. Every stage runs on its own node, so (i) its time is at least
    its FLOPs over the fastest speed, and the largest stage FLOPs of any
    partition into at most ``N`` memory-feasible stages is at least the
    chains-on-chains optimum, found by binary search over stage FLOPs with
    the greedy probe; and (ii) the stages' FLOPs sum to the chain's total
    while each is at most :math:`\\beta s_v` on distinct nodes, so
    :math:`\\beta \\ge F_\\text{total} / \\sum_v s_v`.
    """
    speeds = problem.cluster.flops_per_s
    if not problem.uses_compute or speeds is None:
        return 0.0
    b = problem.num_blocks
    smax = float(speeds.max())
    total = float(problem._flops_prefix[-1])
    by_sum = total / float(speeds.sum())
    mem_end = farthest_ends(problem, float(problem.cluster.memory_bytes.max()))
    p = problem._flops_prefix
    first = np.repeat(np.arange(b), b)
    last = np.tile(np.arange(b), b)
    keep = (last >= first) & (last <= mem_end[first])
    cands = np.unique((p[last[keep] + 1] - p[first[keep]]) / smax)
    every_cut = np.ones(max(b - 1, 0), dtype=bool)

    def feasible(theta: float) -> bool:
        ends = _compute_ends(problem, mem_end, smax, theta)
        if (ends < np.arange(b)).any():
            return False
        return greedy_stage_count(ends, every_cut) <= problem.num_nodes

    if len(cands) == 0 or not feasible(float(cands[-1])):
        return float("inf")
    lo, hi = 0, len(cands) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if feasible(float(cands[mid])):
            hi = mid
        else:
            lo = mid + 1
    return max(float(cands[lo]), by_sum)


def lower_bound_s(problem: Problem | DagProblem) -> float:
    """The best lower bound partopt knows for ``problem``: max of (a), (b), (c)."""
    if hasattr(problem, "dag"):
        return dag_lower_bound_s(problem)
    return max(transfer_bound_s(problem), distinct_links_bound_s(problem), compute_bound_s(problem))


def dag_lower_bound_s(problem) -> float:
    """A lower bound for a DAG problem: the slowest operator on the fastest node.

    Every operator runs in some stage, whose compute time is at least the
    operator's own on the fastest node; 0 under the ``communication`` objective.
    """
    if not problem.uses_compute:
        return 0.0
    dag = problem.dag
    if dag.compute_s is not None:
        return float(dag.compute_s.max())
    return float(dag.flops.max()) / float(problem.cluster.flops_per_s.max())
