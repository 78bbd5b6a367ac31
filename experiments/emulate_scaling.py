"""Does a real pipeline reach the throughput partopt predicts? And does it grow with the cluster?

Two sweeps on a bundled model (architecture only, so random weights), each
run planned by a solver and then *run* by the emulator
(:mod:`partopt.emulator`): one worker process per stage executing its ONNX
stage with onnxruntime, links shaped to the cluster's bandwidths.

* **stages** -- for k = 2..8, the node capacity is the smallest with which
  the model splits into k stages (so plans have about k stages: the planner
  may take more, and a model whose largest block is big may not allow k), on
  paper clusters (:func:`partopt.cluster.paper_cluster`) of k nodes (so
  plans have exactly k stages) and of 20 nodes (k or more). Measured steady-state throughput is compared with
  ``1 / evaluate(plan).bottleneck_s``; the claim is agreement within 15%.
* **nodes** -- one capacity (4 stages needed), nested clusters: the first
  N = 4..20 nodes of one 20-node paper cluster, so a larger N only adds
  options. The optimizer's predicted throughput can only rise with N, and
  the measured one should follow.

The links must be the bottleneck: each run's time scale is chosen so that
the predicted bottleneck link takes ``--target-wall-s`` of wall time per
request, long next to the model's compute on this machine (recorded per
run as ``cpu_share``: compute seconds per request over the bottleneck's
wall seconds times the cores).

    python experiments/emulate_scaling.py            # densenet201, ~10 min on 2 cores
    python experiments/emulate_scaling.py --quick    # ~3 min, fewer runs
    python experiments/emulate_scaling.py --model efficientnetb1 --target-wall-s 0.15

Writes ``experiments/results/emulate_scaling.csv`` (one row per run) and
``experiments/results/emulate_scaling.png``; prints a summary.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

FIELDS = [
    "experiment", "model", "memory", "capacity_mb", "nodes", "seed", "method", "status",
    "stages", "predicted_bottleneck_s", "predicted_throughput", "measured_throughput", "ratio",
    "latency_p50_s", "latency_p99_s", "requests", "results", "time_scale",
    "bottleneck_utilisation", "max_stage_compute_wall_ms", "cpu_share", "link_bound", "wall_s",
    "warnings",
]  # fmt: skip


def _setup(model_name: str, memory: str):
    from partopt.chain import build_chain
    from partopt.export import load_model, random_weights
    from partopt.onnx_graph import load_graph

    path = ROOT / "models" / f"{model_name}.onnx"
    graph = load_graph(str(path))
    chain = build_chain(graph, cuts="single")
    model = random_weights(load_model(path), seed=0)
    return model, graph, chain


def _capacity_for(chain, memory: str, stages: int) -> float:
    """Smallest uniform capacity (bytes) with which the chain splits into ``stages`` stages."""
    from partopt import Cluster, Problem
    from partopt.feasibility import min_uniform_capacity

    probe = Problem(
        chain, Cluster.uniform(stages, memory_bytes=1.0, bandwidth_mbps=1.0), memory=memory
    )
    return min_uniform_capacity(probe, num_stages=stages)


def _run_one(model, graph, chain, cluster, memory, method, args, row):
    from partopt import Problem, solve
    from partopt.emulator import Emulator, EmulatorOptions

    problem = Problem(chain, cluster, memory=memory)
    res = solve(problem, method, time_limit_s=args.time_limit, seed=row["seed"])
    row.update(method=method, status=res.status)
    if res.plan is None or not res.bottleneck_s:
        print(f"  skipped: {res.status} {res.info.get('reason', '')}", flush=True)
        return row
    beta = res.bottleneck_s
    scale = args.target_wall_s / beta
    opts = EmulatorOptions(requests=args.requests, time_scale=scale, seed=row["seed"])
    t0 = time.monotonic()
    rep = Emulator(model, problem, res.plan, opts, layer_graph=graph).run()
    wall = time.monotonic() - t0
    compute = [s["compute_wall_s"] or 0.0 for s in rep.stages]
    util = max((link["utilisation"] or 0.0 for link in rep.links), default=None)
    row.update(
        stages=len(res.plan.stages),
        predicted_bottleneck_s=beta,
        predicted_throughput=rep.predicted_throughput,
        measured_throughput=rep.measured_throughput,
        ratio=rep.throughput_ratio,
        latency_p50_s=rep.latency_p50_s,
        latency_p99_s=rep.latency_p99_s,
        requests=rep.requests_sent,
        results=rep.results_received,
        time_scale=scale,
        bottleneck_utilisation=util,
        max_stage_compute_wall_ms=1e3 * max(compute, default=0.0),
        cpu_share=sum(compute) / (args.target_wall_s * (os.cpu_count() or 1)),
        # links set the pace only while the CPU has room: no stage computes for more
        # than half the bottleneck link's time, and all stages fit the cores twice over
        link_bound=int(
            max(compute, default=0.0) < 0.5 * args.target_wall_s
            and sum(compute) < 0.5 * args.target_wall_s * (os.cpu_count() or 1)
        ),
        wall_s=wall,
        warnings=len(rep.warnings),
    )
    if rep.error:
        row["status"] = f"emulator error: {rep.error}"
    return row


def _fmt(x, spec=".3g"):
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def run(args) -> list[dict]:
    from partopt.cluster import MB, paper_cluster

    model, graph, chain = _setup(args.model, args.memory)
    rows: list[dict] = []
    stage_counts = [2, 4, 6, 8] if args.quick else list(range(2, 9))
    for k in stage_counts:
        cap = _capacity_for(chain, args.memory, k)
        for n in [20] if args.quick else [k, 20]:
            for seed in range(args.seeds):
                row = dict(
                    experiment="stages",
                    model=args.model,
                    memory=args.memory,
                    capacity_mb=cap / MB,
                    nodes=n,
                    seed=seed,
                )
                print(f"stages: k={k} N={n} seed={seed} capacity {cap / MB:.2f} MB", flush=True)
                cluster = paper_cluster(n, cap / MB, seed=seed)
                rows.append(
                    _run_one(model, graph, chain, cluster, args.memory, args.method, args, row)
                )
                _print_row(rows[-1])
    cap = _capacity_for(chain, args.memory, 4)
    node_counts = [4, 6, 10, 20] if args.quick else [4, 5, 6, 8, 10, 12, 16, 20]
    for seed in range(1 if args.quick else args.node_seeds):
        base = paper_cluster(20, cap / MB, seed=100 + seed)
        for n in node_counts:
            row = dict(
                experiment="nodes",
                model=args.model,
                memory=args.memory,
                capacity_mb=cap / MB,
                nodes=n,
                seed=100 + seed,
            )
            print(f"nodes: N={n} seed={100 + seed} capacity {cap / MB:.2f} MB", flush=True)
            rows.append(
                _run_one(
                    model, graph, chain, base.subset(range(n)), args.memory, args.method, args, row
                )
            )
            _print_row(rows[-1])
    return rows


def _print_row(r: dict) -> None:
    print(
        f"  {r.get('status')}: {r.get('stages', '-')} stages, predicted "
        f"{_fmt(r.get('predicted_throughput'))}/s, measured {_fmt(r.get('measured_throughput'))}/s"
        f" (ratio {_fmt(r.get('ratio'), '.3f')}), cpu share {_fmt(r.get('cpu_share'), '.2f')}, "
        f"{_fmt(r.get('wall_s'), '.1f')} wall s",
        flush=True,
    )


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in FIELDS})


def read_csv(path: Path) -> list[dict]:
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k, v in r.items():
            if k in ("experiment", "model", "memory", "method", "status"):
                continue
            r[k] = float(v) if v not in ("", None) else None
    return rows


def plot(rows: list[dict], path: Path, tolerance: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    st = [r for r in rows if r["experiment"] == "stages" and r.get("ratio")]
    cpu_bound = np.array([not r.get("link_bound") for r in st], dtype=bool)
    if st:
        xs = np.array([r["stages"] for r in st], dtype=float)
        ys = np.array([r["ratio"] for r in st], dtype=float)
        big = np.array([r["nodes"] == 20 for r in st])
        ax1.axhspan(1 - tolerance, 1 + tolerance, color="0.9", label=f"±{tolerance:.0%}")
        ax1.axhline(1.0, color="0.5", lw=0.8)
        ax1.scatter(xs[~big] - 0.08, ys[~big], marker="o", label="N = k nodes")
        ax1.scatter(xs[big] + 0.08, ys[big], marker="s", label="N = 20 nodes")
        if cpu_bound.any():
            off = np.where(big, 0.08, -0.08)
            ax1.scatter(
                xs[cpu_bound] + off[cpu_bound],
                ys[cpu_bound],
                s=160,
                facecolors="none",
                edgecolors="red",
                label="CPU-bound run",
            )
        ax1.set_xlabel("pipeline stages in the plan")
        ax1.set_ylabel("measured / predicted throughput")
        ax1.set_ylim(min(0.7, ys.min() - 0.05), max(1.3, ys.max() + 0.05))
        ax1.set_xticks(range(2, int(xs.max()) + 1))
        ax1.legend(loc="lower left", fontsize=8)
        ax1.set_title("links as bottleneck: measured vs. predicted")
    nd = [r for r in rows if r["experiment"] == "nodes" and r.get("ratio")]
    if nd:
        for seed in sorted({r["seed"] for r in nd}):
            sub = sorted((r for r in nd if r["seed"] == seed), key=lambda r: r["nodes"])
            n = [r["nodes"] for r in sub]
            (line,) = ax2.plot(
                n,
                [r["predicted_throughput"] for r in sub],
                "-",
                label=f"predicted, cluster {int(seed)}",
            )
            ax2.plot(
                n,
                [r["measured_throughput"] for r in sub],
                "o",
                color=line.get_color(),
                label=f"measured, cluster {int(seed)}",
            )
        ax2.set_xlabel("nodes given to the optimizer (nested clusters)")
        ax2.set_ylabel("throughput (inferences / s)")
        ax2.legend(fontsize=8)
        ax2.set_title("more nodes, better links, higher throughput")
    model = rows[0]["model"] if rows else ""
    fig.suptitle(
        f"partopt emulator, {model} ({rows[0]['memory'] if rows else ''} memory)", fontsize=10
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def summary(rows: list[dict], tolerance: float) -> str:
    ok = [r for r in rows if r.get("ratio")]
    st = [r for r in ok if r["experiment"] == "stages"]
    lines = []
    heavy = [r for r in ok if not r.get("link_bound")]
    if heavy:
        lines.append(
            f"{len(heavy)} runs had a stage computing for more than half the bottleneck link's "
            "time (or all stages for more than half the cores), where this machine's CPU could "
            "have set the pace: "
            + "; ".join(
                f"{int(r['stages'])} stages on {int(r['nodes'])} nodes, ratio {r['ratio']:.3f}"
                for r in heavy
            )
        )
    if st:
        ratios = np.array([r["ratio"] for r in st])
        within = np.abs(ratios - 1) <= tolerance
        lines.append(
            f"stages sweep: {len(st)} runs with {int(min(r['stages'] for r in st))}.."
            f"{int(max(r['stages'] for r in st))} stages on {int(min(r['nodes'] for r in st))}.."
            f"{int(max(r['nodes'] for r in st))} nodes; measured/predicted min {ratios.min():.3f}, "
            f"median {np.median(ratios):.3f}, max {ratios.max():.3f}; "
            f"{int(within.sum())}/{len(st)} within {tolerance:.0%}"
        )
    nd = [r for r in ok if r["experiment"] == "nodes"]
    for seed in sorted({r["seed"] for r in nd}):
        sub = sorted((r for r in nd if r["seed"] == seed), key=lambda r: r["nodes"])
        meas = [r["measured_throughput"] for r in sub]
        pred = [r["predicted_throughput"] for r in sub]
        lines.append(
            f"nodes sweep, cluster {int(seed)}: N "
            + " ".join(f"{int(r['nodes'])}" for r in sub)
            + ": predicted "
            + " ".join(f"{p:.3g}" for p in pred)
            + "; measured "
            + " ".join(f"{m:.3g}" for m in meas)
            + f"; measured rises from {meas[0]:.3g} to {meas[-1]:.3g} /s"
        )
    bad = [r for r in rows if not r.get("ratio")]
    if bad:
        lines.append(
            f"{len(bad)} runs without a measurement: "
            + "; ".join(sorted({str(r.get("status")) for r in bad}))
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="densenet201", help="bundled model (densenet201)")
    ap.add_argument("--memory", default="weights", choices=("weights", "peak", "paper"))
    ap.add_argument("--method", default="bottleneck-search", help="planner (bottleneck-search)")
    ap.add_argument("--time-limit", type=float, default=60.0, help="solver time limit, s")
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=1, help="clusters per point (1)")
    ap.add_argument("--node-seeds", type=int, default=2, help="clusters in the nodes sweep (2)")
    ap.add_argument(
        "--target-wall-s",
        type=float,
        default=0.4,
        help="wall seconds of the bottleneck link per request (0.4)",
    )
    ap.add_argument("--tolerance", type=float, default=0.15)
    ap.add_argument("--quick", action="store_true", help="fewer points")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--plot-only", action="store_true", help="redraw from the CSV")
    args = ap.parse_args(argv)
    csv_path = args.out / "emulate_scaling.csv"
    png_path = args.out / "emulate_scaling.png"
    if args.plot_only:
        rows = read_csv(csv_path)
    else:
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, python {sys.version.split()[0]}"
        )
        rows = run(args)
        write_csv(rows, csv_path)
        rows = read_csv(csv_path)
    plot(rows, png_path, args.tolerance)
    print(summary(rows, args.tolerance))
    print(f"wrote {csv_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
