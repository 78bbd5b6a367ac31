"""The original study's claims, recomputed: its averages, reproduced, then corrected.

The original work (SEIFER) reported, per configuration (model, node
memory, number of nodes N and, for k-path matching, number of bandwidth
classes C), the average bottleneck latency over 50 random clusters. Its code
averaged outcomes that are not latencies:

* k-path matching (``seifer-original``): no partition within N stages (its
  ``MemoryError``) counts as ``inf``; a one-stage plan or a failed matching
  counts as 0;
* the greedy baseline (``greedy-original``): no partition within N stages
  left an empty plan, measured as 0; a one-stage plan is 0;
* the random baseline (``random-original``): 0 when the model fits one node;
* all three: a plan that breaks its memory limit (the partition charged the
  segment after each cut as free) counts with the latency it claims.

:func:`original_value` turns one result record into the number the original
would have averaged, :func:`original_averages` averages them the original
way, :func:`reproduction_rows` and :func:`reproduction_summary` compare them
with the published CSVs, and :func:`headline_rows` recomputes the three
published claims on the same records, the original way and the right way
(valid plans only, matched clusters, models that need two or more nodes).

Records are the dicts of :mod:`partopt.experiments` (one per run), with the
report's annotations (``optimum``, ``nontrivial``, ``original_bound_s``) where
a function says so.

References
----------
Parthasarathy, A. and Krishnamachari, B. (2022). Partitioning and placement
of deep neural networks on distributed edge devices to maximize inference
throughput. ITNAC 2022 (arXiv:2210.12219).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "ORIGINAL_METHODS",
    "PUBLISHED_METHOD",
    "WITHIN",
    "headline_rows",
    "original_averages",
    "original_value",
    "over_memory_share",
    "reproduction_rows",
    "reproduction_summary",
]

ORIGINAL_METHODS = ("seifer-original", "greedy-original", "random-original")
"""The original's three methods, with its defects, in the order of the tables."""

PUBLISHED_METHOD = {
    "seifer-original": "seifer",
    "greedy-original": "greedy",
    "random-original": "random",
}
"""Which published CSV each method reproduces (keys of ``report.load_published``)."""

WITHIN = 0.10
"""A configuration is reproduced when ours / published lies within 1 +- WITHIN."""

_NO_PARTITION = "the partition DP found no partition"  # seifer's reason when it raised


def _has_plan(rec: dict) -> bool:
    return rec.get("status") in ("optimal", "feasible") and rec.get("bottleneck_s") is not None


def original_value(rec: dict) -> float | None:
    """What the original code would have averaged for this run (seconds), or ``None``.

    ``None`` for runs that say nothing about the original (errors). An
    instance that needs more stages than the cluster has nodes is ``inf``
    (the published CSVs show ``nan`` for these configurations).

    Examples
    --------
    >>> original_value({"method": "seifer-original", "status": "no_solution",
    ...                 "info": {"reason": "the partition DP found no partition within N"}})
    inf
    >>> original_value({"method": "seifer-original", "status": "no_solution",
    ...                 "info": {"reason": "1 of 3 stages left unplaced"}})
    0.0
    >>> original_value({"method": "greedy-original", "status": "no_solution",
    ...                 "info": {"original_bottleneck_s": 1.5}})
    1.5
    """
    status = rec.get("status")
    info = rec.get("info") or {}
    if status == "error":
        return None
    if status == "infeasible":
        return math.inf
    if "original_bottleneck_s" in info:
        v = info["original_bottleneck_s"]
        return math.inf if v is None else float(v)  # None: the original's code raised
    if info.get("unchecked_bottleneck_s") is not None:
        return float(info["unchecked_bottleneck_s"])
    if _has_plan(rec):
        return float(rec["bottleneck_s"])
    if str(info.get("reason", "")).startswith(_NO_PARTITION):
        return math.inf
    return 0.0  # a failed matching


def _config(rec: dict) -> tuple:
    return (
        rec["method"],
        str(rec["model"]).lower(),
        float(rec["capacity_mb"]),
        int(rec["nodes"]),
        rec.get("C"),
    )


