"""Sweep records -> tables (Markdown and CSV), figures (PNG and PDF) and numbers.

This module reads the JSON records that :mod:`partopt.experiments` writes
and never imports a solver: every number here is recomputed from records.

Definitions used throughout
---------------------------
*regime*
    memory model and transfer model of a record, as ``memory/transfer``
    (``paper/paper`` reproduces the original study, ``peak/bytes`` is the
    corrected one); ``+multi`` is appended for multi-tensor cuts.
*label*
    a method with its options, e.g. ``seifer C=20``.
*optimum*
    the bottleneck of any record of the instance with status ``optimal``
    (a proven optimum). Two proven optima that disagree by more than 1e-6
    relative are reported in the ``consistency`` table.
*best bound*
    the optimum if known, else the largest lower bound of any record.
*ratio*
    bottleneck / optimum (1 when both are 0, ``inf`` when only the optimum is 0).
*nontrivial*
    an instance whose optimum is positive: the model does not fit one node.
*matched*
    instances, nontrivial and not proven infeasible, where every method
    compared returned a plan.
*original way* (SPEC section 3)
    per-configuration averages over clusters in which a failure counts as 0,
    a plan that only the original's defects let through (over memory) as the
    bottleneck the original reported for it, and a proven infeasibility as ``inf`` (the average is then undefined and
    the configuration dropped, as the published CSVs show ``nan``), taken over
    the configurations the published CSVs report for that method (for the
    k-path algorithm these include configurations where the model fits one
    node, at 0), then averaged over configurations; the "optimum" is the
    original lower bound max(chosen transfer) / max(bandwidth in the cluster).

Examples
--------
>>> recs = [
...     {"run_key": "a|exact", "instance_key": "a", "method": "exact", "status": "optimal",
...      "bottleneck_s": 2.0, "lower_bound_s": 2.0},
...     {"run_key": "a|greedy", "instance_key": "a", "method": "greedy", "status": "feasible",
...      "bottleneck_s": 3.0, "lower_bound_s": 1.0},
... ]
>>> rows = annotate(recs)
>>> rows[1]["ratio"], rows[1]["gap_best"]
(1.5, 0.3333333333333333)
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "OPTIMAL_RTOL",
    "Table",
    "load_records",
    "load_published",
    "label",
    "regime",
    "instance_summary",
    "annotate",
    "quality_table",
    "runtime_table",
    "bound_gap_table",
    "consistency_table",
    "config_averages",
    "headline_table",
    "reproduction_table",
    "render_template",
    "write_report",
]

OPTIMAL_RTOL = 1e-6
"""A plan within this relative distance of the optimum counts as optimal."""

HEADLINE_CLASSES = 20
"""The number of bandwidth classes C of ``seifer`` used wherever one C must be chosen."""

PUBLISHED_FILES = {
    "random": "random-algorithm.csv",
    "greedy": "joint-optimization.csv",
    "seifer": "k-path-matching.csv",
}
"""Published per-configuration averages, by the method that reproduces them."""

PUBLISHED_MODELS = {
    "resnet50": "ResNet50",
    "mobilenetv2": "MobileNetV2",
    "efficientnetb1": "EfficientNetB1",
    "inceptionresnetv2": "InceptionResNetV2",
    "densenet201": "DenseNet201",
}

_UNLABELLED_OPTIONS = ("memo_history",)
"""Options that say how a run was prepared, not which variant of a method it is."""


# -- loading ------------------------------------------------------------------------


def _result_files(paths: Iterable[str | Path]) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            plain = sorted(p.glob("*.jsonl"))
            # a snapshot NAME.jsonl.gz only counts when its working file NAME.jsonl is absent
            files += plain + sorted(
                g for g in p.glob("*.jsonl.gz") if g.with_suffix("") not in plain
            )
        elif p.exists():
            files.append(p)
        else:
            raise ValueError(f"no results file or folder {str(p)!r}")
    return files


def load_records(paths: Iterable[str | Path]) -> list[dict]:
    """Records from JSON-lines files (plain or ``.gz``) or folders of them, one per run and sweep.

    A truncated last line (a killed sweep) is skipped; when the same run of
    the same sweep appears twice (in two files), the later one is kept. The
    same run in two sweeps (the scaling study repeats some instances of the
    grids) is kept once per sweep.
    """
    from partopt.experiments import read_records  # the results-file format lives there

    by_key: dict[tuple, dict] = {}
    for path in _result_files(paths):
        for rec in read_records(path):
            if "instance_key" not in rec:
                raise ValueError(f"{path}: record {rec['run_key']!r} has no instance_key")
            by_key[(rec.get("sweep"), rec["run_key"])] = rec
    return list(by_key.values())


def load_published(directory: str | Path | None) -> dict[str, list[dict]]:
    """The original study's per-configuration averages, by method.

    Each row: ``model`` (lower case, as partopt names it), ``capacity_mb``,
    ``nodes``, ``C`` (k-path only, else None) and ``value`` (seconds; 0
    where the model fit one node, ``nan`` where the original failed).
    """
    if directory is None:
        return {}
    directory = Path(directory)
    out: dict[str, list[dict]] = {}
    for method, name in PUBLISHED_FILES.items():
        path = directory / name
        if not path.exists():
            continue
        rows = []
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                c = row.get("# of Bandwidth Classes")
                rows.append(
                    {
                        "model": row["Model"].strip().lower(),
                        "capacity_mb": float(row["Node Memory Capacity (MB)"]),
                        "nodes": int(row["# of Nodes"]),
                        "C": int(c) if c not in (None, "") else None,
                        "value": float(row["Bottleneck Latency (s)"] or "nan"),
                    }
                )
        out[method] = rows
    return out


# -- per-record quantities ----------------------------------------------------------------


def label(rec: dict) -> str:
    """``method`` plus its options, e.g. ``seifer C=20`` (see :func:`_label`)."""
    opts = rec.get("options") or {}
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in opts.items()))
    return _label(rec["method"], rec.get("C"), frozen)


@functools.lru_cache(maxsize=1024)
def _label(method: str, classes, options: tuple) -> str:
    return _label_uncached({"method": method, "C": classes, "options": dict(options)})


def _label_uncached(rec: dict) -> str:
    """``method`` plus its options, e.g. ``seifer C=20``.

    >>> label({"method": "seifer", "options": {"num_classes": 20}, "C": 20})
    'seifer C=20'
    >>> label({"method": "seifer-original", "options": {"num_classes": 5, "memo_history": [64.0]},
    ...        "C": 5})
    'seifer-original C=5'
    """
    opts = {k: v for k, v in (rec.get("options") or {}).items() if k not in _UNLABELLED_OPTIONS}
    parts = [rec["method"]]
    if rec.get("C") is not None:
        parts.append(f"C={rec['C']}")
        opts = {k: v for k, v in opts.items() if v != rec["C"]}
    parts += [f"{k}={v}" for k, v in sorted(opts.items())]
    return " ".join(parts)


def regime(rec: dict) -> str:
    """``memory/transfer`` (``+multi`` for multi-tensor cuts, ``+keras`` for the original's chain).

    >>> regime({"memory": "peak", "transfer": "bytes", "cuts": "multi"})
    'peak/bytes+multi'
    """
    r = f"{rec.get('memory', 'peak')}/{rec.get('transfer', 'bytes')}"
    return r + (f"+{rec['cuts']}" if rec.get("cuts") in ("multi", "keras") else "")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _has_plan(rec: dict) -> bool:
    return rec.get("bottleneck_s") is not None and rec.get("status") in ("optimal", "feasible")


def _ratio(value: float, optimum: float) -> float:
    if optimum > 0:
        return value / optimum
    return 1.0 if value <= 0 else math.inf


@dataclass
class InstanceSummary:
    """What all records of one instance say together."""

    key: str
    optimum: float | None = None
    optima: list = field(default_factory=list)  # (method, value) of every proven optimum
    best_bound: float | None = None
    infeasible: bool = False
    min_stages: int | None = None


def instance_summary(records: Iterable[dict]) -> dict[str, InstanceSummary]:
    """Optimum, best bound and infeasibility per instance key."""
    out: dict[str, InstanceSummary] = {}
    for rec in records:
        s = out.setdefault(rec["instance_key"], InstanceSummary(rec["instance_key"]))
        if s.min_stages is None and rec.get("min_stages") is not None:
            s.min_stages = rec["min_stages"]
        status = rec.get("status")
        if status == "infeasible":
            s.infeasible = True
        if status == "optimal" and rec.get("bottleneck_s") is not None:
            s.optima.append((rec["method"], rec["bottleneck_s"]))
        lb = rec.get("lower_bound_s")
        if lb is not None and (s.best_bound is None or lb > s.best_bound):
            s.best_bound = lb
    for s in out.values():
        if s.optima:
            s.optimum = min(v for _, v in s.optima)
            s.best_bound = s.optimum
    return out


def annotate(
    records: Sequence[dict], summary: dict[str, InstanceSummary] | None = None
) -> list[dict]:
    """Copies of ``records`` with ``label``, ``regime``, ``optimum``, ``ratio``,
    ``gap_best`` (gap to the best bound known for the instance), ``original_bound_s``
    and ``nontrivial`` added."""
    summary = instance_summary(records) if summary is None else summary
    out = []
    for rec in records:
        s = summary[rec["instance_key"]]
        row = dict(rec)
        row["label"] = label(rec)
        row["regime"] = regime(rec)
        row["optimum"] = s.optimum
        row["infeasible_instance"] = s.infeasible
        row["nontrivial"] = (
            (s.optimum > 0)
            if s.optimum is not None
            else (None if s.min_stages is None else s.min_stages > 1)
        )
        b = rec.get("bottleneck_s") if _has_plan(rec) else None
        row["ratio"] = _ratio(b, s.optimum) if b is not None and s.optimum is not None else None
        row["gap_best"] = None
        if b is not None and s.best_bound is not None:
            row["gap_best"] = 0.0 if b <= 0 else max(0.0, (b - s.best_bound) / b)
        row["original_bound_s"] = None
        if (
            b is not None
            and rec.get("plan_max_transfer_bytes") is not None
            and rec.get("max_bandwidth_mbps")
        ):
            row["original_bound_s"] = (
                rec["plan_max_transfer_bytes"] * 8.0 / (rec["max_bandwidth_mbps"] * 1e6)
            )
        out.append(row)
    return out


# -- tables ---------------------------------------------------------------------------------


@dataclass
class Table:
    """A table: raw values (for CSV) and a formatter per column (for Markdown)."""

    name: str
    title: str
    headers: list[str]
    rows: list[list]
    formats: list[Callable] | None = None
    note: str = ""
    markdown_headers: list[str] | None = None
    """Headers of the Markdown table when its formatters change the unit (the CSV keeps
    ``headers``, which name the unit of the raw values)."""

    def markdown(self) -> str:
        fmts = self.formats or [_fmt_any] * len(self.headers)
        text_col = [all(isinstance(r[i], str) for r in self.rows) for i in range(len(self.headers))]
        lines = [
            "| " + " | ".join(self.markdown_headers or self.headers) + " |",
            "|" + "|".join("---" if t else "---:" for t in text_col) + "|",
        ]
        for row in self.rows:
            lines.append("| " + " | ".join(f(v) for f, v in zip(fmts, row, strict=True)) + " |")
        text = "\n".join(lines) + "\n"
        if self.note:
            text += f"\n{self.note}\n"
        return text

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.headers)
        for row in self.rows:
            w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in row])
        return buf.getvalue()


def _fmt_any(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf"
        return f"{v:.4g}"
    return str(v)


def _fmt_ratio(v) -> str:
    return "-" if v is None else ("inf" if math.isinf(v) else f"{v:.4f}")


def _fmt_pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _fmt_ms(v) -> str:
    if v is None:
        return "-"
    return f"{v * 1e3:.3g}" if v < 1 else f"{v * 1e3:,.0f}"


def _fmt_int(v) -> str:
    return "-" if v is None else str(int(v))


def _fmt_num(v) -> str:
    return "-" if v is None else f"{v:g}"


def _stats(values: list[float]) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(np.median(a)), float(a.max())


def _label_sort_key(lab: str):
    m = re.match(r"(\S+)(?: C=(\d+))?(.*)", lab)
    return (m.group(1), int(m.group(2) or 0), m.group(3)) if m else (lab, 0, "")


def quality_table(
    rows: Sequence[dict],
    by: Sequence[str] = ("model", "capacity_mb"),
    name: str = "quality",
    title: str = "",
) -> Table:
    """Per regime, group and method: ratio to the proven optimum.

    Over nontrivial instances with a known optimum and not proven
    infeasible: ``instances`` run, ``solved`` (plan returned), mean /
    median / max ratio over the solved ones, ``optimal`` = share of the
    instances run whose plan is within :data:`OPTIMAL_RTOL` of the optimum
    (a failure is not optimal).
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["optimum"] is None or not r["nontrivial"] or r["infeasible_instance"]:
            continue
        groups[(r["regime"], *(r.get(k) for k in by), r["label"])].append(r)
    out = []
    for key in sorted(groups, key=lambda k: (*k[:-1], _label_sort_key(k[-1]))):
        g = groups[key]
        ratios = [r["ratio"] for r in g if r["ratio"] is not None]
        mean, median, worst = _stats(ratios)
        optimal = sum(r <= 1 + OPTIMAL_RTOL for r in ratios) / len(g)
        out.append([*key, len(g), len(ratios), mean, median, worst, optimal])
    headers = [
        "regime",
        *by,
        "method",
        "instances",
        "solved",
        "mean ratio",
        "median ratio",
        "max ratio",
        "optimal",
    ]
    fmts = (
        [str]
        + [_fmt_any] * len(by)
        + [str, _fmt_int, _fmt_int, _fmt_ratio, _fmt_ratio, _fmt_ratio, _fmt_pct]
    )
    return Table(
        name,
        title or "Ratio to the proven optimum",
        headers,
        out,
        fmts,
        note="Ratio = bottleneck / proven optimum over nontrivial instances (the model "
        "needs two or more nodes); optimal = share within 1e-6 of the optimum "
        "(failures count as not optimal).",
    )


def bound_gap_table(rows: Sequence[dict], name: str = "bound_gap", title: str = "") -> Table:
    """Per regime and method: gap to the best bound known for the instance.

    Over nontrivial instances with a plan: mean / median / max of
    ``(bottleneck - best bound) / bottleneck``, where the best bound is the
    proven optimum if any method proved one, else the largest lower bound
    of any run; ``unproven`` counts the instances without a proven optimum
    (there the gap may overstate the distance to the optimum).
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["gap_best"] is not None and r["nontrivial"]:
            groups[(r["regime"], r["label"])].append(r)
    out = []
    for key in sorted(groups, key=lambda k: (k[0], _label_sort_key(k[1]))):
        gaps = [r["gap_best"] for r in groups[key]]
        mean, median, worst = _stats(gaps)
        out.append(
            [*key, len(gaps), sum(r["optimum"] is None for r in groups[key]), mean, median, worst]
        )
    return Table(
        name,
        title or "Gap to the best bound known",
        ["regime", "method", "instances", "unproven", "mean gap", "median gap", "max gap"],
        out,
        [str, str, _fmt_int, _fmt_int, _fmt_pct, _fmt_pct, _fmt_pct],
        note="Gap = (bottleneck - best bound) / bottleneck; the best bound of an instance "
        "is its proven optimum, or else the largest lower bound any run reported.",
    )


def runtime_table(
    rows: Sequence[dict], by: Sequence[str] = ("nodes",), name: str = "runtime", title: str = ""
) -> Table:
    """Per regime, group and method: solver runtime in milliseconds (median, mean, max)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("runtime_s") is not None and r.get("status") != "infeasible":
            groups[(r["regime"], *(r.get(k) for k in by), r["label"])].append(r)
    out = []
    for key in sorted(groups, key=lambda k: (*k[:-1], _label_sort_key(k[-1]))):
        t = np.asarray([r["runtime_s"] for r in groups[key]])
        proven = sum(r["status"] == "optimal" for r in groups[key]) / len(t)
        out.append(
            [
                *key,
                len(t),
                float(np.median(t)),
                float(t.mean()),
                float(np.percentile(t, 95)),
                float(t.max()),
                proven,
            ]
        )
    headers = [
        "regime",
        *by,
        "method",
        "runs",
        "median (s)",
        "mean (s)",
        "p95 (s)",
        "max (s)",
        "proven optimal",
    ]
    fmts = [str] + [_fmt_any] * len(by) + [str, _fmt_int] + [_fmt_ms] * 4 + [_fmt_pct]
    return Table(
        name,
        title or "Solver runtime",
        headers,
        out,
        fmts,
        note="Wall-clock time inside the solver (bounds and evaluation excluded), "
        "in milliseconds here and in seconds in the CSV; instances proven infeasible before "
        "solving are left out. Proven optimal: share of runs ending with status optimal.",
        markdown_headers=[h.replace("(s)", "(ms)") for h in headers],
    )


def consistency_table(summary: dict[str, InstanceSummary]) -> Table:
    """Instances where two proven optima disagree (should be empty)."""
    out = []
    for s in summary.values():
        vals = [v for _, v in s.optima]
        if vals and max(vals) > min(vals) * (1 + OPTIMAL_RTOL) + 1e-12:
            out.append([s.key, "; ".join(f"{m}: {v:.9g}" for m, v in s.optima)])
    return Table(
        "consistency",
        "Proven optima that disagree",
        ["instance", "optima"],
        out,
        [str, str],
        note=f"{len(out)} instances.",
    )


# -- the original study's way of averaging ----------------------------------------------------


def _original_value(rec: dict) -> float:
    """What the original study would have averaged for this run."""
    if rec.get("status") == "infeasible":
        return math.inf
    if _has_plan(rec):
        return rec["bottleneck_s"]
    unchecked = (rec.get("info") or {}).get("unchecked_bottleneck_s")
    if unchecked is not None:
        return unchecked  # an over-memory plan the original reported as if it were valid
    return 0.0  # the original averaged a failure in as 0


def config_averages(rows: Sequence[dict]) -> dict[tuple, float]:
    """The original study's per-configuration average bottleneck.

    Keys ``(regime, method, model, capacity_mb, nodes, C)`` with the model
    name in lower case (as the published CSVs are read); a failure counts as
    0, a proven infeasibility as ``inf`` (the average then is ``nan``, as in
    the published CSVs).
    """
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        groups[
            (r["regime"], r["method"], r["model"].lower(), r["capacity_mb"], r["nodes"], r.get("C"))
        ].append(_original_value(r))
    return {
        k: (float(np.mean(v)) if all(map(math.isfinite, v)) else math.nan)
        for k, v in groups.items()
    }


def _published_configs(published: dict, method: str) -> set[tuple] | None:
    rows = published.get(method)
    if rows is None:
        return None
    return {(r["model"], r["capacity_mb"], r["nodes"], r["C"]) for r in rows}


def _original_mean(
    avgs: dict,
    reg: str,
    method: str,
    nodes: int | None,
    allowed: set | None,
    fits_one: dict | None = None,
) -> tuple[float | None, int]:
    """Mean over configurations of the per-configuration averages (nan dropped)."""
    vals = []
    for (rg, m, model, cap, n, c), v in avgs.items():
        if rg != reg or m != method or (nodes is not None and n != nodes) or math.isnan(v):
            continue
        if allowed is not None:
            if (model, cap, n, c) not in allowed:
                continue
        elif fits_one is not None and c is None and fits_one.get((rg, model, cap)):
            continue  # without published CSVs: baselines were not run where one node suffices
        vals.append(v)
    return (float(np.mean(vals)) if vals else None), len(vals)


def _fits_one_node(rows: Sequence[dict]) -> dict[tuple, bool]:
    out: dict[tuple, bool] = {}
    for r in rows:
        if r.get("min_stages") is not None:
            out[(r["regime"], r["model"].lower(), r["capacity_mb"])] = r["min_stages"] <= 1
    return out


def _published_mean(published: dict, method: str, nodes: int | None) -> float | None:
    vals = [
        r["value"]
        for r in published.get(method, [])
        if (nodes is None or r["nodes"] == nodes) and not math.isnan(r["value"])
    ]
    return float(np.mean(vals)) if vals else None


def _matched(
    rows: Sequence[dict], reg: str, labels: Sequence[str], nodes: int
) -> list[dict[str, dict]]:
    """Per nontrivial, feasible instance of ``reg`` with ``nodes`` nodes where every label has a
    plan: label -> record."""
    per: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        if r["regime"] == reg and r["label"] in labels and r["nodes"] == nodes:
            per[r["instance_key"]][r["label"]] = r
    out = []
    for recs in per.values():
        if len(recs) != len(labels) or not all(_has_plan(x) for x in recs.values()):
            continue
        any_rec = next(iter(recs.values()))
        if not any_rec["nontrivial"] or any_rec["infeasible_instance"]:
            continue
        out.append(recs)
    return out


def _seifer_labels(rows: Sequence[dict]) -> list[tuple[str, str]]:
    """(method, label at the headline C) for seifer and seifer-original, when present."""
    have = {(r["method"], r["label"]) for r in rows}
    out = []
    for method in ("seifer", "seifer-original"):
        labs = sorted(lab for m, lab in have if m == method)
        if not labs:
            continue
        pick = next((lab for lab in labs if f"C={HEADLINE_CLASSES}" in lab.split()), labs[-1])
        out.append((method, pick))
    return out


def headline_table(rows: Sequence[dict], published: dict, numbers: dict | None = None) -> Table:
    """The three published claims, computed the original way and the right way.

    * random vs seifer at N = 50: mean bottleneck of random / of seifer;
    * greedy vs seifer at N = 50: 1 - mean of seifer / mean of greedy;
    * seifer's approximation ratio at N = 50, 64 MB, C = 20, over the models
      of the published CSVs: mean of seifer / mean of the original lower
      bound over the clusters where it returned a plan (original way), mean
      of seifer / optimum per nontrivial instance (right way).

    The original way averages per configuration (see module docstring); the
    right way takes matched, nontrivial instances of one cluster each, seifer
    at C = 20, and for the first two claims also gives the median of the
    per-instance ratios. ``numbers`` (if given) receives every value under
    a dotted name for the paper.
    """
    numbers = {} if numbers is None else numbers
    avgs = config_averages(rows)
    fits_one = _fits_one_node(rows)
    out = []
    regimes = sorted({r["regime"] for r in rows})
    labels_present = {r["label"] for r in rows}

    def put(name, value):
        numbers[name] = value
        return value

    pub_r, pub_g = (
        _published_mean(published, "random", 50),
        _published_mean(published, "greedy", 50),
    )
    pub_k = _published_mean(published, "seifer", 50)
    pub_10x = None if pub_r is None or not pub_k else pub_r / pub_k
    pub_35 = None if pub_g is None or pub_k is None else 1 - pub_k / pub_g
    put("published.random_vs_seifer", pub_10x)
    put("published.greedy_vs_seifer", pub_35)

    for reg in regimes:
        regrows = [r for r in rows if r["regime"] == reg]
        for method, lab in _seifer_labels(regrows):
            tag = f"{_slug(reg)}.{method}"
            allowed_k = _published_configs(published, "seifer")
            k_orig, n_k = _original_mean(avgs, reg, method, 50, allowed_k, fits_one=fits_one)
            # claim 1: random vs seifer
            if "random" in labels_present:
                r_orig, n_r = _original_mean(
                    avgs,
                    reg,
                    "random",
                    50,
                    _published_configs(published, "random"),
                    fits_one=fits_one,
                )
                orig = None if r_orig is None or not k_orig else r_orig / k_orig
                m = _matched(regrows, reg, ["random", lab], 50)
                right, med = _ratio_of_means(m, "random", lab)
                out.append(
                    [
                        "random vs seifer at N=50 (bottleneck of random / of seifer)",
                        reg,
                        lab,
                        "10x",
                        pub_10x,
                        put(f"{tag}.random_vs_seifer.original", orig),
                        put(f"{tag}.random_vs_seifer.right", right),
                        put(f"{tag}.random_vs_seifer.right_median", med),
                        put(f"{tag}.random_vs_seifer.matched", len(m)),
                    ]
                )
            # claim 2: greedy vs seifer
            if "greedy" in labels_present:
                g_orig, _ = _original_mean(
                    avgs,
                    reg,
                    "greedy",
                    50,
                    _published_configs(published, "greedy"),
                    fits_one=fits_one,
                )
                orig = None if g_orig is None or k_orig is None else 1 - k_orig / g_orig
                m = _matched(regrows, reg, ["greedy", lab], 50)
                ratio, med = _ratio_of_means(m, lab, "greedy")
                right = None if ratio is None else 1 - ratio
                out.append(
                    [
                        "greedy vs seifer at N=50 (1 - seifer / greedy)",
                        reg,
                        lab,
                        "35%",
                        pub_35,
                        put(f"{tag}.greedy_vs_seifer.original", orig),
                        put(f"{tag}.greedy_vs_seifer.right", right),
                        put(
                            f"{tag}.greedy_vs_seifer.right_median", None if med is None else 1 - med
                        ),
                        put(f"{tag}.greedy_vs_seifer.matched", len(m)),
                    ]
                )
            # claim 3: approximation ratio
            # over the models the original studied (all models without its CSVs)
            studied = {r["model"] for r in published.get("seifer", [])}
            sel = [
                r
                for r in regrows
                if r["label"] == lab
                and r["nodes"] == 50
                and r["capacity_mb"] == 64
                and (not studied or r["model"].lower() in studied)
            ]
            # the original bound needs the chosen partition, so only clusters with a plan count
            with_bound = [r for r in sel if r["original_bound_s"] is not None]
            bounds = [r["original_bound_s"] for r in with_bound]
            orig = None
            if bounds and sum(bounds) > 0:
                orig = float(np.mean([r["bottleneck_s"] for r in with_bound])) / float(
                    np.mean(bounds)
                )
            ok = [r for r in sel if r["ratio"] is not None and r["nontrivial"]]
            right = float(np.mean([r["ratio"] for r in ok])) if ok else None
            med = float(np.median([r["ratio"] for r in ok])) if ok else None
            out.append(
                [
                    "seifer's approximation ratio at N=50, 64 MB",
                    reg,
                    lab,
                    "1.092",
                    None,
                    put(f"{tag}.approximation.original", orig),
                    put(f"{tag}.approximation.right", right),
                    put(f"{tag}.approximation.right_median", med),
                    put(f"{tag}.approximation.matched", len(ok)),
                ]
            )
            put(f"{tag}.configs_at_n50", n_k)
    headers = [
        "claim",
        "regime",
        "seifer variant",
        "claimed",
        "published CSVs",
        "ours, original way",
        "ours, right way",
        "right way, median",
        "matched instances",
    ]
    fmts = [str, str, str, str, _fmt_claim, _fmt_claim, _fmt_claim, _fmt_claim, _fmt_int]
    note = (
        "Original way: per-configuration averages (failures as 0, infeasible as inf), over the "
        "configurations the published CSVs report (including, for seifer, those where the model "
        "fits one node), against the original lower bound max(chosen transfer) / max(bandwidth). "
        "Right way: matched instances (same cluster, model needs two or more nodes, both methods "
        "return a plan), ratio of mean bottlenecks; the approximation ratio is the mean of "
        "bottleneck / proven optimum. Median: of the per-instance ratios. The approximation "
        "ratio covers the models of the published CSVs, at C = 20."
    )
    return Table("headline", "The headline claims, recomputed", headers, out, fmts, note)


def _fmt_claim(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and abs(v) < 1 and v != 0:
        return f"{v:.4f}"
    return _fmt_any(v)


def _ratio_of_means(matched: list[dict[str, dict]], num: str, den: str):
    if not matched:
        return None, None
    a = np.array([m[num]["bottleneck_s"] for m in matched])
    b = np.array([m[den]["bottleneck_s"] for m in matched])
    if b.sum() <= 0:
        return None, None
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(b > 0, a / np.where(b > 0, b, 1), np.where(a > 0, np.inf, 1.0))
    return float(a.sum() / b.sum()), float(np.median(per))


def reproduction_table(rows: Sequence[dict], published: dict) -> Table:
    """Our per-configuration averages (original way, ``paper`` models) next to the published ones."""
    paper_rows = [r for r in rows if r["regime"] == "paper/paper"]
    avgs = config_averages(paper_rows)
    optima = _config_optima(paper_rows)
    out = []
    methods_for = {
        "random": ["random"],
        "greedy": ["greedy"],
        "seifer": ["seifer", "seifer-original"],
    }
    for pub_method, pub_rows in published.items():
        for pr in pub_rows:
            config = (pr["model"], pr["capacity_mb"], pr["nodes"])
            opt = optima.get(config)
            below = None
            if opt is not None and opt > 0 and not math.isnan(pr["value"]):
                below = pr["value"] / opt
            for ours in methods_for[pub_method]:
                mine = avgs.get(("paper/paper", ours, *config, pr["C"]))
                if mine is None:
                    continue
                rel = None
                if not math.isnan(pr["value"]) and not math.isnan(mine) and pr["value"] > 0:
                    rel = mine / pr["value"]
                out.append(
                    [
                        ours,
                        PUBLISHED_MODELS.get(pr["model"], pr["model"]),
                        pr["capacity_mb"],
                        pr["nodes"],
                        pr["C"],
                        pr["value"],
                        mine,
                        rel,
                        opt,
                        below,
                    ]
                )
    out.sort(key=lambda r: (r[0], r[1], r[2], r[3], r[4] or 0))
    headers = [
        "method",
        "model",
        "capacity MB",
        "N",
        "C",
        "published s",
        "ours s",
        "ours / published",
        "optimum s",
        "published / optimum",
    ]
    fmts = [
        str,
        str,
        _fmt_num,
        _fmt_int,
        _fmt_int,
        _fmt_any,
        _fmt_any,
        _fmt_ratio,
        _fmt_any,
        _fmt_ratio,
    ]
    return Table(
        "reproduction_onnx",
        "The published per-configuration averages against the ONNX-derived chain",
        headers,
        out,
        fmts,
        note="Both under the paper memory and transfer models, averaged the original way "
        "(failures as 0, infeasible as inf, shown as nan). Optimum: the mean proven "
        "optimum of the configuration's clusters under the same models; a published "
        "average below it (published / optimum < 1) is below what any valid plan "
        "achieves under partopt's reading of those models.",
    )


def _config_optima(rows: Sequence[dict]) -> dict[tuple, float]:
    """Mean proven optimum per ``(model, capacity_mb, nodes)``, when every cluster has one."""
    per: dict[tuple, dict[str, float | None]] = defaultdict(dict)
    for r in rows:
        per[(r["model"].lower(), r["capacity_mb"], r["nodes"])][r["instance_key"]] = r["optimum"]
    return {k: float(np.mean(list(v.values()))) for k, v in per.items() if None not in v.values()}


def reproduction_summary(repro: Table) -> Table:
    """Per method: configurations compared and the median / min / max of ours / published."""
    groups: dict[str, list[float]] = defaultdict(list)
    below: dict[str, list[float]] = defaultdict(list)
    count: dict[str, int] = defaultdict(int)
    for row in repro.rows:
        count[row[0]] += 1
        if row[7] is not None:
            groups[row[0]].append(row[7])
        if row[9] is not None:
            below[row[0]].append(row[9])
    out = []
    for method in sorted(count):
        v = np.asarray(groups[method]) if groups[method] else None
        out.append(
            [
                method,
                count[method],
                len(groups[method]),
                None if v is None else float(np.median(v)),
                None if v is None else float(v.min()),
                None if v is None else float(v.max()),
                len(below[method]),
                sum(b < 1 - OPTIMAL_RTOL for b in below[method]),
            ]
        )
    return Table(
        "reproduction_onnx_summary",
        "The ONNX-derived chain against the published averages, summary",
        [
            "method",
            "configurations",
            "compared",
            "median ours / published",
            "min",
            "max",
            "with optimum",
            "published below optimum",
        ],
        out,
        [str, _fmt_int, _fmt_int, _fmt_ratio, _fmt_ratio, _fmt_ratio, _fmt_int, _fmt_int],
        note="Compared: configurations where both averages are finite and the published one "
        "is positive. Published below optimum: configurations whose published average "
        "is smaller than the mean proven optimum under partopt's paper models.",
    )


# -- figures ------------------------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ValueError(
            "partopt report draws its figures with matplotlib: pip install matplotlib"
        ) from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, outdir: Path, name: str, tight: bool = True) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext, meta in (
        ("png", {"Software": None}),
        ("pdf", {"CreationDate": None, "Producer": None}),
    ):
        p = outdir / f"{name}.{ext}"
        fig.savefig(
            p,
            dpi=130 if ext == "png" else None,
            bbox_inches="tight" if tight else None,
            metadata=meta,
        )
        paths.append(p)
    _pyplot().close(fig)
    return paths


