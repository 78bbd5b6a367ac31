"""Re-planning after a fault: the nodes and links that remain, warm-started from the current plan.

Three candidates are scored with :func:`partopt.plan.evaluate` and the better
one wins (ties go to the plan that keeps more stages where they were, so
that less has to move):

* **repair** -- the current plan with every stage on a lost node moved to a
  spare node (and, for a lost link, one of its two ends moved), each choice
  the best by ``evaluate``. Fast, and often all a single fault needs.
* **polish** -- the ``local-search`` method (moves of cuts and nodes while
  the bottleneck drops) started from the repair plan: the warm start proper.
* **solve** -- :func:`partopt.solve.solve` on the surviving cluster, given
  the repair plan's bottleneck as ``max_time_s`` (an incumbent value the
  ``milp`` method uses to prune) and the plan as ``warm_start`` (for methods
  that take one; the others ignore both).

A DAG plan (stages of operator sets, :class:`~partopt.dag.DagProblem`) is
re-solved instead (:func:`replan_dag`): the repair and polish moves are moves
of block ranges.

All plans here use node indices of the *full* cluster; the sub-problem on
the surviving nodes is an implementation detail. Solvers are reached only
through the registry and :func:`partopt.solve.solve`, and get only the
options their signature names.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from partopt import solvers
from partopt.cluster import Cluster
from partopt.dag import DagProblem
from partopt.errors import PartoptError
from partopt.plan import InvalidPlan, OpStage, Plan, Stage, evaluate
from partopt.problem import Problem
from partopt.solve import solve

__all__ = [
    "AUTO_METHODS",
    "Replan",
    "UnknownReplanMethod",
    "check_replan_method",
    "replan",
    "replan_dag",
    "surviving_problem",
]

AUTO_METHODS = ("bottleneck-search", "exact", "milp", "brute", "random")
"""Methods tried in order by ``method="auto"``: the first registered one that returns a
plan is used. The fast heuristic comes first because every second spent re-planning is a
second of outage; pass ``method="exact"`` for a proven optimum."""


_P = TypeVar("_P", Problem, DagProblem)

DAG_AUTO_METHOD = "exact"
"""The solver :func:`replan_dag` uses under ``method="auto"``."""


class UnknownReplanMethod(PartoptError):
    """A re-planning method that is neither ``auto`` nor a registered solver."""


def check_replan_method(method: str) -> None:
    """Raise :class:`UnknownReplanMethod` unless ``method`` is ``auto`` or a registered solver.

    Examples
    --------
    >>> check_replan_method("auto"); check_replan_method("brute")
    >>> check_replan_method("nosuch")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    partopt.replan.UnknownReplanMethod: unknown re-planning method 'nosuch'; choose auto or one of ...
    """
    known = sorted(solvers.available())
    if method != "auto" and method not in known:
        raise UnknownReplanMethod(
            f"unknown re-planning method {method!r}; choose auto or one of {', '.join(known)}"
        )


def _accepted(method: str, options: dict) -> dict:
    """The entries of ``options`` that ``method``'s function names as parameters."""
    known = solvers.option_names(method)
    return {k: v for k, v in options.items() if k in known}


@dataclass
class Replan:
    """The outcome of a re-plan: the plan (full-cluster node indices) or why there is none."""

    plan: Plan | None
    bottleneck_s: float | None
    source: str
    runtime_s: float
    kept_stages: int = 0
    candidates: dict = field(default_factory=dict)
    reason: str = ""

    def to_dict(self, names: tuple[str, ...]) -> dict:
        return {
            "source": self.source,
            "bottleneck_s": self.bottleneck_s,
            "runtime_s": self.runtime_s,
            "kept_stages": self.kept_stages,
            "candidates": self.candidates,
            "reason": self.reason,
            "stages": None
            if self.plan is None
            else [
                {"node": names[s.node], "ops": list(s.ops)}
                if isinstance(s, OpStage)
                else {
                    "node": names[s.node],
                    "first_block": s.first_block,
                    "last_block": s.last_block,
                }
                for s in self.plan.stages
            ],
        }


def surviving_problem(
    problem: _P, alive: Iterable[int], dead_links: Iterable[tuple[int, int]] = ()
) -> tuple[_P, list[int]]:
    """The problem on the nodes ``alive`` (full indices) without ``dead_links``; and the index map."""
    keep = sorted(set(alive))
    if not keep:
        raise InvalidPlan("no node is left")
    full = problem.cluster
    bw = np.array(full.bandwidth_mbps[np.ix_(keep, keep)], dtype=float)
    pos = {v: i for i, v in enumerate(keep)}
    for a, b in dead_links:
        if a in pos and b in pos:
            bw[pos[a], pos[b]] = 0.0
    sub = Cluster(
        names=tuple(full.names[i] for i in keep),
        memory_bytes=full.memory_bytes[keep],
        bandwidth_mbps=bw,
        flops_per_s=None if full.flops_per_s is None else full.flops_per_s[keep],
    )
    return problem.with_cluster(sub), keep


def _score(problem: Problem, plan: Plan) -> float:
    try:
        return evaluate(problem, plan).bottleneck_s
    except InvalidPlan:
        return math.inf


