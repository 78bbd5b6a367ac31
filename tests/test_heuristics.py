"""Our heuristics (bottleneck-search, local-search) against brute force on tiny instances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partopt.chain import Chain
from partopt.cluster import Cluster
from partopt.plan import evaluate
from partopt.problem import Problem
from partopt.solve import solve
from partopt.solvers._plans import bottleneck_s
from partopt.solvers.exact import ExactSearch
from partopt.solvers.local_search import improve

from .strategies import problems


@settings(max_examples=150)
@given(problems())
def test_bottleneck_search_is_valid_and_optimal_on_tiny_instances(problem):
    oracle = solve(problem, "brute")
    r = solve(problem, "bottleneck-search")
    assert r.status in ("optimal", "feasible", "infeasible", "no_solution"), r.info
    if oracle.status == "infeasible":
        assert r.plan is None and r.status in ("infeasible", "no_solution")
        return
    # Tiny instances never exhaust the reconstruction budget, so every probe is exact.
    assert r.plan is not None
    assert evaluate(problem, r.plan).bottleneck_s == r.bottleneck_s
    assert r.bottleneck_s == pytest.approx(oracle.bottleneck_s, rel=1e-9, abs=1e-15)
    assert r.lower_bound_s <= oracle.bottleneck_s * (1 + 1e-9) + 1e-15
    again = solve(problem, "bottleneck-search")
    assert again.plan == r.plan


@settings(max_examples=100)
@given(problems(), st.floats(0.0, 1.5))
def test_a_probe_meets_its_threshold_or_proves_nothing_does(problem, fraction):
    oracle = solve(problem, "brute")
    if oracle.plan is None:
        return
    beta = oracle.bottleneck_s * fraction
    status, plan, _ = ExactSearch(problem).decide(beta, states=300)
    if plan is not None:
        assert status == "feasible"
        assert evaluate(problem, plan).bottleneck_s <= beta * (1 + 1e-9)
    if status == "infeasible":
        assert oracle.bottleneck_s > beta


@settings(max_examples=100)
@given(problems())
def test_local_search_is_valid_never_worse_than_its_start_and_deterministic(problem):
    oracle = solve(problem, "brute")
    start = solve(problem, "greedy")
    r = solve(problem, "local-search")
    assert r.status in ("optimal", "feasible", "infeasible", "no_solution"), r.info
    if start.plan is None:
        assert r.plan is None
        return
    assert r.plan is not None
    assert evaluate(problem, r.plan).bottleneck_s == r.bottleneck_s
    assert oracle.bottleneck_s * (1 - 1e-9) <= r.bottleneck_s <= start.bottleneck_s
    assert solve(problem, "local-search").plan == r.plan


def test_improve_moves_the_bottleneck_cut_and_swaps_nodes():
    # Start: the 9 MB cut over the slow link 0 -> 1. Best: the 1 MB cut over 2 -> 1.
    bw = np.array([[0, 1, 1], [1, 0, 1], [1, 8, 0]], dtype=float)
    cluster = Cluster(("a", "b", "c"), np.full(3, 4.0), bw)
    p = Problem(Chain.from_arrays([2, 2, 2], [9e6, 1e6]), cluster)
    cuts, nodes, _ = improve(p, [0], [0, 1])
    assert (cuts, nodes) == ([1], [2, 1])
    assert bottleneck_s(p, cuts, nodes) == 1e6 * 8 / 8e6


def test_bottleneck_search_proves_an_instance_infeasible_by_links():
    # Two stages are needed but no link exists: the relaxation refutes every plan.
    cluster = Cluster(("a", "b"), np.full(2, 4.0), np.zeros((2, 2)))
    p = Problem(Chain.from_arrays([3, 3], [1e6]), cluster)
    r = solve(p, "bottleneck-search")
    assert r.status == "infeasible"


def test_bottleneck_search_handles_compute_speeds():
    # Compute dominates: the fast node must run the heavy block alone.
    bw = np.full((3, 3), 100.0)
    cluster = Cluster(("a", "b", "c"), np.full(3, 10.0), bw, flops_per_s=np.array([1e9, 1e8, 1e8]))
    chain = Chain.from_arrays([1, 1, 1], [1e3, 1e3], flops=[1e9, 1e7, 1e7])
    p = Problem(chain, cluster, objective="max")
    r = solve(p, "bottleneck-search")
    oracle = solve(p, "brute")
    assert r.bottleneck_s == pytest.approx(oracle.bottleneck_s)
    assert r.plan.stages[0].node == 0 and r.plan.stages[0].last_block == 0
    assert math.isclose(r.bottleneck_s, 1.0)
