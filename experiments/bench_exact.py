"""Benchmark of the exact solvers: ``exact`` against the direct layered-flow MILP.

Modes (each appends one CSV row per (instance, method) the moment it finishes,
and skips rows it already has, so a killed run resumes)::

    python experiments/bench_exact.py compare      # direct_milp, milp and exact side by side
    python experiments/bench_exact.py paper-grid   # exact alone on the full paper grid (10,000)
    python experiments/bench_exact.py scaling      # exact up to N = 200 and chains of 200+ blocks
    python experiments/bench_exact.py summary experiments/results/bench_exact_*.csv

Instances: the bundled models (``models/*.onnx`` through
:func:`partopt.chain.load_chain`, single-tensor cuts unless said otherwise)
or synthetic ResNet-like chains, on the original work's random geometric
clusters (:func:`partopt.cluster.paper_cluster`). Memory model ``peak`` is
paired with exact ``bytes`` transfers, ``paper`` memory with ``paper``
transfers (the original's accounting).

Columns: instance, method, status, bottleneck_s, bound_s (the solve's best
bound), gap, time_s (wall time of :func:`partopt.solve`, bounds and
evaluation included), solver_time_s, stages, and the instance fields.
A sidecar ``.meta.json`` records the command, versions and machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from partopt import solve  # noqa: E402
from partopt.chain import Chain  # noqa: E402
from partopt.cluster import paper_cluster  # noqa: E402
from partopt.problem import Problem  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
PAPER_MODELS = ("resnet50", "mobilenetv2", "efficientnetb1", "inceptionresnetv2", "densenet201")
CAPACITIES_MB = (64, 128, 256, 512)
PAPER_NODES = (5, 10, 15, 20, 50)
TRANSFER_FOR_MEMORY = {"peak": "bytes", "paper": "paper", "weights": "bytes"}
COLUMNS = [
    "instance",
    "model",
    "cuts",
    "blocks",
    "memory",
    "transfer",
    "capacity_mb",
    "nodes",
    "seed",
    "method",
    "time_limit_s",
    "status",
    "bottleneck_s",
    "bound_s",
    "gap",
    "time_s",
    "solver_time_s",
    "stages",
    "decisions",
    "states",
    "milp_calls",
    "milp_nodes",
    "error",
]


@dataclass(frozen=True)
class Instance:
    model: str  # a bundled model name or "synthetic:SEED:BLOCKS"
    cuts: str
    memory: str
    capacity_mb: float
    nodes: int
    seed: int

    @property
    def transfer(self) -> str:
        return TRANSFER_FOR_MEMORY[self.memory]

    @property
    def key(self) -> str:
        return (
            f"{self.model}|{self.cuts}|{self.memory}|{self.transfer}|"
            f"{self.capacity_mb:g}MB|N{self.nodes}|s{self.seed}"
        )


# -- chains -------------------------------------------------------------------

_CHAINS: dict[tuple[str, str], Chain] = {}


def synthetic_chain(blocks: int, seed: int) -> Chain:
    """A ResNet-like chain: weights growing along the chain (about 100 MB in all),
    activations shrinking from 3.2 MB to 0.4 MB, with noise."""
    rng = np.random.default_rng(seed)
    params = np.geomspace(4e4, 1.8e7, blocks) * rng.uniform(0.8, 1.2, blocks)
    params *= 100e6 / params.sum()
    outs = np.geomspace(3.2e6, 4e5, blocks) * rng.uniform(0.7, 1.3, blocks)
    return Chain.from_arrays(
        params, outs[:-1], activation_bytes=2 * outs, name=f"synthetic:{seed}:{blocks}"
    )


def chain_for(model: str, cuts: str) -> Chain:
    if (model, cuts) not in _CHAINS:
        if model.startswith("synthetic:"):
            _, seed, blocks = model.split(":")
            _CHAINS[model, cuts] = synthetic_chain(int(blocks), int(seed))
        else:
            try:
                from partopt.chain import load_chain
            except ImportError as exc:  # the ONNX front end is not there yet
                raise SystemExit(f"cannot load real models ({exc}); use synthetic chains") from exc
            _CHAINS[model, cuts] = load_chain(ROOT / "models" / f"{model}.onnx", cuts=cuts)
    return _CHAINS[model, cuts]


def problem_for(inst: Instance) -> Problem:
    return Problem(
        chain_for(inst.model, inst.cuts),
        paper_cluster(inst.nodes, inst.capacity_mb, inst.seed),
        memory=inst.memory,
        transfer=inst.transfer,
    )


# -- grids --------------------------------------------------------------------


def paper_grid(seeds: int, memories=("peak", "paper")) -> list[Instance]:
    return [
        Instance(m, "single", mem, cap, n, s)
        for mem in memories
        for m in PAPER_MODELS
        for cap in CAPACITIES_MB
        for n in PAPER_NODES
        for s in range(seeds)
    ]


def compare_grid(seeds: int) -> list[Instance]:
    """A subset the direct MILP can be asked to solve: the five models at 64 and 128 MB
    (where several stages are needed), N = 5, 10, 20, ``peak`` memory."""
    return [
        Instance(m, "single", "peak", cap, n, s)
        for m in PAPER_MODELS
        for cap in (64, 128)
        for n in (5, 10, 20)
        for s in range(seeds)
    ]


def scaling_grid(seeds: int) -> list[Instance]:
    out = []
    # cluster size: the real models (single-tensor cuts, 44-126 blocks) on up to 200 nodes
    for m in PAPER_MODELS:
        for n in (50, 100, 200):
            for s in range(seeds):
                out.append(Instance(m, "single", "peak", 64, n, s))
    # the family hardest on the paper grid (``paper`` memory, 64 MB: 7-8 stages), larger N
    for m in ("densenet201", "inceptionresnetv2"):
        for n in (100, 200):
            for s in range(seeds):
                out.append(Instance(m, "single", "paper", 64, n, s))
    # chain length: synthetic chains of 50-200 blocks and small nodes (many stages)
    for blocks in (50, 100, 200):
        for cap in (8, 16):
            for s in range(seeds):
                out.append(Instance(f"synthetic:{s}:{blocks}", "single", "peak", cap, 200, s))
    # chain length: multi-tensor cuts of the real models (141-714 blocks)
    for m in PAPER_MODELS:
        for s in range(min(seeds, 3)):
            out.append(Instance(m, "multi", "peak", 64, 200, s))
    return out


# -- running ------------------------------------------------------------------


def _fmt(x):
    if x is None:
        return ""
    if isinstance(x, float):
        return "" if not math.isfinite(x) else repr(x)
    return str(x)


def run_one(inst: Instance, method: str, time_limit_s: float | None) -> dict:
    problem = problem_for(inst)
    start = time.perf_counter()
    r = solve(problem, method, time_limit_s=time_limit_s, seed=inst.seed)
    wall = time.perf_counter() - start
    info = r.info
    return {
        "instance": inst.key,
        "model": inst.model,
        "cuts": inst.cuts,
        "blocks": problem.num_blocks,
        "memory": inst.memory,
        "transfer": inst.transfer,
        "capacity_mb": inst.capacity_mb,
        "nodes": inst.nodes,
        "seed": inst.seed,
        "method": method,
        "time_limit_s": time_limit_s,
        "status": r.status,
        "bottleneck_s": r.bottleneck_s,
        "bound_s": r.lower_bound_s,
        "gap": r.gap,
        "time_s": wall,
        "solver_time_s": r.runtime_s,
        "stages": r.plan.num_stages if r.plan is not None else None,
        "decisions": info.get("decisions"),
        "states": info.get("states"),
        "milp_calls": info.get("milp_calls"),
        "milp_nodes": info.get("milp_nodes"),
        "error": info.get("error", ""),
    }


def _versions() -> dict:
    import pyomo

    import partopt

    commit = os.popen(f"git -C {ROOT} rev-parse --short HEAD 2>/dev/null").read().strip()
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "partopt": partopt.__version__,
        "commit": commit,
        "numpy": np.__version__,
        "pyomo": pyomo.__version__,
        "highspy": version("highspy"),
    }


def run(
    instances: list[Instance],
    methods: list[str],
    out: Path,
    time_limits: dict,
    progress_every: int = 200,
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        with out.open() as f:
            done = {(row["instance"], row["method"]) for row in csv.DictReader(f)}
    meta = {
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "node": platform.node(),
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
        "versions": _versions(),
        "time_limits_s": time_limits,
    }
    out.with_suffix(".meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    new = not out.exists()
    todo = [(i, m) for i in instances for m in methods if (i.key, m) not in done]
    print(f"{out}: {len(done)} rows already, {len(todo)} to run", flush=True)
    t0 = time.perf_counter()
    with out.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        for k, (inst, method) in enumerate(todo, 1):
            row = run_one(inst, method, time_limits.get(method))
            writer.writerow({c: _fmt(row.get(c)) for c in COLUMNS})
            f.flush()
            if k % progress_every == 0 or row["time_s"] > 5:
                print(
                    f"[{k}/{len(todo)} {time.perf_counter() - t0:.0f}s] {inst.key} {method} "
                    f"{row['status']} {row['time_s']:.2f}s",
                    flush=True,
                )


# -- summaries ----------------------------------------------------------------


def _num(x: str):
    return float(x) if x not in ("", None) else None


def _quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def summarize(paths: list[Path]) -> None:
    rows = []
    for p in paths:
        with Path(p).open() as f:
            rows += list(csv.DictReader(f))
    if not rows:
        print("no rows")
        return
    by_method: dict[str, list[dict]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    print(
        f"{'method':<12} {'runs':>6} {'optimal':>8} {'feasible':>8} {'infeas':>7} {'other':>6} "
        f"{'median s':>9} {'p90 s':>8} {'p99 s':>8} {'max s':>8} {'max gap':>8}"
    )
    for method, rs in sorted(by_method.items()):
        times = [float(r["time_s"]) for r in rs]
        st = [r["status"] for r in rs]
        gaps = [_num(r["gap"]) for r in rs if _num(r["gap"]) is not None]
        print(
            f"{method:<12} {len(rs):>6} {st.count('optimal'):>8} {st.count('feasible'):>8} "
            f"{st.count('infeasible'):>7} "
            f"{len(st) - st.count('optimal') - st.count('feasible') - st.count('infeasible'):>6} "
            f"{statistics.median(times):>9.3f} {_quantile(times, 0.9):>8.3f} "
            f"{_quantile(times, 0.99):>8.3f} {max(times):>8.3f} "
            f"{(max(gaps) if gaps else 0.0):>8.4f}"
        )
    # side by side: the same instances, every method present
    methods = sorted(by_method)
    if "exact" in by_method and len(methods) > 1:
        per = {}
        for r in rows:
            per.setdefault(r["instance"], {})[r["method"]] = r
        common = [v for v in per.values() if all(m in v for m in methods)]
        if common:
            print(f"\nside by side on {len(common)} instances (time_s):")
            med_exact = statistics.median(float(v["exact"]["time_s"]) for v in common)
            for m in methods:
                ts = [float(v[m]["time_s"]) for v in common]
                ratio = [
                    float(v[m]["time_s"]) / max(float(v["exact"]["time_s"]), 1e-9) for v in common
                ]
                agree = sum(
                    1
                    for v in common
                    if v[m]["status"] == "optimal"
                    and v["exact"]["status"] == "optimal"
                    and math.isclose(
                        float(v[m]["bottleneck_s"]), float(v["exact"]["bottleneck_s"]), rel_tol=1e-6
                    )
                )
                both = sum(1 for v in common if v[m]["status"] == v["exact"]["status"] == "optimal")
                print(
                    f"  {m:<12} median {statistics.median(ts):8.3f} s  max {max(ts):8.3f} s  "
                    f"median/median(exact) {statistics.median(ts) / max(med_exact, 1e-9):9.1f}  "
                    f"median per-instance ratio {statistics.median(ratio):9.1f}  "
                    f"statuses {dict(sorted(_count(v[m]['status'] for v in common).items()))}  "
                    f"same optimum as exact {agree}/{both}"
                )
    # scaling views
    ex = by_method.get("exact", [])
    groups: dict[tuple, list[dict]] = {}
    for r in ex:
        groups.setdefault(
            (r["cuts"], r["model"].split(":")[0], r["memory"], int(r["nodes"]), r["capacity_mb"]),
            [],
        ).append(r)
    if len(groups) > 1 and any(int(r["nodes"]) > 50 for r in ex):
        print(
            "\nexact by (cuts, model, memory, N, capacity MB): blocks, statuses, median/max time, max gap"
        )
        for key, rs in sorted(groups.items()):
            ts = [float(r["time_s"]) for r in rs]
            gaps = [_num(r["gap"]) or 0.0 for r in rs]
            blocks = sorted({int(r["blocks"]) for r in rs})
            print(
                f"  {key!s:<52} blocks {blocks[0]}-{blocks[-1]:<4} "
                f"{dict(sorted(_count(r['status'] for r in rs).items()))!s:<32} "
                f"median {statistics.median(ts):7.3f} s  max {max(ts):7.3f} s  "
                f"max gap {max(gaps):.4f}"
            )


def _count(items) -> dict:
    out: dict = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("compare", help="direct_milp, milp and exact on the same instances")
    c.add_argument("--seeds", type=int, default=2)
    c.add_argument("--time-limit", type=float, default=60.0, help="per MILP solve, seconds")
    c.add_argument("--methods", default="direct_milp,milp,exact")
    c.add_argument("--out", type=Path, default=RESULTS / "bench_exact_compare.csv")
    g = sub.add_parser("paper-grid", help="exact alone on the full paper grid")
    g.add_argument("--seeds", type=int, default=50)
    g.add_argument("--memory", default="peak,paper")
    g.add_argument("--time-limit", type=float, default=60.0)
    g.add_argument("--out", type=Path, default=RESULTS / "bench_exact_paper_grid.csv")
    s = sub.add_parser("scaling", help="exact up to N = 200 and 200+ blocks")
    s.add_argument("--seeds", type=int, default=5)
    s.add_argument("--time-limit", type=float, default=60.0)
    s.add_argument("--out", type=Path, default=RESULTS / "bench_exact_scaling.csv")
    m = sub.add_parser("summary", help="print medians, maxima and ratios of result CSVs")
    m.add_argument("csv", nargs="+", type=Path)
    args = ap.parse_args(argv)

    if args.mode == "summary":
        summarize(args.csv)
        return
    if args.mode == "compare":
        methods = args.methods.split(",")
        limits = {meth: args.time_limit for meth in methods}
        run(compare_grid(args.seeds), methods, args.out, limits, progress_every=10)
    elif args.mode == "paper-grid":
        grid = paper_grid(args.seeds, tuple(args.memory.split(",")))
        run(grid, ["exact"], args.out, {"exact": args.time_limit})
    elif args.mode == "scaling":
        run(
            scaling_grid(args.seeds),
            ["exact"],
            args.out,
            {"exact": args.time_limit},
            progress_every=10,
        )
    summarize([args.out])


if __name__ == "__main__":
    main()
