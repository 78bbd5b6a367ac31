"""``brute``: exhaustive search, the oracle for tiny instances."""

from __future__ import annotations

import math

from partopt.plan import Plan, Stage
from partopt.problem import Problem
from partopt.solvers import SolverOutput, SolverRefused, register

MAX_PLANS = 2_000_000
"""Brute force refuses instances with more candidate plans than this (about 10 s)."""


def count_plans(num_blocks: int, num_nodes: int) -> int:
    """Number of (partition, injective placement) pairs: sum_k C(B-1, k-1) * N!/(N-k)!."""
    return sum(
        math.comb(num_blocks - 1, k - 1) * math.perm(num_nodes, k)
        for k in range(1, min(num_blocks, num_nodes) + 1)
    )


@register("brute", exact=True, description="exhaustive search (tiny instances only)")
def solve_brute(problem: Problem, *, time_limit_s=None, seed: int = 0, **_) -> SolverOutput:
    """Enumerate every partition and every ordered choice of distinct nodes.

    Depth-first over (stage end, node) with one safe pruning: a branch whose
    bottleneck so far is not below the best complete plan cannot improve it.
    Refuses instances with more than ``MAX_PLANS`` candidate plans.
    """
    b, n = problem.num_blocks, problem.num_nodes
    total = count_plans(b, n)
    if total > MAX_PLANS:
        raise SolverRefused(
            f"brute force would enumerate {total:,} plans ({b} blocks, {n} nodes); "
            f"it is limited to {MAX_PLANS:,}: use method 'exact'"
        )
    caps = problem.cluster.memory_bytes
    mem = problem.stage_memory_matrix  # inf below the diagonal
    fits = [
        [[mem[i, j] <= caps[v] * (1 + 1e-9) for v in range(n)] for j in range(b)] for i in range(b)
    ]
    comp = [
        [[problem.compute_time_s(i, j, v) if j >= i else 0.0 for v in range(n)] for j in range(b)]
        for i in range(b)
    ]
    best_val, best_plan = math.inf, None
    used = [False] * n
    stages: list[Stage] = []

    def dfs(first: int, prev: int, value: float) -> None:
        nonlocal best_val, best_plan
        for last in range(first, b):
            for v in range(n):
                if used[v] or not fits[first][last][v]:
                    continue
                val = max(value, comp[first][last][v])
                if prev >= 0:
                    val = max(val, problem.transfer_time_s(first - 1, prev, v))
                if val >= best_val:
                    continue
                stages.append(Stage(first, last, v))
                if last == b - 1:
                    best_val, best_plan = val, Plan(tuple(stages))
                else:
                    used[v] = True
                    dfs(last + 1, v, val)
                    used[v] = False
                stages.pop()

    dfs(0, -1, 0.0)
    if best_plan is None:
        return SolverOutput(
            "infeasible", info={"plans": total, "reason": "no plan fits memory and links"}
        )
    return SolverOutput(
        "optimal", best_plan, objective_s=best_val, lower_bound_s=best_val, info={"plans": total}
    )