def _main_labels(rows: Sequence[dict]) -> list[str]:
    """Every label, but seifer variants only at the headline C (or their largest C)."""
    keep = {lab for m, lab in _seifer_labels(rows)}
    labs = set()
    for r in rows:
        if r["method"] in ("seifer", "seifer-original"):
            if r["label"] in keep:
                labs.add(r["label"])
        else:
            labs.add(r["label"])
    return sorted(labs, key=_label_sort_key)


def figure_bottleneck_vs_n(rows: Sequence[dict], reg: str, outdir: Path) -> list[Path]:
    """Mean bottleneck vs N per model (rows) and capacity (columns), every method and the optimum.

    Each point averages the instances where every method drawn in that panel
    returned a plan; a method that returned plans for fewer than half of a
    panel's instances (``seifer-original`` where its memory defect strikes)
    is left out of that panel rather than shrinking the others' sample.
    """
    plt = _pyplot()
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    regrows = [r for r in rows if r["regime"] == reg]
    models = sorted({r["model"] for r in regrows})
    caps = sorted({r["capacity_mb"] for r in regrows})
    labs = [lab for lab in _main_labels(regrows)]
    if not models or not caps or not labs:
        return []
    fig, axes = plt.subplots(
        len(models),
        len(caps),
        figsize=(2.6 * len(caps) + 1, 2.1 * len(models) + 0.6),
        squeeze=False,
        sharex=True,
    )
    colors = plt.get_cmap("tab10")
    panels: dict[tuple, list[dict]] = defaultdict(list)
    for r in regrows:
        panels[(r["model"], r["capacity_mb"])].append(r)
    for i, model in enumerate(models):
        for j, cap in enumerate(caps):
            ax = axes[i][j]
            sub = panels[(model, cap)]
            per: dict[str, dict[str, dict]] = defaultdict(dict)
            for r in sub:
                per[r["instance_key"]][r["label"]] = r
            ns = sorted({r["nodes"] for r in sub})
            drawn = [
                lab
                for lab in labs
                if 2 * sum(lab in v and _has_plan(v[lab]) for v in per.values()) >= len(per)
            ]
            series: dict[str, list] = defaultdict(list)
            for n in ns:
                inst = [
                    v
                    for v in per.values()
                    if next(iter(v.values()))["nodes"] == n
                    and all(lab in v and _has_plan(v[lab]) for lab in drawn)
                ]
                for lab in drawn:
                    series[lab].append(
                        np.mean([v[lab]["bottleneck_s"] for v in inst]) if inst else np.nan
                    )
                opt = [next(iter(v.values()))["optimum"] for v in inst]
                series["optimum"].append(np.mean(opt) if inst and None not in opt else np.nan)
            for lab in drawn:
                ax.plot(
                    ns, series[lab], marker="o", ms=3, lw=1.2, color=colors(labs.index(lab) % 10)
                )
            ax.plot(ns, series["optimum"], color="black", ls="--", lw=1.2)
            if sub and not any(r["nontrivial"] for r in sub):
                ax.text(
                    0.5,
                    0.08,
                    "fits one node: optimum 0",
                    transform=ax.transAxes,
                    ha="center",
                    fontsize=7,
                    color="0.3",
                )
            if i == 0:
                ax.set_title(f"{cap:g} MB", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{PUBLISHED_MODELS.get(model, model)}\nbottleneck (s)", fontsize=8)
            if i == len(models) - 1:
                ax.set_xlabel("nodes N", fontsize=8)
            if any(v > 0 for vals in series.values() for v in vals if np.isfinite(v)):
                ax.set_yscale("log")  # bottlenecks span decades; a one-node 0 is not drawn
                # labelled ticks at 1, 2, 5 x 10^k; matplotlib's default minor labels are slow
                ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
                ax.yaxis.set_minor_formatter(NullFormatter())
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3, which="both")
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", ms=3, lw=1.2, color=colors(k % 10)) for k in range(len(labs))
    ]
    handles.append(Line2D([], [], color="black", ls="--", lw=1.2))
    labels_ = [*labs, "optimum"]
    height = fig.get_figheight()
    legend_rows = -(-len(labels_) // 5)
    fig.legend(
        handles, labels_, loc="lower center", ncol=min(len(labels_), 5), fontsize=8, frameon=False
    )
    fig.suptitle(f"Mean bottleneck vs N ({reg} models)", fontsize=10, y=1 - 0.2 / height)
    # fixed margins: tight_layout on a grid of log axes takes most of a report's time
    fig.subplots_adjust(
        left=0.09,
        right=0.98,
        top=1 - 0.75 / height,
        bottom=(0.45 + 0.2 * legend_rows) / height,
        hspace=0.12,
        wspace=0.28,
    )
    return _save(fig, outdir, f"bottleneck_vs_n_{_slug(reg)}", tight=False)


def figure_gap_distribution(rows: Sequence[dict], reg: str, outdir: Path) -> list[Path]:
    """Cumulative distribution of the gap to the proven optimum (bottleneck / optimum - 1), per method."""
    plt = _pyplot()
    regrows = [
        r
        for r in rows
        if r["regime"] == reg
        and r["ratio"] is not None
        and r["nontrivial"]
        and math.isfinite(r["ratio"])
    ]
    labs = [lab for lab in _main_labels(regrows)]
    if not labs:
        return []
    fig, ax = plt.subplots(figsize=(6, 3.6))
    colors = plt.get_cmap("tab10")
    for k, lab in enumerate(labs):
        gaps = np.sort([100 * (r["ratio"] - 1) for r in regrows if r["label"] == lab])
        if not len(gaps):
            continue
        x = np.maximum(np.concatenate([gaps[:1], gaps]), 0)
        y = np.arange(len(gaps) + 1) / len(gaps)
        # methods with identical results overlap exactly: line styles keep each visible
        ax.step(
            x,
            y,
            where="post",
            color=colors(k % 10),
            ls=("-", "--", ":", "-.")[k % 4],
            lw=2.2 - 0.2 * (k % 4),
            label=f"{lab} (n={len(gaps)})",
        )
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("gap to the proven optimum (%), symlog scale")
    ax.set_ylabel("share of instances")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"Gap distribution ({reg} models)", fontsize=10)
    fig.tight_layout()
    return _save(fig, outdir, f"gap_distribution_{_slug(reg)}")


