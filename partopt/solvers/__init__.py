"""Solver registry: every method maps a name to a function returning :class:`SolverOutput`.

A solver is ``fn(problem, *, time_limit_s, seed, **options) -> SolverOutput``.
It never scores itself: :func:`partopt.solve.solve` times it, checks its plan
with :func:`partopt.plan.evaluate` and compares its claimed objective.
To add a method, write a module in this package that decorates its
function with :func:`register`; every module here is imported on first use.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

from partopt.errors import PartoptError
from partopt.plan import Plan

__all__ = [
    "STATUSES",
    "SolverRefused",
    "UnknownMethod",
    "SolverOutput",
    "SolverInfo",
    "register",
    "get",
    "available",
    "option_names",
]

STATUSES = ("optimal", "feasible", "infeasible", "no_solution", "error")
"""optimal: proven optimum; feasible: a plan without proof (with a bound if any);
infeasible: proven that no valid plan exists; no_solution: none found, nothing proven;
error: the solver failed (the reason is in ``info["error"]``)."""


class UnknownMethod(PartoptError):
    """A method name no solver is registered under."""


class SolverRefused(PartoptError):
    """The method will not run on this instance (too large, wrong objective...); says why."""


@dataclass
class SolverOutput:
    """What a solver hands back; ``solve()`` turns it into a :class:`~partopt.solve.Result`.

    ``objective_s`` is the bottleneck the solver believes its plan has
    (checked against ``evaluate``); ``lower_bound_s`` a bound it proved.
    """

    status: str
    plan: Plan | None = None
    objective_s: float | None = None
    lower_bound_s: float | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")


@dataclass(frozen=True)
class SolverInfo:
    name: str
    fn: Callable[..., SolverOutput]
    exact: bool
    description: str
    dag: bool = False
    """Whether the method plans :class:`~partopt.dag.DagProblem` instances (DAG cuts)."""


_REGISTRY: dict[str, SolverInfo] = {}
_loaded = False


def register(name: str, *, exact: bool = False, description: str = "", dag: bool = False):
    """Decorator adding a solver under ``name``; ``exact`` solvers prove optimality.

    ``dag``: the solver also plans DAG problems (stages that are operator sets).
    """

    def deco(fn):
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"solver {name!r} registered twice")
        _REGISTRY[name] = SolverInfo(
            name, fn, exact, description or (fn.__doc__ or "").strip().split("\n")[0], dag
        )
        return fn

    return deco


def _load() -> None:
    global _loaded
    if not _loaded:
        for mod in pkgutil.iter_modules(__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{__name__}.{mod.name}")
        _loaded = True


def available() -> dict[str, SolverInfo]:
    """All registered methods by name."""
    _load()
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> SolverInfo:
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownMethod(
            f"unknown method {name!r}; choose one of {', '.join(sorted(_REGISTRY))}"
        ) from None


def option_names(name: str) -> frozenset[str]:
    """Keyword options method ``name`` takes besides ``time_limit_s`` and ``seed``.

    Read from the solver function's signature (a catch-all ``**_`` takes
    nothing): :func:`partopt.solve.solve` refuses any other option.

    Examples
    --------
    >>> sorted(option_names("greedy"))
    ['partition']
    """
    params = inspect.signature(get(name).fn).parameters.values()
    named = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return frozenset(named - {"problem", "time_limit_s", "seed"})