def _repair(sub: Problem, current: Plan, pos: dict[int, int], dead_links) -> Plan | None:
    """Keep every stage whose node survives; move the others (and one end of a dead link)."""
    stages = [Stage(s.first_block, s.last_block, pos.get(s.node, -1)) for s in current.stages]
    n = sub.num_nodes

    def spares(plan_stages):
        used = {s.node for s in plan_stages}
        return [v for v in range(n) if v not in used]

    # stages on lost nodes, in pipeline order: the best spare for each
    for k in range(len(stages)):
        if stages[k].node >= 0:
            continue
        best, best_val = None, math.inf
        for v in spares(stages):
            trial = list(stages)
            trial[k] = Stage(stages[k].first_block, stages[k].last_block, v)
            if any(s.node < 0 for s in trial):
                # later orphans not placed yet: judge by memory and the links to placed neighbours
                val = _partial_score(sub, trial, k)
            else:
                val = _score(sub, Plan(tuple(trial)))
            if val < best_val:
                best, best_val = v, val
        if best is None:
            return None
        stages[k] = Stage(stages[k].first_block, stages[k].last_block, best)
    plan = Plan(tuple(stages))
    if math.isfinite(_score(sub, plan)):
        return plan
    # a dead link between two surviving stages: move one of its ends
    best_plan, best_val = None, math.inf
    for k in range(len(stages)):
        for v in spares(stages):
            trial = list(stages)
            trial[k] = Stage(stages[k].first_block, stages[k].last_block, v)
            val = _score(sub, Plan(tuple(trial)))
            if val < best_val:
                best_plan, best_val = Plan(tuple(trial)), val
    return best_plan


def _partial_score(sub: Problem, stages: list[Stage], k: int) -> float:
    s = stages[k]
    if sub.stage_memory(s.first_block, s.last_block) > sub.cluster.memory_bytes[s.node] * (
        1 + 1e-9
    ):
        return math.inf
    val = sub.compute_time_s(s.first_block, s.last_block, s.node)
    if k > 0 and stages[k - 1].node >= 0:
        val = max(val, sub.transfer_time_s(stages[k - 1].last_block, stages[k - 1].node, s.node))
    if k + 1 < len(stages) and stages[k + 1].node >= 0:
        val = max(val, sub.transfer_time_s(s.last_block, s.node, stages[k + 1].node))
    return val


def _polish(sub: Problem, plan: Plan, time_limit_s) -> Plan | None:
    """``local-search`` from ``plan``; ``None`` if that method is missing or fails."""
    if "local-search" not in solvers.available():
        return None
    opts = _accepted("local-search", {"warm_start": plan})
    if not opts:
        return None  # a local search that cannot start from our plan is not a polish
    try:
        res = solve(sub, "local-search", time_limit_s=time_limit_s, **opts)
    except PartoptError:
        return None
    return res.plan if res.status in ("optimal", "feasible") else None


def _solve(sub: Problem, method: str, warm: Plan | None, warm_val: float, time_limit_s, seed):
    methods = AUTO_METHODS if method == "auto" else (method,)
    tried = []
    try:
        registered = solvers.available()
    except Exception as exc:  # noqa: BLE001 - a broken solver module must not stop the service
        return None, None, [f"solvers unavailable: {type(exc).__name__}: {exc}"]
    for m in methods:
        if m not in registered:
            continue
        opts = {}
        if warm is not None and math.isfinite(warm_val):
            opts = _accepted(m, {"warm_start": warm, "max_time_s": warm_val})
        try:
            res = solve(sub, m, time_limit_s=time_limit_s, seed=seed, **opts)
        except PartoptError as exc:  # SolverRefused: too large for this method
            tried.append(f"{m}: {exc}")
            continue
        if res.plan is not None and res.status in ("optimal", "feasible"):
            return res, m, tried
        tried.append(f"{m}: {res.status}")
        if res.status == "infeasible" and warm is None:
            return res, m, tried
    return None, None, tried


