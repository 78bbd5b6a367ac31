"""The peer's own benchmark: partopt and Tarnawski et al.'s DP on their 8 inference workloads.

Tarnawski et al. (NeurIPS 2020) publish an exact dynamic program over ideals
(``throughput-dp/dp.cpp`` of msr-fiddle/dnn-partitioning) and the workloads
it was run on. This script runs, per workload and side by side in one run,

* their DP (a binary you build yourself, see below) on the workload with
  ``maxCPUs`` set to 0, with a wall-clock timeout (default 300 s): status
  (``optimal``, ``timeout``, ``error``), its max load (``maxLoad`` of its
  JSON output, full precision), time and peak memory; partopt also scores
  the DP's own plan with :func:`partopt.plan.evaluate` (``peer_plan_load``),
  which checks that both mean the same load;
* partopt: :func:`partopt.workload.load_workload` then
  :func:`partopt.solve` with method ``exact`` and a time limit (default
  60 s), in a child process (so a run is isolated; the time excludes the
  interpreter's start and imports): status, max load, bound, time.

and writes one CSV row per workload (``experiments/results/bench_peer.csv``
by default; rows already present are skipped, so a killed run resumes) plus
a ``.meta.json`` sidecar (command, machine, versions). ``summary`` prints
the goals: partopt proves all 8, each within 60 s, with the DP's objective
where the DP finishes (1e-5 relative), and the median of (DP time / partopt
time) over the workloads partopt needs more than 1 s for.

Their code is not part of partopt. Build it outside the repository::

    git clone https://github.com/msr-fiddle/dnn-partitioning /tmp/peer
    g++ -O3 /tmp/peer/throughput-dp/dp.cpp -o /tmp/peer/dp.exe

and pass ``--peer-dp /tmp/peer/dp.exe`` (or set ``PARTOPT_PEER_DP``);
without it the peer columns stay empty. The workloads themselves (MIT
licence) are in ``experiments/workloads``.

Usage::

    nice python experiments/bench_peer.py run --peer-dp /tmp/peer/dp.exe
    python experiments/bench_peer.py summary experiments/results/bench_peer.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


BENCH_MAX_STATES = 40_000
"""Default state cap here: Inception-v3 has 36,596 ideals (more than ``MAX_STATES``)."""
BENCH_MAX_PAIRS = 5_000_000
"""Default stage cap here: past it the engine generates only the stages in a compute window."""

WORKLOADS = ROOT / "experiments" / "workloads"
RESULTS = ROOT / "experiments" / "results"
AGREE_RTOL = 1e-5
COLUMNS = [
    "workload",
    "graph",
    "nodes",
    "edges",
    "max_fpgas",
    "ideals",
    "peer_status",
    "peer_objective",
    "peer_time_s",
    "peer_rss_mb",
    "peer_timeout_s",
    "peer_plan_load",
    "partopt_status",
    "partopt_objective",
    "partopt_bound",
    "partopt_time_s",
    "partopt_load_s",
    "partopt_solve_s",
    "partopt_time_limit_s",
    "max_states",
    "max_pairs",
    "agree",
    "speedup",
    "error",
]


def _workload_files(root: Path) -> list[Path]:
    files = sorted(root.glob("*/*_inference.json"))
    if not files:
        raise SystemExit(f"no */*_inference.json workloads under {root}")
    return files


def _key(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def _without_cpus(path: Path, tmp: Path) -> Path:
    doc = json.loads(path.read_text())
    doc["maxCPUs"] = 0
    out = tmp / f"{path.parent.name}_{path.name}"
    out.write_text(json.dumps(doc))
    return out


def run_peer(binary: str, workload: Path, timeout_s: float) -> dict:
    """Their DP on ``workload``: status, objective, wall time, peak RSS and plan."""
    with (
        workload.open() as stdin,
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
    ):
        start = time.perf_counter()
        proc = subprocess.Popen([binary], stdin=stdin, stdout=out, stderr=err)
        status, rusage = None, None
        while True:
            pid, code, rusage = os.wait4(proc.pid, os.WNOHANG)
            elapsed = time.perf_counter() - start
            if pid:
                status = "optimal" if os.waitstatus_to_exitcode(code) == 0 else "error"
                break
            if elapsed > timeout_s:
                proc.send_signal(signal.SIGKILL)
                _, _, rusage = os.wait4(proc.pid, 0)
                status = "timeout"
                break
            time.sleep(0.002 if elapsed < 1 else 0.05)
        proc.returncode = 0  # reaped by wait4
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    res = {
        "peer_status": status,
        "peer_time_s": elapsed,
        "peer_rss_mb": rusage.ru_maxrss / 1024 if rusage else None,
        "peer_timeout_s": timeout_s,
    }
    if status == "optimal":
        try:
            doc = json.loads(stdout)
            res["peer_objective"] = float(doc["maxLoad"])
            # their backtracking lists the last stage first; devices left empty are dropped
            res["peer_stages"] = [m["nodes"] for m in reversed(doc["fpgas"]) if m["nodes"]]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            res["peer_status"] = "error"
    if res["peer_status"] == "error":
        res["error"] = "peer: " + " | ".join(stderr.strip().splitlines()[-2:])[:300]
    return res


def peer_plan_load(workload: Path, stages: list[list[int]]) -> float:
    """partopt's score (:func:`partopt.plan.evaluate`) of the DP's plan."""
    from partopt.plan import OpStage, Plan, evaluate
    from partopt.workload import load_workload, node_ids

    p = load_workload(workload)
    op = {v: k for k, v in enumerate(node_ids(p))}
    plan = Plan(tuple(OpStage(tuple(op[v] for v in s), k) for k, s in enumerate(stages)))
    return evaluate(p, plan).bottleneck_s


def _partopt_child(workload: str, time_limit_s: float, max_states: int, max_pairs: int) -> None:
    """Run in a child process: print one JSON line with partopt's result and times."""
    from partopt import solve, solvers
    from partopt.workload import load_workload

    solvers.get("exact")  # imports every solver module: part of the start-up, not of the run
    start = time.perf_counter()
    problem = load_workload(workload, max_states=max_states, max_pairs=max_pairs)
    loaded = time.perf_counter()
    result = solve(problem, "exact", time_limit_s=time_limit_s)
    done = time.perf_counter()
    ideals = problem.dag.count_ideals(limit=10 * max_states)
    print(
        json.dumps(
            {
                "ideals": "" if ideals is None else ideals,
                "partopt_status": result.status,
                "partopt_objective": result.bottleneck_s,
                "partopt_bound": result.lower_bound_s,
                "partopt_time_s": done - start,
                "partopt_load_s": loaded - start,
                "partopt_solve_s": done - loaded,
                "error": result.info.get("error", ""),
            }
        )
    )


