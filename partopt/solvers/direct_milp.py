r"""``direct_milp``: the naive layered-flow MILP, kept as a benchmark baseline.

This is the formulation one writes first, and it is slow
(30 blocks x 20 nodes in 2-30 s; 50 nodes past 120 s with dual bound 0).
Use ``exact`` (or ``milp``) instead; ``experiments/bench_exact.py`` compares them.

Formulation
-----------
Variables: :math:`x_{bv} \in \{0,1\}` (block :math:`b` runs on node
:math:`v`), :math:`y_{cuv} \in \{0,1\}` (cut :math:`c` is sent from
:math:`u` to :math:`v`, one binary per cut and ordered linked pair),
:math:`p_v \ge 0` (activation peak on :math:`v`), :math:`\beta \ge 0`.

* ``placed_once``: :math:`\sum_v x_{bv} = 1`.
* ``flow_at_cut``: :math:`x_{cv} - x_{c+1,v} = \sum_w y_{cvw} - \sum_u y_{cuv}`.
* ``send_from_host`` / ``send_to_host``: :math:`y_{cuv} \le x_{cu}`,
  :math:`y_{cuv} \le x_{c+1,v}` (no relaying through idle nodes).
* ``one_stage_per_node``: :math:`x_{0v} + \sum_{c,u} y_{cuv} \le 1`
  (a node starts at most one stage, so its blocks are contiguous).
* ``memory_fits``: :math:`\sum_b m_b x_{bv} + p_v \le \mathrm{cap}_v`,
  ``peak_covers_block``: :math:`p_v \ge \hat m_b x_{bv}`.
* ``bottleneck_covers_transfer``: :math:`\beta \ge \sum_{u,v}\tau_{cuv} y_{cuv}`;
  ``bottleneck_covers_compute``: :math:`\beta \ge \sum_b (F_b/s_v) x_{bv}`.

Its LP relaxation sets every :math:`x_{bv} = 1/N`: memory fits, no flow
is needed and the bound is 0, which is why it scales so badly.
"""

from __future__ import annotations

import math
import time

import numpy as np

from partopt.highs import DEFAULT_THREADS, solve_model
from partopt.plan import MEMORY_TOLERANCE, Plan, Stage
from partopt.problem import Problem
from partopt.solvers import SolverOutput, register
from partopt.solvers._limits import (
    OutOfTime,
    check_time_left,
    refuse_if_dense,
    refuse_if_model_too_large,
)
from partopt.solvers.milp import plan_value_s, transfer_times

__all__ = ["build", "extract_plan", "model_items", "solve_direct_milp"]


def model_items(problem: Problem) -> int:
    """Variables plus constraints of :func:`build`'s model, counted without building it."""
    b, n = problem.num_blocks, problem.num_nodes
    links = (b - 1) * int(np.count_nonzero(problem.cluster.bandwidth_mbps > 0))
    variables = b * n + links + n + 1
    constraints = b + (b - 1) * n + 2 * links + 3 * n + b * n + (b - 1)
    return variables + constraints


def _check_size(problem: Problem) -> int:
    """Refuse instances too large for the model; return its size (see :func:`model_items`)."""
    b, n = problem.num_blocks, problem.num_nodes
    instead = "exact, or a heuristic (greedy, local-search)"
    refuse_if_dense("direct_milp", "transfer-time table", (max(b - 1, 1), n, n), instead)
    items = model_items(problem)
    refuse_if_model_too_large("direct_milp", items, f"{b} blocks x {n} nodes", instead)
    return items


