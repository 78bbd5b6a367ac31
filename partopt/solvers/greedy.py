"""``greedy``: the original work's "greedy joint partitioning-placement" baseline.

The chain is partitioned first (the same minimum-sum-of-transfers partition
with at most ``N`` stages that SEIFER uses); then, from every node as the
first stage's node, a chain is grown that always takes the widest link from
the current node to an unused node; the chain with the smallest bottleneck
wins.

Two generalisations that leave the original untouched on its own clusters
(identical nodes, all links present): a node is a candidate for a stage only
if the stage fits its memory and a link leads to it; and on a cluster with
several capacities the partition is computed for each capacity level and the
best plan over the levels is kept.

References
----------
Parthasarathy, A. and Krishnamachari, B. (2022). Partitioning and placement
of deep neural networks on distributed edge devices to maximize inference
throughput. ITNAC 2022 (arXiv:2210.12219). Baseline "greedy joint
partitioning-placement".
"""

from __future__ import annotations

import math
import time

import numpy as np

from partopt.partition import min_max_partition, min_sum_partition
from partopt.problem import Problem
from partopt.solvers import SolverOutput, register
from partopt.solvers._plans import bottleneck_s, capacity_levels, stage_fits, to_plan

__all__ = ["PARTITIONS", "partitions_by_level", "widest_chain", "solve_greedy"]

PARTITIONS = {"min-sum": min_sum_partition, "min-max": min_max_partition}
"""Partition rules a partition-first heuristic can use (``min-sum`` is the original's)."""


def partitions_by_level(problem: Problem, rule: str = "min-sum") -> list[list[int]]:
    """Distinct partitions (cut lists), one per capacity level where one exists, largest first."""
    try:
        partition = PARTITIONS[rule]
    except KeyError:
        raise ValueError(
            f"unknown partition rule {rule!r}; choose one of {sorted(PARTITIONS)}"
        ) from None
    out: list[list[int]] = []
    for cap in capacity_levels(problem):
        cuts = partition(problem, cap, problem.num_nodes)
        if cuts is not None and cuts not in out:
            out.append(cuts)
    return out


def widest_chain(bandwidth_mbps: np.ndarray, fits: np.ndarray, first: int) -> list[int] | None:
    """Nodes for stages ``0..k-1``: ``first``, then always the widest link to an unused node.

    ``fits[j, v]``: node ``v`` may host stage ``j``. Ties go to the lowest
    node index. ``None`` when some stage finds no linked, unused node that fits.

    Examples
    --------
    >>> bw = np.array([[0, 5, 9], [5, 0, 1], [9, 1, 0]], dtype=float)
    >>> widest_chain(bw, np.ones((3, 3), dtype=bool), 0)
    [0, 2, 1]
    """
    k = fits.shape[0]
    if not fits[0, first]:
        return None
    chain = [first]
    free = np.ones(fits.shape[1], dtype=bool)
    free[first] = False
    for j in range(1, k):
        width = np.where(free & fits[j], bandwidth_mbps[chain[-1]], 0.0)
        nxt = int(np.argmax(width))
        if width[nxt] <= 0:
            return None
        chain.append(nxt)
        free[nxt] = False
    return chain


@register("greedy", description="min-sum partition, then widest-link chains from every start node")
def solve_greedy(
    problem: Problem, *, time_limit_s=None, seed: int = 0, partition: str = "min-sum", **_
) -> SolverOutput:
    """The original greedy baseline (deterministic; ``seed`` is unused).

    With ``time_limit_s`` the start nodes tried stop at the limit (the clock
    is read before each chain); the best chain so far is returned, with
    ``info["timed_out"]``.

    Parameters
    ----------
    partition
        ``min-sum`` (the original's partition) or ``min-max``.
    """
    deadline = math.inf if time_limit_s is None else time.perf_counter() + time_limit_s
    bw = problem.cluster.bandwidth_mbps
    best_value, best = math.inf, None
    tried = 0
    timed_out = False
    for cuts in partitions_by_level(problem, partition):
        fits = stage_fits(problem, cuts)
        for first in range(problem.num_nodes):
            if time.perf_counter() >= deadline:
                timed_out = True
                break
            chain = widest_chain(bw, fits, first)
            tried += 1
            if chain is None:
                continue
            value = bottleneck_s(problem, cuts, chain)
            if value < best_value:
                best_value, best = value, (cuts, chain)
    if best is None:
        return SolverOutput(
            "no_solution",
            info={
                "reason": "the time limit ran out before any greedy chain was complete"
                if timed_out
                else "no greedy chain found a linked node with enough memory for every stage",
                "chains": tried,
                "timed_out": timed_out,
            },
        )
    cuts, chain = best
    return SolverOutput(
        "feasible",
        to_plan(problem, cuts, chain),
        objective_s=best_value,
        info={"chains": tried, "stages": len(chain), "timed_out": timed_out},
    )
