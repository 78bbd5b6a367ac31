r"""Threshold decisions over a general graph of boundary states (DAG problems).

The decision procedure behind ``exact`` for a :class:`~partopt.dag.DagProblem`:
the same contract as :class:`partopt.solvers.exact.ExactSearch` (which is its
vectorised specialisation for states that form a line), so that one driver,
the threshold search of :mod:`partopt.solvers.exact`, runs on both.

For a threshold :math:`\theta`, a stage ``p = (s, t)`` may run on node
``v`` when it fits ``v``'s memory and its stage-level load (compute; the
star model's traffic) is at most :math:`\theta`; boundary ``t`` may be sent
from ``v`` to ``w`` when its transfer is at most :math:`\theta` (any two
distinct nodes under the star model, which communicates through host
memory). The ``sum`` objective couples a stage's compute with its incoming
and outgoing transfer; the search checks the coupled sum exactly, the
relaxation checks its three terms separately (a weaker, still valid test).

1. **Walk bound.** The least bottleneck over walks of stages that never go
   straight back (``u -> v -> u``), a (min, max) dynamic program over the
   states (:meth:`StateSearch._no_return`, two values per state), is a lower
   bound on every plan and often the optimum itself.
2. **Relaxation.** The same recursion counting stages at a threshold: the
   fewest stages that finish from state ``s`` with a stage on ``v``
   (``h[s, v]``) over such walks; more than :math:`N` stages from state 0
   refutes :math:`\theta`. When the nodes are interchangeable (equal memory
   and speed, equal links) a walk of at most :math:`N` stages maps onto
   distinct nodes, so the relaxation decides: the least feasible threshold
   is a bottleneck path of at most :math:`N` stages (``N`` vectorised
   min-max rounds, computed once), which is both the bound and the
   incumbent. Under the star model, when the stages hit their cap, only
   those with compute in a window that provably holds every stage of a
   plan at most a known upper bound are generated.
3. **Path search.** Depth-first over simple node paths; a search state is
   (last node, used nodes, the set of boundary states where the last node's
   stage may start), pruned by the relaxation (a next node may not return
   to the last one) and memoised as dead ends across thresholds. A dead end
   records only the used nodes that blocked a move in its subtree (its
   *reason*) and the number of stages so far, so it also holds for any
   state with the same last node, fewer starts, those nodes used, at least
   as many stages and a smaller threshold.

A full decision whose search exceeds its state budget goes to the DAG
MILP (:mod:`partopt.solvers.dag_milp`) when that model is small enough to
build, and otherwise searches on until the deadline.

Stage fit and load depend on a node only through its *kind* (memory, and
speed when compute counts), so the per-stage tables are stages x kinds.
"""

from __future__ import annotations

import math
import time
from functools import cached_property

import numpy as np

from partopt import bounds
from partopt.costs import transfer_times_s
from partopt.plan import OpStage, Plan

__all__ = ["StateSearch", "MAX_TAU_ENTRIES"]

MAX_TAU_ENTRIES = 30_000_000
"""Largest states x nodes x nodes transfer table the search builds."""

COSTLY_ENTRIES = 20_000_000
"""Stages x nodes above which one relaxation takes seconds (the driver then probes less)."""

INITIAL_PLAN_S = 2.0
"""Seconds the incumbent from the topological-order chain may take."""

MAX_SPLIT_KINDS = 8
"""With at most this many node kinds, the walk recursions run kind by kind over the stages
allowed on each kind; with more, over all stages and nodes at once."""

MAX_SUM_CANDIDATES = 20_000_000
"""Largest stage x node^3 enumeration of candidate values under the ``sum`` objective."""


class Unknown(Exception):
    """The path search ran out of budget or time."""