def replan(
    problem: Problem | DagProblem,
    current: Plan,
    alive: Iterable[int],
    dead_links: Iterable[tuple[int, int]] = (),
    *,
    method: str = "auto",
    time_limit_s: float | None = 10.0,
    seed: int = 0,
) -> Replan:
    """A new plan for ``problem`` on the nodes ``alive``, warm-started from ``current``.

    Parameters
    ----------
    problem
        The problem on the full cluster (chain, memory/transfer models, objective).
        A :class:`~partopt.dag.DagProblem` is re-solved by :func:`replan_dag`.
    current
        The plan that was running (full-cluster node indices).
    alive
        Full-cluster indices of the nodes still usable.
    dead_links
        ``(src, dst)`` pairs (full indices) no longer usable.
    method
        A registered solver, or ``auto``: the first of :data:`AUTO_METHODS` that runs.
    time_limit_s
        Solver time limit in seconds.

    Examples
    --------
    >>> from partopt import Chain, Cluster, Plan, Problem
    >>> p = Problem(Chain.from_arrays([1, 1, 1], [8e6, 4e6]),
    ...             Cluster.uniform(4, memory_bytes=1, bandwidth_mbps=8.0))
    >>> r = replan(p, Plan.from_cuts([0, 1], [0, 1, 2]), alive=[0, 2, 3], method="brute")
    >>> r.plan.nodes, r.bottleneck_s, r.kept_stages
    ((0, 3, 2), 8.0, 2)
    """
    if isinstance(problem, DagProblem):
        return replan_dag(
            problem,
            current,
            alive,
            dead_links,
            method=method,
            time_limit_s=time_limit_s,
            seed=seed,
        )
    t0 = time.perf_counter()
    dead_links = list(dead_links)
    try:
        sub, keep = surviving_problem(problem, alive, dead_links)
    except InvalidPlan as exc:
        return Replan(None, None, "none", time.perf_counter() - t0, reason=str(exc))
    pos = {v: i for i, v in enumerate(keep)}
    repaired = _repair(sub, current, pos, dead_links)
    repair_val = math.inf if repaired is None else _score(sub, repaired)
    candidates: dict = {"repair": None if not math.isfinite(repair_val) else repair_val}
    polished = (
        _polish(sub, repaired, time_limit_s)
        if repaired is not None and math.isfinite(repair_val)
        else None
    )
    polish_val = math.inf if polished is None else _score(sub, polished)
    if polished is not None:
        candidates["polish"] = polish_val if math.isfinite(polish_val) else None
    res, used, tried = _solve(
        sub, method, repaired if math.isfinite(repair_val) else None, repair_val, time_limit_s, seed
    )
    solve_val = math.inf
    if res is not None and res.plan is not None:
        solve_val = _score(sub, res.plan)
        candidates[f"solve:{used}"] = solve_val if math.isfinite(solve_val) else None
        candidates[f"solve:{used}:status"] = res.status
    if tried:
        candidates["not_used"] = tried

    def kept(plan: Plan) -> int:
        old = {(s.first_block, s.last_block, s.node) for s in current.stages}
        return sum((s.first_block, s.last_block, keep[s.node]) in old for s in plan.stages)

    options = []
    # A finite value implies its plan exists; the `is not None` tests say so to the type checker.
    if repaired is not None and math.isfinite(repair_val):
        options.append((repair_val, -kept(repaired), "repair", repaired))
    if polished is not None and math.isfinite(polish_val):
        options.append((polish_val, -kept(polished), "polish", polished))
    if res is not None and res.plan is not None and math.isfinite(solve_val):
        options.append((solve_val, -kept(res.plan), f"solve:{used}", res.plan))
    runtime = time.perf_counter() - t0
    if not options:
        why = "no valid plan on the remaining nodes"
        if res is not None and res.status == "infeasible":
            why += f" ({res.info.get('reason', 'proven infeasible')})"
        return Replan(None, None, "none", runtime, candidates=candidates, reason=why)
    # the better bottleneck; on a tie (relative 1e-9) the plan that moves less
    best_val = min(o[0] for o in options)
    tied = [o for o in options if o[0] <= best_val * (1 + 1e-9)]
    val, neg_kept, source, plan = min(tied, key=lambda o: o[1])
    full = Plan(tuple(Stage(s.first_block, s.last_block, keep[s.node]) for s in plan.stages))
    return Replan(full, val, source, runtime, -neg_kept, candidates)


def replan_dag(
    problem: DagProblem,
    current: Plan,
    alive: Iterable[int],
    dead_links: Iterable[tuple[int, int]] = (),
    *,
    method: str = "auto",
    time_limit_s: float | None = 10.0,
    seed: int = 0,
) -> Replan:
    """A new plan for the DAG ``problem`` on the nodes ``alive`` (full-cluster indices).

    The surviving cluster is solved anew with ``method`` (``exact`` under
    ``auto``: DAG problems have no fast heuristic to try first).
    Returns a plan with full-cluster node indices, or none and the reason
    (no node left, the solver refused the problem, no plan fits);
    ``kept_stages`` counts the stages left on their node with their operators.
    """
    t0 = time.perf_counter()
    try:
        sub, keep = surviving_problem(problem, alive, dead_links)
    except InvalidPlan as exc:
        return Replan(None, None, "none", time.perf_counter() - t0, reason=str(exc))
    used = DAG_AUTO_METHOD if method == "auto" else method
    try:
        # solve() takes DAG problems too (its annotation names the chain problem only)
        res = solve(sub, used, time_limit_s=time_limit_s, seed=seed)  # type: ignore[arg-type]
    except (solvers.SolverRefused, TypeError) as exc:
        return Replan(
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
        return Replan(
            None,
            None,
            "none",
            runtime,
            candidates=candidates,
            reason=f"no valid plan on the remaining nodes ({why})",
        )
    full = Plan(tuple(OpStage(s.ops, keep[s.node]) for s in res.plan.stages))
    old = {(s.ops, s.node) for s in current.stages if isinstance(s, OpStage)}
    kept = sum((s.ops, s.node) in old for s in full.stages if isinstance(s, OpStage))
    return Replan(
        full,
        res.bottleneck_s,
        f"solve:{used}",
        runtime,
        kept,
        candidates,
    )
