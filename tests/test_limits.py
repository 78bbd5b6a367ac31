"""Instances too large for a method are refused before allocating; time limits bind model building.

Small instances stand in for the large ones: the limits are lowered so that the size checks decide.
"""

from __future__ import annotations

import numpy as np
import pytest

from partopt import Chain, Cluster, Problem, solve
from partopt.cluster import MB, paper_cluster
from partopt.solvers import SolverRefused, _limits


def _problem(blocks: int = 12, nodes: int = 5, capacity_mb: float = 4) -> Problem:
    rng = np.random.default_rng(0)
    chain = Chain.from_arrays(rng.uniform(0.5, 1.5, blocks) * MB, rng.uniform(1e4, 1e6, blocks - 1))
    return Problem(chain, paper_cluster(nodes, capacity_mb, seed=0))


@pytest.mark.parametrize(
    "method, what",
    [("exact", "transfer-time table"), ("milp", "table"), ("direct_milp", "transfer-time table")],
)
def test_dense_tables_beyond_the_limit_are_refused(monkeypatch, method, what):
    # stands in for --paper-cluster 10000 (a 70 x 10000 x 10000 table) and 20,000-block chains
    p = _problem()
    monkeypatch.setattr(_limits, "MAX_DENSE_CELLS", 100)
    with pytest.raises(SolverRefused) as err:
        solve(p, method)
    msg = str(err.value)
    assert what in msg and "GiB" in msg and "use " in msg and "\n" not in msg


@pytest.mark.parametrize("method", ["milp", "direct_milp"])
def test_models_beyond_the_limit_are_refused(monkeypatch, method):
    # stands in for a 1,000-node cluster file with --method milp (MemoryError after 219 s)
    p = _problem()
    monkeypatch.setattr(_limits, "MAX_MODEL_ITEMS", 50)
    with pytest.raises(SolverRefused, match=r"would build a MILP of up to [\d,]+ variables"):
        solve(p, method)


@pytest.mark.parametrize("method", ["milp", "direct_milp"])
def test_a_model_that_cannot_be_built_in_time_is_not_started(monkeypatch, method):
    # stands in for InceptionResNetV2, multi cuts, N = 40: 72-119 s whatever the limit
    p = _problem()
    monkeypatch.setattr(_limits, "BUILD_S_PER_ITEM", 10.0)
    r = solve(p, method, time_limit_s=5.0)
    assert r.status == "no_solution"
    assert r.info["reason"].startswith("time limit: building and loading")
    assert r.runtime_s < 5.0  # stopped before building, not after


@pytest.mark.parametrize("method", ["milp", "direct_milp"])
def test_milps_say_where_the_time_went(method):
    r = solve(_problem(6, 3), method, time_limit_s=60)
    assert r.status == "optimal"
    assert r.info["build_s"] >= 0 and r.info["solve_s"] >= 0
    assert r.info["build_s"] + r.info["solve_s"] <= r.runtime_s + 1e-6


def test_the_size_check_counts_before_building(monkeypatch):
    # the check must not need the dense tables it protects against
    from partopt.problem import Problem as P
    from partopt.solvers import milp

    def boom(self):
        raise AssertionError("dense table built")

    monkeypatch.setattr(P, "stage_memory_matrix", property(boom))
    milp.check_size(_problem(30, 4))


def test_heuristics_stop_at_their_limit_on_a_long_chain():
    # stands in for the 20,000-block chain where local-search ran 18-27 s at --time-limit 1
    r = solve(_problem(300, 8, 64), "local-search", time_limit_s=0.05)
    assert r.status in ("feasible", "optimal")
    assert "greedy_s" in r.info and "search_s" in r.info


def test_paper_cluster_of_many_nodes_is_cheap():
    c = paper_cluster(2000, 64, seed=0)
    assert c.bandwidth_mbps.shape == (2000, 2000)
    assert isinstance(c, Cluster)


# -- command-line integers name their option ------------------------------------------------


