"""``exact``: equals brute force, proves what it claims, degrades gracefully at a time limit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings

from partopt import Chain, Cluster, Problem, evaluate, solve
from partopt.solvers.exact import ExactSearch
from tests.strategies import problems
from tests.test_milp import relabel, resnet_like_problem


def same(a, b) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def check_against_brute(problem, **options):
    ref = solve(problem, "brute")
    got = solve(problem, "exact", **options)
    assert got.status != "error", got.info
    assert got.status == ref.status, (got.status, ref.status, got.info)
    if ref.status == "optimal":
        assert same(got.bottleneck_s, ref.bottleneck_s)
        assert got.lower_bound_s <= ref.bottleneck_s * (1 + 1e-6) + 1e-12
        assert same(evaluate(problem, got.plan).bottleneck_s, got.bottleneck_s)
    return got


@settings(deadline=None, max_examples=150)
@given(problems())
def test_exact_equals_brute(problem):
    check_against_brute(problem)


@settings(deadline=None, max_examples=40)
@given(problems())
def test_exact_equals_brute_through_the_milp_fallback(problem):
    # A budget of one search state sends nearly every threshold to the MILP.
    check_against_brute(problem, dfs_budget=1)


@settings(deadline=None, max_examples=40)
@given(problems())
def test_exact_equals_brute_through_the_lp(problem):
    # Probes that never settle: every threshold goes through the LP relaxation
    # (Farkas-checked refutations, dual bounds, integral points) and the full search.
    check_against_brute(problem, probe_time_s=0.0)


@settings(deadline=None, max_examples=60)
@given(problems())
def test_without_milp_an_undecided_threshold_keeps_a_true_bound(problem):
    ref = solve(problem, "brute")
    got = solve(problem, "exact", dfs_budget=1, use_milp=False)
    assert got.status in ("optimal", "feasible", "infeasible", "no_solution"), got.info
    if got.status == "infeasible":
        assert ref.status == "infeasible"
    if got.status in ("optimal", "feasible"):
        assert ref.status == "optimal"
        assert got.lower_bound_s <= ref.bottleneck_s * (1 + 1e-6) + 1e-12
        assert got.bottleneck_s >= ref.bottleneck_s * (1 - 1e-9)
        if got.status == "optimal":
            assert same(got.bottleneck_s, ref.bottleneck_s)


@settings(deadline=None, max_examples=40)
@given(problems())
def test_relabelling_nodes_keeps_the_optimum(problem):
    ref = solve(problem, "exact")
    for seed in (1, 2):
        perm = np.random.default_rng(seed).permutation(problem.num_nodes)
        got = solve(relabel(problem, perm), "exact")
        assert got.status == ref.status
        if ref.status == "optimal":
            assert same(got.bottleneck_s, ref.bottleneck_s)


@settings(deadline=None, max_examples=60)
@given(problems(max_blocks=7, max_nodes=4))
def test_infeasible_is_proven(problem):
    got = solve(problem, "exact")
    if got.status == "infeasible":
        assert solve(problem, "brute").status == "infeasible"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_like_instances_agree_with_milp(seed):
    p = resnet_like_problem(14, 8, 40, seed=seed)
    a, b = solve(p, "exact"), solve(p, "milp")
    assert a.status == b.status == "optimal"
    assert same(a.bottleneck_s, b.bottleneck_s)
    assert a.gap == 0.0


@pytest.mark.parametrize("time_limit_s", [0.0, 0.01, 0.2])
def test_time_limit_returns_bound_or_nothing_never_raises(time_limit_s):
    p = resnet_like_problem(200, 150, 8, seed=5)
    r = solve(p, "exact", time_limit_s=time_limit_s)
    assert r.status in ("optimal", "feasible", "no_solution"), r.info
    if r.status == "feasible":
        assert r.lower_bound_s is not None and r.lower_bound_s <= r.bottleneck_s
        assert r.gap is not None and 0 <= r.gap <= 1


def test_one_node_holds_everything():
    p = Problem(
        Chain.from_arrays([1, 1, 1], [1e6, 1e6]),
        Cluster.uniform(3, memory_bytes=3, bandwidth_mbps=1),
    )
    r = solve(p, "exact")
    assert r.status == "optimal" and r.bottleneck_s == 0.0 and r.plan.num_stages == 1


def test_single_block_with_compute_picks_the_fastest_node():
    c = Cluster(
        ("slow", "fast"), np.full(2, 5.0), np.ones((2, 2)), flops_per_s=np.array([1e6, 4e6])
    )
    p = Problem(Chain.from_arrays([1], [], flops=[8e6]), c, objective="max")
    r = solve(p, "exact")
    assert r.status == "optimal" and r.bottleneck_s == 2.0 and r.plan.nodes == (1,)


def test_no_links_and_too_big_for_one_node_is_infeasible():
    p = Problem(
        Chain.from_arrays([2, 2], [1e6]), Cluster(("a", "b"), np.full(2, 2.0), np.zeros((2, 2)))
    )
    assert solve(p, "exact").status == "infeasible"


def test_bouncing_over_one_fast_link_is_refuted_by_the_relaxation():
    # Only a <-> b is fast; three stages with two big cuts would bounce a -> b -> a.
    bw = np.array([[0, 9.0, 1.0], [9.0, 0, 1.0], [1.0, 1.0, 0]])
    p = Problem(
        Chain.from_arrays([2, 2, 2], [9e6, 9e6]), Cluster(("a", "b", "c"), np.full(3, 2.0), bw)
    )
    search = ExactSearch(p)
    assert not search.relaxation_feasible(8.0)
    assert search.decide(72.0)[0] == "feasible"
    r = solve(p, "exact")
    assert r.status == "optimal" and r.bottleneck_s == 72.0


def test_cycle_is_refuted_by_the_path_search():
    # Fast links only inside the triangle a, b, c; four stages need a path of four
    # nodes, so one cut must use a slow link to d. The no-return relaxation walks
    # a -> b -> c -> a and cannot see it.
    bw = np.full((4, 4), 1.0)
    for u, v in [(0, 1), (1, 2), (2, 0)]:
        bw[u, v] = bw[v, u] = 8.0
    p = Problem(
        Chain.from_arrays([2, 2, 2, 2], [8e6, 8e6, 8e6]),
        Cluster(("a", "b", "c", "d"), np.full(4, 2.0), bw),
    )
    search = ExactSearch(p)
    assert search.relaxation_feasible(8.0)
    assert search.decide(8.0)[0] == "infeasible"
    r = solve(p, "exact")
    assert r.status == "optimal" and r.bottleneck_s == 64.0
    assert r.bottleneck_s == solve(p, "brute").bottleneck_s


def test_decide_plans_are_within_the_threshold():
    p = resnet_like_problem(30, 20, 24, seed=2)
    opt = solve(p, "exact").bottleneck_s
    search = ExactSearch(p)
    status, plan, _ = search.decide(opt)
    assert status == "feasible" and evaluate(p, plan).bottleneck_s <= opt
    assert search.decide(opt * (1 - 1e-9))[0] == "infeasible"
