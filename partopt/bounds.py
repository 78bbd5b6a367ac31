"""Valid lower bounds on the optimal bottleneck (seconds per inference).

Every function here returns a number that no valid plan can beat; the
argument is in each docstring.  :func:`lower_bound_s` is the best of them.
"""

from __future__ import annotations

import numpy as np

from partopt.feasibility import min_stages
from partopt.problem import Problem

__all__ = ["min_max_transfer_bytes", "transfer_bound_s", "lower_bound_s"]


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
    if len(t) == 0:
        return 0.0 if min_stages(problem, cap) <= 1 else float("inf")
    if min_stages(problem, cap, np.zeros(len(t), dtype=bool)) <= 1:
        return 0.0
    values = np.unique(t)
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


def lower_bound_s(problem: Problem) -> float:
    """The best lower bound partopt knows for ``problem``."""
    return transfer_bound_s(problem)
