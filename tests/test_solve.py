import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partopt import Chain, Cluster, Problem, solve
from partopt.bounds import lower_bound_s
from partopt.feasibility import (
    farthest_ends,
    infeasibility_reason,
    min_stages,
    min_uniform_capacity,
)
from partopt.solvers import SolverRefused, available
from partopt.solvers.brute import count_plans
from tests.strategies import problems


def _partitions(b: int):
    for k in range(b):
        yield from itertools.combinations(range(b - 1), k)


def _stage_counts(problem: Problem, cap: float, allowed=None):
    b = problem.num_blocks
    best = math.inf
    for cuts in _partitions(b):
        if allowed is not None and not all(allowed[c] for c in cuts):
            continue
        bounds = [-1, *cuts, b - 1]
        if all(
            problem.stage_memory(bounds[i] + 1, bounds[i + 1]) <= cap
            for i in range(len(bounds) - 1)
        ):
            best = min(best, len(cuts) + 1)
    return best


@settings(deadline=None, max_examples=100)
@given(problems(), st.integers(1, 40), st.data())
def test_greedy_stage_count_is_minimal(problem, cap, data):
    b = problem.num_blocks
    allowed = data.draw(st.lists(st.booleans(), min_size=b - 1, max_size=b - 1))
    assert min_stages(problem, cap, np.array(allowed, dtype=bool)) == _stage_counts(
        problem, cap, allowed
    )
    ends = farthest_ends(problem, cap)
    for i in range(b):
        naive = i - 1
        for j in range(i, b):
            if problem.stage_memory(i, j) <= cap:
                naive = j
        assert ends[i] == naive


@settings(deadline=None, max_examples=60)
@given(problems())
def test_min_uniform_capacity_is_tight(problem):
    cap = min_uniform_capacity(problem)
    assert _stage_counts(problem, cap) <= problem.num_nodes
    assert _stage_counts(problem, cap - 1) > problem.num_nodes or cap <= max(
        problem.stage_memory(i, i) for i in range(problem.num_blocks)
    )


@settings(deadline=None, max_examples=150)
@given(problems())
def test_brute_vs_random_vs_bound(problem):
    exact = solve(problem, "brute")
    rnd = solve(problem, "random", seed=1)
    bound = lower_bound_s(problem)
    assert exact.status in ("optimal", "infeasible")
    if exact.status == "optimal":
        assert bound <= exact.bottleneck_s * (1 + 1e-9) + 1e-15
        assert exact.gap is not None and exact.lower_bound_s <= exact.bottleneck_s
        assert rnd.status in ("feasible", "optimal", "no_solution")
        if rnd.plan is not None:
            assert rnd.bottleneck_s >= exact.bottleneck_s * (1 - 1e-12)
    else:
        assert rnd.plan is None and rnd.status in ("infeasible", "no_solution")
    if infeasibility_reason(problem) is not None:
        assert exact.status == "infeasible"
        assert exact.info["min_capacity_bytes"] >= problem.cluster.memory_bytes.min()


def test_random_is_seeded():
    from partopt.cluster import paper_cluster

    chain = Chain.from_arrays(np.full(12, 10.0), np.arange(1, 12) * 1e5)
    p = Problem(chain, paper_cluster(8, 1e-4, seed=0))  # 1e-4 MB ~ 104 bytes: many stages
    a, b, c = (solve(p, "random", seed=s) for s in (5, 5, 6))
    assert a.plan == b.plan
    assert a.status == "feasible" and a.plan is not None
    assert c.plan != a.plan or c.bottleneck_s == a.bottleneck_s


def test_infeasible_block_larger_than_every_node():
    p = Problem(
        Chain.from_arrays([5, 50, 5], [1, 1]),
        Cluster.uniform(3, memory_bytes=20, bandwidth_mbps=1),
        memory="weights",
    )
    r = solve(p, "random")
    assert r.status == "infeasible" and r.plan is None
    assert r.info["min_capacity_bytes"] == 50
    assert "block 1" in r.info["reason"]


def test_infeasible_too_few_nodes_reports_capacity():
    p = Problem(
        Chain.from_arrays([4, 4, 4, 4], [1, 1, 1]),
        Cluster.uniform(2, memory_bytes=5, bandwidth_mbps=1),
        memory="weights",
    )
    r = solve(p, "brute")
    assert r.status == "infeasible"
    assert r.info["min_capacity_bytes"] == 8  # two stages of two blocks


def test_missing_links_make_brute_infeasible():
    p = Problem(
        Chain.from_arrays([4, 4], [1]),
        Cluster(("a", "b"), [4, 4], [[0, 0], [0, 0]]),
        memory="weights",
    )
    r = solve(p, "brute")
    assert r.status == "infeasible"
    # no links at all is a certificate every method gets before running
    r = solve(p, "random")
    assert r.status == "infeasible" and "no links" in r.info["reason"]