def original_averages(records: Iterable[dict]) -> dict[tuple, tuple[float, int, float | None]]:
    """Per ``(method, model, capacity_mb, nodes, C)``: the original-way average, the runs and
    the relative standard error of that average (``None`` when not finite or zero).

    The average is the plain mean over the configuration's clusters of
    :func:`original_value` (``inf`` if any run is ``inf``).

    Examples
    --------
    >>> recs = [{"method": "greedy-original", "model": "m", "capacity_mb": 64, "nodes": 5,
    ...          "status": "feasible", "bottleneck_s": b, "info": {}} for b in (1.0, 2.0)]
    >>> recs.append({**recs[0], "status": "no_solution", "info": {"original_bottleneck_s": 0.0}})
    >>> original_averages(recs)[("greedy-original", "m", 64.0, 5, None)][:2]
    (1.0, 3)
    """
    groups: dict[tuple, list[float]] = defaultdict(list)
    for rec in records:
        if rec.get("method") not in ORIGINAL_METHODS:
            continue
        value = original_value(rec)
        if value is not None:
            groups[_config(rec)].append(value)
    out: dict[tuple, tuple[float, int, float | None]] = {}
    for k, v in groups.items():
        if any(math.isinf(x) for x in v):
            out[k] = (math.inf, len(v), None)
            continue
        mean = float(np.mean(v))
        rse = (
            float(np.std(v, ddof=1) / math.sqrt(len(v)) / mean) if mean > 0 and len(v) > 1 else None
        )
        out[k] = (mean, len(v), rse)
    return out


def _share_within_by_noise(rse: float) -> float:
    """P(|ratio - 1| <= WITHIN) when both averages carry the relative error ``rse``."""
    sd = math.sqrt(2.0) * rse
    return math.erf(WITHIN / (sd * math.sqrt(2.0))) if sd > 0 else 1.0


def _optima(records: Iterable[dict]) -> dict[tuple, float]:
    """Mean proven optimum per ``(model, capacity_mb, nodes)`` when every cluster has one."""
    per: dict[tuple, dict[str, float | None]] = defaultdict(dict)
    for r in records:
        key = (str(r["model"]).lower(), float(r["capacity_mb"]), int(r["nodes"]))
        per[key].setdefault(r["instance_key"], None)
        if r.get("status") == "optimal" and r.get("bottleneck_s") is not None:
            per[key][r["instance_key"]] = float(r["bottleneck_s"])
    return {k: float(np.mean(list(v.values()))) for k, v in per.items() if None not in v.values()}


def over_memory_share(records: Iterable[dict]) -> dict[tuple, float]:
    """Per ``(method, model, capacity_mb, nodes, C)``: share of runs whose plan broke memory."""
    n: dict[tuple, int] = defaultdict(int)
    over: dict[tuple, int] = defaultdict(int)
    for rec in records:
        if rec.get("method") not in ORIGINAL_METHODS:
            continue
        k = _config(rec)
        n[k] += 1
        over[k] += (rec.get("info") or {}).get("unchecked_bottleneck_s") is not None
    return {k: over[k] / n[k] for k in n}


def reproduction_rows(records: Sequence[dict], published: dict[str, list[dict]]) -> list[dict]:
    """One row per published configuration of each original method.

    Keys: ``method``, ``model``, ``capacity_mb``, ``nodes``, ``C``,
    ``published_s``, ``ours_s`` (original-way average, ``None`` if not run),
    ``runs``, ``rse`` (relative standard error of our average over its
    clusters), ``ratio`` (ours / published when both are finite and
    positive), ``optimum_s`` (mean proven optimum of the same clusters),
    ``published_over_optimum`` and ``over_memory`` (share of our runs whose
    plan broke memory).
    """
    avgs = original_averages(records)
    optima = _optima(records)
    over = over_memory_share(records)
    out = []
    for method in ORIGINAL_METHODS:
        for pr in published.get(PUBLISHED_METHOD[method], []):
            key = (method, pr["model"], float(pr["capacity_mb"]), int(pr["nodes"]), pr["C"])
            ours, runs, rse = avgs.get(key, (None, 0, None))
            pub = pr["value"]
            ratio = None
            if ours is not None and all(math.isfinite(x) and x > 0 for x in (ours, pub)):
                ratio = ours / pub
            opt = optima.get(key[1:4])
            below = None
            if opt is not None and opt > 0 and math.isfinite(pub):
                below = pub / opt
            out.append(
                {
                    "method": method,
                    "model": pr["model"],
                    "capacity_mb": key[2],
                    "nodes": key[3],
                    "C": pr["C"],
                    "published_s": pub,
                    "ours_s": ours,
                    "runs": runs,
                    "rse": rse,
                    "ratio": ratio,
                    "optimum_s": opt,
                    "published_over_optimum": below,
                    "over_memory": over.get(key),
                }
            )
    return out


