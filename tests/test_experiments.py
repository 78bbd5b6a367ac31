"""Sweep configs, the resumable runner, the Dask path and the sweep -> report pipeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from partopt.experiments import (
    ConfigError,
    append_record,
    execute,
    expand,
    load_config,
    read_records,
    run_sweep,
    strip_timings,
    synthetic_chain,
)

REPO = Path(__file__).resolve().parent.parent

TWO_INSTANCES = """
name = "two"
results = "two.jsonl"

[[grid]]
models = ["synthetic:1:8"]
capacity_mb = [64]
nodes = [4]
seeds = [0, 1]
methods = ["random", "brute"]
"""

# about 200 runs of ~5 ms: long enough to be killed halfway, short enough for CI
KILLABLE = """
name = "killable"

[[grid]]
models = ["synthetic:0:10", "synthetic:6:12"]
capacity_mb = [64, 96]
nodes = [5, 6]
seeds = { start = 0, count = 12 }
methods = ["brute", { name = "random", solver_seeds = [0, 1] }]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def keys(records) -> list[str]:
    return [r["run_key"] for r in records]


# -- configs ------------------------------------------------------------------------


def test_grid_expands_deterministically_with_option_lists():
    data = {
        "methods": {"random": {"time_limit_s": 5}},
        "grid": [
            {
                "models": ["synthetic:1:6"],
                "capacity_mb": [64, 128],
                "nodes": [3],
                "seeds": {"start": 4, "count": 2},
                "methods": ["random", {"name": "seifer", "num_classes": [1, 2]}],
            },
            # the second grid repeats one instance; its runs are not duplicated
            {
                "models": ["synthetic:1:6"],
                "capacity_mb": [64],
                "nodes": [3],
                "seeds": [4],
                "methods": ["random"],
            },
        ],
    }
    runs = expand(data)
    assert len(runs) == 2 * 2 * (1 + 2)
    assert len({r.key for r in runs}) == len(runs)
    assert [r.key for r in runs] == [r.key for r in expand(data)]
    first = runs[0]
    assert first.instance.seed == 4 and first.solver_seed == 4 and first.time_limit_s == 5
    assert first.key.endswith("|cap=64MB|N=3|seed=4|random|tl=5|s=4")
    assert [r.key.split("|")[-2] for r in runs[1:3]] == ["num_classes=1", "num_classes=2"]


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '[[grid]]\nmodels=["synthetic:1:6"]\ncapacity_mb=[64]\nnodes=[3]\nmethods=["nope"]',
            "method 'nope' is not registered; available:",
        ),
        (
            '[[grid]]\nmodels=["synthetic:1"]\ncapacity_mb=[64]\nnodes=[3]\nmethods=["random"]',
            "synthetic:SEED:BLOCKS",
        ),
        (
            '[[grid]]\nmodels=["synthetic:1:6"]\ncapacity_mb=[64]\nnodes=[0]\nmethods=["random"]',
            "nodes must be integers >= 1",
        ),
        (
            '[[grid]]\nmodels=["synthetic:1:6"]\nmemory=["ram"]\ncapacity_mb=[64]\nnodes=[3]\n'
            'methods=["random"]',
            "unknown memory model 'ram'",
        ),
        ('name = "x"', "needs at least one [[grid]]"),
        ("[[grid]\n", "does not parse"),
    ],
)
def test_bad_configs_give_one_line_errors(tmp_path, text, message):
    cfg = write(tmp_path, "bad.toml", text)
    with pytest.raises(ConfigError, match=None) as err:
        load_config(cfg)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_reports_unregistered_method_in_one_line(tmp_path, capsys):
    from partopt.cli import main

    cfg = write(
        tmp_path,
        "bad.toml",
        '[[grid]]\nmodels=["synthetic:1:6"]\ncapacity_mb=[64]\n'
        'nodes=[3]\nmethods=["random", "seifer-v9"]\n',
    )
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "r.jsonl")]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("partopt: error: method 'seifer-v9' is not registered") and "\n" not in err
    )


def test_yaml_config_equals_toml(tmp_path):
    toml = write(tmp_path, "a.toml", TWO_INSTANCES)
    yml = write(
        tmp_path,
        "a.yaml",
        """
        name: two
        results: two.jsonl
        grid:
          - models: ["synthetic:1:8"]
            capacity_mb: [64]
            nodes: [4]
            seeds: [0, 1]
            methods: [random, brute]
        """,
    )
    assert [r.key for r in load_config(toml).runs] == [r.key for r in load_config(yml).runs]


def test_synthetic_chains_are_deterministic_and_distinct():
    a, b, c = synthetic_chain(3, 9), synthetic_chain(3, 9), synthetic_chain(4, 9)
    assert (a.param_bytes == b.param_bytes).all() and (a.transfer_bytes == b.transfer_bytes).all()
    assert not (a.transfer_bytes == c.transfer_bytes).all()


