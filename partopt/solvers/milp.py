r"""``milp``: min-bottleneck partitioning and placement as a stage-flow MILP.

Formulation
-----------
Sets

* :math:`B` blocks :math:`0..B-1`; cut :math:`c \in C = \{0..B-2\}` lies
  between blocks :math:`c` and :math:`c+1` and carries :math:`T_c` bytes.
* :math:`V` nodes with capacity :math:`\mathrm{cap}_v` bytes (and speed
  :math:`s_v` FLOP/s for the ``max`` objective).
* :math:`S` *stages*: triples :math:`(i, j, v)` such that blocks
  :math:`i..j` fit node :math:`v`'s memory (and, if a cap is given, compute
  within it). Memory is therefore exact by construction: there are no
  memory rows and no big-M.
* :math:`L` *transfers*: triples :math:`(c, u, v)`, :math:`u \ne v`, with a
  link :math:`u \to v`; its time is
  :math:`\tau_{cuv} = 8 T_c / (\mathrm{bw}_{uv} \cdot 10^6)` seconds.

Variables

* :math:`a_{ijv} \in \{0,1\}`: stage :math:`(i, j, v)` is in the plan.
* :math:`y_{cuv} \in \{0,1\}`: the plan cuts at :math:`c` and sends the
  tensor from :math:`u` to :math:`v`.
* :math:`\beta \ge 0`: the bottleneck, seconds per inference.

Constraints (names as in the model)

* ``first_stage``: :math:`\sum_{(0,j,v)\in S} a_{0jv} = 1`.
* ``stage_end_sends``: for every cut :math:`c` and node :math:`u`,
  :math:`\sum_i a_{icu} = \sum_v y_{cuv}`: a stage that ends at
  :math:`c` on :math:`u` sends cut :math:`c` from :math:`u`, and only then.
* ``transfer_starts_stage``: for every :math:`c, v`,
  :math:`\sum_u y_{cuv} = \sum_j a_{c+1,j,v}`: what arrives at :math:`v`
  starts :math:`v`'s stage at block :math:`c+1`.
* ``node_hosts_one_stage``: :math:`\sum_{i,j} a_{ijv} \le 1` for every
  :math:`v` (stages on distinct nodes).
* ``bottleneck_covers_transfer``: :math:`\beta \ge \sum_{u,v}
  \tau_{cuv} y_{cuv}` for every cut :math:`c` (at most one term is 1).
* ``bottleneck_covers_compute`` (``max`` objective only):
  :math:`\beta \ge \sum_{i,j} (F_{ij}/s_v)\, a_{ijv}` for every node
  :math:`v` (a node runs at most one stage).
* :math:`\beta \ge` a valid lower bound (:func:`partopt.bounds.lower_bound_s`),
  given as the variable's lower bound.

Objective: minimise :math:`\beta`.

The first three rows are flow conservation in the acyclic graph whose
vertices are "a stage starts at block :math:`i` on :math:`v`" and "a stage
ends at block :math:`j` on :math:`v`": one unit leaves block 0 and, being
integral in a DAG, follows a single path of stages and transfers to block
:math:`B-1`. That path is a plan; ``node_hosts_one_stage`` makes its nodes
distinct.

Why it is tight
---------------
* Without ``node_hosts_one_stage`` and the bottleneck rows the constraint
  matrix is a network matrix, so the LP relaxation of the flow part is
  integral: fractional solutions can only come from node distinctness and
  the min-max objective.
* Memory is encoded in the choice of :math:`S`, not by rows over per-block
  assignment variables. The classic layered formulation (a binary
  per block and node, see ``direct_milp``) lets the LP spread every block
  over all nodes at :math:`1/N` each, which fits every memory row, needs
  no transfer at all and gives the LP bound 0; here the LP must push its
  unit of flow through memory-feasible stages and therefore across cuts.
* The bottleneck rows aggregate over the links of one cut (at most one of
  them is used), which dominates the per-link rows
  :math:`\beta \ge \tau_{cuv} y_{cuv}`.
* Variables that no plan can use are removed before the model is built:
  stages and transfers not on any source-to-sink path of the flow graph
  (forward and backward reachability), and, when a cap ``max_time_s`` is
  given (an incumbent's value, or a threshold), every transfer and stage
  slower than it.

References
----------
Tarnawski, J., Phanishayee, A., Devanur, N., Mahajan, D. and Nina Paravecino,
F. (2020). Efficient algorithms for device placement of DNN graph operators.
NeurIPS. (Min-max pipeline placement as an integer program.)

Ahuja, R. K., Magnanti, T. L. and Orlin, J. B. (1993). Network Flows.
Prentice Hall. (Integrality of network-flow polytopes.)
"""

