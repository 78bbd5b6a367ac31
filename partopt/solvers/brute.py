"""``brute``: exhaustive search, the oracle for tiny instances."""

from __future__ import annotations

import itertools
import math

from partopt.plan import InvalidPlan, OpStage, Plan, Stage, evaluate
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


@register("brute", exact=True, dag=True, description="exhaustive search (tiny instances only)")
def solve_brute(problem: Problem, *, time_limit_s=None, seed: int = 0, **_) -> SolverOutput:
    """Enumerate every partition and every ordered choice of distinct nodes.

    Depth-first over (stage end, node) with one safe pruning: a branch whose
    bottleneck so far is not below the best complete plan cannot improve it.
    Refuses instances with more than ``MAX_PLANS`` candidate plans.
    """
    if hasattr(problem, "dag"):
        return _solve_dag(problem)
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


MAX_DAG_OPS = 12
"""Brute force over DAG plans refuses DAGs with more operators than this."""


def _solve_dag(problem) -> SolverOutput:
    """Every nested sequence of ideals x every ordered choice of distinct nodes, scored by evaluate.

    Independent of :mod:`partopt.dag`'s state generation: next stages are
    all operator subsets whose union with the prefix is downward closed.
    """
    dag, n = problem.dag, problem.num_nodes
    if dag.num_ops > MAX_DAG_OPS:
        raise SolverRefused(
            f"brute force over DAG plans is limited to {MAX_DAG_OPS} operators "
            f"(this DAG has {dag.num_ops}): use method 'exact'"
        )
    ops = dag.num_ops
    full = (1 << ops) - 1
    pred = [sum(1 << p for p in dag.preds[v]) for v in range(ops)]

    def is_ideal(mask: int) -> bool:
        return all((pred[v] & ~mask) == 0 for v in range(ops) if mask >> v & 1)

    best_val, best_plan, count = math.inf, None, 0
    seqs: list[list[int]] = []

    def chains(prefix: int, seq: list[int]) -> None:
        if prefix == full:
            seqs.append(list(seq))
            return
        if len(seq) >= n:
            return
        rest = full & ~prefix
        sub = rest
        while sub:
            if is_ideal(prefix | sub):
                seq.append(sub)
                chains(prefix | sub, seq)
                seq.pop()
            sub = (sub - 1) & rest

    chains(0, [])
    for seq in seqs:
        sets = [tuple(v for v in range(ops) if m >> v & 1) for m in seq]
        for nodes in itertools.permutations(range(n), len(seq)):
            count += 1
            plan = Plan(tuple(OpStage(s, v) for s, v in zip(sets, nodes, strict=True)))
            try:
                val = evaluate(problem, plan).bottleneck_s
            except InvalidPlan:
                continue
            if val < best_val:
                best_val, best_plan = val, plan
    if best_plan is None:
        return SolverOutput(
            "infeasible", info={"plans": count, "reason": "no plan fits memory and links"}
        )
    return SolverOutput(
        "optimal", best_plan, objective_s=best_val, lower_bound_s=best_val, info={"plans": count}
    )
