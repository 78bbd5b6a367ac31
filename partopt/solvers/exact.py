r"""``exact``: the certified exact solver (threshold search + path search + MILP).

The optimum of min-bottleneck partitioning and placement is one of finitely
many *candidate values*: a transfer time :math:`\tau_{cuv}` of some cut over
some link, a stage's compute time (``max`` objective), or 0 (one stage). For
a threshold :math:`\theta` the *decision problem* "is there a plan with
bottleneck :math:`\le \theta`?" keeps only the stages and (cut, link) pairs
that are at most :math:`\theta`: a cut whose transfer over every link
exceeds :math:`\theta` can never be cut (its blocks merge), a link too slow
for a cut cannot carry it, a node with nothing usable drops out. The
optimum is the smallest candidate whose decision problem is feasible.

Algorithm
---------
1. **Bounds.** :func:`partopt.bounds.lower_bound_s` gives a proven
   :math:`L` (often the optimum itself).
2. **Relaxation.** Ignoring node distinctness, a decision problem is
   reachability in the acyclic graph of states "a stage starts at block
   :math:`i` on node :math:`v`", whose transitions are a memory- (and
   compute-) feasible stage followed by an allowed transfer. A backward
   dynamic program (:meth:`ExactSearch.no_return_relaxation`) computes the
   fewest stages that finish the chain from every state over walks that
   never go straight back (``u -> v -> u``; two values per state suffice),
   in :math:`O(B N^2 + B W N)` for windows of :math:`W` blocks. More than
   :math:`N` stages from block 0 *proves* infeasibility.
3. **Path search.** A threshold the relaxation admits is decided by a
   depth-first search over *simple node paths*. Partitions are not
   enumerated: a state is (last node, used nodes, the set :math:`S` of blocks
   at which the last node's stage may start), so every partition that fits
   one node sequence is explored at once; a next node is kept only with the
   starts from which the relaxation finishes within the unused nodes. After
   a few hundred states the relaxation is re-solved on the unused nodes at
   every state (forward checking). Dead ends are memoised *with dominance
   and across thresholds*: a state that failed also fails with fewer starts,
   more used nodes, or a smaller threshold. A completed path is a plan; an
   exhausted search is a proof.
4. **LP relaxation.** When the search does not settle a threshold quickly,
   the LP relaxation of the stage-flow model (:meth:`ExactSearch.lp_check`)
   is solved: it forbids leaning on a node twice anywhere along the chain,
   which the walks cannot see. Its infeasibility (Farkas certificate checked
   here) refutes the threshold; its dual gives, by weak duality recomputed
   here, a lower bound on every plan below the threshold; an integral point
   is a plan.
5. **Search over thresholds.** From the bound upwards, exponentially growing
   thresholds are *probed* (a short search each; an unsettled probe is
   stepped over) until one is feasible: the incumbent :math:`U`. Then the
   candidate values in :math:`(L, U)` are bisected with probes while they
   settle quickly; once one does not, the search *descends*: each decision
   asks for a plan strictly better than the incumbent (search, LP, full
   search), so that the expensive proof near the optimum is made once, at
   thresholds that only decrease and reuse every dead end found before.
6. **MILP fallback.** A decision whose search exceeds ``dfs_budget`` states
   goes to the stage-flow MILP (:mod:`partopt.solvers.milp`) on the instance
   reduced to the threshold, with the proven bound on :math:`\beta`: its
   optimum is the global optimum, its infeasibility refutes the threshold.
7. **Stop.** When no candidate lies between the proven bound and :math:`U`
   the incumbent is optimal. At the time limit the incumbent is returned as
   ``feasible`` with the proven bound (``no_solution`` without incumbent).

Every plan is checked and scored by :func:`partopt.plan.evaluate` in
:func:`partopt.solve.solve`; thresholds are compared with the exact
floating-point expressions that :class:`~partopt.problem.Problem` uses, so
"bottleneck :math:`\le \theta`" means the same thing here and there.
"infeasible" is only reported on a proof (relaxation, exhausted search, a
checked Farkas certificate or HiGHS's MILP proof).

References
----------
Edmonds, J. and Fulkerson, D. R. (1970). Bottleneck extrema. J. Combin.
Theory 8. (Threshold search for min-max combinatorial problems.)

Pinar, A. and Aykanat, C. (2004). Fast optimal load balancing algorithms for
1D partitioning. J. Parallel Distrib. Comput. 64(8). (Probe-based search over
candidate bottleneck values for chains.)
"""

from __future__ import annotations

import math
import time

import numpy as np

from partopt import bounds
from partopt.feasibility import farthest_ends
from partopt.highs import DEFAULT_THREADS
from partopt.plan import Plan, Stage
from partopt.problem import Problem
from partopt.solvers import SolverOutput, register
from partopt.solvers._limits import milp_decision, refuse_if_dense
from partopt.solvers._states import StateSearch
from partopt.solvers.milp import HIGHS_OPTIONS as MILP_HIGHS_OPTIONS
from partopt.solvers.milp import build as build_milp
from partopt.solvers.milp import extract_plan, plan_value_s, transfer_times

