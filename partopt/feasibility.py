"""Memory feasibility of partitions: greedy stage counts and minimum capacities.

Stage memory grows when a stage is extended at either end (sums and maxima
of non-negative numbers), so the greedy rule "make each stage as long as it
can be" minimises the number of stages for a given capacity, also when only
some cuts are allowed (take the farthest allowed cut that still fits).

References
----------
Pinar, A. and Aykanat, C. (2004). Fast optimal load balancing algorithms for
1D partitioning. J. Parallel Distrib. Comput. 64(8). (Greedy probes for
chains-on-chains partitioning.)
"""

from __future__ import annotations

import math

import numpy as np

from partopt.problem import Problem

__all__ = [
    "farthest_ends",
    "greedy_stage_count",
    "min_stages",
    "min_uniform_capacity",
    "infeasibility_reason",
]


def farthest_ends(problem: Problem, capacity_bytes: float) -> np.ndarray:
    """``end[i]`` = last block ``j`` such that blocks ``i..j`` fit ``capacity_bytes`` (``i - 1`` if none).

    A vectorised binary search per start block, ``O(B log B)``.
    """
    b = problem.num_blocks
    cap = capacity_bytes * (1 + 1e-9)
    first = np.arange(b)
    lo = first - 1  # always "fits" (empty stage)
    hi = np.full(b, b)  # never fits (past the end)
    while True:
        open_ = hi - lo > 1
        if not open_.any():
            return lo
        mid = (lo + hi) // 2
        fits = np.zeros(b, dtype=bool)
        idx = np.flatnonzero(open_)
        fits[idx] = problem.stage_memory_many(first[idx], mid[idx]) <= cap
        lo = np.where(open_ & fits, mid, lo)
        hi = np.where(open_ & ~fits, mid, hi)


def greedy_stage_count(ends: np.ndarray, allowed: np.ndarray) -> float:
    """Fewest stages given stage windows ``ends`` (from :func:`farthest_ends`).

    Cuts may only be taken where ``allowed`` (boolean mask over the ``B - 1``
    cuts) is true; ``inf`` if no partition exists. Each stage ends at the
    farthest allowed cut inside its window, which is optimal because windows
    only shrink as a stage starts later.
    """
    b = len(ends)
    i, count = 0, 0
    while i < b:
        j = int(ends[i])
        if j >= b - 1:
            return count + 1
        while j >= i and not allowed[j]:
            j -= 1
        if j < i:
            return math.inf
        count += 1
        i = j + 1
    return count


def min_stages(problem: Problem, capacity_bytes: float, allowed_cuts=None) -> float:
    """Fewest stages whose memory fits ``capacity_bytes``; ``inf`` if impossible.

    ``allowed_cuts`` (boolean mask over the ``B - 1`` cuts) restricts where stages may end.
    """
    b = problem.num_blocks
    allowed = (
        np.ones(max(b - 1, 0), dtype=bool) if allowed_cuts is None else np.asarray(allowed_cuts)
    )
    return greedy_stage_count(farthest_ends(problem, capacity_bytes), allowed)


def min_uniform_capacity(problem: Problem, num_stages: int | None = None) -> float | None:
    """Smallest capacity (bytes) for which the chain splits into ``num_stages`` stages or fewer.

    ``num_stages`` defaults to the number of nodes. This is the capacity every
    node would need for the instance to be memory-feasible (links ignored).
    """
    if hasattr(problem, "dag"):
        return None  # not computed for DAG problems
    k = problem.num_nodes if num_stages is None else num_stages
    lo = float(max(problem.stage_memory(i, i) for i in range(problem.num_blocks)))
    hi = problem.stage_memory(0, problem.num_blocks - 1)
    if min_stages(problem, lo) <= k:
        return lo
    while True:  # bisection down to float resolution
        mid = 0.5 * (lo + hi)
        if not lo < mid < hi:
            break
        if min_stages(problem, mid) <= k:
            hi = mid
        else:
            lo = mid
    # the greedy partition at ``hi`` is feasible; its largest stage is a real stage
    # memory in (lo, hi], hence the minimum itself
    end = farthest_ends(problem, hi)
    i, worst = 0, 0.0
    while i < problem.num_blocks:
        j = int(end[i])
        worst = max(worst, problem.stage_memory(i, j))
        i = j + 1
    return worst


def infeasibility_reason(problem: Problem) -> str | None:
    """A proof that no plan fits memory, as a sentence, or ``None`` if memory allows one.

    Checks the two certificates the issue names: a block larger than every
    node, and more stages needed (at the largest capacity) than there are nodes.
    Missing links are left to the solvers.
    """
    if hasattr(problem, "dag"):
        return _dag_infeasibility_reason(problem)
    cap = float(problem.cluster.memory_bytes.max())
    single = [problem.stage_memory(i, i) for i in range(problem.num_blocks)]
    worst = int(np.argmax(single))
    if single[worst] > cap * (1 + 1e-9):
        return f"block {worst} needs {single[worst]:.0f} bytes but the largest node has {cap:.0f}"
    need = min_stages(problem, cap)
    if need > problem.num_nodes:
        return (
            f"the chain needs at least {need} stages at {cap:.0f} bytes per node "
            f"but the cluster has {problem.num_nodes} nodes"
        )
    return None


def dag_min_stages(problem) -> float:
    """Fewest stages over the state graph at the largest capacity (``inf``: none), links ignored.

    Only a proof when the state space is complete.
    """
    st = problem.states
    best = np.full(st.num_states, math.inf)
    best[0] = 0.0
    for s in range(st.num_states):
        if math.isinf(best[s]):
            continue
        ends = st.pair_end[st.pairs_from[s]]
        best[ends] = np.minimum(best[ends], best[s] + 1)
    return float(best[-1])


def _dag_infeasibility_reason(problem) -> str | None:
    dag = problem.dag
    cap = float(problem.cluster.memory_bytes.max())
    mem_sum, mem_max = dag.memory_terms(problem.memory)
    for unit in dag.units:
        ops = list(unit)
        need = float(mem_sum[ops].sum() + mem_max[ops].max())
        if need > cap * (1 + 1e-9):
            what = (
                f"operator {dag.op_names[ops[0]]!r}"
                if len(ops) == 1
                else (f"the colocated operators around {dag.op_names[ops[0]]!r}")
            )
            return f"{what} needs {need:.0f} bytes but the largest node has {cap:.0f}"
    if problem.states.complete:
        k = dag_min_stages(problem)
        if k > problem.num_nodes:
            return (
                f"the DAG needs at least {k:.0f} stages at {cap:.0f} bytes per node "
                f"but the cluster has {problem.num_nodes} nodes"
            )
    return None
