"""The stage-flow MILP (``milp``) and the layered-flow baseline (``direct_milp``)."""

from __future__ import annotations

import math

import numpy as np
import pyomo.environ as pyo
from hypothesis import given, settings

from partopt import Chain, Cluster, Problem, solve
from partopt.cluster import MB, paper_cluster
from partopt.solvers import milp
from tests.strategies import problems


def relabel(problem: Problem, perm) -> Problem:
    """The same instance with node ``perm[k]`` renamed to position ``k``."""
    c = problem.cluster
    perm = list(perm)
    cluster = Cluster(
        tuple(c.names[i] for i in perm),
        c.memory_bytes[perm],
        c.bandwidth_mbps[np.ix_(perm, perm)],
        None if c.flops_per_s is None else c.flops_per_s[perm],
    )
    return problem.with_cluster(cluster)


def resnet_like_problem(blocks: int = 30, nodes: int = 20, capacity_mb: float = 16, seed: int = 0):
    """A synthetic ResNet-like chain (weights growing, activations shrinking) on a paper cluster."""
    rng = np.random.default_rng(seed)
    params = np.geomspace(4e4, 1.8e7, blocks) * rng.uniform(0.8, 1.2, blocks)
    params *= 100e6 / params.sum()  # about ResNet50's 100 MB of weights, however many blocks
    outs = np.geomspace(3.2e6, 4e5, blocks) * rng.uniform(0.7, 1.3, blocks)
    chain = Chain.from_arrays(params, outs[:-1], activation_bytes=2 * outs, name="resnet-like")
    return Problem(chain, paper_cluster(nodes, capacity_mb, seed))


def same(a, b) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


@settings(deadline=None, max_examples=60)
@given(problems())
def test_milp_equals_brute(problem):
    ref = solve(problem, "brute")
    got = solve(problem, "milp")
    assert got.status != "error", got.info
    assert got.status == ref.status
    if ref.status == "optimal":
        assert same(got.bottleneck_s, ref.bottleneck_s)
        assert got.lower_bound_s <= ref.bottleneck_s * (1 + 1e-6) + 1e-12


@settings(deadline=None, max_examples=25)
@given(problems(max_blocks=5, max_nodes=3))
def test_direct_milp_equals_brute(problem):
    ref = solve(problem, "brute")
    got = solve(problem, "direct_milp")
    assert got.status != "error", got.info
    assert got.status == ref.status
    if ref.status == "optimal":
        assert same(got.bottleneck_s, ref.bottleneck_s)


@settings(deadline=None, max_examples=20)
@given(problems(max_blocks=6, max_nodes=4))
def test_relabelling_nodes_keeps_the_optimum(problem):
    ref = solve(problem, "milp")
    perm = np.random.default_rng(problem.num_nodes).permutation(problem.num_nodes)
    got = solve(relabel(problem, perm), "milp")
    assert got.status == ref.status
    if ref.status == "optimal":
        assert same(got.bottleneck_s, ref.bottleneck_s)


def test_build_never_solves_and_names_its_parts():
    p = Problem(
        Chain.from_arrays([3, 3, 3], [1e6, 2e6]),
        Cluster.uniform(3, memory_bytes=6, bandwidth_mbps=8.0),
    )
    m = milp.build(p)
    assert all(m.a[s].value is None for s in m.S)
    for name in (
        "first_stage",
        "stage_end_sends",
        "transfer_starts_stage",
        "node_hosts_one_stage",
        "bottleneck_covers_transfer",
        "bottleneck",
    ):
        assert hasattr(m, name)
    # Stages that do not fit memory are never variables.
    assert all(p.stage_memory(i, j) <= 6 for i, j, _ in m.S)


def test_compute_objective_has_compute_rows():
    c = Cluster.uniform(2, memory_bytes=10, bandwidth_mbps=8.0, flops_per_s=1e6)
    p = Problem(Chain.from_arrays([1, 1], [1e6], flops=[2e6, 3e6]), c, objective="max")
    assert hasattr(milp.build(p), "bottleneck_covers_compute")
    r = solve(p, "milp")
    assert r.status == "optimal" and same(r.bottleneck_s, 3.0)  # split: max(1 s link, 3 s compute)


def test_cap_below_the_optimum_is_not_infeasible():
    p = resnet_like_problem(12, 6, 48, seed=3)
    ref = solve(p, "milp")
    assert ref.status == "optimal"
    capped = solve(p, "milp", max_time_s=ref.bottleneck_s * 0.5)
    assert capped.status == "no_solution"  # nothing proven about the uncapped instance
    same_cap = solve(p, "milp", max_time_s=ref.bottleneck_s)
    assert same_cap.status == "optimal" and same(same_cap.bottleneck_s, ref.bottleneck_s)


def test_missing_links_infeasible_is_proven():
    bw = np.zeros((3, 3))
    bw[0, 1] = 5.0  # only 0 -> 1; three stages need a path of three nodes
    p = Problem(
        Chain.from_arrays([4, 4, 4], [1e6, 1e6]), Cluster(("a", "b", "c"), np.full(3, 4.0), bw)
    )
    assert solve(p, "milp").status == "infeasible"


def test_time_limit_gives_feasible_or_no_solution():
    p = resnet_like_problem(30, 20, 24, seed=1)
    for method in ("milp", "direct_milp"):
        r = solve(p, method, time_limit_s=1.0)
        assert r.status in ("feasible", "no_solution", "optimal"), r.info
        if r.status == "feasible":
            assert r.lower_bound_s is not None and r.lower_bound_s <= r.bottleneck_s


def test_model_values_are_bytes_and_seconds():
    # 1 MB over 8 Mbit/s takes 1.048576 s: the formulation's times use evaluate's units.
    p = Problem(
        Chain.from_arrays([MB, MB], [MB]), Cluster.uniform(2, memory_bytes=MB, bandwidth_mbps=8.0)
    )
    r = solve(p, "milp")
    assert same(r.bottleneck_s, MB * 8 / 8e6)
    m = milp.build(p)
    assert max(pyo.value(m.beta.ub), 0) >= r.bottleneck_s