__all__ = ["ExactSearch", "solve_exact"]

DFS_BUDGET = 100_000
"""Search states one exact decision may expand before the MILP takes over."""

FIRST_PROBE_SCALE = 4.0
"""The probe at the lower bound gets this many times ``probe_time_s``."""

LP_MAX_COLUMNS = 600_000
"""Largest stage-flow LP (stage + transfer variables) the exact decisions solve."""

PROBE_TIME_S = 0.25
"""Seconds a *probe* (a threshold tried while bracketing the optimum) may search;
an unsettled probe is stepped over. The answer never depends on it, only the
route: a slower machine settles fewer thresholds by probing."""


FORWARD_CHECK_AFTER = 200
"""States a decision expands with the global relaxation before it re-solves the
relaxation on the unused nodes at every state (slower per state, far fewer states)."""


class _Unknown(Exception):
    """The path search ran out of budget or time."""


class ExactSearch:
    """Threshold decisions for one problem (see the module docstring).

    Parameters
    ----------
    problem
        The instance.
    deadline
        ``time.perf_counter()`` value after which searches give up.
    dfs_budget
        States a path search may expand per decision.
    """

    def __init__(
        self, problem: Problem, deadline: float = math.inf, dfs_budget: int = DFS_BUDGET
    ) -> None:
        self.problem = problem
        self.deadline = deadline
        self.dfs_budget = dfs_budget
        self.probe_time_s = PROBE_TIME_S
        self.num_blocks = b = problem.num_blocks
        self.num_nodes = n = problem.num_nodes
        self.tau = transfer_times(problem)  # (B-1, N, N), inf without a link
        self._tau_values = self.tau[np.isfinite(self.tau)]  # candidate transfer times
        caps = problem.cluster.memory_bytes
        by_cap = {float(c): farthest_ends(problem, float(c)) for c in np.unique(caps)}
        self.mem_end = np.stack([by_cap[float(c)] for c in caps]) if n else np.zeros((0, b), int)
        self.flops_prefix = problem._flops_prefix
        self.speed = problem.cluster.flops_per_s
        self.expanded = 0
        # Proven dead ends, kept across decisions: node w -> [(used mask, start set, theta)],
        # "no completion from a stage on w starting in the start set avoids the used nodes
        # within theta". It also holds for fewer starts, more used nodes, smaller thresholds.
        self._dead_ends: dict[int, list[tuple[int, int, float]]] = {}
        self._lp = None  # (threshold it was built for, LP session and its column index)
        self.stats = {
            "decisions": 0,
            "relaxation_refuted": 0,
            "search_feasible": 0,
            "search_refuted": 0,
            "milp_calls": 0,
            "states": 0,
            "dead_end_hits": 0,
            "lp_checks": 0,
            "lp_refuted": 0,
            "lp_integral": 0,
        }

    # -- threshold data ---------------------------------------------------

    def ends(self, theta: float) -> np.ndarray:
        """``e[v, i]``: last block of a stage starting at ``i`` on ``v`` within memory and ``theta``.

        ``i - 1`` when not even block ``i`` alone is allowed.
        """
        e = self.mem_end
        if not self.problem.uses_compute or math.isinf(theta):
            return e
        b, n = self.num_blocks, self.num_nodes
        p = self.flops_prefix
        first = np.broadcast_to(np.arange(b), (n, b))
        speed = self._speeds[:, None]
        lo = first - 1
        hi = np.full((n, b), b)
        while True:
            open_ = hi - lo > 1
            if not open_.any():
                break
            mid = (lo + hi) // 2
            midc = np.clip(mid, 0, b - 1)
            ok = (p[midc + 1] - p[first]) / speed <= theta
            lo = np.where(open_ & ok, mid, lo)
            hi = np.where(open_ & ~ok, mid, hi)
        return np.minimum(e, lo)

    def allowed(self, theta: float) -> np.ndarray:
        """``A[c, u, v]``: cut ``c`` may be sent from ``u`` to ``v`` within ``theta``."""
        if math.isinf(theta):
            return np.isfinite(self.tau)  # tau is inf where there is no link
        return self.tau <= theta

    def no_return_relaxation(self, ends: np.ndarray, allowed: np.ndarray, first_row: int = 0):
        """Walks that never go straight back (no ``u -> v -> u``): ``(t1, w1, t2)``, each ``(B, n)``.

        Over the completions that run blocks ``i..B-1`` starting with a stage
        on node ``v``: ``t1[i, v]`` is the fewest stages, ``w1[i, v]`` the node
        after ``v`` in one such completion (``-1``: ``v``'s stage is the last),
        and ``t2[i, v]`` the fewest stages among completions whose next node
        is not ``w1[i, v]``. Coming from ``u``, the best completion that does
        not return to ``u`` has ``t2`` stages if ``w1 == u`` and ``t1``
        otherwise, which is what the recursion needs. Values are capped at
        ``N + 1`` ("impossible"). The walk relaxation's typical blind spot, a
        bottleneck that bounces over the one fast link (``a -> b -> a``), is
        closed at the cost of keeping two values per state.
        """
        b, n = self.num_blocks, ends.shape[0]
        inf = self.num_nodes + 1
        t1 = np.full((b, n), inf, dtype=np.int64)
        t2 = np.full((b, n), inf, dtype=np.int64)
        w1 = np.full((b, n), -1, dtype=np.int64)
        m = max(b - 1, 0)
        best1 = np.full(
            (m, n), inf, dtype=np.int64
        )  # over next nodes w, for a stage ending at cut j
        arg1 = np.full((m, n), -1, dtype=np.int64)
        best2 = np.full((m, n), inf, dtype=np.int64)
        last = ends.T
        nodes = np.arange(n)
        for i in range(b - 1, first_row - 1, -1):
            if i < b - 1:
                # value of going v -> w after cut i: 1 + best completion from (i + 1, w) avoiding v
                back = w1[i + 1][None, :] == nodes[:, None]  # (v, w): w's best next is v
                comp = np.where(back, t2[i + 1][None, :], t1[i + 1][None, :])
                vals = np.where(allowed[i], np.minimum(comp + 1, inf), inf)
                a = vals.argmin(axis=1)
                best1[i] = vals[nodes, a]
                arg1[i] = np.where(best1[i] < inf, a, -1)
                vals[nodes, a] = inf
                best2[i] = vals.min(axis=1)
            lst = last[i]
            fin = lst >= b - 1
            t1[i, fin] = 1
            t2[i, fin] = 1
            w1[i, fin] = -1
            rest = np.flatnonzero(~fin & (lst >= i))
            if rest.size:
                top = int(lst[rest].max())
                rows = np.arange(i, top + 1)[:, None]
                inside = rows <= lst[rest][None, :]
                b1 = np.where(inside, best1[i : top + 1, rest], inf)
                jstar = b1.argmin(axis=0)
                v1 = b1[jstar, np.arange(rest.size)]
                who = arg1[i + jstar, rest]
                a1 = arg1[i : top + 1, rest]
                other = np.where(
                    a1 != who[None, :], best1[i : top + 1, rest], best2[i : top + 1, rest]
                )
                v2 = np.where(inside, other, inf).min(axis=0)
                t1[i, rest] = v1
                w1[i, rest] = np.where(v1 < inf, who, -1)
                t2[i, rest] = v2
        return t1, w1, t2

    def lp_check(self, theta, ends, allowed, t1):
        """The LP relaxation of the stage-flow model restricted to ``theta``: ``(verdict, plan, bound)``.

        The LP keeps what the walk relaxations drop: every node runs at most
        one stage *in total*, so a fractional flow may not lean on a node
        twice anywhere along the chain. It minimises the bottleneck
        :math:`\\beta \\le \\theta` (rows as in :mod:`partopt.solvers.milp`);
        only stage starts the walk relaxation can finish within ``N`` stages
        (``t1 <= N``) get variables.

        ``verdict`` is ``"infeasible"`` (no plan ``<= theta``: a Farkas
        certificate checked by :func:`partopt.highs.solve_lp`), ``"bound"``
        (``bound`` is a lower bound on every plan ``<= theta``, recomputed
        from the LP's duals by weak duality; ``plan`` is the LP's point when
        it is integral, then optimal among the plans ``<= theta`` if its value
        meets the bound) or ``None`` (LP too large or undecided).
        """
        n = self.num_nodes
        session = self._lp_session(theta, ends, allowed, t1)
        if session is None:
            return None, None, None
        lp, first, last, node, cut, src, dst = session
        ns, kb = first.size, first.size + cut.size
        self.stats["lp_checks"] += 1
        # columns the threshold (and the relaxation at it) excludes are fixed at 0
        col_hi = np.ones(kb + 1)
        col_hi[:ns] = ((t1[first, node] <= n) & (last <= ends[node, first])).astype(float)
        col_hi[ns:kb] = ((self.tau[cut, src, dst] <= theta) & (t1[cut + 1, dst] <= n)).astype(float)
        col_hi[kb] = theta
        remaining = None if math.isinf(self.deadline) else self.deadline - time.perf_counter()
        out = lp.solve(col_hi, time_limit_s=remaining)
        if out.status == "infeasible":
            self.stats["lp_refuted"] += 1
            return "infeasible", None, None
        x = out.info.get("x")
        if out.status != "optimal" or x is None or out.bound is None:
            return None, None, None
        plan = None
        if not np.any((x[:kb] > 1e-6) & (x[:kb] < 1 - 1e-6)):
            stages = sorted(
                (int(first[q]), int(last[q]), int(node[q])) for q in np.flatnonzero(x[:ns] > 0.5)
            )
            plan = self._checked_plan(stages, ends, allowed)
            if plan is not None:
                self.stats["lp_integral"] += 1
        return "bound", plan, out.bound

    def _lp_session(self, theta, ends, allowed, t1):
        """The LP of :meth:`lp_check` for ``theta``: the last one if it was built for a
        threshold at least as large (its columns are then a superset), else a new one."""
        import scipy.sparse as sp

        from partopt.highs import LpSession

        if self._lp is not None and self._lp[0] >= theta:
            return self._lp[1]
        b, n = self.num_blocks, self.num_nodes
        ok_start = (t1 <= n).T  # (N, B)
        v_idx, i_idx = np.nonzero(ok_start & (ends >= np.arange(b)[None, :]))
        length = ends[v_idx, i_idx] - i_idx + 1
        first = np.repeat(i_idx, length)
        node = np.repeat(v_idx, length)
        last = first + (np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length))
        cut, src, dst = np.nonzero(allowed & (t1[1:] <= n)[:, None, :])
        ns, nl = first.size, cut.size
        if ns + nl > LP_MAX_COLUMNS or ns == 0:
            return None
        m = max(b - 1, 0)
        row_end = lambda c, u: 1 + c * n + u  # noqa: E731 - stage ends at c on u = sends cut c
        row_start = lambda c, w: 1 + m * n + c * n + w  # noqa: E731 - cut c arrives = stage starts
        row_node = 1 + 2 * m * n
        row_cut = row_node + n
        row_comp = row_cut + m
        k = np.arange(ns)
        kl = ns + np.arange(nl)
        kb = ns + nl  # beta
        at0, ends_early, starts_late = first == 0, last < b - 1, first > 0
        rows = [
            np.zeros(at0.sum(), int),
            row_end(last[ends_early], node[ends_early]),
            row_start(first[starts_late] - 1, node[starts_late]),
            row_node + node,
            row_end(cut, src),
            row_start(cut, dst),
            row_cut + cut,
            row_cut + np.arange(m),
        ]
        cols = [k[at0], k[ends_early], k[starts_late], k, kl, kl, kl, np.full(m, kb)]
        vals = [
            np.ones(at0.sum()),
            np.ones(ends_early.sum()),
            -np.ones(starts_late.sum()),
            np.ones(ns),
            -np.ones(nl),
            np.ones(nl),
            self.tau[cut, src, dst],
            -np.ones(m),
        ]
        nrows = row_comp
        if self.problem.uses_compute:
            p = self.flops_prefix
            ct = (p[last + 1] - p[first]) / self._speeds[node]
            rows += [row_comp + node, row_comp + np.arange(n)]
            cols += [k, np.full(n, kb)]
            vals += [ct, -np.ones(n)]
            nrows = row_comp + n
        a = sp.csc_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(nrows, ns + nl + 1),
        )
        lo = np.zeros(nrows)
        hi = np.zeros(nrows)
        lo[0] = hi[0] = 1.0
        lo[row_node:] = -np.inf
        hi[row_node:row_cut] = 1.0
        cost = np.zeros(ns + nl + 1)
        cost[kb] = 1.0
        col_hi = np.ones(ns + nl + 1)
        col_hi[kb] = theta
        lp = LpSession(cost, a, lo, hi, np.zeros(ns + nl + 1), col_hi)
        self._lp = (theta, (lp, first, last, node, cut, src, dst))
        return self._lp[1]

    def _checked_plan(self, stages, ends, allowed) -> Plan | None:
        """``stages`` as a plan if they chain block 0 to the end on distinct nodes within the threshold."""
        b = self.num_blocks
        if not stages or stages[0][0] != 0 or stages[-1][1] != b - 1:
            return None
        if len({v for _, _, v in stages}) != len(stages):
            return None
        for k, (i, j, v) in enumerate(stages):
            if j < i or j > ends[v, i]:
                return None
            if k + 1 < len(stages):
                i2, _, w = stages[k + 1]
                if i2 != j + 1 or not allowed[j, v, w]:
                    return None
        return Plan(tuple(Stage(i, j, v) for i, j, v in stages))

    # -- exact decision ---------------------------------------------------

    def decide(
        self,
        theta: float,
        time_s: float = math.inf,
        states: int | None = None,
        use_lp: bool = False,
    ):
        """``(status, plan, relaxation)`` for threshold ``theta``.

        ``status`` is ``feasible`` (``plan`` has bottleneck ``<= theta``),
        ``infeasible`` (a proof) or ``unknown`` (the path search used up
        ``time_s`` seconds or ``states`` states, default ``dfs_budget``).
        With ``use_lp``, a search that does not settle within a probe's time
        is followed by the LP relaxation (:meth:`lp_check`) before it
        continues.
        """
        self.stats["decisions"] += 1
        self._theta = theta
        self.lp_bound = None  # a lower bound on every plan <= theta, when the LP ran
        ends = self.ends(theta)
        allowed = self.allowed(theta)
        relax = self.no_return_relaxation(ends, allowed)
        h = relax[0]
        if h[0].min() > self.num_nodes:
            self.stats["relaxation_refuted"] += 1
            return "infeasible", None, h
        states = self.dfs_budget if states is None else states
        try:
            if use_lp:
                # a short search first: most thresholds settle at once
                try:
                    plan = self._path_search(
                        ends, allowed, relax, min(time_s, self.probe_time_s), states
                    )
                except _Unknown:
                    verdict, plan, bound = self.lp_check(theta, ends, allowed, h)
                    if verdict == "infeasible":
                        return "infeasible", None, h
                    if bound is not None:
                        self.lp_bound = bound
                    if plan is None:
                        plan = self._path_search(ends, allowed, relax, time_s, states)
            else:
                plan = self._path_search(ends, allowed, relax, time_s, states)
        except _Unknown:
            return "unknown", None, h
        if plan is None:
            self.stats["search_refuted"] += 1
            return "infeasible", None, h
        self.stats["search_feasible"] += 1
        return "feasible", plan, h

    def relaxation_feasible(self, theta: float) -> bool:
        """Whether the no-return walk relaxation admits a plan within ``theta`` (``False`` is a proof)."""
        t1, _, _ = self.no_return_relaxation(self.ends(theta), self.allowed(theta))
        return bool(t1[0].min() <= self.num_nodes)

    def _path_search(self, ends, allowed, relax, time_s, states) -> Plan | None:
        """Depth-first search over simple node paths; ``None`` proves there is no plan."""
        b, n = self.num_blocks, self.num_nodes
        used = np.zeros(n, dtype=bool)
        dead = self._dead_ends
        theta = self._theta
        path: list[tuple[int, np.ndarray]] = []
        budget = self.expanded + states
        stop_at = min(self.deadline, time.perf_counter() + time_s)
        forward_after = self.expanded + min(FORWARD_CHECK_AFTER, states)
        t1, w1, t2 = relax
        h = t1

        def global_relaxation(v: int) -> np.ndarray:
            """``hs[j, w]``: fewest stages from a stage at ``j + 1`` on ``w``, arriving from ``v``."""
            return np.where(w1[1:] == v, t2[1:], t1[1:])

        def free_relaxation(first: int) -> np.ndarray:
            """``hs`` recomputed on the unused nodes only (forward checking)."""
            free = np.flatnonzero(~used)
            out = np.full((max(b - 1, 0), n), n + 1, dtype=np.int64)
            if free.size and b > 1:
                sub = allowed[:, free][:, :, free]
                f1, _, _ = self.no_return_relaxation(ends[free], sub, first_row=first + 1)
                out[:, free] = f1[1:]  # v is used, so no completion can return to it
            return out

        def expand(v: int, starts: np.ndarray, used_mask: int, k: int) -> bool:
            self.expanded += 1
            self.stats["states"] += 1
            if self.expanded > budget:
                raise _Unknown
            if time.perf_counter() > stop_at:
                raise _Unknown
            idx = np.flatnonzero(starts)
            last = ends[v, idx]
            if (last >= b - 1).any():
                path.append((v, starts))
                return True
            delta = np.zeros(b + 1, dtype=np.int64)
            np.add.at(delta, idx, 1)
            np.add.at(delta, np.minimum(last, b - 2) + 1, -1)
            cover = np.cumsum(delta[: b - 1]) > 0  # stage on v may end at cut j
            # After a cheap first try, re-solve the relaxation without the used
            # nodes: a prefix that spends a node a later hard cut needs dies here.
            hs = (
                free_relaxation(int(idx[0]))
                if self.expanded > forward_after
                else global_relaxation(v)
            )
            move = allowed[:, v, :] & cover[:, None] & (hs <= n - k) & ~used[None, :]
            nxt = np.flatnonzero(move.any(axis=0))
            if nxt.size == 0:
                return False
            score = np.where(move[:, nxt], hs[:, nxt], n + 1).min(axis=0)
            path.append((v, starts))
            for w in nxt[np.lexsort((-move[:, nxt].sum(axis=0), score))]:
                w = int(w)
                s_w = np.zeros(b, dtype=bool)
                s_w[1:] = move[:, w]
                mask_w = used_mask | (1 << w)
                bits = int.from_bytes(np.packbits(s_w).tobytes(), "big")
                known = dead.get(w, ())
                if any(
                    t >= theta and (u & ~mask_w) == 0 and (bits & ~sb) == 0 for u, sb, t in known
                ):
                    self.stats["dead_end_hits"] += 1
                    continue
                used[w] = True
                ok = expand(w, s_w, mask_w, k + 1)
                used[w] = False
                if ok:
                    return True
                # drop the dead ends this one covers, then record it
                dead[w] = [
                    (u, sb, t)
                    for u, sb, t in known
                    if not (t <= theta and (mask_w & ~u) == 0 and (sb & ~bits) == 0)
                ]
                dead[w].append((mask_w, bits, theta))
            path.pop()
            return False

        order = np.lexsort((-(ends[:, 0]), h[0]))
        start = np.zeros(b, dtype=bool)
        start[0] = True
        for v in order:
            v = int(v)
            if h[0, v] > n:
                continue
            used[v] = True
            ok = expand(v, start, 1 << v, 1)
            used[v] = False
            if ok:
                return self._rebuild(path, ends, allowed)
        return None

    def _rebuild(self, path, ends, allowed) -> Plan:
        """Turn the successful node path and its start sets into stages."""
        b = self.num_blocks
        v, starts = path[-1]
        idx = np.flatnonzero(starts)
        first = int(idx[np.flatnonzero(ends[v, idx] >= b - 1)[0]])
        stages = [Stage(first, b - 1, v)]
        for k in range(len(path) - 2, -1, -1):
            u, s_u = path[k]
            cut = first - 1
            idx = np.flatnonzero(s_u)
            ok = idx[(idx <= cut) & (ends[u, idx] >= cut)]
            assert ok.size and allowed[cut, u, v], "path search lost its witness"
            first = int(ok[-1])
            stages.append(Stage(first, cut, u))
            v = u
        return Plan(tuple(reversed(stages)))

    # -- the driver's interface beyond decide() -------------------------------

    def lower_bound_s(self) -> float:
        """A proven lower bound on the optimum (:func:`partopt.bounds.lower_bound_s`)."""
        return bounds.lower_bound_s(self.problem)

    def plan_value_s(self, plan: Plan) -> float:
        """Bottleneck of ``plan`` in the search's own arithmetic (thresholds compare exactly)."""
        return plan_value_s(self.problem, plan, self.tau)

    def milp_decide(self, theta, lower, seed, threads, h=None):
        """The stage-flow MILP on the instance reduced to ``theta`` (see :func:`_milp_decide`)."""
        return _milp_decide(self.problem, self, theta, lower, seed, threads, h)

    @property
    def _speeds(self) -> np.ndarray:
        """Node speeds (FLOP/s), read only when compute times count (those problems have them)."""
        assert self.speed is not None, "compute times count only with node speeds"
        return self.speed

    # -- candidate values -------------------------------------------------

    def max_candidate(self) -> float:
        """The largest candidate value (every finite transfer and stage time is below it)."""
        finite = self._tau_values
        top = float(finite.max()) if finite.size else 0.0
        if self.problem.uses_compute:
            top = max(top, float(self.flops_prefix[-1] / self._speeds.min()))
        return top

    def min_positive_candidate(self) -> float:
        """The smallest positive candidate value (``inf`` if there is none)."""
        pos = self._tau_values[self._tau_values > 0]
        low = float(pos.min()) if pos.size else math.inf
        if self.problem.uses_compute:
            f = self.problem.chain.flops
            if (f > 0).any():
                low = min(low, float(f[f > 0].min() / self._speeds.max()))
        return low

    def next_candidate(self, low: float) -> float:
        """The smallest candidate value ``>= low`` (``inf`` if there is none)."""
        c = self.candidates(low, math.inf, distinct=False)
        return float(c.min()) if c.size else math.inf

    def candidates(self, low: float, high: float, distinct: bool = True) -> np.ndarray:
        """Sorted distinct candidate values in ``[low, high]`` (seconds)."""
        tau = self._tau_values
        vals = [tau[(tau >= low) & (tau <= high)]]
        if self.problem.uses_compute:
            b = self.num_blocks
            p = self.flops_prefix
            for v in range(self.num_nodes):
                first = np.repeat(np.arange(b), b)
                last = np.tile(np.arange(b), b)
                keep = (last >= first) & (last <= self.mem_end[v][first])
                ct = (p[last[keep] + 1] - p[first[keep]]) / self._speeds[v]
                vals.append(ct[(ct >= low) & (ct <= high)])
        vals.append(np.array([0.0]) if low <= 0.0 <= high else np.zeros(0))
        out = np.concatenate(vals)
        return np.unique(out) if distinct else out