def run_partopt(workload: Path, time_limit_s: float, max_states: int, max_pairs: int) -> dict:
    cmd = [sys.executable, __file__, "_partopt", str(workload), str(time_limit_s)]
    cmd += [str(max_states), str(max_pairs)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=time_limit_s + 300, check=False
        )
    except subprocess.TimeoutExpired:
        return {"partopt_status": "killed", "error": "partopt: no answer 300 s past its limit"}
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
        return {"partopt_status": "error", "error": f"partopt: {tail}"[:300]}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update(partopt_time_limit_s=time_limit_s, max_states=max_states, max_pairs=max_pairs)
    return res


def _agree(a, b) -> bool | str:
    if a in (None, "") or b in (None, ""):
        return ""
    a, b = float(a), float(b)
    return abs(a - b) <= AGREE_RTOL * max(abs(a), abs(b))


def cmd_run(args) -> None:
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    done: set[str] = set()
    if out.exists():
        with out.open() as fh:
            done = {r["workload"] for r in csv.DictReader(fh)}
    peer = args.peer_dp or os.environ.get("PARTOPT_PEER_DP")
    if peer and not os.access(peer, os.X_OK):
        raise SystemExit(f"--peer-dp {peer!r} is not an executable")
    meta = {
        "command": " ".join(sys.argv),
        "peer_dp": peer,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
    }
    out.with_suffix(".meta.json").write_text(json.dumps(meta, indent=1))
    new = not out.exists()
    with out.open("a", newline="") as fh, tempfile.TemporaryDirectory() as tmpdir:
        writer = csv.DictWriter(fh, COLUMNS)
        if new:
            writer.writeheader()
        for path in _workload_files(Path(args.workloads)):
            key = _key(path)
            if key in done or (args.only and not any(s in key for s in args.only)):
                continue
            wl = _without_cpus(path, Path(tmpdir))
            doc = json.loads(wl.read_text())
            row: dict = {
                "workload": key,
                "graph": path.parent.name,
                "nodes": len(doc["nodes"]),
                "edges": len(doc["edges"]),
                "max_fpgas": doc["maxFPGAs"],
            }
            row.update(run_partopt(wl, args.time_limit, args.max_states, args.max_pairs))
            if peer:
                pr = run_peer(peer, wl, args.timeout)
                stages = pr.pop("peer_stages", None)
                if stages is not None:
                    pr["peer_plan_load"] = peer_plan_load(wl, stages)
                if pr.get("error"):
                    row["error"] = "; ".join(x for x in (row.get("error"), pr["error"]) if x)
                    del pr["error"]
                row.update(pr)
                row["agree"] = _agree(row.get("peer_objective"), row.get("partopt_objective"))
                if row.get("partopt_time_s") and row["peer_status"] in ("optimal", "timeout"):
                    row["speedup"] = row["peer_time_s"] / row["partopt_time_s"]
            writer.writerow({c: row.get(c, "") for c in COLUMNS})
            fh.flush()
            print(
                f"{key:45s} partopt {row.get('partopt_status')} {row.get('partopt_objective')} "
                f"in {row.get('partopt_time_s', float('nan')):.3f} s; peer "
                f"{row.get('peer_status', '-')} {row.get('peer_objective', '')} "
                f"in {row.get('peer_time_s', float('nan')):.3f} s",
                flush=True,
            )


