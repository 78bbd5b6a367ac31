"""Benchmark of the exact solvers: a sweep config and a summary of its records.

::

    python experiments/bench_exact.py run [-j J]     # = partopt sweep experiments/configs/bench_exact.toml
    python experiments/bench_exact.py summary [RESULTS ...]

The instances, methods and limits are in ``experiments/configs/bench_exact.toml``
(``exact`` against ``direct_milp`` and ``milp`` at N <= 20; ``exact`` alone up
to N = 200, multi-tensor cuts and ResNet-like generated chains); the exact
solver on the full paper grid is part of ``paper.toml`` and ``corrected.toml``.
Runs are the sweep runner's (one JSON record each, resumable, versions and
machine in every record). The summary gives, per method and cut family:
runs, statuses, median / 90th percentile / max solver time (``runtime_s``)
and, where ``exact`` ran on the same instance, the median of the method's
time over ``exact``'s. Speed targets are read off this table; the tests
never time anything.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from partopt.experiments.config import load_config  # noqa: E402
from partopt.experiments.records import read_records, snapshot_path  # noqa: E402

CONFIG = ROOT / "experiments" / "configs" / "bench_exact.toml"


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def summarize(records: list[dict]) -> list[str]:
    """The summary table's lines (Markdown), one row per (method, cut family)."""
    exact_time = {
        r["instance_key"]: r["runtime_s"]
        for r in records
        if r["method"] == "exact" and r["runtime_s"] is not None
    }
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        groups[r["method"], r["cuts"]].append(r)
    lines = [
        "| method | cuts | runs | statuses | median s | p90 s | max s | median time / exact's |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for (method, cuts), rs in sorted(groups.items()):
        times = [r["runtime_s"] for r in rs if r["runtime_s"] is not None]
        statuses = ", ".join(
            f"{k} {v}" for k, v in sorted(Counter(r["status"] for r in rs).items())
        )
        ratios = [
            r["runtime_s"] / exact_time[r["instance_key"]]
            for r in rs
            if r["runtime_s"] is not None and exact_time.get(r["instance_key"])
        ]
        ratio = f"{statistics.median(ratios):.3g}" if ratios and method != "exact" else ""
        cells = [
            f"{statistics.median(times):.3g}",
            f"{_quantile(times, 0.9):.3g}",
            f"{max(times):.3g}",
        ]
        lines.append(
            f"| {method} | {cuts} | {len(rs)} | {statuses} | " + " | ".join(cells) + f" | {ratio} |"
            if times
            else f"| {method} | {cuts} | {len(rs)} | {statuses} | | | | |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run", help="run the config's runs not yet recorded")
    r.add_argument("--jobs", "-j", type=int, default=None)
    r.add_argument("--out", type=Path, default=None, help="results file (default: the config's)")
    s = sub.add_parser("summary", help="the summary table of the records")
    s.add_argument("results", nargs="*", type=Path)
    args = ap.parse_args(argv)
    config = load_config(CONFIG)
    if args.mode == "run":
        from partopt.experiments.runner import run_sweep

        print(run_sweep(config, args.out, jobs=args.jobs).line())
        return 0
    default = config.results
    assert default is not None
    paths = args.results or [default if default.exists() else snapshot_path(default)]
    records = [rec for p in paths for rec in read_records(p)]
    if not records:
        print(f"no records in {', '.join(map(str, paths))}; run the sweep first", file=sys.stderr)
        return 1
    print("\n".join(summarize(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
