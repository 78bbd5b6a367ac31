"""Sweep records -> tables (Markdown and CSV), figures (PNG and PDF) and numbers.

This module reads the JSON records that :mod:`partopt.experiments` writes
and never imports a solver: every number here is recomputed from records.
It holds the records' loading and annotation, the generic tables and
:func:`write_report`; the original study's claims live in
:mod:`partopt.report_claims` (and, on the original's own chain,
:mod:`partopt.report_seifer`), the figures in :mod:`partopt.report_figures`
and the paper's template rendering in :mod:`partopt.report_template`.

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
*original way*
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
import dataclasses
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

from partopt.errors import PartoptError

__all__ = [
    "ReportError",
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
            raise ReportError(f"no results file or folder {str(p)!r}")
    return files


def load_records(paths: Iterable[str | Path]) -> list[dict]:
    """Records from JSON-lines files (plain or ``.gz``) or folders of them, one per run and sweep.

    A truncated last line (a killed sweep) is skipped; when the same run of
    the same sweep appears twice (in two files), the later one is kept. The
    same run in two sweeps (the scaling study repeats some instances of the
    grids) is kept once per sweep.
    """
    from partopt.experiments.records import read_records  # the results-file format

    by_key: dict[tuple, dict] = {}
    for path in _result_files(paths):
        for rec in read_records(path):
            if "instance_key" not in rec:
                raise ReportError(f"{path}: record {rec['run_key']!r} has no instance_key")
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


class ReportError(PartoptError):
    """Results, templates or options a report cannot be made from."""


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
    markdown_rows: list[list] | None = None
    """Rows of the Markdown table when it shows fewer than the CSV (see
    :func:`collapse_identical`); ``None``: the same rows."""

    def markdown(self) -> str:
        fmts = self.formats or [_fmt_any] * len(self.headers)
        rows = self.rows if self.markdown_rows is None else self.markdown_rows
        text_col = [all(isinstance(r[i], str) for r in rows) for i in range(len(self.headers))]
        lines = [
            "| " + " | ".join(self.markdown_headers or self.headers) + " |",
            "|" + "|".join("---" if t else "---:" for t in text_col) + "|",
        ]
        for row in rows:
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


def collapse_identical(t: Table, column: str = "method") -> Table:
    """The table whose Markdown merges runs of rows that differ only in a method's ``C``.

    Consecutive rows whose ``column`` reads ``NAME C=k`` for the same NAME
    and whose other cells all print the same become one row
    ``NAME C=a, b, c``; the CSV keeps every row.

    >>> t = Table("t", "", ["method", "x"], [["s C=2", 1.0], ["s C=5", 2.0], ["s C=8", 2.0]])
    >>> [r[0] for r in collapse_identical(t).markdown_rows]
    ['s C=2', 's C=5, 8']
    """
    i = t.headers.index(column)
    fmts = t.formats or [_fmt_any] * len(t.headers)

    def shown(row: list) -> tuple:
        return tuple(f(v) for j, (f, v) in enumerate(zip(fmts, row, strict=True)) if j != i)

    merged: list[list] = []
    last_key = None
    for row in t.rows:
        m = re.fullmatch(r"(.+) C=(\d+)", str(row[i]))
        key = (m.group(1), shown(row)) if m else None
        if key is not None and key == last_key:
            merged[-1][i] += f", {m.group(2)}"  # type: ignore[union-attr]
        else:
            merged.append(list(row))
        last_key = key
    return dataclasses.replace(t, markdown_rows=merged)


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
        "optimal (fraction)",
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
        markdown_headers=[h.replace(" (fraction)", "") for h in headers],
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
        ["regime", "method", "instances", "unproven", *(f"{s} gap (fraction)" for s in _GAPS)],
        out,
        [str, str, _fmt_int, _fmt_int, _fmt_pct, _fmt_pct, _fmt_pct],
        note="Gap = (bottleneck - best bound) / bottleneck; the best bound of an instance "
        "is its proven optimum, or else the largest lower bound any run reported.",
        markdown_headers=[
            "regime",
            "method",
            "instances",
            "unproven",
            *(f"{s} gap" for s in _GAPS),
        ],
    )


_GAPS = ("mean", "median", "max")


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
        "proven optimal (fraction)",
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
        markdown_headers=[h.replace("(s)", "(ms)").replace(" (fraction)", "") for h in headers],
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


CHAIN_COST_FILE = "bench_dag_chain.csv"
"""The chain-cost benchmark's CSV; read from every results folder that holds one."""

_TEXT_REGIMES = ("paper/paper", "peak/bytes")
"""Regimes the paper's summary tables show; the CSVs keep every regime."""


def _in_text(t: Table, classes: int | None = None) -> Table:
    """The table with its Markdown rows kept to the regimes of :data:`_TEXT_REGIMES`.

    With ``classes``, k-path matching is shown with that many bandwidth
    classes only (``C=classes``); the other variants stay in the CSV.
    """
    rows = t.rows if t.markdown_rows is None else t.markdown_rows
    kept = [r for r in rows if r[0] in _TEXT_REGIMES]
    if classes is not None:
        kept = [r for r in kept if " C=" not in r[1] or r[1].endswith(f" C={classes}")]
    if len(kept) == len(rows):
        return t
    others = ", ".join(sorted({r[0] for r in rows} - set(_TEXT_REGIMES)))
    dropped = [f"regime {others}"] if others else []
    if classes is not None:
        dropped.append(f"k-path matching with C other than {classes}")
    note = (t.note + " " if t.note else "") + f"In the CSV only: {'; '.join(dropped)}."
    return dataclasses.replace(t, markdown_rows=kept, note=note)


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
    from partopt.report_claims import headline_table, reproduction_summary, reproduction_table
    from partopt.report_figures import (
        figure_bottleneck_vs_n,
        figure_gap_distribution,
        figure_solve_time,
    )
    from partopt.report_template import render_template

    results = list(results)
    outdir = Path(outdir)
    records = load_records(results)
    if not records:
        raise ReportError("no records in " + ", ".join(map(str, results)))
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
    text_tables = [
        _in_text(collapse_identical(overall)),
        _in_text(runtime, classes=20),
        _in_text(collapse_identical(bound_gap_table(rows))),
    ]
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
        *text_tables,
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
    chain_files = [
        Path(p) / CHAIN_COST_FILE for p in results if (Path(p) / CHAIN_COST_FILE).exists()
    ]
    if chain_files:
        from partopt.report_chain import chain_cost_table, load_chain_cost

        tables.append(
            chain_cost_table([r for f in chain_files for r in load_chain_cost(f)], numbers)
        )
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
            raise ReportError(f"the rendered paper would overwrite its template {template}")
        paper.write_text(
            render_template(template.read_text(), outdir, paper.parent, numbers, missing)
        )
        written.append(paper)
    return written


_MOVED = {
    **dict.fromkeys(
        (
            "config_averages",
            "headline_table",
            "reproduction_table",
            "reproduction_summary",
        ),
        "partopt.report_claims",
    ),
    **dict.fromkeys(
        ("figure_bottleneck_vs_n", "figure_gap_distribution", "figure_solve_time"),
        "partopt.report_figures",
    ),
    "render_template": "partopt.report_template",
}
"""Functions that live in the report's role modules, importable from here as before."""


def __getattr__(name: str):
    import importlib

    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