@pytest.mark.parametrize(
    "argv, option",
    [
        (
            ["solve", "m.onnx", "--paper-cluster", "5", "--capacity-mb", "64", "--seed", "-1"],
            "--seed",
        ),
        (["solve", "m.onnx", "--paper-cluster", "0", "--capacity-mb", "64"], "--paper-cluster"),
        (["solve", "m.onnx", "--paper-cluster", "2", "--time-limit", "nan"], "--time-limit"),
        (["cluster", "paper", "--nodes", "2.5", "--capacity-mb", "64"], "--nodes"),
        (["emulate", "m.onnx", "p.json", "--cluster", "c.json", "--requests", "0"], "--requests"),
        (["emulate", "m.onnx", "p.json", "--cluster", "c.json", "--port", "-3"], "--port"),
        (["export", "m.onnx", "p.json", "out", "--check-seed", "-2"], "--check-seed"),
    ],
)
def test_integer_options_are_named_in_their_errors(capsys, argv, option):
    from partopt.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {option}: must be" in err


@pytest.mark.parametrize(
    "stage, fragment",
    [
        ({"node": 0, "first_block": 0.5, "last_block": 2}, "first_block must be a whole number"),
        ({"node": 0, "first_block": 0, "last_block": "2"}, "last_block must be a whole number"),
        ({"node": True, "first_block": 0, "last_block": 2}, "node must be a whole number or"),
        ({"node": 0, "first_block": 0}, "needs 'node', 'first_block' and 'last_block'"),
    ],
)
def test_plan_files_need_whole_block_numbers(stage, fragment):
    from partopt.plan import InvalidPlan, Plan

    with pytest.raises(InvalidPlan, match=fragment):
        Plan.from_dict([stage], _problem(3, 2, 64))


def test_evaluate_checks_its_arguments():
    from partopt.plan import Plan, Stage, evaluate

    with pytest.raises(TypeError, match="problem must be a partopt Problem, got None"):
        evaluate(None, Plan((Stage(0, 2, 0),)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="plan must be a partopt Plan"):
        evaluate(_problem(3, 2, 64), [(0, 2, 0)])  # type: ignore[arg-type]


# -- clusters whose dense matrices would not fit are refused before allocating ---------------


def test_cluster_node_limit_is_the_dense_table_limit():
    from partopt.cluster import MAX_NODES

    assert MAX_NODES**2 <= _limits.MAX_DENSE_CELLS < (MAX_NODES + 1) ** 2


@pytest.mark.parametrize(
    "build",
    [
        lambda: paper_cluster(5, 64),
        lambda: Cluster.uniform(5, memory_bytes=MB, bandwidth_mbps=1.0),
        lambda: __import__("partopt.cluster").cluster.ring_cluster(5, 64),
        lambda: __import__("partopt.cluster").cluster.grid_cluster(1, 5, 64),
        lambda: Cluster.from_dict(
            {"nodes": [{"memory_bytes": 1}] * 5, "bandwidth_mbps": "not read before the check"}
        ),
    ],
)
def test_clusters_beyond_the_node_limit_are_refused(monkeypatch, build):
    # stands in for --paper-cluster 100000 (a 74.5 GiB bandwidth matrix)
    import partopt.cluster as cluster_module

    monkeypatch.setattr(cluster_module, "MAX_NODES", 4)
    with pytest.raises(
        cluster_module.ClusterError, match=r"5 nodes needs a 5 x 5 bandwidth matrix"
    ):
        build()


def test_solve_with_a_cluster_too_large_for_memory_is_one_line(capsys, tmp_path):
    import onnx

    from partopt.cli import main
    from tests.onnx_models import chain_model

    onnx.save(chain_model(), tmp_path / "m.onnx")
    argv = ["solve", str(tmp_path / "m.onnx"), "--paper-cluster", "100000", "--capacity-mb", "12"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "100,000 nodes" in err[0] and "74.5 GiB" in err[0], err