from __future__ import annotations

import math
import time

import numpy as np

from partopt import bounds
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

__all__ = [
    "build",
    "extract_plan",
    "transfer_times",
    "stage_compute_times",
    "solve_milp",
    "HIGHS_OPTIONS",
]

HIGHS_OPTIONS = {"presolve": "off"}
"""HiGHS options for this model. Its presolve spends seconds to minutes on the
stage-flow model and removes almost nothing: measured on ResNet50 (44 blocks,
5 nodes) 15 s with presolve and 0.5 s without; on DenseNet201 (126 blocks,
10 nodes, ``paper`` memory) 125 s without finishing, against 36 s."""


def transfer_times(problem: Problem) -> np.ndarray:
    """``tau[c, u, v]``: seconds to send cut ``c`` from ``u`` to ``v`` (``inf``: no link).

    Computed with the same floating-point operations as
    :meth:`Problem.transfer_time_s`, so that thresholds compare exactly.
    """
    from partopt.costs import transfer_times_s

    cl = problem.cluster
    return transfer_times_s(problem.transfer_bytes.astype(float), cl.bandwidth_mbps, cl.latency_s)


def stage_compute_times(problem: Problem) -> np.ndarray:
    """``ct[i, j, v]``: seconds to compute blocks ``i..j`` on ``v`` (0 without the ``max`` objective).

    ``inf`` below the diagonal. Same arithmetic as :meth:`Problem.compute_time_s`.
    """
    b, n = problem.num_blocks, problem.num_nodes
    out = np.zeros((b, b, n))
    speeds = problem.cluster.flops_per_s
    if problem.uses_compute and speeds is not None:
        p = problem._flops_prefix
        flops = p[None, 1:] - p[:b, None]  # flops[i, j] = stage_flops(i, j)
        out = flops[:, :, None] / speeds[None, None, :]
    out[np.tril_indices(b, -1)] = np.inf
    return out


def check_size(problem: Problem) -> None:
    """Refuse (:class:`~partopt.solvers.SolverRefused`) instances too large for this model.

    Counts, without building anything, the dense tables the model needs
    (``B x B x N`` stage tables, ``(B - 1) x N x N`` transfer times) and an
    upper bound on its variables (memory-feasible stages from the windows of
    every node, transfers over every link at every cut).
    """
    from partopt.solvers._plans import node_windows

    b, n = problem.num_blocks, problem.num_nodes
    instead = "exact, or a heuristic (greedy, local-search)"
    refuse_if_dense("milp", "stage table", (b, b, n), instead)
    refuse_if_dense("milp", "transfer-time table", (max(b - 1, 1), n, n), instead)
    far = node_windows(problem)  # (B, N)
    stage_vars = int(np.maximum(far - np.arange(b)[:, None] + 1, 0).sum())
    links = int(np.count_nonzero(problem.cluster.bandwidth_mbps > 0))
    refuse_if_model_too_large(
        "milp",
        stage_vars + (b - 1) * links,
        f"{stage_vars:,} memory-feasible stages, {b - 1} cuts x {links:,} links",
        instead,
    )


