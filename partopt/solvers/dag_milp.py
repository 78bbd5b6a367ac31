r"""``dag-milp``: the stage-flow MILP over the boundary states of a DAG problem.

The chain's stage-flow model (:mod:`partopt.solvers.milp`) with blocks
replaced by boundary states (ideals, :mod:`partopt.dag`): one unit of flow
leaves state ``{}`` and reaches the full set through stages ``(s, t)`` on
nodes and transfers of boundary ``t`` between nodes.

.. math::

   \min \beta \quad\text{s.t.}\quad
   \sum_{p = (\emptyset, t), v} a_{pv} = 1, \qquad
   \sum_{p = (\cdot, t)} a_{pu} = \sum_w y_{tuw}, \qquad
   \sum_u y_{tuw} = \sum_{p = (t, \cdot)} a_{pw}, \qquad
   \sum_p a_{pv} \le 1,

with ``beta`` covering every transfer time at every boundary (a boundary
is passed at most once, the state graph being acyclic), every node's stage
load (compute; the star traffic) and, under ``sum``, every node's compute +
incoming + outgoing (each node has at most one of each). The constraint
names are these words: ``first_stage``, ``stage_end_sends``,
``transfer_starts_stage``, ``node_hosts_one_stage``,
``bottleneck_covers_transfer``, ``bottleneck_covers_stage``,
``bottleneck_covers_node_sum``. Subsets before supersets make every flow a
path, and a path of stages is a valid pipeline; node distinctness is the
fourth row. Stage loads and transfer times are the engine's arrays
(:class:`partopt.solvers._states.StateSearch`), so the model, the engine
and :func:`partopt.plan.evaluate` agree.
"""

from __future__ import annotations

import math

import numpy as np

from partopt.highs import DEFAULT_THREADS
from partopt.plan import Plan
from partopt.solvers import SolverOutput, SolverRefused, register
from partopt.solvers._limits import milp_decision
from partopt.solvers._states import StateSearch

__all__ = ["MAX_COLUMNS", "build", "extract_plan", "milp_columns", "solve_dag_milp"]

MAX_COLUMNS = 400_000
"""Largest model (stage + transfer variables) built."""

HIGHS_OPTIONS = {"presolve": "off"}


def milp_columns(
    search: StateSearch, ok: np.ndarray, allowed: np.ndarray, per_kind: bool = True
) -> int:
    """Variables of the model at a threshold: a stage variable per allowed (stage, node), a
    transfer variable per allowed link at every boundary but the first and the last.

    ``ok`` is the engine's stage table per node kind ``(P, K)``, or per node with
    ``per_kind=False``.
    """
    stages = ok.sum(axis=0)
    if per_kind:
        stages = stages @ np.bincount(search.kind, minlength=ok.shape[1])
    return int(np.sum(stages)) + int(allowed[1 : search.full].sum())