def test_brute_refuses_large_instances():
    assert count_plans(3, 2) == 1 * 2 + 2 * 2  # k=1: 2 placements; k=2: 2 cuts x 2 orders
    p = Problem(
        Chain.from_arrays(np.ones(30), np.ones(29)),
        Cluster.uniform(20, memory_bytes=100, bandwidth_mbps=1),
    )
    with pytest.raises(SolverRefused, match="brute force would enumerate"):
        solve(p, "brute")


def test_unknown_method_lists_choices():
    p = Problem(Chain.from_arrays([1], []), Cluster.uniform(1, memory_bytes=1, bandwidth_mbps=1))
    with pytest.raises(ValueError, match="unknown method 'nope'.*brute"):
        solve(p, "nope")
    assert {"random", "brute"} <= set(available())


def test_solver_crash_is_an_error_result(monkeypatch):
    from partopt import solvers

    def boom(problem, **_):
        raise RuntimeError("kaput")

    monkeypatch.setitem(solvers._REGISTRY, "boom", solvers.SolverInfo("boom", boom, False, ""))
    p = Problem(Chain.from_arrays([1], []), Cluster.uniform(1, memory_bytes=1, bandwidth_mbps=1))
    r = solve(p, "boom")
    assert r.status == "error" and "kaput" in r.info["error"]


def test_wrong_claim_is_caught(monkeypatch):
    from partopt import solvers
    from partopt.plan import Plan

    def liar(problem, **_):
        return solvers.SolverOutput("feasible", Plan.from_cuts([0], [0, 1]), objective_s=0.001)

    monkeypatch.setitem(solvers._REGISTRY, "liar", solvers.SolverInfo("liar", liar, False, ""))
    p = Problem(
        Chain.from_arrays([1, 1], [1e6]), Cluster.uniform(2, memory_bytes=1, bandwidth_mbps=8)
    )
    r = solve(p, "liar")
    assert r.status == "error" and "evaluates to 1.0" in r.info["error"]


# -- arguments checked at the boundary ------------------------------------------------


def _tiny_problem() -> Problem:
    return Problem(
        Chain.from_arrays([3, 3, 3], [1e6, 2e6]),
        Cluster.uniform(3, memory_bytes=6, bandwidth_mbps=8.0),
    )


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"time_limit_s": "10"}, TypeError, "time_limit_s must be a number"),
        ({"time_limit_s": float("nan")}, ValueError, "time_limit_s"),
        ({"time_limit_s": -1}, ValueError, "time_limit_s must be a number >= 0"),
        ({"seed": -1}, ValueError, "seed must be at least 0"),
        ({"seed": 1.5}, TypeError, "seed must be an integer"),
        ({"bogus": 1}, TypeError, "no option 'bogus'"),
    ],
)
@pytest.mark.parametrize("method", ["exact", "milp", "greedy", "seifer"])
def test_bad_arguments_are_refused_before_solving(method, kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        solve(_tiny_problem(), method, **kwargs)


def test_problem_must_be_a_problem():
    with pytest.raises(TypeError, match="problem must be a partopt Problem, got None"):
        solve(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="method must be a method name"):
        solve(_tiny_problem(), 3)  # type: ignore[arg-type]


def test_problem_checks_its_parts():
    cluster = Cluster.uniform(2, memory_bytes=6, bandwidth_mbps=8.0)
    with pytest.raises(TypeError, match="chain must be a partopt Chain, got 'x'"):
        Problem("x", cluster)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cluster must be a partopt Cluster"):
        Problem(Chain.from_arrays([1, 1], [1.0]), None)  # type: ignore[arg-type]


def test_infinite_time_limit_means_no_limit():
    r = solve(_tiny_problem(), "exact", time_limit_s=float("inf"))
    assert r.status == "optimal"


# -- infeasible: say what is missing ------------------------------------------------------


def test_no_links_says_the_links_are_missing():
    chain = Chain.from_arrays([3, 3, 3], [1e6, 2e6])
    r = solve(Problem(chain, Cluster(("a", "b", "c"), [6, 6, 6], np.zeros((3, 3)))), "exact")
    assert r.status == "infeasible"
    assert "no links" in r.info["reason"] and "whole chain must run on one node" in r.info["reason"]
    assert r.info["min_capacity_bytes"] == 9  # the whole chain on one node, not one stage's 6


@pytest.mark.parametrize("method", ["exact", "milp"])
def test_links_too_few_for_a_path_are_named_not_memory(method):
    # a star: any path has at most 3 nodes, the chain needs 4 stages, memory is plenty per stage
    bw = np.zeros((4, 4))
    bw[0, 1:] = bw[1:, 0] = 5.0
    chain = Chain.from_arrays([2, 2, 2, 2], [1e6, 1e6, 1e6])
    r = solve(Problem(chain, Cluster(("a", "b", "c", "d"), [2, 2, 2, 2], bw)), method)
    assert r.status == "infeasible"
    assert "memory is not what is missing" in r.info["reason"]
    assert "min_capacity_bytes" not in r.info