@register(
    "exact",
    exact=True,
    dag=True,
    description="certified exact: threshold search, path search, MILP",
)
def solve_exact(
    problem: Problem,
    *,
    time_limit_s: float | None = None,
    seed: int = 0,
    dfs_budget: int = DFS_BUDGET,
    probe_time_s: float = PROBE_TIME_S,
    use_milp: bool = True,
    threads: int = DEFAULT_THREADS,
    **_,
) -> SolverOutput:
    """Proven optimum by threshold search (see the module docstring).

    Options: ``dfs_budget`` (states a decision may expand before the MILP
    takes over), ``probe_time_s`` (seconds per probe while bracketing),
    ``use_milp`` (``False``: give up undecided thresholds instead,
    returning ``feasible`` with the bound proven so far), ``threads`` (HiGHS).
    """
    if not hasattr(problem, "dag"):
        refuse_if_dense(
            "exact",
            "transfer-time table",
            (max(problem.num_blocks - 1, 1), problem.num_nodes, problem.num_nodes),
            "a heuristic (greedy, seifer, local-search)",
        )
    t0 = time.perf_counter()
    deadline = math.inf if time_limit_s is None else t0 + float(time_limit_s)
    is_dag = hasattr(problem, "dag")
    search = (
        StateSearch(problem, deadline, dfs_budget)
        if is_dag
        else ExactSearch(problem, deadline, dfs_budget)
    )
    search.probe_time_s = probe_time_s
    driver = _Driver(problem, search, deadline, seed, threads, use_milp, probe_time_s)
    try:
        out = driver.run()
    except _Finished as done:
        out = done.output
    if isinstance(search, StateSearch) and not search.complete:
        out = _capped(problem, out)
    return out