def _candidates(problem: Problem, max_time_s, reachable, deadline: float = math.inf):
    """Stages and transfers that can lie on a plan (reachability-pruned).

    Returns ``stages`` (list of ``(i, j, v)``) and ``links`` (list of ``(c, u, v)``).
    Raises :class:`~partopt.solvers._limits.OutOfTime` once ``deadline`` has passed.
    """
    b, n = problem.num_blocks, problem.num_nodes
    cap = problem.cluster.memory_bytes * (1 + MEMORY_TOLERANCE)
    fits = problem.stage_memory_matrix[:, :, None] <= cap[None, None, :]
    if max_time_s is not None:
        fits &= stage_compute_times(problem) <= max_time_s
        tau_ok = transfer_times(problem) <= max_time_s
    else:
        tau_ok = np.isfinite(transfer_times(problem))
    if reachable is not None:
        fits &= np.asarray(reachable, dtype=bool)[:, None, :]
    # Forward: a stage may start at (i, v) only if i == 0 or a transfer can arrive there.
    start = np.zeros((b, n), dtype=bool)
    end = np.zeros((b, n), dtype=bool)
    start[0] = True
    for i in range(b):
        if time.perf_counter() > deadline:
            raise OutOfTime("time limit: reached while pruning the model's stages")
        if i > 0:
            start[i] = (end[i - 1][:, None] & tau_ok[i - 1]).any(axis=0) | False
        end[i:, :] |= fits[i, i:, :] & start[i][None, :]
    # Backward: a stage ending at (j, v) must reach the last block.
    done_start = np.zeros(
        (b, n), dtype=bool
    )  # from a stage starting at (i, v) the chain can finish
    done_end = np.zeros((b, n), dtype=bool)  # from a stage ending at (j, v) the chain can finish
    done_end[b - 1] = True
    for i in range(b - 1, -1, -1):
        if time.perf_counter() > deadline:
            raise OutOfTime("time limit: reached while pruning the model's stages")
        if i < b - 1:
            done_end[i] = (tau_ok[i] & done_start[i + 1][None, :]).any(axis=1)
        done_start[i] = (fits[i, i:, :] & done_end[i:, :]).any(axis=0)
    stages = []
    for i in range(b):
        if time.perf_counter() > deadline:
            raise OutOfTime("time limit: reached while listing the model's stages")
        ok = fits[i] & start[i][None, :] & done_end  # (j, v)
        for j, v in zip(*np.nonzero(ok), strict=True):
            if j >= i:
                stages.append((int(i), int(j), int(v)))
    links = []
    for c in range(b - 1):
        if time.perf_counter() > deadline:
            raise OutOfTime("time limit: reached while listing the model's transfers")
        ok = (
            tau_ok[c]
            & (end[c] & done_end[c])[:, None]
            & (start[c + 1] & done_start[c + 1])[None, :]
        )
        for u, v in zip(*np.nonzero(ok), strict=True):
            links.append((c, int(u), int(v)))
    return stages, links


