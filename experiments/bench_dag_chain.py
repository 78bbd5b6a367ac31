"""What the chain restriction costs: DAG optimum vs multi-chain and single-chain optima.

For every bundled model (``models/*.onnx``) and cluster, ``exact`` is run on
three inputs of the same engine: the single-tensor cut chain, the
multi-tensor chain (boundaries of one topological order) and the DAG (every
ideal). Clusters: the original work's random geometric clusters at N = 50
(equal memory, ``communication`` objective) and heterogeneous clusters on the
same geometry whose nodes are of three device kinds (memory and FLOP/s,
``max`` objective). Memory model ``weights`` (a stage's memory does not
depend on the order its layers run in, so the three optima are comparable:
DAG <= multi <= single holds by construction).

One CSV row per (instance, cuts) as soon as it finishes; existing rows are
skipped, so a killed run resumes::

    python experiments/bench_dag_chain.py run [--seeds 3] [--time-limit 60]
    python experiments/bench_dag_chain.py summary
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from partopt import solve  # noqa: E402
from partopt.chain import build_chain  # noqa: E402
from partopt.cluster import MB, Cluster, paper_cluster  # noqa: E402
from partopt.dag import DagProblem, build_dag  # noqa: E402
from partopt.onnx_graph import load_graph  # noqa: E402
from partopt.problem import Problem  # noqa: E402

OUT = ROOT / "experiments" / "results" / "bench_dag_chain.csv"
MODELS = (
    "resnet50",
    "mobilenetv2",
    "efficientnetb1",
    "inceptionresnetv2",
    "densenet201",
    "bert_base",
)
DEVICE_KINDS = ((64, 2e9), (256, 10e9), (1024, 50e9))
"""(memory in MB, FLOP/s) of the three device kinds of the heterogeneous clusters."""
COLUMNS = [
    "instance",
    "model",
    "cluster",
    "capacity_mb",
    "nodes",
    "seed",
    "objective",
    "cuts",
    "status",
    "bottleneck_s",
    "bound_s",
    "time_s",
    "stages",
    "boundary_states",
]


def heterogeneous_cluster(num_nodes: int, seed: int) -> Cluster:
    """Paper geometry; each node one of ``DEVICE_KINDS`` at random (same seed)."""
    base = paper_cluster(num_nodes, 64, seed)
    kind = np.random.default_rng(seed + 10_000).integers(0, len(DEVICE_KINDS), num_nodes)
    mem = np.array([DEVICE_KINDS[k][0] * MB for k in kind], dtype=float)
    speed = np.array([DEVICE_KINDS[k][1] for k in kind])
    return Cluster(base.names, mem, base.bandwidth_mbps, speed)


def instances(seeds: int):
    for model in MODELS:
        for seed in range(seeds):
            for cap in (64, 128):
                yield model, "paper", cap, 50, seed, "communication"
            yield model, "hetero", 0, 50, seed, "max"


def run(args) -> None:
    done = set()
    if args.out.exists():
        with args.out.open() as fh:
            done = {(r["instance"], r["cuts"]) for r in csv.DictReader(fh)}
    new = not args.out.exists()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    graphs: dict = {}
    with args.out.open("a", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS)
        if new:
            w.writeheader()
        for model, kind, cap, n, seed, objective in instances(args.seeds):
            key = f"{model}/{kind}/{cap}/{n}/{seed}"
            if model not in graphs:
                g = load_graph(ROOT / "models" / f"{model}.onnx")
                graphs[model] = (g, build_chain(g, "single"), build_chain(g, "multi"), build_dag(g))
            g, single, multi, dag = graphs[model]
            cl = paper_cluster(n, cap, seed) if kind == "paper" else heterogeneous_cluster(n, seed)
            for cuts in ("single", "multi", "dag"):
                if (key, cuts) in done:
                    continue
                if cuts == "dag":
                    p = DagProblem(dag, cl, "weights", objective)
                else:
                    p = Problem(
                        single if cuts == "single" else multi, cl, "weights", objective=objective
                    )
                t0 = time.perf_counter()
                r = solve(p, "exact", time_limit_s=args.time_limit)
                row = {
                    "instance": key,
                    "model": model,
                    "cluster": kind,
                    "capacity_mb": cap,
                    "nodes": n,
                    "seed": seed,
                    "objective": objective,
                    "cuts": cuts,
                    "status": r.status,
                    "bottleneck_s": r.bottleneck_s,
                    "bound_s": r.lower_bound_s,
                    "time_s": round(time.perf_counter() - t0, 4),
                    "stages": None if r.plan is None else len(r.plan.stages),
                    "boundary_states": r.info.get("boundary_states"),
                }
                w.writerow(row)
                fh.flush()
                print(key, cuts, r.status, r.bottleneck_s, row["time_s"], flush=True)


def summary(args) -> None:
    with args.out.open() as fh:
        rows = list(csv.DictReader(fh))
    by: dict = {}
    for r in rows:
        by.setdefault((r["model"], r["cluster"], r["capacity_mb"]), {}).setdefault(
            r["instance"], {}
        )[r["cuts"]] = r
    print(
        "model cluster cap  n  dag/multi  dag/single  multi/single  dag proven  dag median s  dag max s"
    )
    for (model, kind, cap), inst in sorted(by.items()):
        ratios = {"dm": [], "ds": [], "ms": []}
        proven, times = 0, []
        for r in inst.values():
            if "dag" in r:
                times.append(float(r["dag"]["time_s"]))
                proven += r["dag"]["status"] in ("optimal", "infeasible")
            v = {
                c: float(r[c]["bottleneck_s"]) for c in r if r[c]["bottleneck_s"] not in ("", None)
            }
            for a, b, k in (
                ("dag", "multi", "dm"),
                ("dag", "single", "ds"),
                ("multi", "single", "ms"),
            ):
                if a in v and b in v and v[b] > 0:
                    ratios[k].append(v[a] / v[b])
        fmt = lambda x: f"{statistics.mean(x):.3f}" if x else "-"  # noqa: E731
        print(
            f"{model} {kind} {cap} {len(inst)} {fmt(ratios['dm'])} {fmt(ratios['ds'])} "
            f"{fmt(ratios['ms'])} {proven}/{len(inst)} "
            f"{statistics.median(times) if times else math.nan:.3f} {max(times, default=math.nan):.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--time-limit", type=float, default=60.0)
    r.add_argument("--out", type=Path, default=OUT)
    s = sub.add_parser("summary")
    s.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    run(args) if args.cmd == "run" else summary(args)


if __name__ == "__main__":
    main()
