"""Report tables recomputed from hand-made records, against numbers worked out by hand."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from partopt.report import (
    annotate,
    config_averages,
    consistency_table,
    headline_table,
    instance_summary,
    load_published,
    load_records,
    quality_table,
    render_template,
    reproduction_table,
    runtime_table,
    write_report,
)


def rec(
    seed,
    method,
    status,
    b=None,
    *,
    model="resnet50",
    cap=64,
    nodes=50,
    C=None,
    lb=None,
    min_stages=2,
    ptb=None,
    bw=None,
    runtime=0.01,
    memory="paper",
):
    inst = f"{model}|mem={memory}|cap={cap}|N={nodes}|seed={seed}"
    return {
        "run_key": f"{inst}|{method}|C={C}",
        "instance_key": inst,
        "model": model,
        "memory": memory,
        "transfer": memory if memory == "paper" else "bytes",
        "cuts": "single",
        "capacity_mb": float(cap),
        "nodes": nodes,
        "seed": seed,
        "method": method,
        "options": {"classes": C} if C else {},
        "C": C,
        "status": status,
        "bottleneck_s": b,
        "lower_bound_s": b if status == "optimal" else lb,
        "min_stages": min_stages,
        "plan_max_transfer_bytes": ptb,
        "max_bandwidth_mbps": bw,
        "runtime_s": runtime,
    }


# Three nontrivial clusters of ResNet50 at 64 MB, N = 50 (optima 2, 1, 4), one configuration
# where the model fits one node (256 MB) and one proven infeasible (InceptionResNetV2, N = 5).
# plan_max_transfer_bytes / bandwidth give the original "optimal": 1e6 B * 8 / 8 Mbit/s = 1 s.
RECORDS = [
    rec(0, "exact", "optimal", 2.0, runtime=0.02),
    rec(0, "greedy", "feasible", 3.0, lb=1.0),
    rec(0, "random", "feasible", 8.0),
    rec(0, "seifer", "feasible", 2.5, C=20, ptb=1e6, bw=8.0),
    rec(1, "exact", "optimal", 1.0, runtime=0.04),
    rec(1, "greedy", "feasible", 1.0),
    rec(1, "random", "no_solution"),
    rec(1, "seifer", "feasible", 1.0, C=20, ptb=5e5, bw=8.0),
    rec(2, "exact", "optimal", 4.0, runtime=0.06),
    rec(2, "greedy", "feasible", 5.0),
    rec(2, "random", "feasible", 12.0),
    rec(2, "seifer", "error", C=20),
    rec(0, "exact", "optimal", 0.0, cap=256, min_stages=1, runtime=0.001),
    rec(0, "greedy", "feasible", 0.0, cap=256, min_stages=1),
    rec(0, "random", "feasible", 0.0, cap=256, min_stages=1),
    rec(0, "seifer", "feasible", 0.0, cap=256, min_stages=1, C=20, ptb=0.0, bw=8.0),
    rec(0, "random", "infeasible", model="inceptionresnetv2", nodes=5, min_stages=None),
    rec(0, "seifer", "infeasible", model="inceptionresnetv2", nodes=5, C=20, min_stages=None),
]


def rows_of(table, **match):
    idx = {h: i for i, h in enumerate(table.headers)}
    return [
        dict(zip(table.headers, r, strict=True))
        for r in table.rows
        if all(r[idx[k]] == v for k, v in match.items())
    ]


def one(table, **match):
    found = rows_of(table, **match)
    assert len(found) == 1, (match, found)
    return found[0]


@pytest.fixture
def rows():
    return annotate(RECORDS)


def test_ratio_and_gap_to_the_best_bound(rows):
    by = {(r["seed"], r["capacity_mb"], r["label"]): r for r in rows if r["model"] == "resnet50"}
    assert by[(0, 64, "greedy")]["ratio"] == 1.5
    assert by[(0, 64, "greedy")]["gap_best"] == pytest.approx(1 / 3)  # bound = optimum 2
    assert by[(0, 64, "seifer C=20")]["original_bound_s"] == 1.0
    assert by[(1, 64, "random")]["ratio"] is None
    assert by[(0, 256, "random")]["ratio"] == 1.0 and not by[(0, 256, "random")]["nontrivial"]


def test_quality_table_by_hand(rows):
    t = quality_table(rows, ())
    g = one(t, method="greedy")
    assert (g["instances"], g["solved"]) == (3, 3)  # the one-node and infeasible instances are out
    assert g["mean ratio"] == pytest.approx(1.25)  # 3/2, 1/1, 5/4
    assert g["median ratio"] == pytest.approx(1.25) and g["max ratio"] == 1.5
    assert g["optimal (fraction)"] == pytest.approx(1 / 3)
    r = one(t, method="random")  # 8/2 and 12/4; the failure is not optimal
    assert (
        r["instances"],
        r["solved"],
        r["mean ratio"],
        r["max ratio"],
        r["optimal (fraction)"],
    ) == (
        3,
        2,
        3.5,
        4.0,
        0,
    )
    s = one(t, method="seifer C=20")  # 2.5/2 and 1/1
    assert (s["solved"], s["mean ratio"], s["optimal (fraction)"]) == (
        2,
        1.125,
        pytest.approx(1 / 3),
    )
    assert one(t, method="exact")["optimal (fraction)"] == 1.0
    by_cap = quality_table(rows, ("model", "capacity_mb"))
    assert not rows_of(by_cap, capacity_mb=256.0)  # nothing nontrivial there
    assert one(by_cap, model="resnet50", capacity_mb=64.0, method="greedy")["mean ratio"] == 1.25


def test_runtime_table_by_hand(rows):
    t = runtime_table(rows, ("capacity_mb",))
    e = one(t, capacity_mb=64.0, method="exact")
    assert e["runs"] == 3 and e["median (s)"] == 0.04 and e["max (s)"] == 0.06
    assert e["mean (s)"] == pytest.approx(0.04)
    assert one(t, capacity_mb=64.0, method="seifer C=20")["runs"] == 3  # the infeasible one is out


def test_original_way_configuration_averages(rows):
    avg = config_averages(rows)
    assert avg[("paper/paper", "random", "resnet50", 64.0, 50, None)] == pytest.approx(
        20 / 3
    )  # 8, 0, 12
    assert avg[("paper/paper", "seifer", "resnet50", 64.0, 50, 20)] == pytest.approx(
        3.5 / 3
    )  # 2.5, 1, 0
    assert avg[("paper/paper", "seifer", "resnet50", 256.0, 50, 20)] == 0.0
    assert math.isnan(
        avg[("paper/paper", "seifer", "inceptionresnetv2", 64.0, 5, 20)]
    )  # infeasible


def test_headline_without_published_csvs(rows):
    numbers = {}
    t = headline_table(rows, {}, numbers)
    ten = one(t, claim="random vs seifer at N=50 (bottleneck of random / of seifer)")
    # original: random over configurations that need two nodes (20/3), seifer over all,
    # zeros included ((3.5/3 + 0) / 2)
    assert ten["ours, original way"] == pytest.approx((20 / 3) / (3.5 / 6))
    assert ten["ours, right way"] == pytest.approx(8 / 2.5)  # only cluster 0 is matched
    assert ten["matched instances"] == 1
    g = one(t, claim="greedy vs seifer at N=50 (1 - seifer / greedy)")
    assert g["ours, original way"] == pytest.approx(1 - (3.5 / 6) / 3.0)
    assert g["ours, right way"] == pytest.approx(1 - 3.5 / 4)  # clusters 0 and 1
    assert g["right way, median"] == pytest.approx(1 - (2.5 / 3 + 1) / 2)
    a = one(t, claim="seifer's approximation ratio at N=50, 64 MB")
    assert a["ours, original way"] == pytest.approx(
        3.5 / 1.5
    )  # against max transfer / max bandwidth
    assert a["ours, right way"] == pytest.approx(1.125)  # against the proven optimum
    assert numbers["paper-paper.seifer.approximation.right"] == pytest.approx(1.125)


def write_published(d: Path) -> Path:
    d.mkdir()
    (d / "random-algorithm.csv").write_text(
        "Model,Node Memory Capacity (MB),# of Nodes,Bottleneck Latency (s)\n"
        "ResNet50,64,50,6.0\nResNet50,64,5,100\n"
    )
    (d / "joint-optimization.csv").write_text(
        "Model,Node Memory Capacity (MB),# of Nodes,Bottleneck Latency (s)\nResNet50,64,50,4.0\n"
    )
    (d / "k-path-matching.csv").write_text(
        "Model,Node Memory Capacity (MB),# of Nodes,# of Bandwidth Classes,Bottleneck Latency (s)\n"
        "ResNet50,64,50,20,1.0\nResNet50,256,50,20,0\nResNet50,64,50,2,nan\n"
    )
    return d


def test_headline_and_reproduction_with_published_csvs(tmp_path, rows):
    published = load_published(write_published(tmp_path / "pub"))
    assert published["seifer"][2]["C"] == 2 and math.isnan(published["seifer"][2]["value"])
    t = headline_table(rows, published)
    ten = one(t, claim="random vs seifer at N=50 (bottleneck of random / of seifer)")
    assert ten["published CSVs"] == pytest.approx(6.0 / 0.5)
    assert ten["ours, original way"] == pytest.approx((20 / 3) / (3.5 / 6))
    g = one(t, claim="greedy vs seifer at N=50 (1 - seifer / greedy)")
    assert g["published CSVs"] == pytest.approx(1 - 0.5 / 4.0)

    rep = reproduction_table(rows, published)
    r = one(rep, method="random", N=50)
    assert (r["published (s)"], r["ours (s)"]) == (6.0, pytest.approx(20 / 3))
    assert r["ours / published"] == pytest.approx(10 / 9)
    assert one(rep, method="greedy")["ours / published"] == pytest.approx(0.75)
    s = one(rep, method="seifer", **{"capacity (MB)": 256.0})
    assert s["ours (s)"] == 0.0 and s["ours / published"] is None  # 0 / 0 is not a ratio
    assert not rows_of(rep, method="random", N=5)  # we have no such configuration
    assert r["optimum (s)"] == pytest.approx(7 / 3)  # optima 2, 1, 4
    assert r["published / optimum"] == pytest.approx(6.0 / (7 / 3))
    assert one(rep, method="greedy")["published / optimum"] == pytest.approx(4.0 / (7 / 3))
    assert s["optimum (s)"] == 0.0 and s["published / optimum"] is None
    from partopt.report import reproduction_summary

    summary = reproduction_summary(rep)
    k = one(summary, method="seifer")  # 1.0 published at 64 MB is below the mean optimum 7/3
    assert (k["configurations"], k["with optimum"], k["published below optimum"]) == (2, 1, 1)


def test_disagreeing_optima_are_reported():
    recs = [
        rec(0, "exact", "optimal", 2.0),
        rec(0, "brute", "optimal", 2.0 * (1 + 1e-9)),
        rec(1, "exact", "optimal", 2.0),
        rec(1, "brute", "optimal", 2.1),
    ]
    t = consistency_table(instance_summary(recs))
    assert [r[0] for r in t.rows] == [recs[2]["instance_key"]]


def test_write_report_and_render_the_paper(tmp_path):
    pytest.importorskip("matplotlib")
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in RECORDS) + '{"run_key": "cut')
    assert len(load_records([results])) == len(RECORDS)
    template = tmp_path / "paper.template.md"
    template.write_text(
        "Greedy: {{number quality.paper-paper.greedy.mean | .3f}}.\n"
        "{{table quality_overall}}\n{{figure gap_distribution_paper-paper | Gaps}}\n"
    )
    out = tmp_path / "gen"
    written = write_report(
        [results], out, published_dir=write_published(tmp_path / "pub"), template=template
    )
    paper = (tmp_path / "paper.md").read_text()
    assert paper.startswith("Greedy: 1.250.\n| regime | method |")
    assert (
        "(gen/tables/quality_overall.csv)" in paper
        and "![Gaps](gen/figures/gap_distribution_paper-paper.png)" in paper
    )
    assert tmp_path / "paper.md" in written
    for name in ("headline", "reproduction_onnx", "runtime_overall", "quality_by_model_capacity"):
        assert (out / "tables" / f"{name}.md").exists() and (
            out / "tables" / f"{name}.csv"
        ).exists()
    for name in (
        "bottleneck_vs_n_paper-paper",
        "gap_distribution_paper-paper",
        "solve_time_scaling",
    ):
        assert (out / "figures" / f"{name}.png").exists() and (
            out / "figures" / f"{name}.pdf"
        ).exists()
    numbers = json.loads((out / "numbers.json").read_text())
    assert numbers["instances"] == 5 and numbers["records"] == len(RECORDS)
    with pytest.raises(ValueError, match="no generated number 'nope'"):
        render_template("{{number nope}}", out, tmp_path, numbers)


def test_bound_gap_table_by_hand():
    from partopt.report import bound_gap_table

    recs = [
        rec(0, "exact", "optimal", 2.0),
        rec(0, "greedy", "feasible", 2.5),
        # no proven optimum: the best bound is the larger of the two lower bounds (1.5)
        rec(1, "exact", "feasible", 3.0, lb=1.5),
        rec(1, "greedy", "feasible", 2.0, lb=1.0),
    ]
    t = bound_gap_table(annotate(recs))
    g = one(t, method="greedy")
    assert (g["instances"], g["unproven"]) == (2, 1)
    assert (
        g["mean gap (fraction)"] == pytest.approx((0.5 / 2.5 + 0.5 / 2.0) / 2)
        and g["max gap (fraction)"] == 0.25
    )
    assert one(t, method="exact")["max gap (fraction)"] == pytest.approx(0.5)


def test_report_never_imports_a_solver(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("matplotlib")
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    code = (
        "import sys; from partopt.report import write_report; "
        f"write_report([{str(results)!r}], {str(tmp_path / 'out')!r}); "
        "print(sorted(m for m in sys.modules if m.startswith('partopt.solvers.') "
        "or m.split('.')[0] in ('pyomo', 'highspy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_write_report_with_the_keras_chain_sweep(tmp_path):
    """Records with cuts = keras of the original methods give the faithful reproduction tables."""
    keras = []
    for r in RECORDS:
        if r["method"] in ("greedy", "random", "seifer", "exact"):
            method = r["method"] if r["method"] == "exact" else r["method"] + "-original"
            key = r["instance_key"] + "|keras"
            keras.append(
                {
                    **r,
                    "cuts": "keras",
                    "method": method,
                    "instance_key": key,
                    "run_key": r["run_key"] + "|keras",
                }
            )
    results = tmp_path / "k.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in keras))
    out = tmp_path / "gen"
    write_report([results], out, published_dir=write_published(tmp_path / "pub"))
    with open(out / "tables" / "reproduction_summary.csv", newline="") as fh:
        summary = {r["method"]: r for r in csv.DictReader(fh)}
    # greedy: clusters 0, 1, 2 at N = 50 average (3 + 1 + 5) / 3 = 3 against 4.0 published
    assert float(summary["greedy-original"]["median ours / published"]) == pytest.approx(0.75)
    assert set(summary) == {"seifer-original", "greedy-original", "random-original"}
    assert (out / "tables" / "headline_faithful.csv").exists()


@pytest.mark.parametrize(
    "module",
    [
        "report",
        "report_claims",
        "report_figures",
        "report_template",
        "report_seifer",
        "report_chain",
    ],
)
def test_report_modules_only_read_records(module):
    """The report's role modules import no solver, runner, problem or chain: data flows one way."""
    import ast

    import partopt

    path = Path(partopt.__file__).parent / f"{module}.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    ours = {m for m in imported if m.split(".")[0] == "partopt"}
    allowed = {"partopt.report", "partopt.report_claims", "partopt.report_figures"}
    allowed |= {"partopt.report_template", "partopt.report_seifer", "partopt.study_seifer"}
    allowed |= {"partopt.report_chain"}
    # the record I/O of the experiments (never the runner), and the error base
    allowed |= {"partopt.experiments.records", "partopt.errors"}
    assert ours <= allowed, ours - allowed


