"""What the chain restriction costs: the DAG optimum against the multi- and single-chain optima.

Reads the CSV the chain-cost benchmark writes (``bench_dag_chain.csv``: one
row per instance and cut kind, with ``status``, ``bottleneck_s``, ``bound_s``
and ``time_s``) and turns it into one table per model and cluster kind plus
the numbers the paper quotes. Ratios use the best plan each run returned; a
DAG run that is only ``feasible`` gives an upper bound on the DAG optimum,
so its ratio is an upper bound too, and the run's lower bound is kept
beside it. The three cut kinds are three inputs of the same problem — the
original's single-tensor cut points, the boundaries of one topological
order, every ideal of the layer DAG — so each optimum is at most the next.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from pathlib import Path

from partopt.report import (
    CHAIN_COST_FILE,
    PUBLISHED_MODELS,
    ReportError,
    Table,
    _fmt_any,
    _fmt_int,
    _fmt_ratio,
    _slug,
)

__all__ = ["CHAIN_COST_FILE", "chain_cost_table", "load_chain_cost"]


_CUTS = ("dag", "multi", "single")
_PROVEN = ("optimal", "infeasible")
_COLUMNS = {"instance", "model", "cluster", "capacity_mb", "cuts", "status", "bottleneck_s"}


def load_chain_cost(path: str | Path) -> list[dict]:
    """Rows of the chain-cost CSV, checked for the columns the table reads."""
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = _COLUMNS - set(reader.fieldnames or ())
        if missing:
            raise ReportError(
                f"{path}: not a chain-cost CSV (no column {', '.join(sorted(missing))}); "
                "rerun experiments/bench_dag_chain.py"
            )
        return list(reader)


def _float(v: str | None) -> float | None:
    return None if v in (None, "") else float(v)


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def _cluster_label(kind: str, capacity: str) -> str:
    if kind == "paper":
        return f"paper, {float(capacity):g} MB"
    return "three device kinds" if kind == "hetero" else kind


def chain_cost_table(rows: list[dict], numbers: dict) -> Table:
    """Per model and cluster: the mean ratios of the three optima and how many DAG runs proved theirs.

    Ratios are over the instances where both runs returned a plan and the
    denominator is positive (a model that fits one node has bottleneck 0).
    Fills ``numbers`` with ``chain_cost.*``: instances, models, clusters per
    configuration, DAG runs proven,
    the instances where the DAG beats the multi chain (by more than 1e-6
    relative), the smallest and largest gap (best - bound) / best of the
    unproven DAG runs, the smallest ratio of each pair, the DAG's median and
    maximum time, and the unproven DAG instances by name; the unproven
    multi-chain instances by name, and how many of them a proven DAG optimum
    equal to their plan settles (the DAG optimum is at most the multi-chain
    optimum, which is at most its plan).
    """
    by: dict[tuple, dict[str, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        by[(r["model"], r["cluster"], r["capacity_mb"])][r["instance"]][r["cuts"]] = r
    out: list[list] = []
    unproven: list[str] = []
    multi_unproven: list[str] = []
    multi_settled = 0  # unproven multi-chain runs whose plan equals a proven DAG optimum
    dag_times: list[float] = []
    gaps: list[float] = []
    totals = {"instances": 0, "proven": 0, "dag_better": 0, "multi_better": 0}
    lows: dict[str, list[float]] = {"dm": [], "ds": [], "ms": []}
    for (model, kind, cap), inst in sorted(by.items()):
        ratios: dict[str, list[float]] = {"dm": [], "ds": [], "ms": []}
        proven, times = 0, []
        statuses: dict[tuple[str, str], int] = defaultdict(int)
        for key, runs in sorted(inst.items()):
            v = {c: _float(runs[c]["bottleneck_s"]) for c in _CUTS if c in runs}
            for c in _CUTS:
                if c in runs:
                    statuses[(c, runs[c]["status"])] += 1
            if "dag" in runs:
                dag = runs["dag"]
                times.append(float(dag["time_s"]))
                if dag["status"] in _PROVEN:
                    proven += 1
                else:
                    unproven.append(key)
                    best, bound = _float(dag["bottleneck_s"]), _float(dag.get("bound_s"))
                    if best and bound is not None:
                        gaps.append((best - bound) / best)
            multi = runs.get("multi")
            if multi is not None and multi["status"] not in _PROVEN:
                multi_unproven.append(key)
                dag_run = runs.get("dag")
                vm, vd = v.get("multi"), v.get("dag")
                if dag_run is not None and dag_run["status"] == "optimal" and vm is not None:
                    # dag optimum <= multi optimum <= multi plan: equal ends settle it
                    multi_settled += vd is not None and vm <= vd * (1 + 1e-9)
            for a, b, k in (
                ("dag", "multi", "dm"),
                ("dag", "single", "ds"),
                ("multi", "single", "ms"),
            ):
                va, vb = v.get(a), v.get(b)
                if va is not None and vb is not None and vb > 0:
                    ratios[k].append(va / vb)
                    lows[k].append(va / vb)
                    if k == "dm" and va < vb * (1 - 1e-6):
                        totals["dag_better"] += 1
                    if k == "ms" and va < vb * (1 - 1e-6):
                        totals["multi_better"] += 1
        totals["instances"] += len(inst)
        totals["proven"] += proven
        dag_times += times
        out.append(
            [
                _display(model),
                _cluster_label(kind, cap),
                len(inst),
                _mean(ratios["dm"]),
                _mean(ratios["ds"]),
                _mean(ratios["ms"]),
                f"{proven}/{len(inst)}",
                statistics.median(times) if times else None,
                max(times) if times else None,
                "; ".join(
                    f"{c} {s} {n}" for (c, s), n in sorted(statuses.items()) if s not in _PROVEN
                ),
            ]
        )
    numbers["chain_cost.instances"] = totals["instances"]
    numbers["chain_cost.models"] = len({m for m, _, _ in by})
    numbers["chain_cost.clusters_per_configuration"] = int(
        statistics.median(len(inst) for inst in by.values())
    )
    numbers["chain_cost.dag_proven"] = totals["proven"]
    numbers["chain_cost.dag_unproven"] = totals["instances"] - totals["proven"]
    numbers["chain_cost.unproven_instances"] = ", ".join(f"`{k}`" for k in unproven) or "none"
    numbers["chain_cost.unproven_gap_min"] = min(gaps, default=None)
    numbers["chain_cost.unproven_gap_max"] = max(gaps, default=None)
    numbers["chain_cost.multi_unproven"] = len(multi_unproven)
    numbers["chain_cost.multi_unproven_instances"] = (
        ", ".join(f"`{k}`" for k in multi_unproven) or "none"
    )
    numbers["chain_cost.multi_settled_by_dag"] = multi_settled
    numbers["chain_cost.dag_better_than_multi"] = totals["dag_better"]
    numbers["chain_cost.multi_better_than_single"] = totals["multi_better"]
    numbers["chain_cost.compared_dag_multi"] = len(lows["dm"])
    numbers["chain_cost.compared_multi_single"] = len(lows["ms"])
    for k, name in (("dm", "dag_vs_multi"), ("ds", "dag_vs_single"), ("ms", "multi_vs_single")):
        numbers[f"chain_cost.{name}.min"] = min(lows[k], default=None)
    if dag_times:
        numbers["chain_cost.dag_median_s"] = statistics.median(dag_times)
        numbers["chain_cost.dag_max_s"] = max(dag_times)
    for row in out:
        tag = f"chain_cost.{_slug(row[0])}.{_slug(row[1])}"
        numbers[f"{tag}.dag_vs_multi"], numbers[f"{tag}.dag_vs_single"] = row[3], row[4]
        numbers[f"{tag}.multi_vs_single"], numbers[f"{tag}.dag_proven"] = row[5], row[6]
    return Table(
        "chain_cost",
        "What the chain restriction costs",
        [
            "model",
            "cluster",
            "instances",
            "DAG / multi chain (ratio)",
            "DAG / single chain (ratio)",
            "multi / single chain (ratio)",
            "DAG proven",
            "DAG median time (s)",
            "DAG max time (s)",
            "not proven (cuts status count)",
        ],
        out,
        [str, str, _fmt_int, _fmt_ratio, _fmt_ratio, _fmt_ratio, str, _fmt_any, _fmt_any, str],
        note="Mean ratio of the bottlenecks of `exact` on the same instance with the three cut "
        "kinds, over instances where both runs returned a plan and the model needs two or more "
        'nodes ("-": none such). A run that is only `feasible` reports its best plan, so a '
        "ratio with an unproven numerator is an upper bound. DAG proven: runs that ended "
        "`optimal` or `infeasible` within the benchmark's time limit.",
    )


def _display(model: str) -> str:
    return {"bert_base": "BERT-base", **PUBLISHED_MODELS}.get(model, model)