def build(
    problem: Problem,
    *,
    max_time_s: float | None = None,
    lower_bound_s: float | None = None,
    reachable=None,
    deadline: float = math.inf,
):
    """The stage-flow MILP of ``problem`` (see the module docstring); never solves.

    Parameters
    ----------
    problem
        The instance.
    max_time_s
        Drop every transfer and stage slower than this many seconds: only
        plans with bottleneck ``<= max_time_s`` remain (an incumbent's
        value keeps the incumbent; a threshold turns the model into a
        decision problem).
    lower_bound_s
        A valid lower bound on the optimum (seconds), imposed on
        :math:`\\beta`. Defaults to :func:`partopt.bounds.lower_bound_s`.
    reachable
        Optional boolean ``(B, N)`` mask: a stage may start at block ``i``
        on node ``v`` only where it is true (pruning proved elsewhere).
    deadline
        A ``time.perf_counter()`` instant: :class:`~partopt.solvers._limits.OutOfTime`
        is raised when it passes while the candidates are listed, or when
        building and loading the model would end after it (predicted from
        its size, see :mod:`partopt.solvers._limits`).

    Returns
    -------
    pyomo.environ.ConcreteModel
        With sets ``S`` (stages), ``L`` (transfers), variables ``a``, ``y``,
        ``beta`` and objective ``bottleneck``. An instance with no path at
        all still gets a (then infeasible) model.

    Examples
    --------
    >>> from partopt import Chain, Cluster, Problem
    >>> p = Problem(Chain.from_arrays([3, 3, 3], [1e6, 2e6]),
    ...             Cluster.uniform(3, memory_bytes=6, bandwidth_mbps=8.0))
    >>> m = build(p)
    >>> len(m.S), len(m.L)
    (15, 12)
    """
    b, n = problem.num_blocks, problem.num_nodes
    stages, links = _candidates(problem, max_time_s, reachable, deadline)
    check_time_left("milp", deadline, len(stages) + len(links) + 4 * (b - 1) * n)
    import pyomo.environ as pyo  # after the checks: importing pyomo alone takes about a second

    tau = transfer_times(problem)
    ct = stage_compute_times(problem)
    if lower_bound_s is None:
        lower_bound_s = bounds.lower_bound_s(problem)
    lower_bound_s = float(lower_bound_s) if math.isfinite(lower_bound_s) else 0.0
    values = [tau[c, u, v] for c, u, v in links] + [ct[i, j, v] for i, j, v in stages]
    upper = max([lower_bound_s, 0.0, *values])  # no plan in the model is slower

    m = pyo.ConcreteModel(name="stage-flow")
    m.V = pyo.Set(initialize=range(n), doc="nodes")
    m.C = pyo.Set(initialize=range(b - 1), doc="cuts (cut c follows block c)")
    m.S = pyo.Set(initialize=stages, dimen=3, doc="memory-feasible stages (first, last, node)")
    m.L = pyo.Set(initialize=links, dimen=3, doc="transfers (cut, from node, to node)")
    m.a = pyo.Var(m.S, domain=pyo.Binary, doc="stage (i, j, v) is in the plan")
    m.y = pyo.Var(m.L, domain=pyo.Binary, doc="cut c is sent from u to v")
    m.beta = pyo.Var(bounds=(lower_bound_s, upper), doc="bottleneck, seconds per inference")

    ends_at: dict[tuple[int, int], list] = {}
    starts_at: dict[tuple[int, int], list] = {}
    on_node: dict[int, list] = {}
    for i, j, v in stages:
        ends_at.setdefault((j, v), []).append(m.a[i, j, v])
        starts_at.setdefault((i, v), []).append(m.a[i, j, v])
        on_node.setdefault(v, []).append((i, j, v))
    sends: dict[tuple[int, int], list] = {}
    receives: dict[tuple[int, int], list] = {}
    by_cut: dict[int, list] = {}
    for c, u, v in links:
        sends.setdefault((c, u), []).append(m.y[c, u, v])
        receives.setdefault((c, v), []).append(m.y[c, u, v])
        by_cut.setdefault(c, []).append((c, u, v))

    first = [x for v in range(n) for x in starts_at.get((0, v), [])]
    if not first:  # no plan at all: keep the model well-formed and let HiGHS prove it
        m.no_first_stage = pyo.Var(bounds=(0, 0))
        first = [m.no_first_stage]
    m.first_stage = pyo.Constraint(
        expr=sum(first) == 1, doc="the pipeline starts at block 0 on exactly one node"
    )
    out_keys = sorted(set(sends) | {(j, v) for (j, v) in ends_at if j < b - 1})
    in_keys = sorted(set(receives) | {(i - 1, v) for (i, v) in starts_at if i > 0})

    @m.Constraint(out_keys, doc="a stage ending at cut c on u sends cut c from u")
    def stage_end_sends(m, c, u):
        return sum(ends_at.get((c, u), [])) == sum(sends.get((c, u), []))

    @m.Constraint(in_keys, doc="what arrives at v after cut c starts v's stage at block c + 1")
    def transfer_starts_stage(m, c, v):
        return sum(receives.get((c, v), [])) == sum(starts_at.get((c + 1, v), []))

    @m.Constraint(sorted(on_node), doc="stages run on distinct nodes")
    def node_hosts_one_stage(m, v):
        return sum(m.a[s] for s in on_node[v]) <= 1

    @m.Constraint(sorted(by_cut), doc="the bottleneck is at least every transfer time")
    def bottleneck_covers_transfer(m, c):
        return m.beta >= sum(float(tau[k]) * m.y[k] for k in by_cut[c])

    if problem.uses_compute:

        @m.Constraint(sorted(on_node), doc="the bottleneck is at least every stage's compute time")
        def bottleneck_covers_compute(m, v):
            return m.beta >= sum(float(ct[s]) * m.a[s] for s in on_node[v])

    m.bottleneck = pyo.Objective(expr=m.beta, sense=pyo.minimize)
    return m


