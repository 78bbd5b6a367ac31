"""partopt.highs: options set explicitly, statuses read back, never raises."""

from __future__ import annotations

import pyomo.environ as pyo
import pytest

from partopt.highs import HighsOutcome, solve_model


def knapsack(n: int = 60, seed: int = 1) -> pyo.ConcreteModel:
    """A knapsack with large, similar weights: HiGHS needs many nodes to prove it."""
    import random

    rng = random.Random(seed)
    w = [rng.randint(10**5, 10**6) for _ in range(n)]
    m = pyo.ConcreteModel()
    m.x = pyo.Var(range(n), domain=pyo.Binary)
    m.fits = pyo.Constraint(expr=sum(w[i] * m.x[i] for i in range(n)) <= sum(w) // 2)
    m.value = pyo.Objective(expr=sum(w[i] * m.x[i] for i in range(n)), sense=pyo.maximize)
    return m


def test_optimal_loads_solution_and_bound():
    m = pyo.ConcreteModel()
    m.x = pyo.Var([0, 1, 2], domain=pyo.Binary)
    m.two = pyo.Constraint(expr=sum(m.x.values()) >= 2)
    m.cost = pyo.Objective(expr=1 * m.x[0] + 2 * m.x[1] + 3 * m.x[2])
    out = solve_model(m, time_limit_s=10, seed=3)
    assert out.status == "optimal" and out.has_solution
    assert out.objective == pytest.approx(3.0)
    assert out.bound == pytest.approx(3.0)
    assert [round(pyo.value(m.x[i])) for i in range(3)] == [1, 1, 0]
    assert out.nodes is not None and out.nodes >= 0
    info = out.as_info()
    assert info["milp_status"] == "optimal" and "milp_nodes" in info


def test_proven_infeasible():
    m = pyo.ConcreteModel()
    m.x = pyo.Var([0, 1, 2], domain=pyo.Binary)
    m.too_many = pyo.Constraint(expr=sum(m.x.values()) >= 4)
    m.cost = pyo.Objective(expr=m.x[0])
    out = solve_model(m)
    assert out.status == "infeasible" and not out.has_solution and out.objective is None


def test_integer_infeasible_with_bounded_variables():
    m = pyo.ConcreteModel()
    m.x = pyo.Var([0, 1], domain=pyo.Integers, bounds=(0, 5))
    m.odd = pyo.Constraint(expr=2 * m.x[0] + 2 * m.x[1] == 3)
    m.cost = pyo.Objective(expr=m.x[0])
    assert solve_model(m).status == "infeasible"


def test_time_limit_returns_incumbent_or_nothing_never_raises():
    out = solve_model(knapsack(), time_limit_s=0.2)
    assert out.status in ("feasible", "optimal", "no_solution")
    if out.status == "feasible":
        assert out.objective is not None and out.bound is not None
        assert out.bound >= out.objective - 1e-6  # maximisation: the bound is above
        assert "maxTimeLimit" in out.termination


def test_zero_time_left_is_no_solution():
    out = solve_model(knapsack(10), time_limit_s=0.0)
    assert out.status == "no_solution"


def test_unbounded_is_error_not_infeasible():
    m = pyo.ConcreteModel()
    m.x = pyo.Var(domain=pyo.Integers)
    m.cost = pyo.Objective(expr=m.x)
    out = solve_model(m)
    assert out.status == "error"
    assert out.message


def test_garbage_is_an_error_outcome():
    out = solve_model(object())
    assert isinstance(out, HighsOutcome)
    assert out.status == "error" and out.message


def test_seed_and_threads_are_accepted():
    a = solve_model(knapsack(8), seed=1, threads=1)
    b = solve_model(knapsack(8), seed=2, threads=1)
    assert a.status == b.status == "optimal"
    assert a.objective == pytest.approx(b.objective)


def test_solve_lp_bound_is_valid_and_tight():
    import numpy as np
    import scipy.sparse as sp

    from partopt.highs import solve_lp

    # min x0 + 2 x1  s.t.  x0 + x1 = 1.5,  0 <= x <= 1  ->  2.0 at (1, 0.5)
    a = sp.csc_matrix(np.array([[1.0, 1.0]]))
    out = solve_lp([1.0, 2.0], a, [1.5], [1.5], np.zeros(2), np.ones(2))
    assert out.status == "optimal"
    assert out.bound <= 2.0 and out.bound == pytest.approx(2.0)
    assert out.info["x"] == pytest.approx([1.0, 0.5])


def test_solve_lp_infeasible_only_with_a_checked_certificate():
    import numpy as np
    import scipy.sparse as sp

    from partopt.highs import _farkas_gap, solve_lp

    # x0 + x1 = 1, x0 - x1 >= 0.9, x1 >= 0.2 on [0, 1]^2: x0 >= 1.1, impossible
    a = sp.csc_matrix(np.array([[1.0, 1.0], [1.0, -1.0], [0.0, 1.0]]))
    lo, hi = np.array([1.0, 0.9, 0.2]), np.array([1.0, np.inf, np.inf])
    out = solve_lp(np.zeros(2), a, lo, hi, np.zeros(2), np.ones(2))
    assert out.status == "infeasible" and out.info["farkas_gap"] > 0
    # a multiplier that proves nothing is rejected
    assert _farkas_gap(a, lo, hi, np.zeros(2), np.ones(2), np.zeros(3)) <= 0


def test_solve_lp_garbage_is_an_error():
    from partopt.highs import solve_lp

    out = solve_lp([1.0], object(), [0.0], [1.0], [0.0], [1.0])
    assert out.status == "error" and out.message
