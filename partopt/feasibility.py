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
from typing import TYPE_CHECKING

import numpy as np

from partopt.problem import Problem

if TYPE_CHECKING:
    from partopt.dag import DagProblem

__all__ = [
    "farthest_ends",
    "greedy_stage_count",
    "min_stages",
    "min_uniform_capacity",
    "linked_group_size",
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


def linked_group_size(problem: Problem) -> int:
    """Nodes in the largest group joined by links (either direction): the most stages a plan can have.

    Consecutive stages need a link, so a plan's nodes lie in one such group.
    ``O(N^2)``: each node's row of the bandwidth matrix is read once.

    Examples
    --------
    >>> from partopt.chain import Chain
    >>> from partopt.cluster import Cluster
    >>> bw = [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 2, 0]]
    >>> c = Cluster(("a", "b", "c", "d"), [1] * 4, bw)
    >>> linked_group_size(Problem(Chain.from_arrays([1, 1], [1.0]), c))
    2
    """
    bw = problem.cluster.bandwidth_mbps
    n = problem.num_nodes
    linked = bw > 0
    if int(np.count_nonzero(linked)) == n * (n - 1):
        return n  # every pair linked (the generated clusters): skip the search
    adj = linked | linked.T
    unseen = np.ones(n, dtype=bool)
    best = 0
    while unseen.any():
        group = np.zeros(n, dtype=bool)
        frontier = np.zeros(n, dtype=bool)
        frontier[int(np.argmax(unseen))] = True
        while frontier.any():
            group |= frontier
            frontier = adj[frontier].any(axis=0) & ~group
        unseen &= ~group
        best = max(best, int(group.sum()))
        if best * 2 >= n and best >= int(unseen.sum()):
            break  # no other group can be larger
    return best


def min_uniform_capacity(
    problem: Problem | DagProblem, num_stages: int | None = None
) -> float | None:
    """Smallest capacity (bytes) for which the chain splits into ``num_stages`` stages or fewer.

    ``num_stages`` defaults to the most stages a plan can have: the number of
    nodes, or fewer when the links join fewer nodes together
    (:func:`linked_group_size`; without any link, one stage). Every node
    needs at least this capacity for a plan to exist.
    """
    if hasattr(problem, "dag"):
        return None  # not computed for DAG problems
    k = min(problem.num_nodes, linked_group_size(problem)) if num_stages is None else num_stages
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


def infeasibility_reason(problem: Problem | DagProblem) -> str | None:
    """A proof that no plan fits memory, as a sentence, or ``None`` if memory allows one.

    Checks three certificates: a block larger than every node, more stages
    needed (at the largest capacity) than there are nodes, and more stages
    needed than the links can join into a path (:func:`linked_group_size`;
    a cluster without links must hold the whole chain on one node). Other
    shortages of links are left to the solvers.
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
    linked = linked_group_size(problem)
    if need > linked:
        if linked == 1:
            whole = problem.stage_memory(0, problem.num_blocks - 1)
            return (
                "the cluster has no links, so the whole chain must run on one node: "
                f"it needs {whole:.0f} bytes but the largest node has {cap:.0f}"
            )
        return (
            f"the chain needs at least {need} stages at {cap:.0f} bytes per node, but at most "
            f"{linked} nodes are joined by links (consecutive stages need a link)"
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