def extract_plan(model) -> Plan | None:
    """The plan encoded by the model's (loaded) stage variables, or ``None``."""
    import pyomo.environ as pyo

    chosen = []
    for s in model.S:
        val = pyo.value(model.a[s], exception=False)
        if val is not None and val > 0.5:
            chosen.append(s)
    if not chosen:
        return None
    chosen.sort()
    return Plan(tuple(Stage(i, j, v) for i, j, v in chosen))


def plan_value_s(problem: Problem, plan: Plan, tau=None, ct=None) -> float:
    """Bottleneck of ``plan`` from the model's coefficients (not :func:`evaluate`)."""
    tau = transfer_times(problem) if tau is None else tau
    value = 0.0
    for k, s in enumerate(plan.stages):
        if problem.uses_compute:
            value = max(value, problem.compute_time_s(s.first_block, s.last_block, s.node))
        if k + 1 < len(plan.stages):
            value = max(value, float(tau[s.last_block, s.node, plan.stages[k + 1].node]))
    return value


@register("milp", exact=True, description="stage-flow MILP solved by HiGHS")
def solve_milp(
    problem: Problem,
    *,
    time_limit_s: float | None = None,
    seed: int = 0,
    threads: int = DEFAULT_THREADS,
    max_time_s: float | None = None,
    log: bool = False,
    **_,
) -> SolverOutput:
    """Build the stage-flow MILP and solve it with HiGHS (gap 0).

    ``max_time_s`` (optional) is a known upper bound, e.g. a heuristic's
    bottleneck: slower stages and transfers are removed from the model.
    At a time limit the incumbent comes back as ``feasible`` with HiGHS's
    dual bound; without one as ``no_solution``. The limit covers building
    the model too: ``info["build_s"]`` and ``info["solve_s"]`` say where the
    time went, and a model that cannot be built and loaded in the time left
    is not started (see :mod:`partopt.solvers._limits`). Instances too large
    for the model are refused before anything is allocated.
    """
    check_size(problem)
    t0 = time.perf_counter()
    deadline = math.inf if time_limit_s is None else t0 + time_limit_s
    try:
        model = build(problem, max_time_s=max_time_s, deadline=deadline)
    except OutOfTime as exc:
        return SolverOutput(
            "no_solution", info={"reason": str(exc), "build_s": time.perf_counter() - t0}
        )
    build_s = time.perf_counter() - t0
    size = {"milp_stage_vars": len(model.S), "milp_transfer_vars": len(model.L)}
    remaining = None if time_limit_s is None else max(0.0, deadline - time.perf_counter())
    out = solve_model(
        model, time_limit_s=remaining, seed=seed, threads=threads, log=log, options=HIGHS_OPTIONS
    )
    info = {**size, **out.as_info(), "build_s": build_s, "solve_s": out.runtime_s}
    if out.status == "infeasible":
        if max_time_s is not None:
            # Infeasible below a cap proves nothing about the uncapped instance.
            return SolverOutput(
                "no_solution",
                lower_bound_s=float(max_time_s),
                info={**info, "reason": f"no plan with bottleneck <= {max_time_s} s"},
            )
        return SolverOutput("infeasible", info={**info, "reason": out.message})
    if out.status in ("no_solution", "error"):
        key = "error" if out.status == "error" else "reason"
        return SolverOutput(out.status, lower_bound_s=out.bound, info={**info, key: out.message})
    plan = extract_plan(model)
    if plan is None:
        return SolverOutput(
            "error", info={**info, "error": "HiGHS reported a solution with no stage"}
        )
    if out.status == "optimal":
        return SolverOutput(
            "optimal", plan, objective_s=out.objective, lower_bound_s=out.bound, info=info
        )
    # An incumbent's beta need not be tight: report what its transfers cost.
    return SolverOutput(
        "feasible",
        plan,
        objective_s=plan_value_s(problem, plan),
        lower_bound_s=out.bound,
        info=info,
    )
