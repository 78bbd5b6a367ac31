import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partopt import Chain, Cluster, InvalidPlan, Plan, Problem, Stage, evaluate
from tests.strategies import plans, problems


def _direct(problem: Problem, plan: Plan) -> float | None:
    """Recompute the bottleneck from first principles; None if invalid."""
    ch, cl = problem.chain, problem.cluster
    s_mem, m_mem = ch.memory_terms(problem.memory)
    t = ch.transfers(problem.transfer)
    worst = 0.0
    for k, st_ in enumerate(plan.stages):
        blocks = range(st_.first_block, st_.last_block + 1)
        mem = sum(s_mem[b] for b in blocks) + max(m_mem[b] for b in blocks)
        if mem > cl.memory_bytes[st_.node] * (1 + 1e-9):
            return None
        if problem.objective == "max":
            worst = max(worst, sum(ch.flops[b] for b in blocks) / cl.flops_per_s[st_.node])
        if k + 1 < len(plan.stages):
            bw = cl.bandwidth_mbps[st_.node, plan.stages[k + 1].node]
            if bw <= 0:
                return None
            worst = max(worst, t[st_.last_block] * 8 / (bw * 1e6))
    return worst


@settings(deadline=None, max_examples=150)
@given(st.data())
def test_evaluate_agrees_with_direct_recomputation(data):
    problem = data.draw(problems())
    plan = data.draw(plans(problem))
    expected = _direct(problem, plan)
    if expected is None:
        with pytest.raises(InvalidPlan):
            evaluate(problem, plan)
    else:
        ev = evaluate(problem, plan)
        assert math.isclose(ev.bottleneck_s, expected, rel_tol=1e-12, abs_tol=1e-15)
        assert len(ev.stages) == plan.num_stages
        assert ev.stages[-1].transfer_s == 0


def _small():
    chain = Chain.from_arrays([2, 2, 2, 2], [1e6, 2e6, 3e6])
    cluster = Cluster(("a", "b", "c"), [4, 4, 4], [[0, 8, 0], [8, 0, 4], [1, 1, 0]])
    return Problem(chain, cluster, memory="weights")


def test_single_stage_has_zero_bottleneck():
    p = Problem(
        Chain.from_arrays([1, 1], [1e6]), Cluster.uniform(1, memory_bytes=2, bandwidth_mbps=1)
    )
    ev = evaluate(p, Plan((Stage(0, 1, 0),)))
    assert ev.bottleneck_s == 0 and math.isinf(ev.throughput_per_s)


def test_per_stage_breakdown():
    ev = evaluate(_small(), Plan.from_cuts([1, 2], [0, 1, 2]))
    # cut 1 (2 MB) over a->b at 8 Mbit/s = 2 s; cut 2 (3 MB) over b->c at 4 Mbit/s = 6 s
    assert [s.transfer_s for s in ev.stages] == [2.0, 6.0, 0.0]
    assert [s.memory_bytes for s in ev.stages] == [4, 2, 2]
    assert ev.bottleneck_s == 6.0 and ev.throughput_per_s == pytest.approx(1 / 6)


@pytest.mark.parametrize(
    "plan, fragment",
    [
        (Plan((Stage(1, 3, 0),)), "starts at block 1"),
        (Plan((Stage(0, 1, 0), Stage(3, 3, 1))), "not contiguous"),
        (Plan((Stage(0, 1, 0), Stage(2, 2, 1))), "covers blocks 0..2"),
        (Plan((Stage(0, 1, 0), Stage(2, 3, 0))), "distinct"),
        (Plan((Stage(0, 2, 0), Stage(3, 3, 1))), "needs 6 bytes"),
        (Plan((Stage(0, 1, 0), Stage(2, 3, 2))), "no link from 'a' to 'c'"),
        (Plan((Stage(0, 1, 0), Stage(2, 3, 7))), "cluster has 3 nodes"),
        (Plan(()), "no stages"),
        (Plan((Stage(0, 1, 0), Stage(2, 1, 1), Stage(2, 3, 2))), "empty"),
    ],
)
def test_invalid_plans_name_the_rule(plan, fragment):
    with pytest.raises(InvalidPlan, match=fragment):
        evaluate(_small(), plan)


def test_plan_dict_round_trip():
    p = _small()
    plan = Plan.from_cuts([0], [2, 1], num_blocks=4)
    assert Plan.from_dict(plan.to_dict(p), p) == plan
    with pytest.raises(InvalidPlan, match="needs 'node'"):
        Plan.from_dict([{"node": "a"}], p)


def test_peak_memory_is_sum_plus_max():
    chain = Chain.from_arrays([1, 2, 3], [1, 1], activation_bytes=[5, 9, 4])
    p = Problem(chain, Cluster.uniform(2, memory_bytes=100, bandwidth_mbps=1), memory="peak")
    assert p.stage_memory(0, 2) == 6 + 9
    assert p.stage_memory(2, 2) == 3 + 4
    m = p.stage_memory_matrix
    assert m[0, 1] == 3 + 9 and math.isinf(m[1, 0])
    first, last = np.array([0, 1, 2, 0]), np.array([2, 2, 2, 0])
    assert p.stage_memory_many(first, last).tolist() == [15, 14, 7, 6]