def _f(x: str) -> float | None:
    return float(x) if x not in ("", None) else None


def _floats(values) -> list[float]:
    return [float(v) for v in values if v not in ("", None)]


def cmd_summary(args) -> None:
    rows: list[dict] = []
    for f in args.files:
        with open(f) as fh:
            rows += list(csv.DictReader(fh))
    print(
        f"{'workload':42s} {'ideals':>7s} {'peer':>9s} {'peer s':>8s} {'partopt':>9s} "
        f"{'partopt s':>9s} {'agree':>6s} {'ratio':>8s}"
    )
    for r in rows:
        ratio = _f(r["speedup"])
        mark = ">" if r["peer_status"] == "timeout" else " "
        print(
            f"{r['workload']:42s} {r['ideals']:>7s} {r['peer_status']:>9s} "
            f"{_f(r['peer_time_s']) or math.nan:8.3f} {r['partopt_status']:>9s} "
            f"{_f(r['partopt_time_s']) or math.nan:9.3f} {r['agree']:>6s} "
            f"{mark}{ratio if ratio is not None else math.nan:7.1f}"
        )
    proven = sum(r["partopt_status"] == "optimal" for r in rows)
    times = _floats(r["partopt_time_s"] for r in rows)
    within = sum(
        r["partopt_status"] == "optimal" and (_f(r["partopt_time_s"]) or math.inf) <= 60
        for r in rows
    )
    finished = [r for r in rows if r["peer_status"] == "optimal"]
    agree = sum(r["agree"] == "True" for r in finished)
    slow = [r for r in rows if (_f(r["partopt_time_s"]) or 0) > 1 and _f(r["speedup"])]
    print(
        f"partopt proves {proven} of {len(rows)}; {within} within 60 s; "
        f"time median {statistics.median(times):.3f} s, max {max(times):.3f} s"
    )
    print(f"same objective as the DP (1e-5 relative) on {agree} of the {len(finished)} it finishes")
    peer_times = _floats(r["peer_time_s"] for r in finished)
    if peer_times:
        print(
            f"DP time median {statistics.median(peer_times):.3f} s over those it finishes; "
            f"{len(rows) - len(finished)} not finished"
        )
    if slow:
        ratios = _floats(r["speedup"] for r in slow)
        lower = any(r["peer_status"] == "timeout" for r in slow)
        print(
            f"DP time / partopt time, median over the {len(slow)} workloads partopt needs > 1 s "
            f"for: {statistics.median(ratios):.1f}x"
            + (" (a lower bound where the DP timed out)" if lower else "")
        )
    else:
        print("partopt needs more than 1 s on no workload")
    all_ratios = _floats(r["speedup"] for r in rows)
    if all_ratios:
        print(
            f"DP time / partopt time over all {len(all_ratios)}: median "
            f"{statistics.median(all_ratios):.1f}x"
        )


def main(argv=None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_partopt":
        _partopt_child(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="run both on every workload, append CSV rows")
    p.add_argument("--workloads", default=str(WORKLOADS), help="directory of */*_inference.json")
    p.add_argument("--peer-dp", help="their compiled dp.cpp (default: $PARTOPT_PEER_DP)")
    p.add_argument("--timeout", type=float, default=300.0, help="DP wall-clock limit, seconds")
    p.add_argument("--time-limit", type=float, default=60.0, help="partopt limit, seconds")
    p.add_argument(
        "--max-states", type=int, default=BENCH_MAX_STATES, help="partopt's cap on boundary states"
    )
    p.add_argument(
        "--max-pairs",
        type=int,
        default=BENCH_MAX_PAIRS,
        help="partopt's cap on stages (state pairs)",
    )
    p.add_argument("--output", default=str(RESULTS / "bench_peer.csv"))
    p.add_argument("--only", nargs="*", help="workloads whose name contains one of these")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("summary", help="print the goals from CSV files")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_summary)
    args = ap.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
