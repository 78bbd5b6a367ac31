"""greedy-original, random-original and the original's skip rule on hand-computed chains."""

from __future__ import annotations

import numpy as np
import pytest

from partopt.chain import Chain
from partopt.cluster import Cluster
from partopt.partition import original_min_sum_partition, stage_fits_matrix
from partopt.plan import evaluate
from partopt.problem import Problem
from partopt.solve import solve
from partopt.solvers.random_original import original_partition_mems, original_windows


def _cluster(memory: float) -> Cluster:
    # a-b 5, a-c 9, b-c 1 Mbit/s
    bw = np.array([[0, 5, 9], [5, 0, 1], [9, 1, 0]], dtype=float)
    return Cluster(("a", "b", "c"), np.full(3, float(memory)), bw)


def _problem(memory: float = 5.0) -> Problem:
    chain = Chain.from_arrays([5, 1, 4, 4], [3e6, 1e6, 2e6])
    return Problem(chain, _cluster(memory), memory="paper", transfer="paper")


def test_skip_rule_frees_the_segment_after_each_cut():
    fits = stage_fits_matrix(_problem(), 5, skip_block_memory="after")
    # stage i..j is charged blocks i+1..j: [0..1] 1, [0..2] 5, [0..3] 9, [1..2] 4, [1..3] 8
    assert fits.astype(int).tolist() == [
        [1, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 1, 1],
        [0, 0, 0, 1],
    ]
    # the cheapest partition then cuts once, after block 1 (1 MB), though 2..3 needs 8 bytes
    assert original_min_sum_partition(_problem(), 5, 3, skip_block_memory="after") == [1]


def test_greedy_original_reports_the_over_memory_plan():
    r = solve(_problem(), "greedy-original", leaky_memo=False)
    assert r.status == "no_solution" and r.plan is None
    # from a: widest link a-c (9 Mbit/s); 1e6 bytes = 8 Mbit -> 8 / 9 s; c-a ties, a wins
    assert r.info["original_bottleneck_s"] == pytest.approx(8 / 9)
    assert r.info["plan_cuts"] == [1] and r.info["plan_nodes"] == [0, 2]
    assert "exceeds" in r.info["reason"]


def test_greedy_original_valid_plan_is_scored_by_evaluate():
    p = _problem(memory=8.0)  # now 2..3 (8 bytes) fits
    r = solve(p, "greedy-original", leaky_memo=False)
    assert r.plan is not None and r.plan.cuts == (1,)
    assert r.bottleneck_s == pytest.approx(8 / 9) == evaluate(p, r.plan).bottleneck_s
    assert r.info["original_bottleneck_s"] == pytest.approx(r.bottleneck_s)


def test_greedy_original_no_partition_counts_zero():
    # Block 0 must be alone; the cheapest rest has 3 stages (4 in all) and the memo keeps only
    # it, so with 3 nodes the original DP finds nothing (cuts 0 and 2 would do): it reported 0.
    chain = Chain.from_arrays([2, 1, 1, 1, 1], [5e6, 1e6, 100e6, 1e6])
    p = Problem(chain, Cluster.uniform(3, memory_bytes=2, bandwidth_mbps=1.0), memory="paper")
    r = solve(p, "greedy-original", leaky_memo=False, skip_block_memory=False)
    assert r.status == "no_solution" and r.info["original_bottleneck_s"] == 0.0
    assert solve(p, "exact").status == "optimal"


def test_original_windows_hand_computed():
    chain = Chain.from_arrays([0, 3, 3, 3, 3], [1e6, 2e6, 3e6, 4e6])
    p = Problem(chain, Cluster.uniform(5, memory_bytes=5, bandwidth_mbps=1.0), memory="paper")
    assert original_partition_mems(p) == [3, 3, 3, 3, 0]
    # i = 0: sum(pm[0:-1]) = 12 >= 5 ends a window at once; i = 1 grows to j = 4 (pm[1:3] = 6)
    assert original_windows(original_partition_mems(p), 5) == [0, 4]
    assert original_windows([1, 1, 0], 10) == []  # fits one node: no cut at all


def test_random_original_draws_in_the_window():
    chain = Chain.from_arrays([0, 3, 3, 3, 3], [1e6, 2e6, 3e6, 4e6])
    p = Problem(chain, Cluster.uniform(5, memory_bytes=5, bandwidth_mbps=2.0), memory="paper")
    seen = set()
    for seed in range(40):
        r = solve(p, "random-original", seed=seed)
        (c,) = r.info["original_cuts"]
        seen.add(c)
        assert 1 <= c <= 4  # randint(0 + 1, 4)
        if c == 4:  # a cut after the output: one stage, latency 0
            assert r.info["original_bottleneck_s"] == 0.0 and r.info["stages"] == 1
        else:
            # transfer of cut c (bytes) over 2 Mbit/s
            assert r.info["original_bottleneck_s"] == pytest.approx((c + 1) * 1e6 * 8 / 2e6)
        if r.plan is not None:
            assert evaluate(p, r.plan).bottleneck_s == pytest.approx(r.bottleneck_s)
        else:  # the stage after a cut at 1 holds 9 bytes > 5
            assert "exceeds" in r.info["reason"]
    assert seen == {1, 2, 3, 4}
    again = solve(p, "random-original", seed=3)
    assert again.info == solve(p, "random-original", seed=3).info