def figure_solve_time(
    rows: Sequence[dict], outdir: Path, name: str = "solve_time_scaling"
) -> list[Path]:
    """Median solver time (log scale) vs N and vs the number of blocks, per method, with IQR bands."""
    plt = _pyplot()
    rows = [r for r in rows if r.get("runtime_s") is not None and r.get("status") != "infeasible"]
    labs = _main_labels(rows)
    if not labs:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = plt.get_cmap("tab10")
    for ax, xkey, xlabel in ((axes[0], "nodes", "nodes N"), (axes[1], "num_blocks", "blocks")):
        times: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in rows:
            if r.get(xkey) is not None:
                times[r["label"]][r[xkey]].append(max(r["runtime_s"], 1e-6))
        for k, lab in enumerate(labs):
            by = times.get(lab)
            if not by:
                continue
            xs = sorted(by)
            q = np.array([np.percentile(by[x], [25, 50, 75]) for x in xs])
            ax.plot(xs, q[:, 1], marker="o", ms=3, color=colors(k % 10), label=lab)
            ax.fill_between(xs, q[:, 0], q[:, 2], color=colors(k % 10), alpha=0.15, lw=0)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("solver time (s), median and IQR")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle("Solve time scaling", fontsize=10)
    fig.tight_layout()
    return _save(fig, outdir, name)


