"""DAG plans (stages of operator sets) through ``solve``, ``export`` and ``emulate``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from partopt import Cluster, Plan
from partopt.chain import build_chain
from partopt.dag import DagProblem, build_dag
from partopt.emulator import Emulator, EmulatorOptions
from partopt.export import random_weights
from partopt.onnx_graph import load_graph
from partopt.plan import OpStage, evaluate
from tests.onnx_models import two_inputs

SCALE = 0.2


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "partopt.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _memories(dag) -> np.ndarray:
    mem_sum, mem_max = dag.memory_terms("peak")
    return mem_sum + mem_max


@pytest.fixture
def files(tmp_path):
    model = two_inputs()
    onnx.save(model, str(tmp_path / "m.onnx"))
    dag = build_dag(load_graph(model))
    mem_sum, mem_max = dag.memory_terms("peak")
    whole = float(mem_sum.sum() + mem_max.max())
    # no node holds the whole model, every node holds its largest operator: two stages or more
    cap = max(float(_memories(dag).max()), 0.97 * whole)
    Cluster.uniform(3, memory_bytes=cap, bandwidth_mbps=0.08).save(tmp_path / "c.json")
    return tmp_path


def test_solve_export_emulate_a_dag_plan_end_to_end(files):
    out = _cli(
        "solve",
        files / "m.onnx",
        "--cuts",
        "dag",
        "--cluster",
        files / "c.json",
        "--json",
        "-o",
        files / "plan.json",
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads((files / "plan.json").read_text())
    assert doc["status"] == "optimal" and doc["cuts"] == "dag"
    assert len(doc["stages"]) >= 2 and all("ops" in s for s in doc["stages"])

    out = _cli(
        "export", files / "m.onnx", files / "plan.json", files / "out", "--random-weights", 1
    )
    assert out.returncode == 0, out.stderr
    assert "outputs match" in out.stdout
    manifest = json.loads((files / "out" / "manifest.json").read_text())
    assert [s["node"] for s in manifest["stages"]] == [s["node"] for s in doc["stages"]]
    assert sorted(o for s in manifest["stages"] for o in s["ops"]) == list(range(5))

    out = _cli(
        "emulate",
        files / "m.onnx",
        files / "plan.json",
        "--cluster",
        files / "c.json",
        "--requests",
        6,
        "--time-scale",
        SCALE,
        "--verify",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["results_received"] == rep["requests_sent"] == 6
    assert rep["verified"] is True
    assert rep["predicted_bottleneck_s"] == pytest.approx(doc["bottleneck_s"], rel=1e-9)
    assert [s["ops"] for s in rep["stages"]] == [s["ops"] for s in doc["stages"]]
    assert [s["ops"] for s in rep["deployments"][0]["plan"]] == [s["ops"] for s in doc["stages"]]
    # what a stage sends over its link is what the solver charged it for
    for link, stage in zip(rep["links"], doc["stages"], strict=False):
        assert link["bytes_per_request"] == link["dag_transfer_bytes"]
        assert link["predicted_s"] == pytest.approx(stage["transfer_s"], rel=1e-9)


def test_a_dag_plan_out_of_the_chain_order_runs_and_verifies():
    model = two_inputs()
    graph = load_graph(model)
    dag = build_dag(graph)
    names = dag.op_names
    # branch B first, then branch A, then the join: not contiguous in the multi chain's order
    stages = [["sig_b"], ["mm", "relu_a"], ["add", "relu_out"]]
    plan = Plan(
        tuple(OpStage(tuple(names.index(o) for o in ops), k) for k, ops in enumerate(stages))
    )
    problem = DagProblem(dag, Cluster.uniform(3, memory_bytes=1e9, bandwidth_mbps=0.08))
    ev = evaluate(problem, plan)
    emu = Emulator(
        random_weights(model, 1),
        problem,
        plan,
        EmulatorOptions(requests=5, time_scale=SCALE, verify=True),
        layer_graph=graph,
        chain=build_chain(graph, "multi"),
    )
    rep = emu.run()
    assert rep.error is None and rep.verified is True
    assert rep.results_received == 5
    assert [s["ops"] for s in rep.stages] == stages
    assert [link["bytes_per_request"] for link in rep.links] == [
        s.transfer_bytes for s in ev.stages[:-1]
    ]


def test_dag_plan_errors_are_one_line(files):
    out = _cli(
        "solve",
        files / "m.onnx",
        "--cuts",
        "dag",
        "--cluster",
        files / "c.json",
        "--json",
        "-o",
        files / "plan.json",
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads((files / "plan.json").read_text())
    doc["stages"][0]["memory_bytes"] *= 2
    (files / "other.json").write_text(json.dumps(doc))
    for cmd in (
        ["emulate", files / "m.onnx", files / "other.json", "--cluster", files / "c.json"],
        ["export", files / "m.onnx", files / "other.json", files / "o"],
    ):
        out = _cli(*cmd)
        assert out.returncode == 1 and "does not fit" in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    doc["stages"][0]["ops"][0] = "no_such_layer"
    (files / "bad.json").write_text(json.dumps(doc))
    out = _cli("export", files / "m.onnx", files / "bad.json", files / "o")
    assert out.returncode == 1 and "'no_such_layer', an operator the model" in out.stderr
    out = _cli("export", files / "m.onnx", files / "plan.json", files / "o", "--cuts", "single")
    assert out.returncode == 1 and "operator sets" in out.stderr


def test_a_killed_dag_stage_is_replanned_and_every_request_answered_once():
    from partopt.emulator import parse_fault

    model = two_inputs()
    graph = load_graph(model)
    dag = build_dag(graph)
    mem_sum, mem_max = dag.memory_terms("peak")
    # every node holds the largest operator but not the whole model: two stages at least
    cap = max(float(_memories(dag).max()), 0.97 * float(mem_sum.sum() + mem_max.max()))
    problem = DagProblem(dag, Cluster.uniform(4, memory_bytes=cap, bandwidth_mbps=0.08))
    plan = solve_plan(problem)
    victim = plan.stages[0].node
    opts = EmulatorOptions(
        requests=30,
        time_scale=SCALE,
        verify=True,
        faults=(parse_fault(f"n{victim}@{10 * evaluate(problem, plan).bottleneck_s}"),),
    )
    emu = Emulator(
        random_weights(model, 1),
        problem,
        plan,
        opts,
        layer_graph=graph,
        chain=build_chain(graph, "multi"),
    )
    r = emu.run()
    assert r.error is None, r.error
    assert r.results_received == r.requests_sent == 30 and r.lost == 0
    assert sorted(emu.delivered) == list(range(30))  # exactly once
    assert r.verified is True
    assert len(r.deployments) == 2 and r.deployments[1]["results"] > 0
    after = r.deployments[1]["plan"]
    assert f"n{victim}" not in [s["node"] for s in after]
    assert sorted(o for s in after for o in s["ops"]) == sorted(dag.op_names)
    replanned = r.faults[0]["replan"]
    assert replanned["source"] == "solve:exact" and all("ops" in s for s in replanned["stages"])


def solve_plan(problem) -> Plan:
    from partopt.solve import solve

    res = solve(problem, "exact")
    assert res.status == "optimal" and res.plan is not None and res.plan.num_stages >= 2
    return res.plan
