"""The original way of averaging and the reproduction summary, on hand-made records."""

from __future__ import annotations

import math

import pytest

from partopt.study_seifer import (
    original_averages,
    original_value,
    reproduction_rows,
    reproduction_summary,
)


def _rec(method="seifer-original", status="feasible", b=1.0, seed=0, C=20, **info):
    return {
        "method": method,
        "model": "resnet50",
        "capacity_mb": 64.0,
        "nodes": 5,
        "C": C if method == "seifer-original" else None,
        "seed": seed,
        "instance_key": f"resnet50|64|5|{seed}",
        "status": status,
        "bottleneck_s": b if status in ("feasible", "optimal") else None,
        "info": info,
    }


def test_original_value_rules():
    # a plan counts its bottleneck, a one-stage plan 0 (its bottleneck)
    assert original_value(_rec(b=2.5)) == 2.5
    assert original_value(_rec(b=0.0)) == 0.0
    # no partition (the original's MemoryError) is inf, a failed matching 0
    nopart = _rec(status="no_solution", reason="the partition DP found no partition within N")
    assert original_value(nopart) == math.inf
    assert original_value(_rec(status="no_solution", reason="2 of 4 stages left unplaced")) == 0
    # an over-memory plan counts with the latency it claims
    over = _rec(status="no_solution", unchecked_bottleneck_s=0.7, reason="exceeds")
    assert original_value(over) == 0.7
    # the baselines say what the original reported; None: its code raised
    assert original_value(_rec("greedy-original", "no_solution", original_bottleneck_s=0.0)) == 0
    assert original_value(_rec("random-original", "no_solution", original_bottleneck_s=None)) == (
        math.inf
    )
    assert original_value(_rec(status="infeasible")) == math.inf
    assert original_value(_rec(status="error")) is None


def test_averages_per_configuration():
    recs = [_rec(b=1.0, seed=0), _rec(b=3.0, seed=1), _rec(status="no_solution", seed=2)]
    ((mean, runs, rse),) = original_averages(recs).values()
    assert (mean, runs) == (pytest.approx(4 / 3), 3)  # the failed matching is averaged in as 0
    assert rse == pytest.approx(math.sqrt(7 / 3) / math.sqrt(3) / (4 / 3))
    with_inf = [
        *recs,
        _rec(status="no_solution", seed=3, reason="the partition DP found no partition within N"),
    ]
    assert next(iter(original_averages(with_inf).values()))[0] == math.inf
    # methods other than the original three are not averaged
    assert original_averages([_rec("exact", b=1.0)]) == {}


def test_reproduction_rows_and_summary():
    recs = [_rec(b=b, seed=s) for s, b in enumerate((1.0, 1.1))]  # average 1.05
    recs += [{**_rec("exact", "optimal", b=b, seed=s), "C": None} for s, b in enumerate((1.0, 1.0))]
    published = {
        "seifer": [
            {"model": "resnet50", "capacity_mb": 64.0, "nodes": 5, "C": 20, "value": 1.0},
            {"model": "resnet50", "capacity_mb": 64.0, "nodes": 5, "C": 5, "value": 0.8},
        ]
    }
    rows = reproduction_rows(recs, published)
    assert [r["ratio"] for r in rows] == [pytest.approx(1.05), None]  # C = 5 was not run
    assert rows[0]["optimum_s"] == 1.0 and rows[1]["published_over_optimum"] == 0.8
    (s,) = reproduction_summary(rows)
    assert (s["configurations"], s["compared"]) == (2, 1)
    assert s["median"] == pytest.approx(1.05) and s["within"] == 1.0
    assert (s["below_optimum"], s["far_below_optimum"]) == (1, 1)