def test_record_fields_match_the_solve(tmp_path):
    run = expand(
        {
            "grid": [
                {
                    "models": ["synthetic:1:8"],
                    "capacity_mb": [64],
                    "nodes": [4],
                    "seeds": [1],
                    "methods": ["brute"],
                }
            ]
        }
    )[0]
    rec = execute(run)
    assert json.loads(json.dumps(rec, allow_nan=False)) == rec
    assert rec["status"] == "optimal" and rec["gap"] == 0.0
    assert rec["bottleneck_s"] == rec["lower_bound_s"]
    assert rec["stages"] == len(rec["plan_nodes"]) == len(rec["plan_cuts"]) + 1
    assert (rec["model"], rec["capacity_mb"], rec["nodes"], rec["seed"]) == (
        "synthetic:1:8",
        64,
        4,
        1,
    )
    assert rec["min_stages"] >= 2 and rec["num_blocks"] == 8
    assert set(rec["versions"]) >= {"partopt", "pyomo", "highspy"}
    # the plan's largest cut over the best link is the original work's "optimal"
    assert (
        rec["plan_max_transfer_bytes"] * 8 / (rec["max_bandwidth_mbps"] * 1e6)
        <= rec["bottleneck_s"]
    )


# -- the runner ----------------------------------------------------------------------


def test_two_instance_sweep_then_report(tmp_path):
    from partopt.cli import main
    from partopt.report import load_records

    pytest.importorskip("matplotlib")  # the report draws figures
    cfg = write(tmp_path, "two.toml", TWO_INSTANCES)
    assert main(["sweep", str(cfg), "--jobs", "1", "--quiet"]) == 0
    out = tmp_path / "two.jsonl"
    recs = read_records(out)
    assert sorted(keys(recs)) == sorted(r.key for r in load_config(cfg).runs)
    assert {r["status"] for r in recs if r["method"] == "brute"} == {"optimal"}
    # a second call has nothing to do
    assert main(["sweep", str(cfg), "--jobs", "1", "--quiet"]) == 0
    assert len(read_records(out)) == 4

    rep = tmp_path / "report"
    assert main(["report", str(out), "--out", str(rep)]) == 0
    overall = (rep / "tables" / "quality_overall.csv").read_text().splitlines()
    assert overall[0].startswith("regime,method,instances,solved,mean ratio")
    brute = next(line for line in overall if ",brute," in line).split(",")
    assert brute[2:4] == ["2", "2"] and float(brute[4]) == 1.0 and float(brute[7]) == 1.0
    assert (rep / "figures" / "gap_distribution_peak-bytes.pdf").exists()
    assert len(load_records([out])) == 4


def test_truncated_last_line_is_dropped_and_rerun(tmp_path):
    cfg = load_config(write(tmp_path, "two.toml", TWO_INSTANCES))
    out = tmp_path / "r.jsonl"
    run_sweep(cfg, out, jobs=1, progress=False, limit=3)
    whole = out.read_bytes()
    out.write_bytes(whole + b'{"schema":1,"run_key":"cut sho')  # a write cut by SIGKILL
    assert len(read_records(out)) == 3
    summary = run_sweep(cfg, out, jobs=1, progress=False)
    assert summary.ran == 1 and summary.already == 3
    recs = read_records(out)
    assert sorted(keys(recs)) == sorted(r.key for r in cfg.runs)
    assert out.read_bytes().startswith(whole) and out.read_bytes().endswith(b"\n")


