"""``solve(problem, method)``: run a registered solver, score its plan, report a :class:`Result`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from partopt import bounds, solvers
from partopt._checks import check_int, check_real
from partopt.dag import DagProblem
from partopt.feasibility import infeasibility_reason, min_uniform_capacity
from partopt.plan import Evaluation, InvalidPlan, Plan, evaluate
from partopt.problem import Problem

__all__ = ["Result", "solve", "gap"]

OBJECTIVE_RTOL = 1e-6
"""A solver's claimed objective must match ``evaluate`` to this relative tolerance."""


@dataclass
class Result:
    """The outcome of one solve.

    Attributes
    ----------
    method
        Registered method name.
    status
        ``optimal`` (proven), ``feasible`` (plan, no proof), ``infeasible``
        (proven: no valid plan), ``no_solution`` (none found, nothing proven)
        or ``error`` (reason in ``info["error"]``).
    plan
        The plan, or ``None``.
    bottleneck_s
        Seconds per inference of ``plan`` according to :func:`evaluate`.
    lower_bound_s
        Best valid lower bound known: the solver's own and :mod:`partopt.bounds`.
    gap
        ``(bottleneck - bound) / bottleneck`` (0 when both are 0).
    runtime_s
        Wall-clock seconds in the solver (bounds and evaluation excluded).
    info
        Solver details (node counts, iterations, the reason for a failure,
        ``min_capacity_bytes`` for infeasible instances, ...).
    """

    method: str
    status: str
    plan: Plan | None
    bottleneck_s: float | None
    lower_bound_s: float | None
    gap: float | None
    runtime_s: float
    info: dict = field(default_factory=dict)
    evaluation: Evaluation | None = None

    @property
    def throughput_per_s(self) -> float | None:
        return None if self.evaluation is None else self.evaluation.throughput_per_s

    def to_dict(self, problem: Problem | DagProblem | None = None) -> dict:
        """JSON-ready summary (the shape ``partopt solve --json`` prints)."""
        stages = []
        if self.evaluation is not None:
            names = getattr(getattr(problem, "dag", None), "op_names", None)
            for s in self.evaluation.stages:
                if s.ops:
                    stages.append(
                        {
                            "node": problem.cluster.names[s.node] if problem else s.node,
                            "ops": [names[o] for o in s.ops] if names else list(s.ops),
                            "memory_bytes": s.memory_bytes,
                            "compute_s": s.compute_s,
                            "transfer_s": s.transfer_s,
                            "load_s": s.load_s,
                        }
                    )
                    continue
                stages.append(
                    {
                        "node": problem.cluster.names[s.node] if problem else s.node,
                        "first_block": s.first_block,
                        "last_block": s.last_block,
                        "memory_bytes": s.memory_bytes,
                        "compute_s": s.compute_s,
                        "transfer_s": s.transfer_s,
                    }
                )
        return {
            "method": self.method,
            "status": self.status,
            "bottleneck_s": _finite_or_none(self.bottleneck_s),
            "lower_bound_s": _finite_or_none(self.lower_bound_s),
            "gap": self.gap,
            "runtime_s": self.runtime_s,
            "stages": stages,
            "info": {k: v for k, v in self.info.items() if _jsonable(v)},
        }


def _finite_or_none(x):
    return None if x is None or not math.isfinite(x) else x


def _jsonable(v) -> bool:
    return isinstance(v, str | int | float | bool | type(None) | list | dict)


def gap(objective_s: float | None, bound_s: float | None) -> float | None:
    """Relative gap ``(objective - bound) / objective``; 0 when both are 0.

    Examples
    --------
    >>> gap(2.0, 1.5), gap(0.0, 0.0), gap(None, 1.0)
    (0.25, 0.0, None)
    """
    if objective_s is None or bound_s is None or not math.isfinite(objective_s):
        return None
    if objective_s <= 0:
        return 0.0
    return max(0.0, (objective_s - bound_s) / objective_s)


def _checked_arguments(problem, method, time_limit_s, seed, options):
    """The solver entry and the time limit (``inf`` -> ``None``) after checking every argument."""
    if not isinstance(problem, Problem | DagProblem):
        raise TypeError(
            f"problem must be a partopt Problem or DagProblem, got {problem!r} "
            f"({type(problem).__name__})"
        )
    if not isinstance(method, str):
        raise TypeError(f"method must be a method name (str), got {method!r}")
    info_ = solvers.get(method)
    if isinstance(problem, DagProblem) and not info_.dag:
        able = ", ".join(name for name, m in solvers.available().items() if m.dag)
        raise solvers.SolverRefused(
            f"method {method!r} plans chains only; for DAG cuts use one of {able}, "
            "or plan a chain (cuts single or multi)"
        )
    if time_limit_s is not None:
        time_limit_s = check_real(time_limit_s, "time_limit_s", minimum=0.0, allow_inf=True)
        if math.isinf(time_limit_s):
            time_limit_s = None
    check_int(seed, "seed", minimum=0)
    known = solvers.option_names(method)
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(
            f"method {method!r} has no option {unknown[0]!r}; "
            f"its options are {', '.join(sorted(known)) or '(none)'}"
        )
    return info_, time_limit_s