# -- the paper ------------------------------------------------------------------------------------

_DIRECTIVE = re.compile(r"\{\{\s*(table|figure|number|csv)\s+([^\s}]+)\s*(?:\|\s*([^}]*?)\s*)?\}\}")


def _format_number(value, spec: str | None) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if spec:
        return format(value, spec)
    return _fmt_any(value) if isinstance(value, float) else str(value)


def render_template(
    template: str,
    generated: Path,
    relative_to: Path,
    numbers: dict,
    missing: list[str] | None = None,
) -> str:
    """Fill a paper template's directives from the generated files.

    ``{{table NAME}}`` includes ``tables/NAME.md``; ``{{csv NAME}}`` links
    ``tables/NAME.csv``; ``{{figure NAME | caption}}`` links
    ``figures/NAME.png`` (with a link to the PDF); ``{{number KEY | fmt}}``
    inserts a value of ``numbers.json`` with a Python format spec
    (``.1%`` = percent with one decimal). Paths are written relative to
    ``relative_to`` (the paper's folder). A directive naming nothing
    generated raises :class:`ValueError`, unless a ``missing`` list is
    given: then it is rendered as "n/a" and its name appended to the list
    (results still to come).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> render_template("x = {{number a.b | .2f}}, {{number c | .1%}}", d, d, {"a.b": 1.2345, "c": 0.5})
    'x = 1.23, 50.0%'
    """

    def rel(p: Path) -> str:
        import os

        return Path(os.path.relpath(p, relative_to)).as_posix()

    def sub(m: re.Match) -> str:
        kind, name, arg = m.group(1), m.group(2), m.group(3)

        def absent(what: str) -> str:
            if missing is None:
                raise ValueError(f"template: no generated {what} {name!r}")
            missing.append(f"{what} {name}")
            return "n/a" if kind == "number" else f"*({what} {name}: no data yet)*"

        if kind == "number":
            if name not in numbers:
                return absent("number")
            return _format_number(numbers[name], arg)
        if kind == "table":
            p = generated / "tables" / f"{name}.md"
            if not p.exists():
                return absent("table")
            return p.read_text().rstrip("\n") + f"\n\n([CSV]({rel(p.with_suffix('.csv'))}))"
        if kind == "csv":
            p = generated / "tables" / f"{name}.csv"
            if not p.exists():
                return absent("table")
            return f"[{arg or name + '.csv'}]({rel(p)})"
        p = generated / "figures" / f"{name}.png"
        if not p.exists():
            return absent("figure")
        return f"![{arg or name}]({rel(p)})\n\n*{arg or ''}* ([PDF]({rel(p.with_suffix('.pdf'))}))"

    return _DIRECTIVE.sub(sub, template)