class StateSearch:
    """Threshold decisions for a DAG problem (see the module docstring)."""

    def __init__(self, problem, deadline: float = math.inf, dfs_budget: int = 100_000) -> None:
        from partopt.solvers import SolverRefused

        self.problem = problem
        self.deadline = deadline
        self.dfs_budget = dfs_budget
        self.probe_time_s = 0.25
        st = problem.states
        self.st = st
        self.complete = st.complete
        self.num_nodes = n = problem.num_nodes
        self.num_states = ns = st.num_states
        self.full = ns - 1
        cl = problem.cluster
        if ns * n * n > MAX_TAU_ENTRIES:
            raise SolverRefused(
                f"{ns:,} boundary states on {n} nodes make a transfer table of "
                f"{ns * n * n:,} entries (limit {MAX_TAU_ENTRIES:,}); use fewer states "
                "(max_states) or fewer nodes"
            )
        self.star = problem.objective == "star"
        self.sum = problem.objective == "sum"
        tau = transfer_times_s(st.out_bytes, cl.bandwidth_mbps, cl.latency_s)
        if self.star:
            tau = np.where(np.eye(n, dtype=bool)[None], np.inf, 0.0) * np.ones((ns, 1, 1))
        self.tau = tau  # (S, N, N)
        self.tau = tau  # (S, N, N)
        self.all_stages = st.num_pairs
        self._best_value: float | None = None
        self._best_plan: Plan | None = None
        self._values: dict[Plan, float] = {}
        if self._restrictable(st):
            self._light(st)
        else:
            self._tables(st)
        st = self.st
        self.complete = st.complete
        p = st.num_pairs
        self.symmetric = self._interchangeable()
        # a decision's relaxation takes seconds: the driver probes less
        self.costly = p * n > COSTLY_ENTRIES
        self.expanded = 0
        # node -> proven dead ends (reason, start bits, threshold, previous node, stages so far)
        self._dead: dict[int, list[tuple[int, int, float, int, int]]] = {}
        self.lp_bound = None
        self.stats = {
            "decisions": 0,
            "relaxation_refuted": 0,
            "relaxation_decided": 0,
            "search_feasible": 0,
            "search_refuted": 0,
            "milp_calls": 0,
            "states": 0,
            "dead_end_hits": 0,
            "boundary_states": ns,
            "stages": p,
            "stages_all": self.all_stages,
            **getattr(self, "stats_light", {}),
        }
        self._cands = self._candidate_values(SolverRefused)

    # -- data ---------------------------------------------------------------

    def _tables(self, st) -> None:
        """The per-stage tables over the stages of ``st``, per node *kind*: memory fit, compute, level.

        Nodes of equal memory (and speed, when compute counts) are one kind;
        a stage's fit and load depend on the node only through its kind, so
        the tables are ``(P, K)`` and ``self.kind[v]`` is node ``v``'s column.
        """
        problem, cl = self.problem, self.problem.cluster
        self.st = st
        speed = cl.flops_per_s if problem.uses_compute and st.pair_compute_s is None else None
        keys = np.column_stack(
            [cl.memory_bytes, np.zeros(self.num_nodes) if speed is None else speed]
        )
        uniq, kind = np.unique(keys, axis=0, return_inverse=True)
        self.kind = kind.reshape(-1).astype(np.int64)
        self.fits_k = st.pair_memory[:, None] <= uniq[None, :, 0] * (1 + 1e-9)  # (P, K)
        p = st.num_pairs
        if not problem.uses_compute:
            ct = np.zeros((p, 1))
        elif st.pair_compute_s is not None:
            ct = st.pair_compute_s[:, None]
        else:
            ct = st.pair_flops[:, None] / uniq[None, :, 1]
        ct = np.broadcast_to(ct, self.fits_k.shape)
        self.ct_k = ct
        self.level_k = ct + self._pair_star()[:, None] if self.star else ct  # stage-level load

    @property
    def fits(self) -> np.ndarray:
        """``(P, N)``: stage ``q`` fits node ``v``'s memory."""
        return self.fits_k[:, self.kind]

    @property
    def ct(self) -> np.ndarray:
        """``(P, N)``: stage ``q``'s compute time on node ``v``."""
        return self.ct_k[:, self.kind]

    @property
    def level(self) -> np.ndarray:
        """``(P, N)``: stage ``q``'s stage-level load on node ``v``."""
        return self.level_k[:, self.kind]

    def _restrictable(self, st) -> bool:
        """Whether to search fewer stages: star model, interchangeable nodes, plain-sum memory."""
        cl = self.problem.cluster
        if not self.star or self.num_nodes < 2 or np.ptp(cl.memory_bytes) > 0:
            return False
        if not getattr(st, "additive", False) or st.complete or not st.states_complete:
            return False  # only when the stages, not the states, hit their cap
        if st.pair_compute_s is not None:
            return bool(np.all(self.problem.dag.compute_s >= 0))
        return bool(np.ptp(cl.flops_per_s) == 0 and np.all(self.problem.dag.flops >= 0))

    def _usable(self, done: np.ndarray, low: float, x: float) -> tuple[np.ndarray, np.ndarray]:
        """States where a stage may start / end when every stage's compute is in ``[low, x]``."""
        n = self.num_nodes
        left = done[-1] - done
        tol = 1e-9 * max(float(done[-1]), 1e-300)

        def within(c: np.ndarray) -> np.ndarray:
            ok = np.zeros(c.size, dtype=bool)
            for j in range(n):
                ok |= (c >= j * low - tol * (j + 1)) & (c <= j * x + tol * (j + 1))
            return ok

        return within(done), within(left)

    def _light(self, st) -> None:
        r"""Search only the stages whose compute is at most :math:`X`, for an :math:`X \ge` the optimum.

        A star load is the stage's compute plus non-negative traffic, so every
        stage of load at most :math:`\theta \le X` is kept and a decision at
        such a threshold is the same as over all stages; above :math:`X` both
        are feasible (the plan found at :math:`X`). The candidate values keep
        the optimum, a load of the optimal plan, whose stages are all kept.
        :math:`X` starts at the optimum over the stages between prefixes of
        one topological order (a plan's value, so at least the optimum: one
        round then ends it), or, when there is none or the stages kept at it
        exceed the cap, at the average compute per node (a lower bound: the
        stages' compute adds up to the total); if the least feasible threshold
        over the kept stages exceeds :math:`X`, that plan's value is an upper
        bound and becomes :math:`X` (if there is none, :math:`X` grows by 1%,
        never past the chain's optimum), until the least feasible threshold
        is at most :math:`X` or every stage is kept. Coverage prunes further: in a plan of at most :math:`N`
        stages of compute at most :math:`X`, the other stages cover all but
        one stage's compute, so each stage has compute at least
        :math:`C - (N-1) X` (:math:`C` the total); only stages in that window
        are kept. Likewise a stage may start at a state only if the compute
        before it is ``j`` such stages' for some ``j < N`` (within
        :math:`[j(C-(N-1)X), jX]`), and end only where the compute after it is.
        """
        problem, cl, n = self.problem, self.problem.cluster, self.num_nodes
        if st.pair_compute_s is not None:
            weight, scale = np.asarray(problem.dag.compute_s, dtype=float), 1.0
        else:
            weight, scale = np.asarray(problem.dag.flops, dtype=float), float(cl.flops_per_s[0])
        total = float(weight.sum()) / scale
        done = (st.members @ weight) / scale  # compute inside each state
        start = max(total / n, bounds.lower_bound_s(problem), 0.0)
        # the optimum over one chain inside the state space: an upper bound to start from
        chain = st.prefixes
        self._tables(st.light_stages(weight, total * scale * (1 + 1e-9), 0.0, (chain, chain)))
        self._best_value, self._best_plan = None, None
        hint = self._interchangeable_optimum()
        x = hint if start < hint < math.inf else start
        rounds = 0
        while True:
            rounds += 1
            every = not x < total
            low = max(0.0, total - (n - 1) * x)
            floor = low * scale * (1 - 1e-9)
            space = st.light_stages(
                weight, x * scale * (1 + 1e-12), floor, self._usable(done, low, x)
            )
            if not space.complete and rounds == 1 and x > start:
                x = start  # too many stages up there: climb from the bound instead
                continue
            self._tables(space)
            self._best_value, self._best_plan = None, None
            value = self._interchangeable_optimum()
            if value <= x or every or not space.complete:
                break
            x = min(value, 1.01 * x, max(hint, x))
        self.stats_light = {"light_rounds": rounds, "light_limit_s": x}

    def _pair_star(self) -> np.ndarray:
        """Star traffic of every stage ``D = t - s``, from per-state tables.

        For a tensor ``x`` produced by ``p``: ``D`` sends ``x`` iff ``p`` is in
        ``t`` but not in ``s`` and ``x`` crosses boundary ``t`` (its readers
        all follow ``p``, so none is in the ideal ``s``); ``D`` reads ``x``
        from another device iff ``p`` is in ``s`` (or ``x`` is a graph input)
        and ``t`` holds more of ``x``'s readers than ``s``. The two cases are
        disjoint, so the traffic is a sum over tensors.

        Both cases only involve the *frontier* of ``s``: the tensors available
        at ``s`` (produced inside, or graph inputs) with a reader outside.
        A tensor crossing ``t`` whose producer is in ``s`` is on that frontier,
        so the sends are everything crossing ``t`` minus the frontier tensors
        of ``s`` that cross ``t``; a read is a frontier tensor of ``s`` with
        more readers inside ``t``. Frontiers are narrow, so each start state
        costs one small gather over its stages and its frontier.
        """
        st, dag = self.st, self.problem.dag
        cost = np.asarray(self.problem.tensor_star_cost_s, dtype=float)
        m = st.members
        keep = np.flatnonzero(cost > 0)
        ns = st.num_states
        c = cost[keep]
        crosses = np.zeros((ns, keep.size), dtype=bool)  # X_t(x): sent when the stage ends at t
        front = np.zeros((ns, keep.size), dtype=bool)  # available at s, a reader outside
        count = np.zeros((ns, keep.size), dtype=np.int32)  # readers of x inside the state
        for j, x in enumerate(keep):
            pr = int(dag.tensor_producer[x])
            cons = list(dag.tensor_consumers[x])
            if not cons:
                continue
            count[:, j] = m[:, cons].sum(axis=1)
            avail = m[:, pr] if pr >= 0 else np.ones(ns, dtype=bool)
            front[:, j] = avail & (count[:, j] < len(cons))
            if pr >= 0:
                crosses[:, j] = front[:, j]
        out = (crosses.astype(float) @ c)[st.pair_end]
        for s in range(ns):
            ps = st.pairs_from[s]
            f = np.flatnonzero(front[s])
            if ps.size == 0 or f.size == 0:
                continue
            t_ = st.pair_end[ps]
            grid = np.ix_(t_, f)
            delta = (count[grid] > count[s, f]).astype(float) - crosses[grid]
            out[ps] += delta @ c[f]
        return out

    def _interchangeable(self) -> bool:
        n = self.num_nodes
        if self.sum or n < 2:
            return n < 2
        if self.fits_k.shape[1] > 1:
            return False
        if self.star:
            return True
        off = ~np.eye(n, dtype=bool)
        t = self.tau[:, off]
        return bool(np.all(t == t[:, :1]))

    def _candidate_values(self, refused) -> np.ndarray:
        if self.symmetric:  # the optimum is known: the only candidate the driver needs
            best = self._interchangeable_optimum()
            return np.array([best]) if math.isfinite(best) else np.zeros(0)
        vals = [np.array([0.0])]
        fin = self.tau[np.isfinite(self.tau)]
        if not self.star:
            vals.append(fin)
        if self.problem.uses_compute:
            # one column per node kind
            lev = np.where(self.fits_k, self.level_k, np.inf)
            vals.append(lev[np.isfinite(lev)])
        if self.sum:
            st, n = self.st, self.num_nodes
            if st.num_pairs * n**3 > MAX_SUM_CANDIDATES:
                raise refused(
                    f"the sum objective enumerates {st.num_pairs * n**3:,} candidate values "
                    f"(limit {MAX_SUM_CANDIDATES:,}); use fewer nodes or a smaller model"
                )
            zero = np.zeros((1,))
            for q in range(st.num_pairs):
                s, t = int(st.pair_start[q]), int(st.pair_end[q])
                for v in np.flatnonzero(self.fits_k[q, self.kind]):
                    tin = zero if s == 0 else self.tau[s, :, v]
                    tout = zero if t == self.full else self.tau[t, v, :]
                    c = (self.ct_k[q, self.kind[v]] + tin)[:, None] + tout[None, :]
                    vals.append(c[np.isfinite(c)].ravel())
        return np.unique(np.concatenate(vals))

    # -- candidate values (the driver's interface) --------------------------

    def lower_bound_s(self) -> float:
        """The problem's bounds (:func:`partopt.bounds.lower_bound_s`) and :attr:`walk_bound_s`."""
        if self.symmetric:  # the relaxation is exact there: its optimum is the bound
            return self._interchangeable_optimum()
        return max(bounds.lower_bound_s(self.problem), self.walk_bound_s)

    def max_candidate(self) -> float:
        return float(self._cands[-1]) if self._cands.size else 0.0

    def min_positive_candidate(self) -> float:
        pos = self._cands[self._cands > 0]
        return float(pos[0]) if pos.size else math.inf

    def next_candidate(self, low: float) -> float:
        i = np.searchsorted(self._cands, low, side="left")
        return float(self._cands[i]) if i < self._cands.size else math.inf

    def candidates(self, low: float, high: float, distinct: bool = True) -> np.ndarray:
        c = self._cands
        return c[(c >= low) & (c <= high)]

    def initial_plan(self, deadline: float) -> Plan | None:
        """An incumbent: the multi-tensor chain's optimum (the DAG's topological order), or ``None``.

        Its prefixes are states of every state space, so it is a DAG plan;
        found by the exact engine's budgeted mode (``bottleneck-search``) on
        that chain in at most :data:`INITIAL_PLAN_S` (and half the time
        left), for the ``communication`` and ``max`` objectives.
        On interchangeable nodes: the relaxation's optimal plan.
        """
        prob, dag = self.problem, self.problem.dag
        if self.symmetric:
            self._interchangeable_optimum()
            return self._best_plan
        if prob.objective not in ("communication", "max") or dag.compute_s is not None:
            return None
        if any(len(u) > 1 for u in dag.units):
            return None
        from partopt.chain import Chain
        from partopt.dag import crossing_bytes
        from partopt.problem import Problem

        order = list(dag.order)
        if len(order) < 2:
            return None
        pos = np.empty(dag.num_ops, dtype=np.int64)
        pos[order] = np.arange(len(order))
        prefixes = pos[None, :] < np.arange(1, len(order))[:, None]
        cut_bytes = crossing_bytes(dag, prefixes)
        chain = Chain(
            name=dag.name,
            param_bytes=dag.param_bytes[order],
            activation_peak_bytes=dag.activation_peak_bytes[order],
            paper_memory_bytes=dag.paper_memory_bytes[order],
            flops=dag.flops[order],
            transfer_bytes=cut_bytes,
            paper_transfer_bytes=cut_bytes,
        )
        cl = prob.cluster
        plain = type(cl)(cl.names, cl.memory_bytes, cl.bandwidth_mbps, cl.flops_per_s)
        left = INITIAL_PLAN_S
        if not math.isinf(deadline):
            left = min(left, max(0.0, (deadline - time.perf_counter()) / 2))
        from partopt.solvers.exact import solve_bottleneck_search

        out = solve_bottleneck_search(
            Problem(chain, plain, prob.memory, "bytes", prob.objective), time_limit_s=left
        )
        if out.plan is None:
            return None
        st = self.st
        path, prev = [], 0
        for stage in out.plan.stages:
            t = st.index.get((1 << (stage.last_block + 1)) - 1)
            if t is None:
                return None
            ps = st.pairs_from[prev]
            q = ps[st.pair_end[ps] == t]
            if q.size == 0 or not self.fits_k[q[0], self.kind[stage.node]]:
                return None
            path.append((int(q[0]), int(stage.node)))
            prev = t
        plan = self._plan(path)
        self.stats["initial_plan_s"] = self._values[plan]
        return plan

    def plan_value_s(self, plan: Plan) -> float:
        return self._values[plan]

    def milp_decide(self, theta, lower, seed, threads, h=None):
        """The DAG stage-flow MILP over the plans ``<= theta`` (:mod:`partopt.solvers.dag_milp`)."""
        from partopt.solvers.dag_milp import decide

        return decide(self, theta, lower, seed, threads, h)

    # -- one threshold --------------------------------------------------------

    def _threshold(self, theta: float, per_node: bool = True):
        """``(ok, allowed)``: stages ``(P, N)`` (per kind ``(P, K)`` unless ``per_node``) and transfers."""
        ok = self.fits_k & (self.level_k <= theta)
        if per_node:
            ok = ok[:, self.kind]
        allowed = np.isfinite(self.tau) & (self.tau <= theta)  # inf: no link
        return ok, allowed

    def relaxation(self, ok: np.ndarray, allowed: np.ndarray):
        """Fewest stages over walks that never go straight back: ``(h1, w1, h2)``, each ``(S, N)``.

        ``ok`` is per node kind ``(P, K)``. See :meth:`_no_return`: with a
        stage costing 1 where allowed and a transfer 0 where allowed (``inf``
        elsewhere), ``h1[s, v]`` is the fewest stages that finish from state
        ``s`` with a stage on ``v``; ``h1[0].min() > N`` refutes the threshold.
        """
        one = np.where(ok, np.float32(1), np.float32(np.inf))

        def link(s: slice) -> np.ndarray:
            return np.where(allowed[s], np.float32(0), np.float32(np.inf))

        return self._no_return(one, link, np.add, np.float32)

    @cached_property
    def walk_bound_s(self) -> float:
        """A lower bound on every plan: the best bottleneck over no-return walks.

        The recursion of :meth:`_no_return` in the (min, max) semiring: a
        stage costs its stage-level load on the node where it fits
        (compute; the star model's traffic), a transfer its time on the link.
        A plan is such a walk (on distinct nodes, so it never goes straight
        back), and its bottleneck is at least the max of those terms (under
        ``sum``, a stage's load is at least each of its three terms), so the
        least bottleneck over the walks bounds every plan. It ignores the
        number of stages and distinctness beyond one step, so it can be
        below the optimum; it is often equal to it.
        """
        cost = np.where(self.fits_k, self.level_k, np.inf)

        def link(s: slice) -> np.ndarray:
            return self.tau[s]

        h1, _, _ = self._no_return(cost, link, np.maximum, np.float64)
        return float(h1[0].min()) if self.num_nodes else math.inf

    def _no_return(self, cost, link, op, dtype):
        """Best completions over walks with no ``u -> v -> u`` step: ``(h1, w1, h2)``, each ``(S, N)``.

        A walk from state ``s`` runs stages on nodes; consecutive stages
        ``(s, t)`` on ``v`` then ``(t, t')`` on ``w`` pay a transfer
        ``link[t, v, w]``; a stage ``q`` on ``v`` pays ``stage[q, v]``; costs
        combine by ``op`` (``add``: counts; ``maximum``: bottlenecks), ``inf``
        meaning "not allowed". Over the walks that start from ``s`` with a
        stage on ``v`` and never go straight back: ``h1[s, v]`` is the best
        cost, ``w1[s, v]`` the node after ``v`` in one best walk (``-1``:
        ``v``'s stage is the last), and ``h2[s, v]`` the best cost among
        walks whose next node is not ``w1[s, v]``. Coming from ``u``, the
        best walk that does not return to ``u`` costs ``h2`` if ``w1 == u``
        and ``h1`` otherwise, which is what the recursion needs: the
        typical blind spot of walks, a pair of stages bouncing over the one
        fast link (``a -> b -> a``), is closed by keeping two values per
        state. ``cost`` holds the stage costs per node kind ``(P, K)`` and
        ``link(slice)`` gives the transfer costs of a range of states
        ``(states, N, N)``; one vectorised step per group of equal-size
        states, largest first, and per node kind when there are few kinds
        (then only the stages allowed on the kind are touched).
        """
        st, n, ns = self.st, self.num_nodes, self.num_states
        inf = dtype(np.inf)
        h1 = np.full((ns, n), inf, dtype=dtype)
        h2 = np.full((ns, n), inf, dtype=dtype)
        w1 = np.full((ns, n), -1, dtype=np.int64)
        # after a stage on v ends at state t: best / second-best over the next node
        g1 = np.full((ns, n), inf, dtype=dtype)
        g2 = np.full((ns, n), inf, dtype=dtype)
        a1 = np.full((ns, n), -1, dtype=np.int64)
        g1[self.full] = 0
        cols = np.arange(n)
        kinds = cost.shape[1]
        if kinds <= MAX_SPLIT_KINDS:  # node columns of each kind, each kind's stages apart
            groups = [(k, np.flatnonzero(self.kind == k)) for k in range(kinds)]
        else:
            groups = [(-1, slice(None))]
        for first, stop, lo, hi in st.size_groups:
            for k, nodes in groups if hi > lo else ():
                if k < 0:
                    rows = np.arange(lo, hi)
                    c = cost[lo:hi][:, self.kind]
                else:
                    rows = lo + np.flatnonzero(cost[lo:hi, k] < inf)
                    if rows.size == 0:
                        continue
                    c = cost[rows, k][:, None]
                ends = st.pair_end[rows]
                starts, seg = np.unique(st.pair_start[rows], return_index=True)
                owner = np.repeat(np.arange(starts.size), np.diff(np.append(seg, rows.size)))
                ge = g1[ends][:, nodes]
                x = op(c, ge)
                val = np.minimum.reduceat(x, seg, axis=0)
                nxt = a1[ends][:, nodes]
                hit = x == val[owner]
                w = np.minimum.reduceat(np.where(hit, nxt, n), seg, axis=0)
                w = np.where(val < inf, w, -1)
                cell = starts if k < 0 else np.ix_(starts, nodes)
                h1[cell], w1[cell] = val, w
                other = np.where(nxt != w[owner], ge, g2[ends][:, nodes])
                h2[cell] = np.minimum.reduceat(op(c, other), seg, axis=0)
            s = slice(first, stop)
            # (states, v, w): the best walk after v from w, not returning to v
            back = w1[s][:, None, :] == cols[None, :, None]
            comp = np.where(back, h2[s][:, None, :], h1[s][:, None, :])
            vals = op(link(s), comp)
            arg = vals.argmin(axis=2)
            top = np.take_along_axis(vals, arg[:, :, None], axis=2)[:, :, 0]
            g1[s] = top
            a1[s] = np.where(top < inf, arg, -1)
            np.put_along_axis(vals, arg[:, :, None], inf, axis=2)
            g2[s] = vals.min(axis=2)
        return h1, w1, h2

    def decide(self, theta: float, time_s: float = math.inf, states=None, use_lp: bool = False):
        """``(status, plan, h)`` for threshold ``theta`` (``feasible``/``infeasible``/``unknown``)."""
        self.stats["decisions"] += 1
        if self.symmetric:
            best = self._interchangeable_optimum()
            if self._best_plan is None or not theta >= best:
                self.stats["relaxation_refuted"] += 1
                return "infeasible", None, None
            self.stats["relaxation_decided"] += 1
            return "feasible", self._best_plan, None
        ok, allowed = self._threshold(theta, per_node=False)
        n = self.num_nodes
        h, w1, h2 = self.relaxation(ok, allowed)
        if h[0].min() > n:
            self.stats["relaxation_refuted"] += 1
            return "infeasible", None, h
        budget = self.dfs_budget if states is None else states
        if math.isinf(time_s) and states is None and not self._milp_can_take(ok, allowed):
            budget = math.inf  # no MILP to hand the threshold to: search until the deadline
        try:
            plan = self._search(theta, ok, allowed, (h, w1, h2), time_s, budget)
        except Unknown:
            return "unknown", None, h
        if plan is None:
            self.stats["search_refuted"] += 1
            return "infeasible", None, h
        self.stats["search_feasible"] += 1
        return "feasible", plan, h

    def _milp_can_take(self, ok: np.ndarray, allowed: np.ndarray) -> bool:
        """Whether the fallback MILP at this threshold is small enough to be built."""
        from partopt.solvers.dag_milp import MAX_COLUMNS, milp_columns

        return milp_columns(self, ok, allowed) <= MAX_COLUMNS

    def _interchangeable_optimum(self) -> float:
        """On interchangeable nodes: the least threshold with a plan (``inf`` if none), once.

        A stage's weight is the least threshold admitting it: its level if it
        fits, raised to the transfer of its end boundary unless that is the
        last (no link: never). A threshold has a plan iff some path of at most
        ``N`` stages has all weights below it, so the least such threshold is
        a bottleneck path with at most ``N`` edges: ``N`` rounds of a
        min-max relaxation vectorised over all stages. The plan kept for every
        feasible decision is the fewest-stages path at that threshold.
        """
        if self._best_value is not None:
            return self._best_value
        st, n, full = self.st, self.num_nodes, self.full
        w = np.where(self.fits_k[:, 0], self.level_k[:, 0], np.inf)
        link = self.tau[:, 0, 1].copy() if n > 1 else np.full(self.num_states, np.inf)
        link[full] = 0.0
        w = np.maximum(w, link[st.pair_end])
        # First the stages between prefixes of one topological order (a chain inside
        # the state space): its optimum is a plan's value, an upper bound U. Every
        # plan of value <= U uses only stages of weight <= U, so the rounds over
        # those stages alone give the optimum.
        prefix = st.prefixes
        chain = np.flatnonzero(prefix[st.pair_start] & prefix[st.pair_end])
        upper = self._bottleneck_rounds(chain, w[chain])
        kept = np.flatnonzero(w <= upper) if math.isfinite(upper) else np.arange(w.size)
        best_full = self._bottleneck_rounds(kept, w[kept])
        value = float(min(best_full, upper))
        if math.isfinite(value):
            ok, allowed = self._threshold(value, per_node=False)
            path = self._fewest_stages(ok[:, 0], allowed)
            if path is None:  # cannot happen: the rounds found such a path
                raise AssertionError("bottleneck rounds and fewest-stages search disagree")
            self._best_plan = self._plan(path)
        self._best_value = value
        return value

    def _bottleneck_rounds(self, stages: np.ndarray, w: np.ndarray) -> float:
        """The least bottleneck of a path of at most ``N`` of ``stages`` (weights ``w``) to the full state."""
        st, n = self.st, self.num_nodes
        ends_all = st.pair_end[stages]
        # a radix sort when the state numbers fit 16 bits
        key = ends_all.astype(np.uint16) if self.num_states <= 1 << 16 else ends_all
        order = np.argsort(key, kind="stable")
        by_end = ends_all[order]
        first = np.flatnonzero(np.r_[True, by_end[1:] != by_end[:-1]]) if by_end.size else by_end
        ends = by_end[first]
        starts, w = st.pair_start[stages][order], w[order]
        best = np.full(self.num_states, np.inf)
        best[0] = 0.0
        for _ in range(n):
            if ends.size == 0:
                break
            reach = np.minimum.reduceat(np.maximum(best[starts], w), first)
            new = best.copy()
            new[ends] = np.minimum(new[ends], reach)
            if np.array_equal(new, best):
                break
            best = new
        return float(best[self.full])

    def _fewest_stages(self, ok: np.ndarray, allowed: np.ndarray) -> list[tuple[int, int]] | None:
        """On interchangeable nodes: a path of at most ``N`` allowed stages, fewest first, or ``None``.

        Breadth first over the states, one layer of stages at a time
        (vectorised over all stages); stage ``k`` runs on node ``k``.
        """
        st, n, full = self.st, self.num_nodes, self.full
        link_ok = allowed[:, 0, 1] if n > 1 else np.zeros(self.num_states, dtype=bool)
        parent = np.full(self.num_states, -1, dtype=np.int64)
        reached = np.zeros(self.num_states, dtype=bool)
        reached[0] = True
        frontier = np.zeros(self.num_states, dtype=bool)
        frontier[0] = True
        cand = np.flatnonzero(ok)
        for _ in range(n):
            from_ok = frontier[st.pair_start[cand]]
            # a stage may start at a non-initial boundary only if that boundary can be sent
            q = cand[from_ok]
            ends = st.pair_end[q]
            fresh = ~reached[ends] & ((ends == full) | link_ok[ends])
            q, ends = q[fresh], ends[fresh]
            if q.size == 0:
                return None
            uniq, first = np.unique(ends, return_index=True)
            parent[uniq] = q[first]
            reached[uniq] = True
            if reached[full]:
                path, t = [], full
                while t != 0:
                    q = int(parent[t])
                    path.append(q)
                    t = int(st.pair_start[q])
                path.reverse()
                return [(q, k) for k, q in enumerate(path)]
            frontier = np.zeros(self.num_states, dtype=bool)
            frontier[uniq] = True
        return None

    def _plan(self, path: list[tuple[int, int]]) -> Plan:
        """Plan from ``(stage index, node)`` pairs; its value in the search's arithmetic is kept."""
        st = self.st
        stages, value = [], 0.0
        incoming = 0.0
        for j, (q, v) in enumerate(path):
            s, t = int(st.pair_start[q]), int(st.pair_end[q])
            stages.append(OpStage(st.stage_ops(s, t), v))
            out = 0.0 if j + 1 == len(path) else float(self.tau[t, v, path[j + 1][1]])
            c = float(self.level_k[q, self.kind[v]])
            load = (c + incoming) + out if self.sum else (c if self.star else max(c, out))
            value = max(value, load)
            incoming = out
        plan = Plan(tuple(stages))
        self._values[plan] = value
        return plan

    def _search(self, theta, ok, allowed, relaxed, time_s, budget) -> Plan | None:
        st, n, full = self.st, self.num_nodes, self.full
        h, w1, h2 = relaxed
        dead = self._dead
        stop_at = min(self.deadline, time.perf_counter() + time_s)
        limit = self.expanded + budget
        tau, ct, kind = self.tau, self.ct_k, self.kind
        path: list[tuple[int, int]] = []  # (stage index, node), filled on success
        pair_start, pair_end = st.pair_start, st.pair_end
        taken = np.zeros(n, dtype=bool)  # the nodes of the current path
        big = n + 2
        by_kind: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        def stages_from(starts: np.ndarray, kv: int) -> np.ndarray:
            """The stages allowed on kind ``kv`` from any of ``starts`` (one gather of ranges)."""
            if kv not in by_kind:  # stages by start, those allowed on the kind only
                sel = np.flatnonzero(ok[:, kv])
                by_kind[kv] = (sel, np.searchsorted(pair_start[sel], np.arange(full + 2)))
            sel, ptr = by_kind[kv]
            lo, hi = ptr[starts], ptr[starts + 1]
            size = hi - lo
            total = int(size.sum())
            if total == 0:
                return sel[:0]
            shift = np.repeat(lo - np.cumsum(size) + size, size)
            return sel[shift + np.arange(total)]

        def expand(v: int, starts: np.ndarray, used: int, k: int, prev: int) -> int | None:
            """``None`` if a plan was found (in ``path``), else the *reason*: used nodes it needed.

            The reason is the set of nodes whose being used blocked a move here
            or below; the failure holds for every state with the same last
            node, at most these starts, at least these nodes used, at least
            ``k`` stages so far and at most this threshold.
            """
            self.expanded += 1
            self.stats["states"] += 1
            if self.expanded > limit or time.perf_counter() > stop_at:
                raise Unknown
            kv = kind[v]
            ps = stages_from(starts, kv)
            tin = np.zeros(ps.size)
            if self.sum and prev >= 0:
                tin = tau[pair_start[ps], prev, v]
                keep = ct[ps, kv] + tin <= theta
                ps, tin = ps[keep], tin[keep]
            ends = pair_end[ps]
            done = np.flatnonzero(ends == full)
            if done.size:
                path.append((int(ps[done[0]]), v))
                return None
            if k >= n:
                return 0
            if self.sum:  # the coupled sum needs each stage's own incoming transfer: a row each
                rows = ends
            else:  # otherwise only where a stage ends matters: a row per distinct end
                mark = np.zeros(self.num_states, dtype=bool)
                mark[ends] = True
                rows = np.flatnonzero(mark)
            # fewest stages after moving on to w, which cannot come straight back to v
            hs = h[rows, :]
            back = w1[rows, :] == v
            hs[back] = h2[rows, :][back]
            move = allowed[rows, v, :] & (hs <= n - k)  # (rows, w)
            if self.sum:
                move &= (ct[ps, kv] + tin)[:, None] + tau[rows, v, :] <= theta
            reachable = move.any(axis=0)
            reason = 0
            for x in np.flatnonzero(reachable & taken):
                reason |= 1 << int(x)
            move &= ~taken[None, :]
            nxt = np.flatnonzero(reachable & ~taken)
            if nxt.size == 0:
                return reason
            score = np.where(move[:, nxt], hs[:, nxt], big).min(axis=0)
            key_prev = v if self.sum else -1
            nxt = nxt[np.argsort(score, kind="stable")]
            # every child's start set at once: the distinct ends it may start from
            if self.sum:
                by_end = np.argsort(rows, kind="stable")
                sorted_ends = rows[by_end]
                first = np.flatnonzero(np.r_[True, sorted_ends[1:] != sorted_ends[:-1]])
                uniq = sorted_ends[first]
                starts_of = np.maximum.reduceat(move[by_end][:, nxt], first, axis=0)
            else:
                uniq, starts_of = rows, move[:, nxt]  # (ends, kids)
            flags = np.zeros((nxt.size, self.num_states), dtype=bool)
            flags[:, uniq] = starts_of.T
            packed = np.packbits(flags, axis=1, bitorder="little")
            hits = 0
            for j, w in enumerate(nxt.tolist()):
                mask = used | (1 << w)
                known = dead.get(w)
                bits = -1  # packed on first need
                if known:
                    hit = -1
                    for i, (u, sb, t, pv, kk) in enumerate(known):
                        if (u & ~mask) or t < theta or kk > k + 1 or pv != key_prev:
                            continue
                        if bits < 0:
                            bits = int.from_bytes(packed[j].tobytes(), "little")
                        if sb & ~bits == 0:
                            hit = i
                            break
                    if hit >= 0:
                        hits += 1
                        if hit:  # the entry that hit is tried first next time
                            known.insert(0, known.pop(hit))
                        reason |= known[0][0] & ~(1 << w)
                        continue
                else:
                    known = []
                if bits < 0:
                    bits = int.from_bytes(packed[j].tobytes(), "little")
                taken[w] = True
                why = expand(w, uniq[starts_of[:, j]], mask, k + 1, v)
                taken[w] = False
                if why is None:
                    into = ends == pair_start[path[-1][0]]
                    q = ps[into & move[:, w]][0] if self.sum else ps[into][0]
                    path.append((int(q), v))
                    return None
                why &= ~(1 << w)
                reason |= why
                if len(known) % 8 == 7:  # now and then, drop what the new entry covers
                    known = [
                        (u, sb, t, pv, kk)
                        for u, sb, t, pv, kk in known
                        if not (
                            t <= theta
                            and (why & ~u) == 0
                            and (sb & ~bits) == 0
                            and pv == key_prev
                            and kk >= k + 1
                        )
                    ]
                known.append((why, bits, theta, key_prev, k + 1))
                dead[w] = known
            self.stats["dead_end_hits"] += hits
            return reason & ~(1 << v)

        for v in np.argsort(h[0], kind="stable"):
            v = int(v)
            if h[0, v] > n:
                continue
            taken[v] = True
            found = expand(v, np.array([0]), 1 << v, 1, -1) is None
            taken[v] = False
            if found:
                return self._plan(path[::-1])
        return None