def reproduction_summary(rows: Sequence[dict], rtol: float = 1e-6) -> list[dict]:
    """Per method: the distribution of ours / published and the published values below the optimum.

    Keys: ``method``, ``configurations`` (published), ``compared`` (both
    finite and positive), ``median``, ``p10``, ``p90``, ``within`` (share
    of compared configurations within 1 +- :data:`WITHIN`), ``within_by_noise``
    (the share expected from sampling noise alone if ours and the published
    averages estimated the same mean: both with our relative standard
    error, normal), ``below_optimum``
    (published average below the mean proven optimum of the same clusters),
    ``below_optimum_over_memory`` (of those, how many have some of our runs
    with a plan that broke memory); ``far_below_optimum`` and
    ``far_below_optimum_over_memory`` the same for published averages more
    than :data:`WITHIN` below the optimum (clear of the sampling noise, the
    optimum being a mean over other clusters than the published one).

    Examples
    --------
    >>> rows = [{"method": "random-original", "ratio": r, "published_over_optimum": None,
    ...          "over_memory": 0.0} for r in (0.95, 1.0, 1.2, None)]
    >>> s = reproduction_summary(rows)[0]
    >>> s["configurations"], s["compared"], s["median"], s["within"]
    (4, 3, 1.0, 0.6666666666666666)
    """
    out = []
    for method in ORIGINAL_METHODS:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        ratios = np.array([r["ratio"] for r in mine if r["ratio"] is not None], dtype=float)
        below = [
            r
            for r in mine
            if r["published_over_optimum"] is not None and r["published_over_optimum"] < 1 - rtol
        ]
        far = [r for r in below if r["published_over_optimum"] < 1 - WITHIN]
        has = len(ratios) > 0
        noise = [
            _share_within_by_noise(r["rse"])
            for r in mine
            if r["ratio"] is not None and r.get("rse") is not None
        ]
        out.append(
            {
                "method": method,
                "configurations": len(mine),
                "compared": len(ratios),
                "median": float(np.median(ratios)) if has else None,
                "p10": float(np.percentile(ratios, 10)) if has else None,
                "p90": float(np.percentile(ratios, 90)) if has else None,
                "within": float(np.mean(np.abs(ratios - 1) <= WITHIN)) if has else None,
                "within_by_noise": float(np.mean(noise)) if noise else None,
                "below_optimum": len(below),
                "below_optimum_over_memory": sum((r["over_memory"] or 0) > 0 for r in below),
                "far_below_optimum": len(far),
                "far_below_optimum_over_memory": sum((r["over_memory"] or 0) > 0 for r in far),
            }
        )
    return out


# -- the headline claims ----------------------------------------------------------------


def _published_mean(published: dict, method: str, nodes: int) -> float | None:
    vals = [
        r["value"]
        for r in published.get(method, [])
        if r["nodes"] == nodes and math.isfinite(r["value"])
    ]
    return float(np.mean(vals)) if vals else None


def _ours_mean(rows: Sequence[dict], method: str, nodes: int) -> tuple[float | None, int]:
    """Mean of our original-way averages over the configurations published (finite ones)."""
    vals = [
        r["ours_s"]
        for r in rows
        if r["method"] == method
        and r["nodes"] == nodes
        and r["ours_s"] is not None
        and math.isfinite(r["ours_s"])
        and math.isfinite(r["published_s"])
    ]
    return (float(np.mean(vals)) if vals else None), len(vals)