def _capped(problem, out: SolverOutput) -> SolverOutput:
    """A search over part of the state lattice proves nothing: keep the plan, not the claims."""
    info = {**out.info, "states_capped": True}
    info["reason"] = (
        f"the boundary states were capped at {problem.max_states:,} ideals or "
        f"{problem.max_pairs:,} stages; the plan is the best over those states only"
    )
    if out.plan is None:
        return SolverOutput("no_solution", lower_bound_s=bounds.lower_bound_s(problem), info=info)
    return SolverOutput("feasible", out.plan, out.objective_s, bounds.lower_bound_s(problem), info)


class _Finished(Exception):
    def __init__(self, output: SolverOutput) -> None:
        self.output = output


class _Driver:
    """The threshold search of :func:`solve_exact`.

    Invariant: every plan has bottleneck ``>= self.lower`` (proven), and
    ``self.best`` (if any) is a plan with bottleneck ``self.upper``.
    """

    GROWTH = 0.02
    """First relative step above the lower bound in the exponential search."""

    SLOW_PROOF_S = 0.05
    """A probe refuted more slowly than this switches the search to descending."""

    def __init__(
        self,
        problem,
        search: ExactSearch | StateSearch,
        deadline,
        seed,
        threads,
        use_milp,
        probe_time_s,
    ) -> None:
        self.probe_time_s = probe_time_s
        self.problem = problem
        self.search = search
        self.deadline = deadline
        self.seed = seed
        self.threads = threads
        self.use_milp = use_milp
        self.lower = 0.0
        self.upper = math.inf
        self.best: Plan | None = None
        self.info: dict = {}
        self.last_decision_s = 0.0

    # -- outcomes ---------------------------------------------------------

    def _out(self, status, **extra) -> SolverOutput:
        info = {**self.info, **self.search.stats, **extra}
        if status == "optimal":
            return SolverOutput("optimal", self.best, self.upper, self.upper, info)
        if status == "feasible":
            return SolverOutput(
                "feasible", self.best, self.upper, min(self.lower, self.upper), info
            )
        if status == "no_solution":
            return SolverOutput("no_solution", lower_bound_s=self.lower, info=info)
        return SolverOutput(status, info=info)

    def _timed_out(self) -> bool:
        return time.perf_counter() > self.deadline

    def _give_up(self, reason: str):
        status = "feasible" if self.best is not None else "no_solution"
        raise _Finished(self._out(status, reason=reason))

    # -- one threshold ------------------------------------------------------

    def _improve(self, plan: Plan) -> None:
        value = self.search.plan_value_s(plan)
        if value < self.upper:
            self.upper, self.best = value, plan

    def decide(self, theta: float, probe: bool = False, probe_scale: float = 1.0) -> bool | None:
        """Decide "a plan with bottleneck <= theta exists" and update the bounds.

        ``True``: yes (the incumbent improved); ``False``: proven no (the
        bound rose); ``None``: a probe that the path search could not settle
        in ``probe_time_s``. A full decision that the path search cannot
        settle goes to the MILP.
        """
        start = time.perf_counter()
        if probe:
            status, plan, h = self.search.decide(theta, self.probe_time_s * probe_scale)
        else:
            status, plan, h = self.search.decide(theta, math.inf, use_lp=True)
            if self.search.lp_bound is not None:
                # every plan <= theta is >= the LP bound, every other plan is > theta
                self.lower = max(self.lower, min(self.search.lp_bound, theta))
        self.last_decision_s = time.perf_counter() - start
        if status == "unknown":
            if probe:
                return None
            if self._timed_out():
                self._give_up("time limit")  # no time left for the MILP either
            if not self.use_milp:
                self._give_up("a threshold stayed undecided (path search budget, no MILP)")
            status, plan, bound = self._milp(theta, h)
            if status == "optimal":  # optimal among plans <= theta: optimal overall
                self._improve(plan)
                self.lower = self.upper
                raise _Finished(self._out("optimal"))
            if status == "feasible":
                self._improve(plan)
                if bound is not None:
                    self.lower = max(self.lower, min(bound, theta))
                self._give_up("time limit in the MILP")
            if status == "unknown":
                self._give_up("time limit" if self._timed_out() else "MILP undecided")
        if status == "feasible":
            self._improve(plan)
            return True
        # infeasible: no plan has bottleneck <= theta
        self.lower = max(self.lower, theta)
        self._strict_above = theta
        return False

    def _milp(self, theta, h):
        status, plan, bound, milp_info = self.search.milp_decide(
            theta, self.lower, self.seed, self.threads, h
        )
        self.info.update(milp_info)
        return status, plan, bound

    # -- the search ---------------------------------------------------------

    def run(self) -> SolverOutput:
        search = self.search
        # an incumbent first (when the search offers one): a budget spent on the bounds
        # still leaves a plan
        start = getattr(search, "initial_plan", None)
        if start is not None:
            plan = start(self.deadline)
            if plan is not None:
                self._improve(plan)
                self.info["initial_s"] = self.upper
        lb = search.lower_bound_s()
        if math.isinf(lb):
            return self._out("infeasible", reason="the lower bounds admit no partition")
        # The bounds use their own arithmetic: step a hair below them.
        self.lower = max(lb, 0.0) * (1 - 1e-12)
        self.info["bound_s"] = lb
        self._strict_above = -math.inf  # the largest threshold proven infeasible

        # Exponential search upwards from the bound (often the optimum itself):
        # each infeasible threshold raises the proven bound, the first feasible
        # one gives an incumbent; probes the path search cannot settle quickly
        # are stepped over.
        top = search.max_candidate()
        theta = search.next_candidate(self.lower)
        step = self.GROWTH
        base = max(self.lower, search.min_positive_candidate())
        while True:
            if self._timed_out():
                self._give_up("time limit")
            if self.best is not None and theta >= self.upper:
                break
            if theta >= top:
                if not self.decide(math.inf):
                    return self._out(
                        "infeasible", reason="no sequence of distinct linked nodes fits the chain"
                    )
                break
            # the bound itself is the optimum more often than not, and a plan
            # there ends the search: its probe gets more time
            first = theta == search.next_candidate(self.lower)
            settled = self.decide(
                theta, probe=True, probe_scale=FIRST_PROBE_SCALE if first else 1.0
            )
            if settled:
                break
            if settled is None and self.best is not None and getattr(search, "costly", False):
                break  # each probe's relaxation costs seconds: go on from the incumbent
            theta = max(base * (1 + step), search.next_candidate(theta * (1 + 1e-12)))
            step *= 2
        # Between the proven bound and the incumbent: bisection over the
        # candidate values while probes settle quickly; once one does not,
        # descend from the incumbent instead (each decision asks for a plan
        # strictly better than the incumbent), so that the expensive proofs
        # near the optimum are made once, at decreasing thresholds that reuse
        # every dead end found before.
        descending = False
        while True:
            cands = search.candidates(self.lower, self.upper)
            # opt is a candidate, > every refuted threshold and <= upper
            cands = cands[cands > self._strict_above]
            below = cands[cands < self.upper]
            if below.size == 0:
                self.lower = self.upper
                return self._out("optimal")
            self.lower = max(self.lower, float(below[0]))
            if self._timed_out():
                self._give_up("time limit")
            if descending:
                self.decide(float(below[-1]))  # settled, by the MILP if need be
                continue
            settled = self.decide(float(below[(below.size - 1) // 2]), probe=True)
            if settled is None or (settled is False and self.last_decision_s > self.SLOW_PROOF_S):
                descending = True
                self.info["descended"] = True


def _milp_decide(problem, search: ExactSearch, theta, lower, seed, threads, h=None):
    """Stage-flow MILP on the instance reduced to ``theta``: ``(status, plan, bound, info)``.

    ``optimal`` means optimal for the whole instance (the reduced model
    contains every plan ``<= theta``, and only those); ``infeasible`` proves
    that no plan is ``<= theta``.
    """
    search.stats["milp_calls"] += 1
    reach = None if h is None else (h <= search.num_nodes)
    return milp_decision(
        lambda: build_milp(
            problem,
            max_time_s=None if math.isinf(theta) else theta,
            lower_bound_s=lower,
            reachable=reach,
            deadline=search.deadline,
        ),
        extract_plan,
        search.deadline,
        seed=seed,
        threads=threads,
        options=MILP_HIGHS_OPTIONS,
    )


BUDGETED_DFS_BUDGET = 300
"""Search states per decision in the budgeted mode (``bottleneck-search``)."""

BUDGETED_TIME_S = 2.0
"""Seconds the budgeted mode searches by default."""


@register(
    "bottleneck-search",
    dag=True,
    description="the exact engine's budgeted mode: threshold search, small path searches, "
    "no MILP, then local search",
)
def solve_bottleneck_search(
    problem,
    *,
    time_limit_s: float | None = None,
    seed: int = 0,
    dfs_budget: int = BUDGETED_DFS_BUDGET,
    search_time_s: float = BUDGETED_TIME_S,
    polish: bool = True,
    **_,
) -> SolverOutput:
    """The threshold search of :func:`solve_exact` on a budget.

    The same driver and decisions with ``dfs_budget`` states per decision,
    no MILP fallback (an undecided threshold ends the search with the
    incumbent and the bound proven so far) and at most ``search_time_s``
    seconds (or ``time_limit_s`` if smaller). A chain plan not proven
    optimal is then polished by :func:`partopt.solvers.local_search.improve`.
    """
    budget = search_time_s if time_limit_s is None else min(search_time_s, float(time_limit_s))
    out = solve_exact(
        problem, time_limit_s=budget, seed=seed, dfs_budget=dfs_budget, use_milp=False
    )
    if not polish or out.status != "feasible" or out.plan is None or hasattr(problem, "dag"):
        return out
    from partopt.solvers._plans import bottleneck_s, to_plan
    from partopt.solvers.local_search import improve

    cuts, nodes, rounds = improve(problem, list(out.plan.cuts), list(out.plan.nodes))
    value = bottleneck_s(problem, cuts, nodes)
    if value >= (out.objective_s or math.inf):
        return out
    bound = out.lower_bound_s
    status = "optimal" if bound is not None and value <= bound * (1 + 1e-9) else "feasible"
    info = {**out.info, "polish_rounds": rounds}
    return SolverOutput(status, to_plan(problem, cuts, nodes), value, bound, info)