def _json_number(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _write_table(t: Table, outdir: Path) -> list[Path]:
    d = outdir / "tables"
    d.mkdir(parents=True, exist_ok=True)
    md, cs = d / f"{t.name}.md", d / f"{t.name}.csv"
    md.write_text(t.markdown())
    cs.write_text(t.csv())
    return [md, cs]


def _default_published() -> Path | None:
    for cand in (Path("paper/data"), Path(__file__).resolve().parent.parent / "paper" / "data"):
        if (cand / PUBLISHED_FILES["seifer"]).exists():
            return cand
    return None


def _grid_numbers(rows: Sequence[dict], numbers: dict) -> None:
    """What each regime's grid covers, for the paper's setup section."""
    for reg in sorted({r["regime"] for r in rows}):
        sub = [r for r in rows if r["regime"] == reg]
        tag = f"grid.{_slug(reg)}"
        models = sorted({r["model"] for r in sub})
        numbers[f"{tag}.models"] = ", ".join(PUBLISHED_MODELS.get(m, m) for m in models)
        numbers[f"{tag}.capacities_mb"] = ", ".join(
            f"{c:g}" for c in sorted({r["capacity_mb"] for r in sub})
        )
        numbers[f"{tag}.nodes"] = ", ".join(str(n) for n in sorted({r["nodes"] for r in sub}))
        numbers[f"{tag}.instances"] = len({r["instance_key"] for r in sub})
        numbers[f"{tag}.records"] = len(sub)
        numbers[f"{tag}.methods"] = ", ".join(sorted({r["method"] for r in sub}))
        per_config: dict[tuple, set] = defaultdict(set)
        for r in sub:
            per_config[(r["model"], r["capacity_mb"], r["nodes"])].add(r["seed"])
        numbers[f"{tag}.clusters_per_configuration"] = int(
            np.median([len(v) for v in per_config.values()])
        )
        numbers[f"{tag}.nontrivial_instances"] = len(
            {r["instance_key"] for r in sub if r["nontrivial"]}
        )
        numbers[f"{tag}.infeasible_instances"] = len(
            {r["instance_key"] for r in sub if r["infeasible_instance"]}
        )
        # stages of exact's plans where the model needs two or more nodes
        stages = [
            r["stages"]
            for r in sub
            if r["method"] == "exact"
            and r.get("stages")
            and r["status"] == "optimal"
            and r["nontrivial"]
        ]
        if stages:
            numbers[f"{tag}.optimal_stages_min"] = min(stages)
            numbers[f"{tag}.optimal_stages_median"] = float(np.median(stages))
            numbers[f"{tag}.optimal_stages_max"] = max(stages)


def _is_scaling(rec: dict) -> bool:
    return str(rec.get("sweep", "")).startswith("scaling")


def write_report(
    results: Iterable[str | Path],
    outdir: str | Path,
    *,
    published_dir: str | Path | None = None,
    template: str | Path | None = None,
    paper: str | Path | None = None,
    missing: list[str] | None = None,
) -> list[Path]:
    """Write every table, figure and ``numbers.json`` under ``outdir``; render the paper.

    Records of sweeps named ``scaling*`` go to the scaling tables and the
    solve-time figure only; all others to the study tables and figures.
    Directives of the template that find no data yet are rendered "n/a" and
    listed in ``missing`` (if given; otherwise they raise). Returns the
    files written.
    """
    results = list(results)
    outdir = Path(outdir)
    records = load_records(results)
    if not records:
        raise ValueError("no records in " + ", ".join(map(str, results)))
    summary = instance_summary(records)
    all_rows = annotate(records, summary)
    rows = [r for r in all_rows if not _is_scaling(r)]
    scaling = [r for r in all_rows if _is_scaling(r)]
    published = load_published(published_dir if published_dir is not None else _default_published())
    numbers: dict = {
        "records": len(records),
        "instances": len(summary),
        "instances_with_optimum": sum(s.optimum is not None for s in summary.values()),
        "methods": ", ".join(sorted({r["method"] for r in records})),
    }
    _grid_numbers(rows, numbers)
    written: list[Path] = []
    overall = quality_table(
        rows, (), "quality_overall", "Ratio to the proven optimum, all instances"
    )
    runtime = runtime_table(rows, (), "runtime_overall", "Solver runtime, all instances")
    consistency = consistency_table(summary)
    tables = [
        quality_table(
            rows,
            ("model", "capacity_mb"),
            "quality_by_model_capacity",
            "Ratio to the proven optimum by model and capacity",
        ),
        quality_table(rows, ("model",), "quality_by_model", "Ratio to the proven optimum by model"),
        overall,
        quality_table(rows, ("nodes",), "quality_by_nodes", "Ratio to the proven optimum by N"),
        runtime_table(rows, ("nodes",), "runtime_by_nodes", "Solver runtime by N"),
        runtime,
        bound_gap_table(rows),
        consistency,
        headline_table(rows, published, numbers),
    ]
    if scaling:
        scaling_overall = runtime_table(
            scaling, (), "scaling_overall", "Solve time over the whole scaling study"
        )
        for row in scaling_overall.rows:  # regime, label, runs, median, mean, p95, max, proven
            tag = f"scaling.{_slug(row[0])}.{_slug(row[1])}"
            numbers[f"{tag}.runs"], numbers[f"{tag}.median_s"] = row[2], row[3]
            numbers[f"{tag}.max_s"], numbers[f"{tag}.proven"] = row[6], row[7]
        tables += [
            scaling_overall,
            runtime_table(
                scaling,
                ("cuts", "nodes"),
                "scaling_by_nodes",
                "Solve time as the cluster grows (scaling study)",
            ),
            runtime_table(
                scaling,
                ("model", "num_blocks"),
                "scaling_by_blocks",
                "Solve time as the chain grows (scaling study)",
            ),
        ]
    if published:
        onnx_rows = [r for r in rows if r.get("cuts") != "keras"]
        repro = reproduction_table(onnx_rows, published)
        tables += [repro, reproduction_summary(repro)]
        for row in tables[-1].rows:
            tag = f"reproduction_onnx.{_slug(row[0])}"
            numbers[f"{tag}.median_ratio"], numbers[f"{tag}.compared"] = row[3], row[2]
            numbers[f"{tag}.with_optimum"], numbers[f"{tag}.below_optimum"] = row[6], row[7]
        faithful = [r for r in rows if r.get("cuts") == "keras"]
        if faithful:
            from partopt.report_seifer import faithful_tables

            tables += faithful_tables(faithful, published, numbers)
    for t in tables:
        written += _write_table(t, outdir)
    for row in overall.rows:  # regime, label, ...
        tag = f"quality.{_slug(row[0])}.{_slug(row[1])}"
        for name, v in zip(
            ("instances", "solved", "mean", "median", "max", "optimal"), row[2:], strict=True
        ):
            numbers[f"{tag}.{name}"] = v
    for row in runtime.rows:  # regime, label, runs, median, mean, p95, max, proven
        tag = f"runtime.{_slug(row[0])}.{_slug(row[1])}"
        numbers[f"{tag}.median_s"], numbers[f"{tag}.max_s"] = row[3], row[6]
        numbers[f"{tag}.proven"] = row[7]
    numbers["consistency.disagreements"] = len(consistency.rows)

    figdir = outdir / "figures"
    for reg in sorted({r["regime"] for r in rows}):
        written += figure_bottleneck_vs_n(rows, reg, figdir)
        written += figure_gap_distribution(rows, reg, figdir)
    written += figure_solve_time(scaling or rows, figdir)

    nums = outdir / "numbers.json"
    nums.write_text(
        json.dumps(
            {k: _json_number(numbers[k]) for k in sorted(numbers)}, indent=1, allow_nan=False
        )
        + "\n"
    )
    written.append(nums)
    if template is not None:
        template = Path(template)
        paper = (
            Path(paper)
            if paper is not None
            else template.with_name(template.name.replace(".template", ""))
        )
        if paper.resolve() == template.resolve():
            raise ValueError(f"the rendered paper would overwrite its template {template}")
        paper.write_text(
            render_template(template.read_text(), outdir, paper.parent, numbers, missing)
        )
        written.append(paper)
    return written
