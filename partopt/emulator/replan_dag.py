"""Re-planning a DAG plan (stages of operator sets) after a fault.

The chain re-planner (:func:`partopt.replan.replan`) repairs and polishes
block ranges; a DAG plan is re-solved instead: the surviving cluster
(:func:`partopt.replan.surviving_problem`: the live nodes, without the dead
links) with a solver that takes DAG problems (``exact`` under ``auto``), and
the new plan's nodes mapped back to the full cluster's indices.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from partopt.plan import InvalidPlan, OpStage, Plan
from partopt.replan import Replan, surviving_problem

__all__ = ["DAG_AUTO_METHOD", "DagReplan", "replan_dag"]

DAG_AUTO_METHOD = "exact"
"""The solver a DAG re-plan uses under ``--replan-method auto``."""


class DagReplan(Replan):
    """A :class:`~partopt.replan.Replan` whose stages are operator sets."""

    def to_dict(self, names: tuple[str, ...]) -> dict:
        if self.plan is None:
            return super().to_dict(names)
        return {
            "source": self.source,
            "bottleneck_s": self.bottleneck_s,
            "runtime_s": self.runtime_s,
            "kept_stages": self.kept_stages,
            "candidates": self.candidates,
            "reason": self.reason,
            "stages": [{"node": names[s.node], "ops": list(s.ops)} for s in self.plan.stages],
        }


def replan_dag(
    problem,
    current: Plan,
    alive: Iterable[int],
    dead_links: Iterable[tuple[int, int]] = (),
    *,
    method: str = "auto",
    time_limit_s: float | None = 10.0,
    seed: int = 0,
) -> DagReplan:
    """A new plan for the DAG ``problem`` on the nodes ``alive`` (full-cluster indices).

    Returns a plan with full-cluster node indices, or none and the reason
    (no node left, the solver refused the problem, no plan fits).
    """
    from partopt import solvers
    from partopt.solve import solve

    t0 = time.perf_counter()
    try:
        sub, keep = surviving_problem(problem, alive, dead_links)
    except InvalidPlan as exc:
        return DagReplan(None, None, "none", time.perf_counter() - t0, reason=str(exc))
    used = DAG_AUTO_METHOD if method == "auto" else method
    try:
        res = solve(sub, used, time_limit_s=time_limit_s, seed=seed)
    except (solvers.SolverRefused, TypeError) as exc:
        return DagReplan(
            None,
            None,
            "none",
            time.perf_counter() - t0,
            reason=f"re-planning with {used!r} failed: {exc}",
        )
    runtime = time.perf_counter() - t0
    candidates = {f"solve:{used}": res.bottleneck_s, f"solve:{used}:status": res.status}
    if res.plan is None:
        why = res.info.get("reason") or res.info.get("error") or res.status
        return DagReplan(
            None,
            None,
            "none",
            runtime,
            candidates=candidates,
            reason=f"no valid plan on the remaining nodes ({why})",
        )
    full = Plan(tuple(OpStage(s.ops, keep[s.node]) for s in res.plan.stages))
    old = {(s.ops, s.node) for s in current.stages}
    kept = sum((s.ops, s.node) in old for s in full.stages)
    return DagReplan(
        full,
        res.bottleneck_s,
        f"solve:{used}",
        runtime,
        kept,
        candidates,
    )
