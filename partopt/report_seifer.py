"""Tables of the original study's reproduction on its own instance (the Keras chain).

Turns the rows of :mod:`partopt.study_seifer` into :class:`partopt.report.Table`
objects and dotted numbers for the paper; it computes nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from partopt.report import (
    PUBLISHED_MODELS,
    Table,
    _fmt_any,
    _fmt_int,
    _fmt_num,
    _fmt_pct,
    _fmt_ratio,
    _slug,
)
from partopt.study_seifer import (
    ORIGINAL_METHODS,
    WITHIN,
    headline_rows,
    reproduction_rows,
    reproduction_summary,
)

__all__ = ["faithful_tables"]


def _claim(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def faithful_tables(rows: Sequence[dict], published: dict, numbers: dict) -> list[Table]:
    """The reproduction tables from annotated records of the Keras-chain sweep.

    Fills ``numbers`` with ``reproduction.<method>.*`` and
    ``faithful.<claim>.*`` entries for the paper.
    """
    repro = reproduction_rows(rows, published)
    summary = reproduction_summary(repro)
    pct = f"{WITHIN:.0%}"
    per_config = Table(
        "reproduction",
        "Reproduction on the original's instance, per published configuration",
        [
            "method",
            "model",
            "capacity (MB)",
            "N",
            "C",
            "published (s)",
            "ours (s)",
            "clusters",
            "ours / published",
            "relative std. error of ours",
            "mean optimum (s)",
            "published / optimum",
            "share of our plans over memory",
        ],
        [
            [
                r["method"],
                PUBLISHED_MODELS.get(r["model"], r["model"]),
                r["capacity_mb"],
                r["nodes"],
                r["C"],
                r["published_s"],
                r["ours_s"],
                r["runs"],
                r["ratio"],
                r["rse"],
                r["optimum_s"],
                r["published_over_optimum"],
                r["over_memory"],
            ]
            for r in repro
        ],
        list[Callable]([str, str, _fmt_num, _fmt_int, _fmt_int, _fmt_any, _fmt_any, _fmt_int])
        + [_fmt_ratio, _fmt_pct, _fmt_any, _fmt_ratio, _fmt_pct],
        note="Ours: the original methods (with their defects) on the chain from the Keras layer "
        "graph under the paper memory and transfer models, averaged the original way over 50 "
        "clusters. Ratios only where both averages are finite and positive.",
    )
    sum_table = Table(
        "reproduction_summary",
        "Reproduction on the original's instance, per method",
        [
            "method",
            "configurations",
            "compared",
            "median ours / published",
            "10th percentile ours / published",
            "90th percentile ours / published",
            f"share within {pct}",
            f"share within {pct} expected from noise",
            f"published more than {pct} below optimum",
            "of those, with plans over memory",
        ],
        [
            [
                s["method"],
                s["configurations"],
                s["compared"],
                s["median"],
                s["p10"],
                s["p90"],
                s["within"],
                s["within_by_noise"],
                s["far_below_optimum"],
                s["far_below_optimum_over_memory"],
            ]
            for s in summary
        ],
        list[Callable]([str, _fmt_int, _fmt_int, _fmt_ratio, _fmt_ratio, _fmt_ratio, _fmt_pct])
        + [_fmt_pct, _fmt_int, _fmt_int],
        note="Compared: configurations where both averages are finite and positive (the "
        "published CSVs hold 0 where the model fits one node and nan where the original "
        "failed). Expected from noise: the share within the band if ours and the published "
        "average estimated the same mean with our standard error (normal approximation). "
        "Optimum: mean proven optimum of the same clusters under the same models.",
    )
    by_model_rows = []
    for method in ORIGINAL_METHODS:
        for model in sorted({r["model"] for r in repro if r["method"] == method}):
            rat = np.array(
                [
                    r["ratio"]
                    for r in repro
                    if r["method"] == method and r["model"] == model and r["ratio"] is not None
                ]
            )
            by_model_rows.append(
                [
                    method,
                    PUBLISHED_MODELS.get(model, model),
                    len(rat),
                    float(np.median(rat)) if len(rat) else None,
                    float(np.mean(np.abs(rat - 1) <= WITHIN)) if len(rat) else None,
                ]
            )
    by_model = Table(
        "reproduction_by_model",
        "Reproduction on the original's instance, per method and model",
        ["method", "model", "compared", "median ours / published", f"share within {pct}"],
        by_model_rows,
        [str, str, _fmt_int, _fmt_ratio, _fmt_pct],
    )
    heads = headline_rows(rows, published, repro)
    head_table = Table(
        "headline_faithful",
        "The headline claims on the original's instance",
        [
            "claim",
            "claimed",
            "from the published CSVs",
            "ours, original way",
            "ours, right way",
            "instances (right way)",
        ],
        [
            [
                h["claim"],
                h["claimed"],
                h["published"],
                h["original_way"],
                h["right_way"],
                h["instances"],
            ]
            for h in heads
        ],
        [str, str, _claim, _claim, _claim, _fmt_int],
        note="Original way: the original methods' per-configuration averages over the "
        "configurations of the published CSVs (failures as 0, failed partitions as inf, "
        "over-memory plans at the latency they claim); the approximation ratio against "
        "max(chosen transfer) / max(bandwidth). Right way: seifer (C = 20), greedy and random "
        "without the defects on the same clusters, where both methods return a valid plan and "
        "the model needs two or more nodes, ratio of mean bottlenecks; the approximation "
        "ratio is the mean of bottleneck / proven optimum.",
    )
    for s in summary:
        tag = f"reproduction.{_slug(s['method'])}"
        for k, v in s.items():
            if k != "method":
                numbers[f"{tag}.{k}"] = v
    for h, name in zip(
        heads, ("random_vs_seifer", "greedy_vs_seifer", "approximation"), strict=True
    ):
        for k in ("published", "original_way", "right_way", "instances"):
            numbers[f"faithful.{name}.{k}"] = h[k]
    return [per_config, sum_table, by_model, head_table]
