"""Size and time limits the solvers share: refuse before allocating, stop before overrunning.

Two kinds of instance are too large for a method, and both are refused
before anything big is allocated, with :class:`~partopt.solvers.SolverRefused`
saying how large and what to use instead:

* a dense table of more than :data:`MAX_DENSE_CELLS` numbers (``cuts x nodes
  x nodes`` transfer times, ``blocks x blocks x nodes`` stage tables);
* a MILP of more than :data:`MAX_MODEL_ITEMS` variables and constraints.

A MILP's time limit covers building the model and loading it into HiGHS,
neither of which HiGHS can interrupt. Before building, the time both will
take is predicted from the model's size at the measured rates
:data:`BUILD_S_PER_ITEM` and :data:`LOAD_S_PER_ITEM`; when the time left is
shorter, the method stops at once with ``no_solution`` (:class:`OutOfTime`
carries the reason). The overhead beyond the limit is therefore the
prediction error on the build and load (measured rates on this project's
machine: 8-25 microseconds per variable to build, 23-85 to load, for the
stage-flow and layered models of 400 blocks x 40 nodes), plus the candidate
enumeration between two looks at the clock.
"""

from __future__ import annotations

import math
import time

from partopt.solvers import SolverRefused

__all__ = [
    "MAX_DENSE_CELLS",
    "MAX_MODEL_ITEMS",
    "BUILD_S_PER_ITEM",
    "LOAD_S_PER_ITEM",
    "OutOfTime",
    "refuse_if_dense",
    "refuse_if_model_too_large",
    "check_time_left",
    "milp_decision",
]

MAX_DENSE_CELLS = 2**27
"""Largest dense table a solver may allocate: 2**27 cells (1 GiB of float64)."""

MAX_MODEL_ITEMS = 10_000_000
"""Largest MILP (variables + constraints) a method builds; pyomo needs about 1-2 KB each."""

BUILD_S_PER_ITEM = 5e-6
"""Seconds per variable or constraint to build a pyomo model (low end of the measurements)."""

LOAD_S_PER_ITEM = 15e-6
"""Seconds per variable or constraint to load a pyomo model into HiGHS (low end)."""


class OutOfTime(Exception):
    """The time limit ran out (or will, by prediction) before the solver could start."""


def _gib(cells: float) -> str:
    return f"{cells * 8 / 2**30:.1f} GiB"


def refuse_if_dense(method: str, what: str, shape: tuple[int, ...], instead: str) -> None:
    """Raise :class:`SolverRefused` if a dense float table of ``shape`` exceeds the limit."""
    cells = math.prod(shape)
    if cells > MAX_DENSE_CELLS:
        dims = " x ".join(str(d) for d in shape)
        raise SolverRefused(
            f"{method} would allocate a {dims} {what} ({_gib(cells)}), more than the "
            f"{_gib(MAX_DENSE_CELLS)} a method may use; use {instead} for an instance this large"
        )


def refuse_if_model_too_large(method: str, items: int, detail: str, instead: str) -> None:
    """Raise :class:`SolverRefused` if a MILP would have more than :data:`MAX_MODEL_ITEMS` rows and columns."""
    if items > MAX_MODEL_ITEMS:
        raise SolverRefused(
            f"{method} would build a MILP of up to {items:,} variables and constraints ({detail}), "
            f"more than the {MAX_MODEL_ITEMS:,} it handles; use {instead}"
        )


def check_time_left(method: str, deadline: float, items: int) -> None:
    """Raise :class:`OutOfTime` if building and loading ``items`` cannot finish by ``deadline``."""
    if not math.isfinite(deadline):
        return
    left = deadline - time.perf_counter()
    need = items * (BUILD_S_PER_ITEM + LOAD_S_PER_ITEM)
    if left <= 0 or need > left:
        raise OutOfTime(
            f"time limit: building and loading the {method} model ({items:,} variables and "
            f"constraints) takes about {need:.1f} s, and {max(left, 0.0):.2f} s were left"
        )


def milp_decision(build, extract, deadline: float, *, seed: int, threads: int, options: dict):
    """One threshold decision by a MILP: ``(status, plan, bound, info)``.

    ``build()`` makes the pyomo model of the plans within the threshold and
    ``extract(model)`` reads the plan of a solved one (``None`` if it cannot).
    The decision is ``unknown`` when the time is up before building, when the
    build is refused (:class:`SolverRefused`, named in ``info["milp_refused"]``)
    or would overrun (:class:`OutOfTime`), or when HiGHS proves nothing;
    HiGHS gets the time left after building.
    """
    from partopt.highs import solve_model

    if math.isfinite(deadline) and deadline - time.perf_counter() <= 0:
        return "unknown", None, None, {}
    try:
        model = build()
    except SolverRefused as exc:
        return "unknown", None, None, {"milp_refused": str(exc)}
    except OutOfTime:
        return "unknown", None, None, {}
    remaining = max(0.0, deadline - time.perf_counter()) if math.isfinite(deadline) else None
    out = solve_model(model, time_limit_s=remaining, seed=seed, threads=threads, options=options)
    info = out.as_info()
    if out.status == "infeasible":
        return "infeasible", None, None, info
    if out.status in ("optimal", "feasible"):
        plan = extract(model)
        if plan is None:
            return "unknown", None, None, info
        return out.status, plan, out.bound, info
    return "unknown", None, out.bound, info
