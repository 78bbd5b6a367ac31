"""Sweeps refuse bad input in one line, never touch other files, and clean up after a kill."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from partopt.experiments.config import MAX_NODES, ConfigError, expand, load_config
from partopt.experiments.records import ResultsFileError, lock_results, read_records
from partopt.experiments.runner import run_sweep

REPO = Path(__file__).resolve().parent.parent

GRID = """
[[grid]]
models = ["synthetic:1:8"]
capacity_mb = [64]
nodes = [4]
seeds = [0, 1]
methods = {methods}
"""


def config(tmp_path: Path, methods: str = '["random"]', head: str = "", grid: str = GRID) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(head + grid.replace("{methods}", methods))
    return path


def partopt_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m partopt ARGS`` from the repository root (this checkout's package)."""
    return subprocess.run(
        [sys.executable, "-m", "partopt", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    err = proc.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("partopt: "), err
    return err


# -- layering -------------------------------------------------------------------------------


def test_report_reads_records_without_importing_the_runner(tmp_path):
    tree = ast.parse((REPO / "partopt" / "report.py").read_text())
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    } | {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    ours = {m for m in imported if m.startswith("partopt.experiments")}
    assert ours == {"partopt.experiments.records"}, ours

    results = tmp_path / "r.jsonl"
    results.write_text('{"schema":1,"run_key":"a","instance_key":"i","sweep":"x"}\n')
    code = (
        "import sys; from partopt.report import load_records; "
        f"load_records([{str(results)!r}]); "
        "print(sorted(m for m in sys.modules if m.startswith('partopt.experiments')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "['partopt.experiments', 'partopt.experiments.records']"


def test_experiment_modules_import_only_the_ones_before_them():
    # data flows config -> instances -> runner -> records; records (read by reports) stand alone
    allowed = {
        "records": set(),
        "config": set(),
        "instances": {"config"},
        "runner": {"config", "instances", "records"},
    }
    for name, may in allowed.items():
        tree = ast.parse((REPO / "partopt" / "experiments" / f"{name}.py").read_text())
        used = {
            node.module.rsplit(".", 1)[1]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and node.module is not None
            and node.module.startswith("partopt.experiments.")
        }
        assert used <= may, (name, used - may)


# -- method options -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["exact", "seifer"])
def test_unknown_method_options_are_refused_before_any_run(tmp_path, method):
    cfg = config(tmp_path, f'[{{ name = "{method}", bogus = 1 }}]')
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    assert f"{method} has no option 'bogus'" in msg and "time_limit_s" in msg and "\n" not in msg
    known = "dfs_budget" if method == "exact" else "num_classes"
    assert known in msg
    out = tmp_path / "r.jsonl"
    one_line_error(partopt_cli("sweep", str(cfg), "--out", str(out), "-q"))
    assert not out.exists()


def test_options_in_methods_tables_are_checked_too(tmp_path):
    cfg = config(tmp_path, '["exact"]', head="[methods.exact]\ntime_limt_s = 5\n")
    with pytest.raises(ConfigError, match="exact has no option 'time_limt_s'"):
        load_config(cfg)


def test_the_documented_seifer_example_is_a_valid_config():
    import partopt.experiments as ex

    assert '{ name = "seifer", num_classes = [2, 20] }' in (ex.__doc__ or "")
    grid = {"models": ["synthetic:0:6"], "capacity_mb": [64], "nodes": [3]}
    runs = expand({"grid": [{**grid, "methods": [{"name": "seifer", "num_classes": [2, 20]}]}]})
    assert [dict(r.options) for r in runs] == [{"num_classes": 2}, {"num_classes": 20}]
    with pytest.raises(ConfigError, match="seifer has no option 'classes'"):
        expand({"grid": [{**grid, "methods": [{"name": "seifer", "classes": [2, 20]}]}]})


# -- values ---------------------------------------------------------------------------------


def test_an_empty_methods_list_on_the_command_line_is_refused(tmp_path):
    out = tmp_path / "r.jsonl"
    err = one_line_error(
        partopt_cli("sweep", str(config(tmp_path)), "--out", str(out), "-q", "--methods", ",")
    )
    assert "names no method" in err and "random" in err
    assert not out.exists()


@pytest.mark.parametrize("where", ["top", "method"])
def test_an_infinite_time_limit_is_refused_in_validation(tmp_path, where):
    head = "time_limit_s = inf\n" if where == "top" else "[methods.random]\ntime_limit_s = inf\n"
    with pytest.raises(ConfigError, match="leave time_limit_s out for no limit"):
        load_config(config(tmp_path, head=head))


@pytest.mark.parametrize(
    "grid, words",
    [
        (GRID.replace("nodes = [4]", "nodes = [100000]"), ["100,000 nodes", f"{MAX_NODES:,}"]),
        (GRID.replace("synthetic:1:8", "synthetic:1:100000000"), ["100,000,000 blocks", "GiB"]),
    ],
)
def test_instances_too_large_to_build_are_refused_in_one_line(tmp_path, grid, words):
    cfg = config(tmp_path, grid=grid)
    err = one_line_error(partopt_cli("sweep", str(cfg), "--out", str(tmp_path / "r.jsonl"), "-q"))
    assert all(w in err for w in words), err


# -- the results file -----------------------------------------------------------------------


@pytest.mark.parametrize("text", [b"my notes\nsecond line\nlast line", b"one line, no newline"])
def test_a_file_that_is_not_a_results_file_is_never_modified(tmp_path, text):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(text)
    err = one_line_error(partopt_cli("sweep", str(config(tmp_path)), "--out", str(notes), "-q"))
    assert "is not a results file" in err
    assert notes.read_bytes() == text
    with pytest.raises(ResultsFileError):
        run_sweep(load_config(config(tmp_path)), notes, jobs=1, progress=False)
    assert notes.read_bytes() == text


def test_only_a_torn_last_record_is_repaired(tmp_path):
    cfg = load_config(config(tmp_path))
    out = tmp_path / "r.jsonl"
    run_sweep(cfg, out, jobs=1, progress=False, limit=1)
    whole = out.read_bytes()
    out.write_bytes(whole + b'{"schema":1,"run_k')
    assert run_sweep(cfg, out, jobs=1, progress=False).ran == 1
    assert out.read_bytes().startswith(whole) and len(read_records(out)) == 2
    # a record followed by prose is not what a killed writer leaves: refused, unchanged
    damaged = out.read_bytes() + b"a note somebody added"
    out.write_bytes(damaged)
    with pytest.raises(ResultsFileError, match="last line is not a record"):
        run_sweep(cfg, out, jobs=1, progress=False)
    assert out.read_bytes() == damaged


def test_a_second_sweep_on_a_locked_results_file_is_refused(tmp_path):
    cfg_path = config(tmp_path)
    out = tmp_path / "r.jsonl"
    with lock_results(out):  # stands for a sweep that is running
        err = one_line_error(partopt_cli("sweep", str(cfg_path), "--out", str(out), "-q"))
        assert "being written by another sweep" in err
        with pytest.raises(ResultsFileError, match="another sweep"):
            run_sweep(load_config(cfg_path), out, jobs=1, progress=False)
        assert out.read_bytes() == b""
    summary = run_sweep(load_config(cfg_path), out, jobs=1, progress=False)
    assert summary.ran == 2 and len(read_records(out)) == 2


# -- the pool dies with its sweep -------------------------------------------------------------


def _children() -> dict[int, int]:
    """``{pid: parent pid}`` of every process on the machine (Linux /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            out[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _descendants(pid: int) -> set[int]:
    parents = _children()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_pool_dies_with_a_killed_sweep(tmp_path, sig):
    grid = GRID.replace("seeds = [0, 1]", "seeds = { start = 0, count = 20000 }")
    cfg_path = config(tmp_path, grid=grid)
    out = tmp_path / "r.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "partopt",
            "sweep",
            str(cfg_path),
            "--out",
            str(out),
            "-j",
            "2",
            "-q",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    family: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            family = _descendants(proc.pid)
            if len(family) >= 3 and out.exists() and out.read_bytes().count(b"\n") >= 5:
                break  # two workers and the resource tracker, and runs being recorded
            time.sleep(0.05)
        assert proc.poll() is None and len(family) >= 3, "the sweep never got its pool going"
        proc.send_signal(sig)  # the sweep alone, not its process group
        proc.wait(30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(p) for p in family):
            time.sleep(0.1)
        survivors = [p for p in family if _alive(p)]
        assert not survivors, f"{len(survivors)} of the sweep's {len(family)} processes survived"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in family:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


# -- one generator per model name -----------------------------------------------------------


def test_each_generated_model_name_means_one_generator():
    import csv

    from partopt.experiments.instances import resnetlike_chain, synthetic_chain

    a, b = synthetic_chain(0, 50), resnetlike_chain(0, 50)
    assert (a.name, b.name) == ("synthetic:0:50", "resnetlike:0:50")
    assert a.param_bytes.sum() != b.param_bytes.sum()
    # the benchmark CSVs were written with the ResNet-like generator: none may say synthetic
    for path in sorted((REPO / "experiments" / "results").glob("bench_*.csv")):
        with open(path, newline="") as fh:
            models = {row.get("model", "") for row in csv.DictReader(fh)}
        assert not any(m.startswith("synthetic:") for m in models), path.name


def test_benchmark_configs_load_and_name_their_generators(tmp_path):
    cfg = load_config(REPO / "experiments" / "configs" / "bench_exact.toml")
    models = {r.instance.model for r in cfg.runs}
    assert {"resnetlike:0:50", "resnetlike:4:200"} <= models
    assert not any(m.startswith("synthetic:") for m in models)
    from partopt.experiments.runner import execute

    run = next(r for r in cfg.runs if r.instance.model == "resnetlike:0:50")
    rec = execute(run)
    assert rec["versions"]["chain_generator"] == "resnetlike-v1" and rec["num_blocks"] == 50