def test_sigkilled_sweep_resumes_with_nothing_lost_or_duplicated(tmp_path):
    cfg_path = write(tmp_path, "killable.toml", KILLABLE)
    cfg = load_config(cfg_path)
    out = tmp_path / "killable.jsonl"
    script = (
        "import sys; from partopt.cli import main; "
        f"sys.exit(main(['sweep', {str(cfg_path)!r}, '--out', {str(out)!r}, '--jobs', '2', '-q']))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 20:
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the sweep, its pool and its forkserver
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    partial = read_records(out)
    assert 20 <= len(partial) < len(cfg.runs)

    summary = run_sweep(cfg, out, jobs=2, progress=False)
    assert summary.already == len(partial) and not summary.failures
    final = read_records(out)
    assert len(final) == len(cfg.runs) == len(set(keys(final)))
    assert set(keys(final)) == {r.key for r in cfg.runs}


def test_dask_cluster_gives_the_same_records(tmp_path):
    distributed = pytest.importorskip("distributed")
    cfg = load_config(write(tmp_path, "two.toml", TWO_INSTANCES))
    local, remote = tmp_path / "local.jsonl", tmp_path / "dask.jsonl"
    run_sweep(cfg, local, jobs=1, progress=False)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        summary = run_sweep(cfg, remote, scheduler=cluster.scheduler_address, progress=False)
    assert summary.ran == len(cfg.runs) and not summary.failures
    a = {r["run_key"]: strip_timings(r) for r in read_records(local)}
    b = {r["run_key"]: strip_timings(r) for r in read_records(remote)}
    assert a == b


def test_append_record_writes_whole_lines(tmp_path):
    out = tmp_path / "x.jsonl"
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        append_record(fd, {"run_key": "a", "v": 1.5})
        append_record(fd, {"run_key": "b", "v": None})
        with pytest.raises(ValueError):
            append_record(fd, {"run_key": "c", "v": float("nan")})  # records hold no NaN
    finally:
        os.close(fd)
    assert read_records(out) == [{"run_key": "a", "v": 1.5}, {"run_key": "b", "v": None}]


def test_shipped_configs_load(tmp_path):
    for cfg in sorted((REPO / "experiments" / "configs").glob("*.toml")):
        conf = load_config(cfg, check_methods=False)
        assert conf.runs and conf.results is not None, cfg.name


def test_resume_from_the_committed_gzip_snapshot(tmp_path):
    import gzip

    from partopt.experiments import snapshot_path
    from partopt.report import load_records

    cfg = load_config(write(tmp_path, "two.toml", TWO_INSTANCES))
    out = tmp_path / "two.jsonl"
    run_sweep(cfg, out, jobs=1, progress=False, limit=2)
    snap = snapshot_path(out)
    snap.write_bytes(gzip.compress(out.read_bytes()))
    out.unlink()  # a fresh clone: only the snapshot is committed
    assert len(load_records([tmp_path])) == 2
    summary = run_sweep(cfg, out, jobs=1, progress=False)
    assert (summary.already, summary.ran) == (2, 2)
    assert sorted(keys(read_records(out))) == sorted(r.key for r in cfg.runs)
    assert len(load_records([tmp_path])) == 4  # the folder prefers the working file


def test_redo_replaces_a_methods_records(tmp_path):
    cfg = load_config(write(tmp_path, "two.toml", TWO_INSTANCES))
    out = tmp_path / "r.jsonl"
    run_sweep(cfg, out, jobs=1, progress=False)
    before = {r["run_key"]: r for r in read_records(out)}
    summary = run_sweep(cfg, out, jobs=1, progress=False, redo=["random"])
    assert (summary.already, summary.ran) == (2, 2)
    after = read_records(out)
    assert len(after) == 4 and {r["run_key"] for r in after} == set(before)
    with pytest.raises(ValueError, match="not a method of config"):
        run_sweep(cfg, out, jobs=1, progress=False, redo=["exact"])


def test_seifer_original_replays_the_leaky_memo_deterministically():
    from partopt import solvers

    if "seifer-original" not in solvers.available():
        pytest.skip("seifer-original not registered")
    data = {
        "methods": {"seifer-original": {"num_classes": 5, "memo_history": "ascending"}},
        "grid": [
            {
                "models": ["synthetic:2:12"],
                "capacity_mb": [48, 64, 96],
                "nodes": [4],
                "seeds": [0],
                "methods": ["seifer-original"],
            }
        ],
    }
    runs = expand(data)
    assert [dict(r.options).get("memo_history") for r in runs] == [None, (48.0,), (48.0, 64.0)]
    assert runs[2].key.endswith("|seifer-original|memo_history=48+64|num_classes=5|s=0")
    forward = [strip_timings(execute(r)) for r in runs]
    backward = [strip_timings(execute(r)) for r in reversed(runs)][::-1]
    assert forward == backward  # a record does not depend on the runs before it


def test_a_run_that_overruns_is_stopped_and_recorded_as_an_error(monkeypatch):
    import partopt.experiments.runner as ex
    from partopt import solvers

    if not hasattr(signal, "setitimer"):
        pytest.skip("no interval timers on this platform")

    def stuck(problem, **_):
        while True:  # a solver that ignores its time limit
            time.sleep(0.01)

    monkeypatch.setitem(
        solvers._REGISTRY, "stuck", solvers.SolverInfo("stuck", stuck, False, "never returns")
    )
    monkeypatch.setattr(ex, "HARD_LIMIT_S", 0.2)
    run = expand(
        {
            "grid": [
                {
                    "models": ["synthetic:1:8"],
                    "capacity_mb": [64],
                    "nodes": [4],
                    "seeds": [0],
                    "methods": ["stuck"],
                }
            ]
        }
    )[0]
    rec = execute(run)
    assert rec["status"] == "error" and "stopped by the sweep after 0.2 s" in rec["error"]
