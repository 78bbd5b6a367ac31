"""Sweeps over DAG cuts (``cuts = ["dag"]``): DagProblem instances, records as usual."""

from __future__ import annotations

import textwrap

import onnx
import pytest

from partopt.experiments import ConfigError, execute, load_config, read_records, run_sweep
from partopt.experiments.instances import build_problem
from partopt.solve import solve
from tests.onnx_models import two_inputs

# two_inputs needs 704 bytes on one node, 672 for its largest operator (peak memory);
# the paper clusters at 0.00066 MB give every node 692 bytes: two stages at least
SWEEP = """
name = "dag"
results = "dag.jsonl"

[[grid]]
models = ["{model}"]
cuts = ["single", "multi", "dag"]
capacity_mb = [0.00066]
nodes = [3, 4]
seeds = [0, 1]
methods = ["exact", "brute"]

[[grid]]
models = ["{model}"]
cuts = ["dag"]
capacity_mb = [0.00066]
nodes = [3]
seeds = [0]
methods = ["dag-milp"]
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "two.onnx"
    onnx.save(two_inputs(), path)
    cfg = tmp_path / "dag.toml"
    cfg.write_text(textwrap.dedent(SWEEP.format(model=path)))
    return cfg


def test_dag_sweep_records_and_the_dag_optimum_is_at_most_the_chains(config):
    cfg = load_config(config)
    summary = run_sweep(cfg, jobs=1, progress=False)
    assert summary.ran == len(cfg.runs) == 2 * 3 * 2 * 2 + 1
    recs = read_records(cfg.results)
    assert len(recs) == len(cfg.runs)
    by = {(r["cuts"], r["nodes"], r["seed"], r["method"]): r for r in recs}
    # the single-tensor chain has no cut (the two branches join): one block, too big
    assert {r["status"] for r in recs if r["cuts"] == "single"} == {"infeasible"}
    for r in recs:
        if r["cuts"] == "single":
            continue
        assert r["status"] == "optimal", r
        if r["cuts"] == "dag":
            assert r["num_blocks"] == 5 and r["plan_cuts"] is None
            assert sorted(o for ops in r["plan_ops"] for o in ops) == list(range(5))
            assert r["stages"] == len(r["plan_ops"]) == len(r["plan_nodes"])
            assert r["min_stages"] == 2 <= r["stages"]
            assert r["boundary_states"] == 8 and r["states_complete"] is True
        else:
            assert r["stages"] == len(r["plan_cuts"]) + 1
    for n in (3, 4):
        for seed in (0, 1):
            dag = by[("dag", n, seed, "exact")]["bottleneck_s"]
            assert dag == pytest.approx(by[("dag", n, seed, "brute")]["bottleneck_s"], rel=1e-9)
            multi = by[("multi", n, seed, "exact")]["bottleneck_s"]
            assert dag <= multi * (1 + 1e-9)
    milp = by[("dag", 3, 0, "dag-milp")]["bottleneck_s"]
    assert milp == pytest.approx(by[("dag", 3, 0, "exact")]["bottleneck_s"], rel=1e-6)


def test_dag_records_match_a_direct_solve(config):
    run = next(r for r in load_config(config).runs if r.instance.cuts == "dag")
    rec = execute(run)
    problem = build_problem(run.instance)
    direct = solve(problem, run.method)
    assert rec["bottleneck_s"] == direct.bottleneck_s
    assert rec["plan_ops"] == [list(s.ops) for s in direct.plan.stages]
    sent = (
        max(s.transfer_bytes for s in direct.evaluation.stages[:-1])
        if direct.plan.num_stages > 1
        else 0.0
    )
    assert rec["plan_max_transfer_bytes"] == sent


def test_dag_cuts_need_byte_transfers(tmp_path, config):
    text = config.read_text().replace(
        'cuts = ["dag"]\n', 'cuts = ["dag"]\ntransfer = ["paper"]\n', 1
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="transfer 'bytes'"):
        load_config(bad)