def solve(
    problem: Problem | DagProblem,
    method: str = "exact",
    *,
    time_limit_s: float | None = None,
    seed: int = 0,
    **options,
) -> Result:
    """Solve ``problem`` with a registered ``method`` and score the plan.

    The plan is always checked and scored by :func:`partopt.plan.evaluate`;
    a solver whose claimed objective disagrees with it by more than
    ``1e-6`` relative gets status ``error``.  Instances that memory alone
    makes infeasible (a block larger than every node, more stages needed
    than nodes) come back as ``infeasible`` without running the solver,
    with ``info["min_capacity_bytes"]``: the per-node capacity that would
    make them feasible.

    Examples
    --------
    >>> from partopt import Chain, Cluster, Problem
    >>> p = Problem(Chain.from_arrays([3, 3, 3], [1e6, 2e6]),
    ...             Cluster.uniform(3, memory_bytes=6, bandwidth_mbps=8.0))
    >>> r = solve(p, "brute")
    >>> r.status, r.bottleneck_s, r.plan.cuts
    ('optimal', 1.0, (0,))

    Arguments are checked here, before any solver runs: ``time_limit_s``
    must be ``None`` or a number of seconds >= 0 (``inf`` means no
    limit), ``seed`` a non-negative integer, and every keyword option one
    that ``method`` takes (``TypeError`` names the unknown one).
    """
    info_, time_limit_s = _checked_arguments(problem, method, time_limit_s, seed, options)
    reason = infeasibility_reason(problem)
    if reason is not None:
        return Result(
            method,
            "infeasible",
            None,
            None,
            math.inf,
            None,
            0.0,
            {"reason": reason, "min_capacity_bytes": min_uniform_capacity(problem)},
        )
    start = time.perf_counter()
    try:
        out = info_.fn(problem, time_limit_s=time_limit_s, seed=seed, **options)
    except (KeyboardInterrupt, MemoryError):
        raise
    except solvers.SolverRefused:
        raise  # a request the method cannot serve (e.g. too large for brute force)
    except Exception as exc:  # noqa: BLE001 - a solver crash is a result, not a traceback
        return Result(
            method,
            "error",
            None,
            None,
            None,
            None,
            time.perf_counter() - start,
            {"error": f"{type(exc).__name__}: {exc}"},
        )
    runtime = time.perf_counter() - start
    info = dict(out.info)
    status = out.status
    if status == "infeasible":
        need = min_uniform_capacity(problem)
        if need is None:
            pass  # not computed for DAG problems
        elif float(problem.cluster.memory_bytes.min()) >= need:
            # Every node already has what memory needs: more memory is not the fix.
            why = info.get("reason") or "no plan fits the links"
            info["reason"] = (
                f"{why}; memory is not what is missing (every node has the {need:.0f} bytes "
                "a plan needs): the links do not join the nodes a plan needs"
            )
        else:
            info.setdefault("min_capacity_bytes", need)
        return Result(method, status, None, None, math.inf, None, runtime, info)

    evaluation = None
    bottleneck = None
    if out.plan is not None:
        try:
            evaluation = evaluate(problem, out.plan)
            bottleneck = evaluation.bottleneck_s
        except InvalidPlan as exc:
            return Result(
                method,
                "error",
                out.plan,
                None,
                None,
                None,
                runtime,
                {**info, "error": f"solver returned an invalid plan: {exc}"},
            )
        if out.objective_s is not None and not math.isclose(
            out.objective_s, bottleneck, rel_tol=OBJECTIVE_RTOL, abs_tol=1e-12
        ):
            return Result(
                method,
                "error",
                out.plan,
                bottleneck,
                None,
                None,
                runtime,
                {
                    **info,
                    "error": f"solver claimed {out.objective_s!r} s but the plan "
                    f"evaluates to {bottleneck!r} s",
                },
            )
    elif status in ("optimal", "feasible"):
        status = "error"
        info["error"] = f"solver said {out.status} but returned no plan"

    bound = bounds.lower_bound_s(problem)
    if out.lower_bound_s is not None and math.isfinite(out.lower_bound_s):
        bound = max(bound, out.lower_bound_s)
    if bottleneck is not None:
        if bound > bottleneck * (1 + OBJECTIVE_RTOL) + 1e-12:
            return Result(
                method,
                "error",
                out.plan,
                bottleneck,
                bound,
                None,
                runtime,
                {
                    **info,
                    "error": f"lower bound {bound!r} s exceeds the plan's "
                    f"{bottleneck!r} s: a bound or solver is wrong",
                },
            )
        bound = min(bound, bottleneck)
    g = gap(bottleneck, bound)
    if status == "feasible" and g is not None and g <= 1e-9:
        status = "optimal"  # the bound proves it
    return Result(method, status, out.plan, bottleneck, bound, g, runtime, info, evaluation)
