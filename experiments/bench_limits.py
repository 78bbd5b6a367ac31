"""Large instances against the limits: wall time and peak memory of each method.

Each case runs in a fresh subprocess (peak RSS from ``getrusage``) and writes one CSV row:
a 20,000-block synthetic chain on 10 paper nodes with greedy / seifer / local-search at a
1 s limit, a 10,000-node paper cluster and a 1,000-node cluster with the exact and MILP
methods (which must refuse, in one line, before allocating), and milp / direct_milp with
tiny limits on a chain whose model takes long to build.

    python experiments/bench_limits.py [--out experiments/results/bench_limits.csv]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

CASE = r"""
import json, resource, sys, time
import numpy as np
from partopt import Chain, Problem, solve
from partopt.cluster import MB, paper_cluster
from partopt.solvers import SolverRefused

blocks, nodes, cap_mb, method, limit = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
mem = rng.uniform(0.5, 1.5, blocks) * MB
chain = Chain.from_arrays(mem, rng.uniform(1e4, 1e6, blocks - 1))
problem = Problem(chain, paper_cluster(nodes, cap_mb, seed=0))
t0 = time.perf_counter()
try:
    r = solve(problem, method, time_limit_s=limit)
    out = {"status": r.status, "bottleneck_s": r.bottleneck_s, "runtime_s": r.runtime_s,
           "note": r.info.get("reason") or r.info.get("error") or ""}
    for key in ("build_s", "solve_s", "greedy_s", "search_s"):
        if key in r.info:
            out[key] = r.info[key]
except SolverRefused as exc:
    out = {"status": "refused", "note": str(exc)}
out["wall_s"] = time.perf_counter() - t0
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""

CASES = [
    # (blocks, nodes, capacity MB, method, time limit s)
    (20000, 10, 4096, "greedy", 1.0),
    (20000, 10, 4096, "seifer", 1.0),
    (20000, 10, 4096, "local-search", 1.0),
    (20000, 10, 4096, "milp", 1.0),
    (20000, 10, 4096, "direct_milp", 1.0),
    (70, 10000, 12, "exact", None),
    (70, 10000, 12, "milp", None),
    (50, 1000, 12, "milp", None),
    (50, 1000, 12, "direct_milp", None),
    (400, 40, 64, "milp", 0.1),
    (400, 40, 64, "direct_milp", 0.1),
    (400, 40, 64, "milp", 1.0),
    (400, 40, 64, "direct_milp", 1.0),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="experiments/results/bench_limits.csv")
    args = ap.parse_args()
    fields = [
        "blocks",
        "nodes",
        "capacity_mb",
        "method",
        "time_limit_s",
        "status",
        "wall_s",
        "runtime_s",
        "build_s",
        "solve_s",
        "peak_rss_mb",
        "note",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for case in CASES:
            proc = subprocess.run(
                [sys.executable, "-c", CASE, json.dumps(case)], capture_output=True, text=True
            )
            lines = proc.stdout.strip().splitlines()
            row = (
                json.loads(lines[-1])
                if proc.returncode == 0 and lines
                else {"status": "crashed", "note": (proc.stderr.strip().splitlines() or ["?"])[-1]}
            )
            row.update(dict(zip(fields[:5], case, strict=True)))
            w.writerow(row)
            f.flush()
            print(
                {
                    k: row.get(k)
                    for k in (
                        "method",
                        "blocks",
                        "nodes",
                        "status",
                        "wall_s",
                        "peak_rss_mb",
                        "note",
                    )
                },
                flush=True,
            )


if __name__ == "__main__":
    main()