def _chain_row(instance, cuts, status, best, bound=None, time_s=1.0):
    model, kind, cap = instance.split("/")[:3]
    return {
        "instance": instance,
        "model": model,
        "cluster": kind,
        "capacity_mb": cap,
        "cuts": cuts,
        "status": status,
        "bottleneck_s": "" if best is None else str(best),
        "bound_s": "" if bound is None else str(bound),
        "time_s": str(time_s),
    }


def test_chain_cost_table_by_hand(tmp_path):
    """Ratios per model and cluster; an unproven DAG run counts as not proven, with its gap."""
    from partopt.report import ReportError
    from partopt.report_chain import chain_cost_table, load_chain_cost

    rows = [
        _chain_row("m/paper/64/50/0", "single", "optimal", 4.0),
        _chain_row("m/paper/64/50/0", "multi", "optimal", 2.0),
        _chain_row("m/paper/64/50/0", "dag", "optimal", 1.0, 1.0, time_s=3.0),
        _chain_row("m/paper/64/50/1", "single", "infeasible", None),
        _chain_row("m/paper/64/50/1", "multi", "optimal", 2.0),
        _chain_row("m/paper/64/50/1", "dag", "feasible", 2.0, 1.5, time_s=5.0),
    ]
    numbers: dict = {}
    t = chain_cost_table(rows, numbers)
    (row,) = [dict(zip(t.headers, r, strict=True)) for r in t.rows]
    assert row["DAG / multi chain (ratio)"] == pytest.approx((0.5 + 1.0) / 2)
    assert row["DAG / single chain (ratio)"] == pytest.approx(0.25)  # instance 1 has no single plan
    assert row["multi / single chain (ratio)"] == pytest.approx(0.5)
    assert row["DAG proven"] == "1/2" and row["DAG max time (s)"] == 5.0
    assert row["not proven (cuts status count)"] == "dag feasible 1"
    assert numbers["chain_cost.unproven_instances"] == "`m/paper/64/50/1`"
    assert numbers["chain_cost.unproven_gap_max"] == pytest.approx(0.25)
    assert numbers["chain_cost.dag_better_than_multi"] == 1
    bad = tmp_path / "x.csv"
    bad.write_text("instance,model\nx,y\n")
    with pytest.raises(ReportError, match="not a chain-cost CSV"):
        load_chain_cost(bad)


def test_in_text_tables_collapse_identical_seifer_rows():
    """The Markdown merges k-path variants that print the same; the CSV keeps every row."""
    from partopt.report import Table, collapse_identical

    t = Table(
        "t",
        "",
        ["regime", "method", "x"],
        [["r", "seifer C=2", 1.0], ["r", "seifer C=5", 2.0], ["r", "seifer C=8", 2.0]],
    )
    c = collapse_identical(t)
    assert "| r | seifer C=5, 8 | 2 |" in c.markdown()
    assert c.csv().count("seifer") == 3
