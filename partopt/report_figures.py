"""Figures of a report (PNG and PDF, matplotlib): bottleneck against N, gap distribution, solve time."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from partopt.report import (  # noqa: F401
    PUBLISHED_MODELS,
    ReportError,
    _has_plan,
    _label_sort_key,
    _slug,
    label,
    regime,
)
from partopt.report_claims import _seifer_labels

# -- figures ------------------------------------------------------------------------------------

__all__ = ["figure_bottleneck_vs_n", "figure_gap_distribution", "figure_solve_time"]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ReportError(
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
