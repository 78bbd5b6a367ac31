"""The one module that talks to HiGHS (through pyomo).

Every MILP in partopt is built by a ``build(problem) -> pyo.ConcreteModel``
function that never solves; :func:`solve_model` solves it and reads back
what a result record needs: the incumbent objective, the dual bound, the
branch-and-bound node count, the termination status and the wall time.
It sets every option a result depends on explicitly (time limit, relative
and absolute gap 0, random seed, threads) and never raises: a time limit,
a numerical failure or a missing solver all come back as a
:class:`HighsOutcome` whose ``status`` says what happened.

Statuses follow :data:`partopt.solvers.STATUSES`:

``optimal``      proven optimal (gap 0); the solution is loaded into the model.
``feasible``     stopped (time limit, ...) with an incumbent; ``bound`` is the dual bound.
``infeasible``   HiGHS proved that no integer solution exists.
``no_solution``  stopped without an incumbent and without a proof.
``error``        the solver failed; ``message`` says why.

``infeasible`` is reported only on HiGHS's own proof, or when HiGHS says
"infeasible or unbounded" for a model whose variables all have finite
bounds (such a model cannot be unbounded). Any other state is never
collapsed into "infeasible".

Examples
--------
>>> import pyomo.environ as pyo
>>> m = pyo.ConcreteModel()
>>> m.x = pyo.Var([0, 1], domain=pyo.Binary)
>>> m.pick_one = pyo.Constraint(expr=m.x[0] + m.x[1] == 1)
>>> m.cost = pyo.Objective(expr=3 * m.x[0] + 2 * m.x[1])
>>> out = solve_model(m, time_limit_s=10)
>>> out.status, out.objective, round(pyo.value(m.x[1]))
('optimal', 2.0, 1)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

__all__ = ["HighsOutcome", "LpSession", "solve_model", "solve_lp", "DEFAULT_THREADS"]

DEFAULT_THREADS = 1
"""Threads given to HiGHS unless told otherwise: one, so that runs are reproducible
and parallel sweeps do not oversubscribe the machine."""


@dataclass
class HighsOutcome:
    """What one HiGHS run produced.

    Attributes
    ----------
    status
        ``optimal``, ``feasible``, ``infeasible``, ``no_solution`` or ``error``.
    termination
        HiGHS's termination condition as pyomo names it (for the record).
    objective
        Incumbent objective value, or ``None`` without an incumbent.
    bound
        Dual (lower, for minimisation) bound, or ``None`` if HiGHS gave none.
    nodes
        Branch-and-bound nodes explored (``None`` if unknown, 0 for an LP).
    runtime_s
        Wall-clock seconds of the whole call (model load + solve).
    message
        Why the run ended when it is not ``optimal``.
    info
        Further numbers for the record (simplex iterations, HiGHS's gap, ...).
    """

    status: str
    termination: str = "unknown"
    objective: float | None = None
    bound: float | None = None
    nodes: int | None = None
    runtime_s: float = 0.0
    message: str = ""
    info: dict = field(default_factory=dict)

    @property
    def has_solution(self) -> bool:
        """Whether a solution was loaded into the model's variables."""
        return self.status in ("optimal", "feasible")

    def as_info(self, prefix: str = "milp_") -> dict:
        """A flat dict for :attr:`partopt.solvers.SolverOutput.info`."""
        out = {
            f"{prefix}status": self.status,
            f"{prefix}termination": self.termination,
            f"{prefix}objective": self.objective,
            f"{prefix}bound": self.bound,
            f"{prefix}nodes": self.nodes,
            f"{prefix}runtime_s": self.runtime_s,
        }
        if self.message:
            out[f"{prefix}message"] = self.message
        return out


_NO_UPDATES = {  # the model is loaded once just before the solve; skip pyomo's change scan
    "check_for_new_or_removed_constraints": False,
    "check_for_new_or_removed_vars": False,
    "check_for_new_or_removed_params": False,
    "check_for_new_objective": False,
    "update_constraints": False,
    "update_vars": False,
    "update_parameters": False,
    "update_named_expressions": False,
    "update_objective": False,
}


def _all_variables_bounded(model) -> bool:
    import pyomo.environ as pyo

    for var in model.component_data_objects(pyo.Var, active=True):
        if var.fixed:
            continue
        if var.lb is None or var.ub is None:
            return False
    return True


def _finite(x) -> float | None:
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def solve_model(
    model,
    *,
    time_limit_s: float | None = None,
    seed: int = 0,
    threads: int = DEFAULT_THREADS,
    mip_rel_gap: float = 0.0,
    mip_abs_gap: float = 0.0,
    options: dict | None = None,
    log: bool = False,
) -> HighsOutcome:
    """Solve a pyomo model with HiGHS; never raises.

    Parameters
    ----------
    model
        A pyomo ``ConcreteModel`` with one active objective.
    time_limit_s
        Wall-clock limit in seconds for the whole call, loading the model
        into HiGHS included (``None``: no limit).
    seed
        HiGHS ``random_seed``.
    threads
        HiGHS ``threads``.
    mip_rel_gap, mip_abs_gap
        Stop when the gap falls below these; both 0 by default, so that
        ``optimal`` means proven optimal (HiGHS's own defaults, 1e-4 and
        1e-6, would stop early on objectives measured in seconds).
    options
        Further HiGHS options (name -> value), set after the ones above.
    log
        Echo HiGHS's log to stdout.

    Returns
    -------
    HighsOutcome
        With the solution loaded into the model's variables when
        ``has_solution``.
    """
    start = time.perf_counter()
    try:
        import pyomo.environ  # noqa: F401 - registers pyomo's plugins
        from pyomo.contrib.solver.common.results import TerminationCondition as TC
        from pyomo.contrib.solver.solvers.highs import Highs
    except Exception as exc:  # noqa: BLE001 - a broken install is a result, not a traceback
        return HighsOutcome(
            "error",
            message=f"pyomo/HiGHS not importable: {exc}",
            runtime_s=time.perf_counter() - start,
        )
    if time_limit_s is not None and not time_limit_s > 0:
        return HighsOutcome(
            "no_solution",
            termination="maxTimeLimit",
            message="no time left for HiGHS",
            runtime_s=0.0,
        )
    solver_options = {
        "mip_rel_gap": float(mip_rel_gap),
        "mip_abs_gap": float(mip_abs_gap),
        "random_seed": int(seed),
        "output_flag": bool(log),
    }
    solver_options.update(options or {})
    try:
        solver = Highs()
        if not solver.available():
            return HighsOutcome(
                "error",
                message="HiGHS (highspy) is not available",
                runtime_s=time.perf_counter() - start,
            )
        # Load first, then give HiGHS what is left of the limit: for large
        # models pyomo's translation takes seconds and counts against it.
        solver.set_instance(model)
        remaining = None
        if time_limit_s is not None:
            remaining = float(time_limit_s) - (time.perf_counter() - start)
            if remaining <= 0:
                return HighsOutcome(
                    "no_solution",
                    termination="maxTimeLimit",
                    message="time limit reached while loading the model",
                    runtime_s=time.perf_counter() - start,
                )
        results = solver.solve(
            model,
            time_limit=remaining,
            threads=int(threads),
            solver_options=solver_options,
            load_solutions=False,
            raise_exception_on_nonoptimal_result=False,
            tee=log,
            auto_updates=_NO_UPDATES,
        )
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - solver trouble is reported, not raised
        return HighsOutcome(
            "error", message=f"{type(exc).__name__}: {exc}", runtime_s=time.perf_counter() - start
        )

    tc = results.termination_condition
    termination = getattr(tc, "name", str(tc))
    objective = _finite(results.incumbent_objective)
    bound = _finite(results.objective_bound)
    extra = results.extra_info
    nodes = getattr(extra, "mip_node_count", None)
    nodes = None if nodes is None else max(int(nodes), 0)
    info = {"simplex_iterations": getattr(extra, "simplex_iteration_count", None)}

    has_incumbent = objective is not None
    if has_incumbent:
        try:
            results.solution_loader.load_vars()
        except Exception as exc:  # noqa: BLE001
            return HighsOutcome(
                "error",
                termination,
                objective,
                bound,
                nodes,
                time.perf_counter() - start,
                f"could not read HiGHS's solution: {exc}",
                info,
            )

    if tc == TC.convergenceCriteriaSatisfied and has_incumbent:
        status, message = "optimal", ""
        if bound is None:
            bound = objective
    elif tc == TC.provenInfeasible:
        status, message = "infeasible", "HiGHS proved the model infeasible"
    elif tc == TC.infeasibleOrUnbounded and not has_incumbent and _all_variables_bounded(model):
        status, message = (
            "infeasible",
            "HiGHS: infeasible or unbounded, and every variable is bounded",
        )
    elif tc in (
        TC.error,
        TC.licensingProblems,
        TC.unbounded,
        TC.infeasibleOrUnbounded,
        TC.emptyModel,
    ):
        status, message = "error", f"HiGHS stopped with {termination}"
        if has_incumbent:
            status = "feasible"
    elif has_incumbent:
        status, message = "feasible", f"HiGHS stopped with {termination} (incumbent kept)"
    else:
        status, message = "no_solution", f"HiGHS stopped with {termination} and no incumbent"
    return HighsOutcome(
        status, termination, objective, bound, nodes, time.perf_counter() - start, message, info
    )


# -- matrix-form LP feasibility -------------------------------------------------


def _farkas_gap(a_csc, row_lower, row_upper, col_lower, col_upper, y) -> float:
    """How strongly ``y`` proves ``row_lower <= A x <= row_upper`` (box on x) infeasible.

    For every feasible ``x``, ``y^T A x`` lies both below ``max_x y^T A x``
    over the box and above ``min_r y^T r`` over the row ranges; a positive
    ``min_r y^T r - max_x y^T A x`` is therefore a proof of infeasibility.
    Returns that difference relative to the certificate's size (``-inf``
    when it proves nothing).
    """
    import numpy as np

    y = np.where(np.abs(y) < 1e-14, 0.0, y)
    g = a_csc.T @ y  # (y^T A)_j
    with np.errstate(invalid="ignore"):
        top = np.where(g > 0, g * col_upper, g * col_lower)
        top = np.where(g == 0, 0.0, top)
        low = np.where(y > 0, y * row_lower, y * row_upper)
        low = np.where(y == 0, 0.0, low)
    upper = float(np.sum(top))
    lower = float(np.sum(low))
    if not (np.isfinite(upper) and np.isfinite(lower)):
        return -math.inf
    scale = 1.0 + float(np.abs(g).sum() + np.abs(y).sum())
    return (lower - upper) / scale


def _safe_lower_bound(cost, a_csc, row_lower, row_upper, col_lower, col_upper, y) -> float:
    """A lower bound on ``min c^T x`` over the LP that holds for *any* row multipliers ``y``.

    ``c^T x = (c - A^T y)^T x + y^T A x``; bounding each term over the
    column box and the row ranges gives a bound that does not depend on ``y``
    being optimal, or even dual feasible (weak duality, made robust).
    """
    import numpy as np

    r = cost - a_csc.T @ y
    with np.errstate(invalid="ignore"):
        cols = np.where(r > 0, r * col_lower, r * col_upper)
        cols = np.where(r == 0, 0.0, cols)
        rows = np.where(y > 0, y * row_lower, y * row_upper)
        rows = np.where(y == 0, 0.0, rows)
    bound = float(np.sum(cols) + np.sum(rows))
    if not np.isfinite(bound):
        return -math.inf
    slack = 1e-12 * (1.0 + float(np.abs(cols).sum() + np.abs(rows).sum()))
    return bound - slack


class LpSession:
    """An LP kept in HiGHS so that it can be re-solved, warm, after its column bounds change.

    ``min cost^T x`` s.t. ``row_lower <= A x <= row_upper``,
    ``col_lower <= x <= col_upper``, in matrix form, handed to highspy
    directly (no pyomo): the exact solver asks this for LPs with hundreds of
    thousands of columns, which pyomo takes tens of seconds to translate and
    HiGHS solves in seconds. :meth:`solve` never raises, and everything it
    reports is checked here, independently of HiGHS's tolerances:

    * ``optimal``: ``info["x"]`` is HiGHS's point and ``bound`` a lower bound
      recomputed from its duals by weak duality (:func:`_safe_lower_bound`),
      valid whatever HiGHS's accuracy;
    * ``infeasible``: only with a Farkas certificate (HiGHS's dual ray) that
      checks out in double precision (:func:`_farkas_gap`);
    * otherwise ``no_solution`` ("not decided") or ``error``.
    """

    def __init__(
        self,
        cost,
        a_csc,
        row_lower,
        row_upper,
        col_lower,
        col_upper,
        *,
        threads: int = DEFAULT_THREADS,
        seed: int = 0,
    ) -> None:
        import numpy as np

        self.cost = np.asarray(cost, dtype=float)
        self.a = a_csc
        self.row_lower = np.asarray(row_lower, dtype=float)
        self.row_upper = np.asarray(row_upper, dtype=float)
        self.col_lower = np.asarray(col_lower, dtype=float).copy()
        self.col_upper = np.asarray(col_upper, dtype=float).copy()
        self.threads, self.seed = threads, seed
        self._h = None
        self._error = ""
        try:
            import highspy
            from pyomo.common.tee import capture_output

            with capture_output(capture_fd=True):  # the constructor prints a banner
                h = highspy.Highs()
            h.setOptionValue("output_flag", False)
            h.setOptionValue("threads", int(threads))
            h.setOptionValue("random_seed", int(seed))
            lp = highspy.HighsLp()
            ncol = a_csc.shape[1]
            lp.num_col_ = ncol
            lp.num_row_ = a_csc.shape[0]
            lp.col_cost_ = self.cost
            lp.col_lower_ = self.col_lower
            lp.col_upper_ = self.col_upper
            lp.row_lower_ = np.where(
                np.isfinite(self.row_lower), self.row_lower, -highspy.kHighsInf
            )
            lp.row_upper_ = np.where(np.isfinite(self.row_upper), self.row_upper, highspy.kHighsInf)
            lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
            lp.a_matrix_.start_ = a_csc.indptr
            lp.a_matrix_.index_ = a_csc.indices
            lp.a_matrix_.value_ = a_csc.data
            h.passModel(lp)
            self._h = h
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - reported by solve()
            self._error = f"{type(exc).__name__}: {exc}"

    def solve(self, col_upper=None, *, time_limit_s: float | None = None) -> HighsOutcome:
        """Solve with the given column upper bounds (default: unchanged), warm from the last basis."""
        import numpy as np

        start = time.perf_counter()
        if self._h is None:
            return HighsOutcome("error", message=self._error or "no HiGHS instance")
        if time_limit_s is not None and not time_limit_s > 0:
            return HighsOutcome(
                "no_solution", termination="maxTimeLimit", message="no time left for HiGHS"
            )
        try:
            import highspy

            h = self._h
            if col_upper is not None:
                col_upper = np.asarray(col_upper, dtype=float)
                changed = np.flatnonzero(col_upper != self.col_upper)
                if changed.size:
                    h.changeColsBounds(
                        int(changed.size),
                        changed.astype(np.int32),
                        self.col_lower[changed],
                        col_upper[changed],
                    )
                    self.col_upper = col_upper.copy()
            h.setOptionValue(
                "time_limit", float("inf") if time_limit_s is None else float(time_limit_s)
            )
            h.run()
            status = h.getModelStatus()
            runtime = time.perf_counter() - start
            name = h.modelStatusToString(status)
            args = (self.a, self.row_lower, self.row_upper, self.col_lower, self.col_upper)
            if status == highspy.HighsModelStatus.kOptimal:
                sol = h.getSolution()
                x = np.asarray(sol.col_value, dtype=float)
                y = np.asarray(sol.row_dual, dtype=float)
                bound = _safe_lower_bound(self.cost, *args, y)
                return HighsOutcome(
                    "optimal", name, float(self.cost @ x), bound, 0, runtime, info={"x": x}
                )
            if status == highspy.HighsModelStatus.kInfeasible:
                # highspy 1.16's stubs omit getDualRay; the binding has it
                _, has_ray, ray = h.getDualRay()  # type: ignore[attr-defined]
                if has_ray:
                    ray = np.asarray(ray, dtype=float)
                    gap = max(_farkas_gap(*args, ray), _farkas_gap(*args, -ray))
                    if gap > 1e-9:
                        return HighsOutcome(
                            "infeasible",
                            name,
                            runtime_s=runtime,
                            message="Farkas certificate checked",
                            info={"farkas_gap": gap},
                        )
                return HighsOutcome(
                    "no_solution",
                    name,
                    runtime_s=runtime,
                    message="HiGHS said infeasible but gave no certificate that checks out",
                )
            return HighsOutcome(
                "no_solution", name, runtime_s=runtime, message=f"HiGHS stopped with {name}"
            )
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - solver trouble is reported, not raised
            return HighsOutcome(
                "error",
                message=f"{type(exc).__name__}: {exc}",
                runtime_s=time.perf_counter() - start,
            )


def solve_lp(
    cost,
    a_csc,
    row_lower,
    row_upper,
    col_lower,
    col_upper,
    *,
    time_limit_s: float | None = None,
    threads: int = DEFAULT_THREADS,
    seed: int = 0,
) -> HighsOutcome:
    """Solve an LP once (see :class:`LpSession` for what is checked); never raises."""
    try:
        session = LpSession(
            cost, a_csc, row_lower, row_upper, col_lower, col_upper, threads=threads, seed=seed
        )
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. arrays that are not arrays
        return HighsOutcome("error", message=f"{type(exc).__name__}: {exc}")
    return session.solve(time_limit_s=time_limit_s)
