"""Benchmark of the heuristics against the proven optimum, from the paper-grid sweeps' records.

::

    python experiments/bench_heuristics.py run [-j J]     # = partopt sweep paper.toml, corrected.toml
    python experiments/bench_heuristics.py summary [RESULTS ...]

The instances are the original work's grid under both memory models, which
``experiments/configs/paper.toml`` (``paper`` memory and transfers) and
``corrected.toml`` (``peak`` memory, exact bytes) already sweep with every
heuristic and ``exact`` on every instance; this script runs those configs
and summarises their records (default: ``experiments/results/paper.jsonl``
and ``corrected.jsonl``, or their committed ``.gz`` snapshots).

The summary gives, per study, method and bandwidth classes ``C``: runs,
plans found, mean / median / max ratio (infinite where the optimum is
0, one node, and the method's plan is not) of the method's bottleneck to
``exact``'s proven optimum of the same instance (over the instances where
both have a plan; 1 when both are 0), the share solved optimally, and median
/ 90th percentile / max solver time (``runtime_s``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from partopt.experiments.config import load_config  # noqa: E402
from partopt.experiments.records import read_records, snapshot_path  # noqa: E402

CONFIGS = [ROOT / "experiments" / "configs" / f"{name}.toml" for name in ("paper", "corrected")]


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _ratio(value: float, optimum: float) -> float:
    if value == optimum:
        return 1.0
    return value / optimum if optimum > 0 else float("inf")  # missed a one-node plan


def summarize(records: list[dict]) -> list[str]:
    """The summary table's lines (Markdown), one row per (sweep, method, C)."""
    optimum = {
        (r.get("sweep") or "", r["instance_key"]): r["bottleneck_s"]
        for r in records
        if r["method"] == "exact" and r["status"] == "optimal"
    }
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r["method"] != "exact":
            groups[r.get("sweep") or "", r["method"], r.get("C") or 0].append(r)
    lines = [
        "| sweep | method | C | runs | plans | mean ratio | median | max | optimal | "
        "median s | p90 s | max s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (sweep, method, c), rs in sorted(groups.items()):
        plans = [r for r in rs if r["bottleneck_s"] is not None]
        ratios = [
            _ratio(r["bottleneck_s"], optimum[sweep, r["instance_key"]])
            for r in plans
            if optimum.get((sweep, r["instance_key"])) is not None
        ]
        times = [r["runtime_s"] for r in rs if r["runtime_s"] is not None]
        quality = (
            [
                f"{statistics.fmean(ratios):.4f}",
                f"{statistics.median(ratios):.4f}",
                f"{max(ratios):.4f}",
                f"{sum(x <= 1 + 1e-9 for x in ratios) / len(ratios):.1%}",
            ]
            if ratios
            else ["", "", "", ""]
        )
        speed = (
            [f"{statistics.median(times):.3g}", f"{_quantile(times, 0.9):.3g}", f"{max(times):.3g}"]
            if times
            else ["", "", ""]
        )
        cells = [sweep, method, str(c or ""), str(len(rs)), str(len(plans)), *quality, *speed]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _default_results() -> list[Path]:
    out = []
    for cfg in CONFIGS:
        results = load_config(cfg).results
        assert results is not None
        out.append(results if results.exists() else snapshot_path(results))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run", help="run the paper-grid configs' runs not yet recorded")
    r.add_argument("--jobs", "-j", type=int, default=None)
    s = sub.add_parser("summary", help="the summary table of the records")
    s.add_argument("results", nargs="*", type=Path)
    args = ap.parse_args(argv)
    if args.mode == "run":
        from partopt.experiments.runner import run_sweep

        for cfg in CONFIGS:
            print(run_sweep(load_config(cfg), jobs=args.jobs).line())
        return 0
    paths = args.results or _default_results()
    records = [rec for p in paths for rec in read_records(p)]
    if not records:
        print(f"no records in {', '.join(map(str, paths))}; run the sweeps first", file=sys.stderr)
        return 1
    print("\n".join(summarize(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