def _matched(records: Sequence[dict], methods: Sequence[str], nodes: int) -> list[dict]:
    """Instances at ``nodes`` nodes needing two or more stages where every method has a plan."""
    per: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in records:
        if r["nodes"] == nodes and r["method"] in methods and r.get("C") in (None, 20):
            per[r["instance_key"]][r["method"]] = r
    return [
        m
        for m in per.values()
        if len(m) == len(methods)
        and all(_has_plan(x) for x in m.values())
        and all(x.get("min_stages", 2) > 1 for x in m.values())
    ]


def _mean_ratio(matched: list[dict], num: str, den: str) -> float | None:
    a = sum(m[num]["bottleneck_s"] for m in matched)
    b = sum(m[den]["bottleneck_s"] for m in matched)
    return a / b if matched and b > 0 else None


def headline_rows(
    records: Sequence[dict], published: dict[str, list[dict]], repro: Sequence[dict]
) -> list[dict]:
    """The three published claims: as published, ours the original way, ours the right way.

    * random vs k-path at N = 50: mean of random / mean of k-path;
    * greedy vs k-path at N = 50: 1 - mean of k-path / mean of greedy;
    * approximation ratio at N = 50, 64 MB, C = 20: mean of k-path over the
      mean of the original's lower bound (max chosen transfer / max
      bandwidth; original way, runs with a valid plan) and the mean of
      k-path / proven optimum (right way).

    The original way averages the original methods' per-configuration
    averages over the published configurations; the right way compares the
    methods without the defects (``seifer`` at C = 20, ``greedy``,
    ``random``) on the same clusters, only where both return a valid plan
    and the model needs two or more nodes. ``records`` must be annotated
    (``optimum``, ``ratio``, ``original_bound_s``).
    """
    out = []
    pk, pr, pg = (_published_mean(published, m, 50) for m in ("seifer", "random", "greedy"))
    ok, _ = _ours_mean(repro, "seifer-original", 50)
    orr, _ = _ours_mean(repro, "random-original", 50)
    og, _ = _ours_mean(repro, "greedy-original", 50)
    m_r = _matched(records, ["random", "seifer"], 50)
    m_g = _matched(records, ["greedy", "seifer"], 50)
    right_g = _mean_ratio(m_g, "seifer", "greedy")
    out.append(
        {
            "claim": "random vs k-path at N = 50 (random / k-path)",
            "claimed": "10x",
            "published": None if pr is None or not pk else pr / pk,
            "original_way": None if orr is None or not ok else orr / ok,
            "right_way": _mean_ratio(m_r, "random", "seifer"),
            "instances": len(m_r),
        }
    )
    out.append(
        {
            "claim": "greedy vs k-path at N = 50 (1 - k-path / greedy)",
            "claimed": "35%",
            "published": None if pg is None or pk is None else 1 - pk / pg,
            "original_way": None if og is None or ok is None else 1 - ok / og,
            "right_way": None if right_g is None else 1 - right_g,
            "instances": len(m_g),
        }
    )
    sel = [
        r
        for r in records
        if r["nodes"] == 50 and float(r["capacity_mb"]) == 64 and r.get("C") == 20
    ]
    orig = [r for r in sel if r["method"] == "seifer-original" and r.get("original_bound_s")]
    right = [
        r for r in sel if r["method"] == "seifer" and r.get("ratio") is not None and r["optimum"]
    ]
    out.append(
        {
            "claim": "k-path approximation ratio at N = 50, 64 MB, C = 20",
            "claimed": "1.092",
            "published": None,
            "original_way": (
                float(np.mean([r["bottleneck_s"] for r in orig]))
                / float(np.mean([r["original_bound_s"] for r in orig]))
                if orig
                else None
            ),
            "right_way": float(np.mean([r["ratio"] for r in right])) if right else None,
            "instances": len(right),
        }
    )
    return out
