"""Benchmark of the heuristics against the proven optimum on the original work's grid.

::

    python experiments/bench_heuristics.py run --grid paper     # 5 models x 4 caps x 5 N x 50 seeds x 2
    python experiments/bench_heuristics.py run --grid quick     # a few seconds per method
    python experiments/bench_heuristics.py summary experiments/results/bench_heuristics_paper.csv

Instances: the bundled models (``models/*.onnx``, single-tensor cuts,
:func:`partopt.chain.load_chain`) on the original's random geometric
clusters (:func:`partopt.cluster.paper_cluster`, one cluster per seed);
memory model ``peak`` with exact ``bytes`` transfers and ``paper`` memory
with ``paper`` transfers. For every instance the ``exact`` solver gives the
optimum (when it is registered; otherwise the ratio column stays empty and
the summary says so), then every method runs with the instance seed.

One CSV row per (instance, method) is appended the moment it finishes, and
rows already in the file are skipped, so a killed run resumes. Columns:
instance fields, ``method``, ``status``, ``bottleneck_s``, ``optimum_s``
(``exact``'s proven optimum), ``ratio`` (bottleneck / optimum; 1 when both
are 0), ``time_s`` (the solver's own time, ``Result.runtime_s``), ``wall_s``
(the whole :func:`partopt.solve` call: bounds and evaluation too),
``stages``, ``unchecked_bottleneck_s`` (``seifer-original`` only: the
latency the original code would have reported for a plan that does not fit
memory) and ``reason``. A sidecar ``.meta.json`` records the command,
versions and machine. ``seifer-original`` runs with its never-cleared
partition memo replayed over the grid's smaller capacities (ascending, as
the original's loop), so each row is independent of the others.

The summary (printed after a run, or by ``summary``) gives per method: runs,
plans found, mean / median / max ratio over the instances where both the
method and ``exact`` have a plan, the share solved optimally, and median /
90th percentile / max solver time. Speed and quality targets are read off
this table; the tests never time anything.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from partopt import solve, solvers  # noqa: E402
from partopt.chain import load_chain  # noqa: E402
from partopt.cluster import MB, paper_cluster  # noqa: E402
from partopt.partition import original_min_sum_partition  # noqa: E402
from partopt.problem import Problem  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
MODELS = ("resnet50", "mobilenetv2", "efficientnetb1", "inceptionresnetv2", "densenet201")
METHODS = ("random", "greedy", "seifer", "seifer-original", "local-search", "bottleneck-search")
TRANSFER_FOR_MEMORY = {"peak": "bytes", "paper": "paper"}
GRIDS = {
    # capacities (MB), node counts, seeds
    "paper": ((64, 128, 256, 512), (5, 10, 15, 20, 50), 50),
    "quick": ((64, 256), (5, 20, 50), 3),
}
COLUMNS = [
    "instance",
    "model",
    "blocks",
    "memory",
    "transfer",
    "capacity_mb",
    "nodes",
    "seed",
    "method",
    "status",
    "bottleneck_s",
    "optimum_s",
    "ratio",
    "time_s",
    "wall_s",
    "stages",
    "unchecked_bottleneck_s",
    "reason",
]


@dataclass(frozen=True)
class Instance:
    model: str
    memory: str
    capacity_mb: int
    nodes: int
    seed: int

    @property
    def transfer(self) -> str:
        return TRANSFER_FOR_MEMORY[self.memory]

    @property
    def key(self) -> str:
        """The key ``experiments/bench_exact.py`` uses for the same instance."""
        return (
            f"{self.model}|single|{self.memory}|{self.transfer}|"
            f"{self.capacity_mb:g}MB|N{self.nodes}|s{self.seed}"
        )


_CHAINS: dict = {}


def problem_for(inst: Instance) -> Problem:
    if inst.model not in _CHAINS:
        _CHAINS[inst.model] = load_chain(ROOT / "models" / f"{inst.model}.onnx")
    cluster = paper_cluster(inst.nodes, inst.capacity_mb, seed=inst.seed)
    return Problem(_CHAINS[inst.model], cluster, memory=inst.memory, transfer=inst.transfer)


def grid(name: str, models, memories, seeds: int | None) -> list[Instance]:
    caps, nodes, default_seeds = GRIDS[name]
    count = default_seeds if seeds is None else seeds
    return [
        Instance(m, mem, c, n, s)
        for m in models
        for mem in memories
        for c in caps
        for n in nodes
        for s in range(count)
    ]


def _num(x) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else ""
    return repr(x) if isinstance(x, float) else str(x)


def ratio(value: float | None, optimum: float | None) -> float | None:
    """``value / optimum``; 1 when both are 0, ``inf`` when only the optimum is 0."""
    if value is None or optimum is None:
        return None
    if optimum == 0:
        return 1.0 if value == 0 else math.inf
    return value / optimum


def replayed_memo(inst: Instance, capacities_mb) -> dict:
    """The original's partition memo after the grid's smaller capacities, in ascending order.

    The original never cleared its memo, so each capacity inherits the ones
    before it; replaying them makes a row independent of which rows this
    process ran before (and of resuming). The memo ignores the cluster.
    """
    memo: dict = {}
    for cap in sorted(c for c in capacities_mb if c < inst.capacity_mb):
        earlier = problem_for(Instance(inst.model, inst.memory, cap, inst.nodes, inst.seed))
        original_min_sum_partition(
            earlier, cap * MB, earlier.num_nodes, memo=memo, skip_block_memory=True
        )
    return memo


def run_one(
    inst: Instance,
    problem: Problem,
    method: str,
    optimum: float | None,
    time_limit_s: float | None,
    options: dict | None = None,
) -> dict:
    start = time.perf_counter()
    r = solve(problem, method, seed=inst.seed, time_limit_s=time_limit_s, **(options or {}))
    wall = time.perf_counter() - start
    reason = r.info.get("error") or r.info.get("reason") or ""
    if method == "exact" and r.status == "optimal":
        optimum = r.bottleneck_s
    return {
        "instance": inst.key,
        "model": inst.model,
        "blocks": problem.num_blocks,
        "memory": inst.memory,
        "transfer": inst.transfer,
        "capacity_mb": inst.capacity_mb,
        "nodes": inst.nodes,
        "seed": inst.seed,
        "method": method,
        "status": r.status,
        "bottleneck_s": _num(r.bottleneck_s),
        "optimum_s": _num(optimum),
        "ratio": _num(ratio(r.bottleneck_s, optimum)),
        "time_s": _num(r.runtime_s),
        "wall_s": _num(wall),
        "stages": r.plan.num_stages if r.plan else "",
        "unchecked_bottleneck_s": _num(r.info.get("unchecked_bottleneck_s")),
        "reason": str(reason).replace("\n", " ")[:200],
    }


def _meta(out: Path, argv: list[str]) -> None:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    import numpy

    meta = {
        "command": "python experiments/bench_heuristics.py " + " ".join(argv),
        "git_commit": commit,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out.with_suffix(".meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def run(
    instances: list[Instance],
    methods: list[str],
    out: Path,
    exact_limit_s: float,
    argv: list[str],
    capacities_mb=(),
) -> None:
    available = solvers.available()
    unknown = [m for m in methods if m not in available]
    if unknown:
        raise SystemExit(
            f"unknown method(s) {', '.join(unknown)}; registered: {', '.join(available)}"
        )
    have_exact = "exact" in available
    if not have_exact:
        print("note: method 'exact' is not registered: no optimum, ratios stay empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    done: dict[tuple[str, str], dict] = {}
    if out.exists():
        with out.open() as fh:
            for row in csv.DictReader(fh):
                done[(row["instance"], row["method"])] = row
    new = not out.exists()
    _meta(out, argv)
    todo = [
        inst
        for inst in instances
        if any((inst.key, m) not in done for m in methods)
        or (have_exact and (inst.key, "exact") not in done)
    ]
    print(
        f"{len(instances)} instances, {len(instances) - len(todo)} already done; "
        f"writing {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}"
    )
    started = time.perf_counter()
    with out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        for i, inst in enumerate(todo, 1):
            problem = problem_for(inst)
            optimum = None
            if have_exact:
                row = done.get((inst.key, "exact"))
                if row is None:
                    row = run_one(inst, problem, "exact", None, exact_limit_s)
                    writer.writerow(row)
                if row["status"] == "optimal":
                    optimum = float(row["bottleneck_s"])
            for method in methods:
                if (inst.key, method) in done:
                    continue
                options = None
                if method == "seifer-original":
                    options = {"leaky_memo": replayed_memo(inst, capacities_mb)}
                writer.writerow(run_one(inst, problem, method, optimum, None, options))
            fh.flush()
            if i % 50 == 0 or i == len(todo):
                rate = i / (time.perf_counter() - started)
                print(f"  {i}/{len(todo)} instances ({rate:.1f}/s)", flush=True)
    summarize([out], methods)


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else math.nan


def _table(rows: list[dict], order: list[str], title: str) -> list[dict]:
    """Print one summary table over ``rows``; return its lines as dicts."""
    header = (
        f"{'method':18s} {'runs':>6s} {'plans':>6s} {'rated':>6s} {'mean':>7s} "
        f"{'median':>7s} {'max':>7s} {'optimal':>8s} {'med ms':>7s} {'p90 ms':>7s} "
        f"{'max ms':>8s}"
    )
    print(title)
    print(header)
    print("-" * len(header))
    out = []
    for method in order:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        plans = [r for r in mine if r["bottleneck_s"] not in ("", "inf")]
        ratios = [float(r["ratio"]) for r in plans if r["ratio"] != ""]
        times = [float(r["time_s"]) * 1e3 for r in plans if r["time_s"]]
        stat = {
            "method": method,
            "runs": len(mine),
            "plans": len(plans),
            "rated": len(ratios),
            "mean_ratio": statistics.fmean(ratios) if ratios else math.nan,
            "median_ratio": statistics.median(ratios) if ratios else math.nan,
            "max_ratio": max(ratios) if ratios else math.nan,
            "optimal": (sum(x <= 1 + 1e-9 for x in ratios) / len(ratios)) if ratios else math.nan,
            "median_ms": statistics.median(times) if times else math.nan,
            "p90_ms": _quantile(times, 0.9),
            "max_ms": max(times) if times else math.nan,
        }
        out.append(stat)
        print(
            f"{method:18s} {stat['runs']:6d} {stat['plans']:6d} {stat['rated']:6d} "
            f"{stat['mean_ratio']:7.4f} {stat['median_ratio']:7.4f} {stat['max_ratio']:7.4f} "
            f"{100 * stat['optimal']:7.1f}% {stat['median_ms']:7.2f} {stat['p90_ms']:7.2f} "
            f"{stat['max_ms']:8.1f}"
        )
    return out


def summarize(paths: list[Path], methods: list[str] | None = None) -> list[dict]:
    """Print (and return) the per-method tables; ``methods`` fixes the row order.

    Ratios are over the instances where ``exact`` proved an optimum and the
    method returned a plan ("rated"); a plan with stages where one stage
    (bottleneck 0) was optimal has ratio ``inf``. The second table keeps only
    the instances whose optimum needs two or more stages.
    """
    rows: list[dict] = []
    for path in paths:
        with path.open() as fh:
            rows += list(csv.DictReader(fh))
    order = methods or sorted({r["method"] for r in rows if r["method"] != "exact"})
    exact = {r["instance"]: r for r in rows if r["method"] == "exact"}
    if exact:
        order = ["exact", *[m for m in order if m != "exact"]]
    out = _table(rows, order, "all instances")
    if not exact:
        print("no 'exact' rows: ratios to the optimum are not available")
        return out
    optimal = [k for k, r in exact.items() if r["status"] == "optimal"]
    multi = {k for k in optimal if float(exact[k]["bottleneck_s"]) > 0}
    print(
        f"(proven optimum on {len(optimal)} of {len(exact)} instances; "
        f"{len(exact) - len(optimal)} without: "
        f"{dict(_count(r['status'] for r in exact.values() if r['status'] != 'optimal'))})"
    )
    print()
    _table(
        [r for r in rows if r["instance"] in multi],
        order,
        f"instances whose optimum needs two or more stages ({len(multi)})",
    )
    unchecked = [
        r
        for r in rows
        if r.get("unchecked_bottleneck_s") not in (None, "") and r["instance"] in multi
    ]
    if unchecked:
        ratios = [
            float(r["unchecked_bottleneck_s"]) / float(exact[r["instance"]]["bottleneck_s"])
            for r in unchecked
        ]
        print(
            f"\nover-memory plans (what the original would have reported), "
            f"{len(unchecked)} on multi-stage instances: ratio to the optimum mean "
            f"{statistics.fmean(ratios):.4f}, min {min(ratios):.4f}, max {max(ratios):.4f}; "
            f"{100 * sum(x < 1 - 1e-9 for x in ratios) / len(ratios):.1f}% below the optimum"
        )
    hard = [
        r
        for r in rows
        if r["model"] == "inceptionresnetv2" and r["capacity_mb"] == "64" and r["nodes"] == "50"
    ]
    if hard:
        print()
        _table(hard, order, f"inceptionresnetv2, 64 MB, N = 50 ({len(hard) // len(order)} runs)")
    return out


def _count(items) -> dict:
    counts: dict = {}
    for x in items:
        counts[x] = counts.get(x, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the grid, append to the CSV, print the summary")
    r.add_argument("--grid", choices=sorted(GRIDS), default="quick")
    r.add_argument("--seeds", type=int, help="seeds per configuration (default: the grid's)")
    r.add_argument("--models", default=",".join(MODELS))
    r.add_argument("--memory", default="peak,paper")
    r.add_argument("--methods", default=",".join(METHODS))
    r.add_argument("--exact-time-limit", type=float, default=60.0, metavar="S")
    r.add_argument("--out", type=Path, help="CSV (default: results/bench_heuristics_GRID.csv)")
    s = sub.add_parser("summary", help="print the summary of existing CSVs")
    s.add_argument("csv", nargs="+", type=Path)
    s.add_argument("--methods", help="row order (default: all, alphabetical)")
    args = ap.parse_args(argv)
    if args.command == "summary":
        summarize(args.csv, args.methods.split(",") if args.methods else None)
        return
    instances = grid(args.grid, args.models.split(","), args.memory.split(","), args.seeds)
    out = args.out or RESULTS / f"bench_heuristics_{args.grid}.csv"
    run(
        instances,
        args.methods.split(","),
        out,
        args.exact_time_limit,
        argv,
        capacities_mb=GRIDS[args.grid][0],
    )


if __name__ == "__main__":
    main()
