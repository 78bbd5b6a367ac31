"""Lower bounds: valid (never above the optimum) and ordered as argued."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from partopt import Chain, Cluster, Problem, bounds, solve
from tests.strategies import problems

BOUNDS = (
    bounds.transfer_bound_s,
    bounds.distinct_links_bound_s,
    bounds.compute_bound_s,
    bounds.lower_bound_s,
)


@settings(deadline=None, max_examples=150)
@given(problems())
def test_every_bound_is_at_most_the_optimum(problem):
    ref = solve(problem, "brute")
    if ref.status == "optimal":
        for f in BOUNDS:
            assert f(problem) <= ref.bottleneck_s * (1 + 1e-9), f.__name__
    else:
        assert ref.status == "infeasible"


@settings(deadline=None, max_examples=100)
@given(problems(objective="communication"))
def test_distinct_links_bound_dominates_bound_a(problem):
    a = bounds.transfer_bound_s(problem)
    b = bounds.distinct_links_bound_s(problem)
    assert b >= a * (1 - 1e-12) or (math.isinf(a) and math.isinf(b))


def test_distinct_links_bound_uses_the_second_best_pair():
    # Two cuts of 1 MB; pairs: a-b 8 Mbit/s, the others 1 Mbit/s. Bound (a) sends
    # both over the best link (1 s); a path has to use a 1 Mbit/s pair too (8 s).
    bw = np.array([[0, 8.0, 1.0], [8.0, 0, 1.0], [1.0, 1.0, 0]])
    p = Problem(
        Chain.from_arrays([2, 2, 2], [1e6, 1e6]), Cluster(("a", "b", "c"), np.full(3, 2.0), bw)
    )
    assert bounds.transfer_bound_s(p) == 1.0
    assert bounds.distinct_links_bound_s(p) == 8.0
    assert solve(p, "brute").bottleneck_s == 8.0


def test_asymmetric_pair_counts_once_with_its_better_direction():
    bw = np.array([[0, 8.0, 0], [2.0, 0, 0], [0, 0, 0]])
    p = Problem(Chain.from_arrays([2, 2], [1e6]), Cluster(("a", "b", "c"), np.full(3, 2.0), bw))
    assert list(bounds.pair_bandwidths_mbps(p)) == [8.0]
    assert bounds.distinct_links_bound_s(p) == 1.0


def test_more_cuts_than_linked_pairs_is_infinite():
    bw = np.zeros((3, 3))
    bw[0, 1] = bw[1, 0] = 5.0  # one pair, but three stages need two
    p = Problem(
        Chain.from_arrays([4, 4, 4], [1e6, 1e6]), Cluster(("a", "b", "c"), np.full(3, 4.0), bw)
    )
    assert math.isinf(bounds.distinct_links_bound_s(p))
    assert solve(p, "brute").status == "infeasible"


def test_one_stage_fits_gives_zero():
    p = Problem(
        Chain.from_arrays([1, 1, 1], [1e6, 1e6]),
        Cluster.uniform(2, memory_bytes=3, bandwidth_mbps=1.0),
    )
    assert bounds.lower_bound_s(p) == 0.0


def test_compute_bound_total_work_over_total_speed():
    # Four unit blocks of 4 MFLOP on two nodes of 1 MFLOP/s with room for everything:
    # one stage takes 16 s; two stages of 8 MFLOP take 8 s; total/sum = 16 / 2 = 8 s.
    c = Cluster.uniform(2, memory_bytes=100, bandwidth_mbps=1e6, flops_per_s=1e6)
    p = Problem(Chain.from_arrays([1] * 4, [1.0] * 3, flops=[4e6] * 4), c, objective="max")
    assert bounds.compute_bound_s(p) == 8.0
    assert bounds.compute_bound_s(p.with_cluster(c)) <= solve(p, "brute").bottleneck_s
    assert bounds.compute_bound_s(Problem(p.chain, c)) == 0.0  # communication objective


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 9),
    most=st.one_of(st.none(), st.integers(0, 40)),
    seed=st.integers(0, 2**16),
    sparsity=st.floats(0.0, 1.0),
)
def test_pair_bandwidths_equal_the_sorted_upper_triangle(n, most, seed, sparsity):
    # Reference: every unordered pair once with its better direction, linked pairs only.
    rng = np.random.default_rng(seed)
    bw = rng.integers(1, 6, size=(n, n)).astype(float)  # ties on purpose
    bw[rng.random((n, n)) < sparsity] = 0.0
    np.fill_diagonal(bw, 0.0)
    p = Problem(
        Chain.from_arrays([1, 1], [1.0]),
        Cluster(tuple(f"n{i}" for i in range(n)), np.full(n, 2.0), bw),
    )
    best = np.maximum(bw, bw.T)[np.triu_indices(n, 1)]
    want = np.sort(best[best > 0])[::-1]
    if most is not None:
        want = want[:most]
    assert bounds.pair_bandwidths_mbps(p, most=most).tolist() == want.tolist()


def test_pair_bandwidths_top_pairs_read_the_matrix_in_blocks():
    # More nodes than one row block holds (2**20 // n rows): the running top-k across blocks.
    n = 1500
    rng = np.random.default_rng(3)
    bw = rng.random((n, n))
    np.fill_diagonal(bw, 0.0)
    p = Problem(
        Chain.from_arrays([1, 1], [1.0]),
        Cluster(tuple(f"n{i}" for i in range(n)), np.full(n, 2.0), bw),
    )
    best = np.maximum(bw, bw.T)[np.triu_indices(n, 1)]
    want = np.sort(best)[::-1][:9]
    assert bounds.pair_bandwidths_mbps(p, most=9).tolist() == want.tolist()
