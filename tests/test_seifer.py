"""SEIFER (k-path matching): its pieces, obvious instances, and each defect switch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from partopt.chain import Chain
from partopt.cluster import Cluster
from partopt.plan import evaluate
from partopt.problem import Problem
from partopt.solve import solve
from partopt.solvers.seifer import ORIGINAL_DEFECTS, bandwidth_classes, class_runs

from .strategies import problems


def _cluster(bandwidth, memory=10.0) -> Cluster:
    bw = np.asarray(bandwidth, dtype=float)
    n = len(bw)
    return Cluster(tuple(f"n{i}" for i in range(n)), np.full(n, float(memory)), bw)


def _uniform(n: int, memory: float, bw: float = 1.0) -> Cluster:
    return Cluster.uniform(n, memory_bytes=memory, bandwidth_mbps=bw)


# -- pieces ------------------------------------------------------------------------


def test_classes_are_equal_width_bins_over_all_candidate_transfers():
    everything = [0.0, 1.0, 2.0, 3.0, 10.0]
    assert bandwidth_classes(everything, [0.0, 2.0, 9.9, 10.0], 5).tolist() == [1, 2, 5, 5]
    assert bandwidth_classes(everything, [0.0, 2.0, 9.9, 10.0], 1).tolist() == [1, 1, 1, 1]


def test_runs_are_maximal_and_longest_first():
    assert class_runs([1, 1, 2, 1, 1, 1, 2], 1) == [(3, 3), (0, 2)]
    assert class_runs([1, 1, 2, 1, 1, 1, 2], 2) == [(2, 1), (6, 1)]
    assert class_runs([1, 1], 3) == []


# -- obvious instances -----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_two_stages_use_the_one_fast_link_in_its_direction(seed):
    bw = np.ones((5, 5))
    bw[3, 1] = 10.0  # 3 -> 1 is fast; 1 -> 3 is not
    p = Problem(Chain.from_arrays([6, 6], [1e6]), _cluster(bw))
    r = solve(p, "seifer", seed=seed, num_classes=1)
    assert r.plan.nodes == (3, 1)


@pytest.mark.parametrize("seed", range(5))
def test_three_stages_of_one_class_take_the_only_fast_path(seed):
    bw = np.ones((6, 6))
    bw[4, 0] = bw[0, 5] = 10.0
    bw[0, 4] = 9.0  # fast, but no fast path of three nodes uses it
    p = Problem(Chain.from_arrays([6, 6, 6], [1e6, 1e6]), _cluster(bw))
    r = solve(p, "seifer", seed=seed, num_classes=1)
    assert r.plan.nodes == (4, 0, 5)


def test_the_largest_class_is_placed_first():
    # Cut 0 (100 MB) is class 2, cut 1 (1 MB) class 1: cut 0 takes the fastest link
    # (2 -> 0), then cut 1 the fastest link out of node 0 to an unused node.
    bw = np.ones((4, 4))
    bw[2, 0] = 20.0
    bw[0, 3] = 5.0
    bw[3, 2] = 15.0  # would suit cut 1 better, but node 2 is taken by then
    p = Problem(Chain.from_arrays([6, 6, 6], [100e6, 1e6]), _cluster(bw))
    r = solve(p, "seifer", num_classes=2)
    assert r.plan.nodes == (2, 0, 3)


def test_one_stage_when_the_model_fits_one_node():
    p = Problem(Chain.from_arrays([1, 1], [1e6]), _uniform(3, 5))
    for method in ("seifer", "seifer-original"):
        r = solve(p, method)
        assert r.plan.num_stages == 1 and r.bottleneck_s == 0.0


# -- properties -------------------------------------------------------------------------


@settings(max_examples=60)
@given(problems())
def test_every_variant_returns_a_valid_plan_or_says_why(problem):
    oracle = solve(problem, "brute")
    for method, options in (
        ("seifer", {}),
        ("seifer-original", {"leaky_memo": False}),
        ("seifer", {"partition": "min-max", "num_classes": 3}),
    ):
        r = solve(problem, method, seed=1, **options)
        assert r.status in ("optimal", "feasible", "infeasible", "no_solution"), r.info
        if r.plan is not None:
            assert evaluate(problem, r.plan).bottleneck_s == r.bottleneck_s
            assert r.bottleneck_s >= oracle.bottleneck_s * (1 - 1e-9)
        if r.status == "infeasible":
            assert oracle.status == "infeasible"
        again = solve(problem, method, seed=1, **options)
        assert again.plan == r.plan and again.status == r.status


def test_seifer_original_switches_all_defects_on():
    assert ORIGINAL_DEFECTS == {
        "memo_ignores_stage_limit": True,
        "leaky_memo": True,
        "skip_block_memory": "after",
        "digitize_overflow": True,
        "colours_factor": 1.3,
        "stop_early": False,
    }


# -- one test per defect switch -----------------------------------------------------------


def test_switch_memo_ignores_stage_limit():
    # Block 0 must be alone; the cheapest rest has 3 stages, so 4 in all; 3 nodes suffice
    # with cuts 0 and 2, but the memo only knows the cheapest rest.
    p = Problem(Chain.from_arrays([2, 1, 1, 1, 1], [5e6, 1e6, 100e6, 1e6]), _uniform(3, 2))
    assert solve(p, "seifer").plan.cuts == (0, 2)
    r = solve(p, "seifer", memo_ignores_stage_limit=True)
    assert r.status == "no_solution" and "partition" in r.info["reason"]


def test_switch_leaky_memo():
    chain = Chain.from_arrays([2, 2, 2, 2], [1e6, 5e6, 1e6])
    small, large = Problem(chain, _uniform(4, 2)), Problem(chain, _uniform(4, 4))
    assert solve(large, "seifer").plan.cuts == (0, 2)
    memo: dict = {}
    assert solve(small, "seifer", leaky_memo=memo).plan.cuts == (0, 1, 2)
    # At 4 bytes per node the memo from 2 bytes per node still splits blocks 2 and 3.
    leaked = solve(large, "seifer", leaky_memo=memo)
    assert leaked.plan.cuts == (1, 2)
    assert leaked.bottleneck_s > solve(large, "seifer").bottleneck_s


def test_switch_leaky_memo_true_leaks_per_chain_object():
    from partopt.solvers.seifer import clear_leaky_memo

    clear_leaky_memo()
    chain = Chain.from_arrays([2, 2, 2, 2], [1e6, 5e6, 1e6])
    solve(Problem(chain, _uniform(4, 2)), "seifer", leaky_memo=True)
    assert solve(Problem(chain, _uniform(4, 4)), "seifer", leaky_memo=True).plan.cuts == (1, 2)
    other = Chain.from_arrays([2, 2, 2, 2], [1e6, 5e6, 1e6])  # another chain: no leak
    assert solve(Problem(other, _uniform(4, 4)), "seifer", leaky_memo=True).plan.cuts == (0, 2)
    clear_leaky_memo()
    assert solve(Problem(chain, _uniform(4, 4)), "seifer", leaky_memo=True).plan.cuts == (0, 2)


def test_switch_skip_block_memory():
    p = Problem(Chain.from_arrays([2, 2, 2], [5e6, 1e6]), _uniform(3, 3))
    assert solve(p, "seifer").plan.cuts == (0, 1)
    r = solve(p, "seifer", skip_block_memory=True)
    # The skewed sum puts blocks 0 and 1 (4 bytes) on a 3-byte node: no valid plan,
    # but the latency the original would have reported is kept.
    assert r.status == "no_solution" and "memory" in r.info["reason"]
    assert r.info["unchecked_bottleneck_s"] == pytest.approx(1e6 * 8 / 1e6)


def test_switch_digitize_overflow():
    # The only cut carries the largest candidate transfer: np.digitize puts it in class
    # C + 1, which is never matched, so neither stage is placed.
    p = Problem(Chain.from_arrays([3, 3, 1], [7e6, 1e6]), _uniform(3, 4))
    assert solve(p, "seifer").plan.cuts == (0,)
    r = solve(p, "seifer", digitize_overflow=True)
    assert r.status == "no_solution" and "unplaced" in r.info["reason"]


def test_switch_colours_factor():
    # Four stages of one class need the one fast path 0 -> 1 -> 2 -> 3; with one colouring
    # per threshold, drawing 1.3 k colours finds it less often.
    bw = np.full((6, 6), 1.0)
    bw[0, 1] = bw[1, 2] = bw[2, 3] = 10.0
    p = Problem(Chain.from_arrays([6, 6, 6, 6], [1e6, 1e6, 1e6]), _cluster(bw))
    best = 1e6 * 8 / 10e6

    def hits(factor):
        found = 0
        for seed in range(60):
            r = solve(p, "seifer", seed=seed, num_classes=1, max_trials=1, colours_factor=factor)
            found += r.bottleneck_s is not None and r.bottleneck_s == pytest.approx(best)
        return found

    assert hits(1.3) < hits(1.0)


def test_switch_stop_early():
    # Thresholds above 1 Mbit/s leave too few links for a path of three nodes: without
    # stop_early each of them costs all 10 e^3 colourings.
    bw = np.full((5, 5), 1.0)
    bw[0, 1] = 10.0
    p = Problem(Chain.from_arrays([6, 6, 6], [1e6, 1e6]), _cluster(bw))
    fast = solve(p, "seifer", num_classes=1)
    slow = solve(p, "seifer", num_classes=1, stop_early=False)
    assert fast.bottleneck_s == slow.bottleneck_s
    assert slow.info["trials"] > fast.info["trials"]


def test_unknown_options_are_refused():
    p = Problem(Chain.from_arrays([6, 6], [1e6]), _uniform(3, 6))
    with pytest.raises(TypeError, match="no option 'colour_factor'.*colours_factor"):
        solve(p, "seifer", colour_factor=1.3)
