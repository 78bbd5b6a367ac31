"""Partition DPs against enumeration, and the original DP's defects on hand-made chains."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partopt.chain import Chain
from partopt.cluster import Cluster
from partopt.partition import (
    min_max_partition,
    min_sum_partition,
    original_min_sum_partition,
    stage_fits_matrix,
    stage_windows,
)
from partopt.problem import Problem

from .strategies import chains, problems


def _problem(memory, transfers) -> Problem:
    chain = Chain.from_arrays(memory, np.asarray(transfers, dtype=float))
    return Problem(
        chain, Cluster.uniform(2, memory_bytes=1e9, bandwidth_mbps=1.0), memory="weights"
    )


def _feasible_partitions(problem: Problem, capacity: float, max_stages: int):
    """Every partition (sorted cuts) with at most ``max_stages`` stages that fit ``capacity``."""
    b = problem.num_blocks
    for k in range(min(b, max_stages)):
        for cuts in itertools.combinations(range(b - 1), k):
            edges = [-1, *cuts, b - 1]
            if all(
                problem.stage_memory(edges[i] + 1, edges[i + 1]) <= capacity
                for i in range(len(edges) - 1)
            ):
                yield list(cuts)


def _check_fits(problem: Problem, cuts, capacity: float, max_stages: int) -> None:
    edges = [-1, *cuts, problem.num_blocks - 1]
    assert len(cuts) + 1 <= max_stages
    for i in range(len(edges) - 1):
        assert problem.stage_memory(edges[i] + 1, edges[i + 1]) <= capacity * (1 + 1e-9)


@settings(max_examples=150)
@given(
    chains(max_blocks=7),
    st.integers(3, 30),
    st.integers(1, 7),
    st.sampled_from(["weights", "peak"]),
)
def test_min_sum_partition_is_the_smallest_sum_within_the_stage_limit(chain, cap, k, memory):
    p = Problem(chain, Cluster.uniform(2, memory_bytes=1e9, bandwidth_mbps=1.0), memory=memory)
    t = p.transfer_bytes
    options = list(_feasible_partitions(p, cap, k))
    got = min_sum_partition(p, cap, k)
    if not options:
        assert got is None
        return
    _check_fits(p, got, cap, k)
    best = min((float(t[c].sum()), len(c)) for c in options)
    assert (float(t[got].sum()), len(got)) == best  # smallest sum, then fewest stages


@settings(max_examples=150)
@given(chains(max_blocks=7), st.integers(3, 30), st.integers(1, 7))
def test_min_max_partition_minimises_the_largest_transfer_then_the_sum(chain, cap, k):
    p = Problem(chain, Cluster.uniform(2, memory_bytes=1e9, bandwidth_mbps=1.0))
    t = p.transfer_bytes
    options = list(_feasible_partitions(p, cap, k))
    got = min_max_partition(p, cap, k)
    if not options:
        assert got is None
        return
    _check_fits(p, got, cap, k)
    key = lambda c: (float(t[c].max()) if c else 0.0, float(t[c].sum()))  # noqa: E731
    assert key(got) == min(key(c) for c in options)


@settings(max_examples=150)
@given(chains(max_blocks=7), st.integers(3, 30), st.integers(1, 7))
def test_original_dp_with_a_fresh_memo_is_feasible_and_min_sum_when_it_answers(chain, cap, k):
    p = Problem(chain, Cluster.uniform(2, memory_bytes=1e9, bandwidth_mbps=1.0))
    t = p.transfer_bytes
    got = original_min_sum_partition(p, cap, k)
    correct = min_sum_partition(p, cap, k)
    every = list(_feasible_partitions(p, cap, p.num_blocks))
    if every:
        least = min(float(t[c].sum()) for c in every)
        if max(len(c) + 1 for c in every if float(t[c].sum()) == least) <= k:
            # When every cheapest partition respects the limit, the defect does not show.
            assert got is not None and float(t[got].sum()) == least
    if got is not None:
        _check_fits(p, got, cap, k)
        assert correct is not None and float(t[got].sum()) >= float(t[correct].sum())


def test_the_stage_limit_is_part_of_the_state():
    # Block 0 must stay alone; the cheapest rest (cuts 1 and 3) then needs 4 stages.
    p = _problem([2, 1, 1, 1, 1], [5, 1, 100, 1])
    assert min_sum_partition(p, 2, 4) == [0, 1, 3]
    assert min_sum_partition(p, 2, 3) == [0, 2]
    assert min_sum_partition(p, 2, 2) is None


def test_original_memo_ignores_the_stage_limit():
    p = _problem([2, 1, 1, 1, 1], [5, 1, 100, 1])
    assert original_min_sum_partition(p, 2, 4) == [0, 1, 3]
    # The memo keeps only the cheapest continuation from block 1 (3 stages), so with a
    # limit of 3 stages the original declares the instance infeasible.
    assert original_min_sum_partition(p, 2, 3) is None


def test_original_leaky_memo_carries_partitions_across_capacities():
    p = _problem([2, 2, 2, 2], [1, 5, 1])
    assert original_min_sum_partition(p, 4, 4) == [0, 2]  # fresh memo: the right answer
    memo: dict = {}
    assert original_min_sum_partition(p, 2, 4, memo=memo) == [0, 1, 2]
    # The memo filled at 2 bytes per node still holds one-block continuations at 4 bytes.
    leaked = original_min_sum_partition(p, 4, 4, memo=memo)
    assert leaked == [1, 2]
    assert p.transfer_bytes[leaked].sum() > p.transfer_bytes[[0, 2]].sum()


def test_original_leaky_memo_can_leak_stages_that_do_not_fit():
    p = _problem([2, 2, 2, 2], [1, 5, 1])
    memo: dict = {}
    original_min_sum_partition(p, 4, 4, memo=memo)
    cuts = original_min_sum_partition(p, 2, 4, memo=memo)
    edges = [-1, *cuts, 3]
    sizes = [p.stage_memory(edges[i] + 1, edges[i + 1]) for i in range(len(edges) - 1)]
    assert max(sizes) > 2


def test_original_memory_sum_skips_the_last_block_of_every_stage_but_the_last():
    p = _problem([2, 2, 2], [5, 1])
    fits = stage_fits_matrix(p, 3, skip_block_memory=True)
    assert fits[0, 1] and not stage_fits_matrix(p, 3)[0, 1]
    assert not fits[1, 2]  # the last stage is counted in full
    assert min_sum_partition(p, 3, 3) == [0, 1]
    cuts = original_min_sum_partition(p, 3, 3, skip_block_memory=True)
    assert cuts == [1] and p.stage_memory(0, 1) == 4 > 3


@pytest.mark.parametrize("fn", [min_sum_partition, min_max_partition, original_min_sum_partition])
def test_one_block_and_one_stage(fn):
    p = _problem([3], [])
    assert fn(p, 3, 1) == []
    assert fn(p, 2, 1) is None
    p = _problem([1, 1], [7])
    assert fn(p, 2, 1) == []
    assert fn(p, 1, 2) == [0]
    assert fn(p, 1, 1) is None
    assert math.isfinite(p.stage_memory(0, 1))


def _no_dense_table(self):
    raise AssertionError("the B x B stage-memory table was built")


@pytest.mark.parametrize("method", ["greedy", "seifer", "local-search", "random"])
def test_heuristics_never_build_the_dense_stage_table(monkeypatch, method):
    # A 20,000-block chain made greedy, seifer and local-search allocate B x B tables;
    # a small chain stands in: the table must simply never be asked for.
    from partopt import solve
    from partopt.problem import Problem as P

    monkeypatch.setattr(P, "stage_memory_matrix", property(_no_dense_table))
    rng = np.random.default_rng(1)
    p = Problem(
        Chain.from_arrays(rng.uniform(1, 3, 40), rng.uniform(1e5, 1e6, 39)),
        Cluster.uniform(6, memory_bytes=20, bandwidth_mbps=5.0),
    )
    assert solve(p, method).status in ("feasible", "optimal")


@settings(max_examples=60, deadline=None)
@given(problems(max_blocks=7, max_nodes=4), st.booleans())
def test_windows_match_the_dense_table(p, skip):
    cap = float(p.cluster.memory_bytes.min())
    ends, last_ok = stage_windows(p, cap, skip_block_memory=skip)
    fits = stage_fits_matrix(p, cap, skip_block_memory=skip)
    mem = p.stage_memory_matrix
    b = p.num_blocks
    for i in range(b):
        for j in range(b):
            if j < i:
                want = False
            elif j == b - 1 or not skip:
                want = bool(mem[i, j] <= cap * (1 + 1e-9))
            else:
                want = j == i or bool(mem[i, j - 1] <= cap * (1 + 1e-9))
            assert fits[i, j] == want
    # the dense form gives the DP the same windows back
    assert min_sum_partition(p, cap, p.num_nodes, fits=fits) == min_sum_partition(
        p, cap, p.num_nodes, windows=(ends, last_ok)
    )
