"""The original greedy baseline: min-sum partition, widest-link chains."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings

from partopt.chain import Chain
from partopt.cluster import Cluster
from partopt.partition import min_sum_partition
from partopt.plan import evaluate
from partopt.problem import Problem
from partopt.solve import solve
from partopt.solvers.greedy import widest_chain

from .strategies import problems


def _cluster(bandwidth, memory=None) -> Cluster:
    bw = np.asarray(bandwidth, dtype=float)
    n = len(bw)
    mem = np.full(n, 10.0) if memory is None else np.asarray(memory, dtype=float)
    return Cluster(tuple(f"n{i}" for i in range(n)), mem, bw)


def test_widest_chain_takes_the_widest_free_link_that_fits():
    bw = np.array([[0, 5, 9, 1], [5, 0, 2, 7], [9, 2, 0, 3], [1, 7, 3, 0]], dtype=float)
    fits = np.ones((3, 4), dtype=bool)
    assert widest_chain(bw, fits, 0) == [0, 2, 3]
    fits[1, 2] = False  # stage 1 does not fit node 2
    assert widest_chain(bw, fits, 0) == [0, 1, 3]
    assert widest_chain(bw, fits, 2) == [2, 0, 1]
    fits[0, 3] = False
    assert widest_chain(bw, fits, 3) is None  # stage 0 does not fit the start node
    fits[2, :] = False
    assert widest_chain(bw, fits, 0) is None  # nothing left for stage 2


def test_greedy_keeps_the_best_start_node():
    # Two blocks that need a node each; from node 0 the widest link is 0 -> 2 (9 Mbit/s),
    # but 1 -> 3 is wider still (12 Mbit/s).
    bw = [[0, 5, 9, 1], [5, 0, 2, 12], [9, 2, 0, 3], [1, 12, 3, 0]]
    p = Problem(Chain.from_arrays([6, 6], [1.2e6]), _cluster(bw))
    r = solve(p, "greedy")
    assert r.plan.nodes == (1, 3)
    assert r.bottleneck_s == 1.2e6 * 8 / 12e6


def test_greedy_uses_the_min_sum_partition():
    p = Problem(Chain.from_arrays([4, 4, 4, 4], [9e6, 1e6, 9e6]), _cluster(np.full((4, 4), 8.0)))
    r = solve(p, "greedy")
    assert list(r.plan.cuts) == min_sum_partition(p, 10.0, 4) == [1]


def test_greedy_places_stages_on_nodes_they_fit():
    # Stage 0 (8 bytes) fits only node 2; the widest link from node 2 leads to node 0.
    bw = [[0, 1, 1], [1, 0, 1], [6, 1, 0]]
    p = Problem(Chain.from_arrays([8, 2], [1e6]), _cluster(bw, [5, 5, 8]))
    r = solve(p, "greedy")
    assert r.plan.nodes == (2, 0)


def test_greedy_follows_links_only():
    bw = [[0, 0, 0], [0, 0, 0], [0, 0, 0]]  # no link at all: two stages cannot be joined
    p = Problem(Chain.from_arrays([6, 6], [1e6]), _cluster(bw))
    assert solve(p, "greedy").status in ("no_solution", "infeasible")


@settings(max_examples=100)
@given(problems())
def test_greedy_returns_a_valid_plan_or_says_why(problem):
    r = solve(problem, "greedy")
    oracle = solve(problem, "brute")
    assert r.status in ("optimal", "feasible", "infeasible", "no_solution"), r.info
    if r.plan is not None:
        assert evaluate(problem, r.plan).bottleneck_s == r.bottleneck_s
        assert r.bottleneck_s >= oracle.bottleneck_s * (1 - 1e-9)
    if r.status == "infeasible":
        assert oracle.status == "infeasible"
    again = solve(problem, "greedy", seed=7)
    assert again.plan == r.plan