def build(
    search: StateSearch, max_time_s: float | None = None, lower_bound_s: float = 0.0, reachable=None
):
    """The model for ``search``'s problem; only stages and transfers ``<= max_time_s`` are kept."""
    import pyomo.environ as pyo

    st, n, full = search.st, search.num_nodes, search.full
    theta = math.inf if max_time_s is None else float(max_time_s)
    ok, allowed = search._threshold(theta)
    if reachable is not None:
        ok = ok & reachable[st.pair_start]
    columns = milp_columns(search, ok, allowed, per_kind=False)  # before any list is built
    if columns > MAX_COLUMNS:
        raise SolverRefused(
            f"the DAG MILP would have {columns:,} variables (limit {MAX_COLUMNS:,})"
        )
    q, v = np.nonzero(ok)
    stages = list(zip(q.tolist(), v.tolist(), strict=True))
    tt, uu, ww = np.nonzero(allowed)
    keep = (tt != full) & (tt != 0)
    links = list(zip(tt[keep].tolist(), uu[keep].tolist(), ww[keep].tolist(), strict=True))
    tau, level, ct = search.tau, search.level, search.ct
    vals = [float(level[p, x]) for p, x in stages] + [float(tau[k]) for k in links]
    upper = max([lower_bound_s, 0.0, *vals]) * (3.0 if search.sum else 1.0)

    m = pyo.ConcreteModel(name="dag-stage-flow")
    m.P = pyo.Set(initialize=stages, dimen=2, doc="memory-feasible stages (stage index, node)")
    m.L = pyo.Set(initialize=links, dimen=3, doc="transfers (boundary, from node, to node)")
    m.a = pyo.Var(m.P, domain=pyo.Binary, doc="stage p runs on node v")
    m.y = pyo.Var(m.L, domain=pyo.Binary, doc="boundary t is sent from u to w")
    m.beta = pyo.Var(bounds=(lower_bound_s, upper), doc="bottleneck, seconds per inference")
    ends_at: dict = {}
    starts_at: dict = {}
    on_node: dict = {}
    for p, x in stages:
        s, t = int(st.pair_start[p]), int(st.pair_end[p])
        ends_at.setdefault((t, x), []).append(m.a[p, x])
        starts_at.setdefault((s, x), []).append(m.a[p, x])
        on_node.setdefault(x, []).append((p, x))
    sends: dict = {}
    receives: dict = {}
    by_state: dict = {}
    for t, u, w in links:
        sends.setdefault((t, u), []).append(m.y[t, u, w])
        receives.setdefault((t, w), []).append(m.y[t, u, w])
        by_state.setdefault(t, []).append((t, u, w))
    first = [a for x in range(n) for a in starts_at.get((0, x), [])]
    if not first:
        m.no_first_stage = pyo.Var(bounds=(0, 0))
        first = [m.no_first_stage]
    m.first_stage = pyo.Constraint(
        expr=sum(first) == 1, doc="the pipeline starts at {} on one node"
    )
    out_keys = sorted(set(sends) | {k for k in ends_at if k[0] != full})
    in_keys = sorted(set(receives) | {k for k in starts_at if k[0] != 0})

    @m.Constraint(out_keys, doc="a stage ending at boundary t on u sends boundary t from u")
    def stage_end_sends(m, t, u):
        return sum(ends_at.get((t, u), [])) == sum(sends.get((t, u), []))

    @m.Constraint(in_keys, doc="what arrives at w after boundary t starts w's stage at t")
    def transfer_starts_stage(m, t, w):
        return sum(receives.get((t, w), [])) == sum(starts_at.get((t, w), []))

    @m.Constraint(sorted(on_node), doc="stages run on distinct nodes")
    def node_hosts_one_stage(m, x):
        return sum(m.a[k] for k in on_node[x]) <= 1

    if not search.star and not search.sum:

        @m.Constraint(sorted(by_state), doc="the bottleneck is at least every transfer time")
        def bottleneck_covers_transfer(m, t):
            return m.beta >= sum(float(tau[k]) * m.y[k] for k in by_state[t])

    if search.problem.uses_compute and not search.sum:

        @m.Constraint(sorted(on_node), doc="the bottleneck is at least every stage's load")
        def bottleneck_covers_stage(m, x):
            return m.beta >= sum(float(level[p, x]) * m.a[p, x] for p, _ in on_node[x])

    if search.sum:
        out_of: dict = {}
        into: dict = {}
        for t, u, w in links:
            out_of.setdefault(u, []).append((t, u, w))
            into.setdefault(w, []).append((t, u, w))

        @m.Constraint(
            sorted(on_node), doc="the bottleneck is at least compute + incoming + outgoing"
        )
        def bottleneck_covers_node_sum(m, x):
            return m.beta >= (
                sum(float(ct[p, x]) * m.a[p, x] for p, _ in on_node[x])
                + sum(float(tau[k]) * m.y[k] for k in into.get(x, []))
                + sum(float(tau[k]) * m.y[k] for k in out_of.get(x, []))
            )

    m.bottleneck = pyo.Objective(expr=m.beta, sense=pyo.minimize)
    return m


def extract_plan(model, search: StateSearch) -> Plan | None:
    """The plan of the model's loaded stage variables (its value kept in ``search``), or ``None``."""
    import pyomo.environ as pyo

    st = search.st
    chosen = [k for k in model.P if (pyo.value(model.a[k], exception=False) or 0) > 0.5]
    if not chosen:
        return None
    chosen.sort(key=lambda k: (int(st.pair_start[k[0]]), k[0]))
    path = [(int(p), int(x)) for p, x in chosen]
    for (p, _), (q, _) in zip(path, path[1:], strict=False):
        if st.pair_end[p] != st.pair_start[q]:
            return None
    return search._plan(path)


def decide(search: StateSearch, theta, lower, seed, threads, h=None):
    """MILP over the plans ``<= theta``: ``(status, plan, bound, info)`` as the engine expects."""
    search.stats["milp_calls"] += 1
    reach = None if h is None else (h <= search.num_nodes)
    return milp_decision(
        lambda: build(search, None if math.isinf(theta) else theta, max(lower, 0.0), reach),
        lambda model: extract_plan(model, search),
        search.deadline,
        seed=seed,
        threads=threads,
        options=HIGHS_OPTIONS,
    )


@register(
    "dag-milp",
    exact=True,
    dag=True,
    description="stage-flow MILP over the boundary states (DAG problems)",
)
def solve_dag_milp(
    problem,
    *,
    time_limit_s: float | None = None,
    seed: int = 0,
    threads: int = DEFAULT_THREADS,
    **_,
) -> SolverOutput:
    """The DAG MILP solved by HiGHS (gap 0); chain problems go through their line DAG."""
    if not hasattr(problem, "dag"):
        raise SolverRefused("dag-milp solves DAG problems (--cuts dag); use 'milp' for chains")
    import time

    deadline = math.inf if time_limit_s is None else time.perf_counter() + float(time_limit_s)
    search = StateSearch(problem, deadline)
    status, plan, bound, info = decide(search, math.inf, 0.0, seed, threads)
    if status == "infeasible":
        if not search.complete:
            return SolverOutput("no_solution", info={**info, "states_capped": True})
        return SolverOutput("infeasible", info=info)
    if plan is None:
        return SolverOutput("no_solution", lower_bound_s=bound, info=info)
    value = search.plan_value_s(plan)
    if status == "optimal" and search.complete:
        return SolverOutput("optimal", plan, objective_s=value, lower_bound_s=bound, info=info)
    return SolverOutput(
        "feasible",
        plan,
        objective_s=value,
        lower_bound_s=bound if search.complete else None,
        info=info,
    )