def build(problem: Problem):
    """The layered-flow MILP of ``problem``; never solves."""
    import pyomo.environ as pyo

    b, n = problem.num_blocks, problem.num_nodes
    tau = transfer_times(problem)
    links = [
        (c, int(u), int(v))
        for c in range(b - 1)
        for u, v in zip(*np.nonzero(np.isfinite(tau[c])), strict=True)
    ]
    mem_sum, mem_max = problem.mem_sum, problem.mem_max
    cap = problem.cluster.memory_bytes * (1 + MEMORY_TOLERANCE)
    upper = max([0.0, *(float(tau[k]) for k in links)])
    speeds = problem.cluster.flops_per_s
    if problem.uses_compute and speeds is not None:
        upper = max(upper, float(problem.chain.flops.sum() / speeds.min()))

    m = pyo.ConcreteModel(name="layered-flow")
    m.B = pyo.Set(initialize=range(b), doc="blocks")
    m.V = pyo.Set(initialize=range(n), doc="nodes")
    m.L = pyo.Set(initialize=links, dimen=3, doc="(cut, from node, to node) with a link")
    m.x = pyo.Var(m.B, m.V, domain=pyo.Binary, doc="block b runs on node v")
    m.y = pyo.Var(m.L, domain=pyo.Binary, doc="cut c is sent from u to v")
    m.peak = pyo.Var(
        m.V, bounds=(0, float(mem_max.max()) if b else 0.0), doc="activation peak, bytes"
    )
    m.beta = pyo.Var(bounds=(0, upper), doc="bottleneck, seconds per inference")
    sends: dict = {}
    receives: dict = {}
    by_cut: dict = {}
    for c, u, v in links:
        sends.setdefault((c, u), []).append(m.y[c, u, v])
        receives.setdefault((c, v), []).append(m.y[c, u, v])
        by_cut.setdefault(c, []).append((c, u, v))

    @m.Constraint(m.B, doc="every block runs on exactly one node")
    def placed_once(m, blk):
        return sum(m.x[blk, v] for v in m.V) == 1

    @m.Constraint(range(b - 1), m.V, doc="leaving v at cut c means sending cut c from v")
    def flow_at_cut(m, c, v):
        return m.x[c, v] - m.x[c + 1, v] == sum(sends.get((c, v), [])) - sum(
            receives.get((c, v), [])
        )

    @m.Constraint(m.L, doc="only the host of block c sends cut c")
    def send_from_host(m, c, u, v):
        return m.y[c, u, v] <= m.x[c, u]

    @m.Constraint(m.L, doc="only the host of block c + 1 receives cut c")
    def send_to_host(m, c, u, v):
        return m.y[c, u, v] <= m.x[c + 1, v]

    @m.Constraint(m.V, doc="a node starts at most one stage")
    def one_stage_per_node(m, v):
        return m.x[0, v] + sum(x for c in range(b - 1) for x in receives.get((c, v), [])) <= 1

    @m.Constraint(m.V, doc="a node's stage fits its memory")
    def memory_fits(m, v):
        return sum(float(mem_sum[k]) * m.x[k, v] for k in m.B) + m.peak[v] <= float(cap[v])

    @m.Constraint(m.B, m.V, doc="the peak covers every block on the node")
    def peak_covers_block(m, blk, v):
        return m.peak[v] >= float(mem_max[blk]) * m.x[blk, v]

    @m.Constraint(sorted(by_cut), doc="the bottleneck is at least every transfer time")
    def bottleneck_covers_transfer(m, c):
        return m.beta >= sum(float(tau[k]) * m.y[k] for k in by_cut[c])

    if problem.uses_compute:
        speed = problem.cluster.flops_per_s
        flops = problem.chain.flops

        @m.Constraint(m.V, doc="the bottleneck is at least every stage's compute time")
        def bottleneck_covers_compute(m, v):
            return m.beta >= sum(float(flops[k] / speed[v]) * m.x[k, v] for k in m.B)

    m.bottleneck = pyo.Objective(expr=m.beta, sense=pyo.minimize)
    return m


def extract_plan(model, problem: Problem) -> Plan | None:
    """Stages from the block assignment (consecutive blocks on one node form a stage)."""
    import pyomo.environ as pyo

    hosts = []
    for blk in range(problem.num_blocks):
        vals = [
            pyo.value(model.x[blk, v], exception=False) or 0.0 for v in range(problem.num_nodes)
        ]
        hosts.append(int(np.argmax(vals)))
    stages, first = [], 0
    for blk in range(1, problem.num_blocks + 1):
        if blk == problem.num_blocks or hosts[blk] != hosts[first]:
            stages.append(Stage(first, blk - 1, hosts[first]))
            first = blk
    return Plan(tuple(stages)) if stages else None


@register("direct_milp", exact=True, description="naive layered-flow MILP (baseline; slow)")
def solve_direct_milp(
    problem: Problem,
    *,
    time_limit_s: float | None = None,
    seed: int = 0,
    threads: int = DEFAULT_THREADS,
    log: bool = False,
    **_,
) -> SolverOutput:
    """Build the layered-flow MILP and solve it with HiGHS (gap 0).

    The time limit covers building the model: one that cannot be built and
    loaded in time is not started (``no_solution``, see
    :mod:`partopt.solvers._limits`); ``info["build_s"]`` and
    ``info["solve_s"]`` say where the time went.
    """
    items = _check_size(problem)
    t0 = time.perf_counter()
    deadline = math.inf if time_limit_s is None else t0 + time_limit_s
    try:
        check_time_left("direct_milp", deadline, items)
    except OutOfTime as exc:
        return SolverOutput("no_solution", info={"reason": str(exc), "build_s": 0.0})
    model = build(problem)
    build_s = time.perf_counter() - t0
    remaining = None if time_limit_s is None else max(0.0, deadline - time.perf_counter())
    out = solve_model(model, time_limit_s=remaining, seed=seed, threads=threads, log=log)
    info = {**out.as_info(), "build_s": build_s, "solve_s": out.runtime_s}
    if out.status == "infeasible":
        return SolverOutput("infeasible", info={**info, "reason": out.message})
    if out.status in ("no_solution", "error"):
        key = "error" if out.status == "error" else "reason"
        return SolverOutput(out.status, lower_bound_s=out.bound, info={**info, key: out.message})
    plan = extract_plan(model, problem)
    if out.status == "optimal":
        return SolverOutput(
            "optimal", plan, objective_s=out.objective, lower_bound_s=out.bound, info=info
        )
    assert plan is not None, "a feasible solution assigns every block to a stage"
    return SolverOutput(
        "feasible",
        plan,
        objective_s=plan_value_s(problem, plan),
        lower_bound_s=out.bound,
        info=info,
    )
