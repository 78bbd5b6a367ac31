"""Helpers the heuristics share: capacity levels, stage fits and a fast bottleneck.

:func:`partopt.plan.evaluate` remains the one scorer of a finished plan;
:func:`bottleneck_s` is its arithmetic without the checks and reports, for
inner loops that compare many candidate plans of the same problem (it uses
the same formulas, so the values agree to rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from partopt.feasibility import farthest_ends
from partopt.plan import MEMORY_TOLERANCE, Plan
from partopt.problem import Problem
from partopt.solvers import SolverOutput

__all__ = [
    "capacity_levels",
    "node_windows",
    "stage_bounds",
    "stage_fits",
    "bottleneck_s",
    "to_plan",
    "original_plan_output",
]


def capacity_levels(problem: Problem) -> list[float]:
    """Distinct node capacities in bytes, largest first.

    Partition-first heuristics partition for one capacity and then place;
    on a cluster with several capacities they try each level.
    """
    return [float(c) for c in np.unique(problem.cluster.memory_bytes)[::-1]]


def node_windows(problem: Problem) -> np.ndarray:
    """``far[i, v]``: the last block a stage starting at block ``i`` may reach on node ``v``
    (memory only; ``i - 1`` when block ``i`` alone does not fit), shape ``(B, N)``."""
    caps = problem.cluster.memory_bytes
    by_cap = {float(c): farthest_ends(problem, float(c)) for c in np.unique(caps)}
    return np.stack([by_cap[float(c)] for c in caps], axis=1)


def stage_bounds(cuts: Sequence[int], num_blocks: int) -> list[tuple[int, int]]:
    """``(first, last)`` block of every stage for sorted ``cuts``.

    Examples
    --------
    >>> stage_bounds([1, 3], 6)
    [(0, 1), (2, 3), (4, 5)]
    """
    edges = [-1, *cuts, num_blocks - 1]
    return [(edges[i] + 1, edges[i + 1]) for i in range(len(edges) - 1)]


def stage_fits(problem: Problem, cuts: Sequence[int]) -> np.ndarray:
    """``fits[j, v]``: stage ``j`` of the partition ``cuts`` fits node ``v``'s memory."""
    bounds = stage_bounds(cuts, problem.num_blocks)
    first = np.array([f for f, _ in bounds])
    last = np.array([la for _, la in bounds])
    need = problem.stage_memory_many(first, last)
    caps = problem.cluster.memory_bytes * (1 + MEMORY_TOLERANCE)
    return need[:, None] <= caps[None, :]


def bottleneck_s(problem: Problem, cuts: Sequence[int], nodes: Sequence[int]) -> float:
    """Bottleneck in seconds per inference of stages ``cuts`` on ``nodes`` (memory not checked).

    ``inf`` when two consecutive nodes have no link.
    """
    at = np.asarray(nodes, dtype=int)
    worst = 0.0
    if len(cuts):
        t = problem.transfer_bytes[np.asarray(cuts, dtype=int)]
        bw = problem.cluster.bandwidth_mbps[at[:-1], at[1:]]
        if np.any(bw <= 0):
            return math.inf
        send = t * 8.0 / (bw * 1e6)  # the expression of partopt.costs.transfer_time_s
        lat = problem.cluster.latency_s
        if lat is not None:
            send = send + lat[at[:-1], at[1:]]
        worst = float(np.max(send))
    if problem.uses_compute:
        for (first, last), v in zip(stage_bounds(cuts, problem.num_blocks), at, strict=True):
            worst = max(worst, problem.compute_time_s(first, last, int(v)))
    return worst


def to_plan(problem: Problem, cuts: Sequence[int], nodes: Sequence[int]) -> Plan:
    """The :class:`~partopt.plan.Plan` of ``cuts`` and ``nodes``."""
    return Plan.from_cuts(list(cuts), [int(v) for v in nodes], problem.num_blocks)


def original_plan_output(
    problem: Problem,
    cuts: Sequence[int],
    nodes: Sequence[int],
    info: dict,
    why_over: str,
    why_unlinked: str,
) -> SolverOutput:
    """The result of a plan the original work drew without checking it.

    ``info`` already holds what the original reported. A stage over its
    node's memory makes the result ``no_solution`` (stage and reason
    ``why_over`` named, the unchecked plan and bottleneck kept in ``info``),
    and so does a missing link between consecutive stages (``why_unlinked``);
    otherwise the plan is ``feasible``.
    """
    value = bottleneck_s(problem, cuts, nodes)
    fits = stage_fits(problem, cuts)
    over = [j for j, v in enumerate(nodes) if not fits[j, v]]
    if over:
        return SolverOutput(
            "no_solution",
            info={
                **info,
                "unchecked_bottleneck_s": value,
                "plan_cuts": list(cuts),
                "plan_nodes": list(nodes),
                "reason": f"stage {over[0]} of the original's {why_over}",
            },
        )
    if not math.isfinite(value):
        return SolverOutput("no_solution", info={**info, "reason": why_unlinked})
    return SolverOutput("feasible", to_plan(problem, cuts, nodes), objective_s=value, info=info)
