"""``bottleneck-search``: search on the bottleneck value, with a relaxation and a node-path search.

For a threshold ``beta`` (seconds per inference), a plan *meets* it when
every stage's outgoing transfer and (``max`` objective) compute time is at
most ``beta``. A *probe* answers "does a plan meet ``beta``?" in two steps:

1. *Relaxation (exact, polynomial).* Drop only the rule that stages need
   distinct nodes. Backward layers ``back[r][j, v]`` ("a stage on ``v``
   ending at block ``j`` can be completed with at most ``r`` more stages")
   follow one from another by one batched boolean matrix product over the
   cuts that some link can carry within ``beta``; a stage is an interval of
   blocks whose farthest end grows with its start, so "some end of the next
   stage is completable" is a running minimum over blocks. If no number of
   stages up to ``N`` completes the chain, no plan meets ``beta``: a proof.
   The relaxation also gives the fewest stages any plan needs.
2. *Reconstruction (search over distinct nodes).* Depth first over node
   sequences, whose state is the node of the last stage and the *set* of
   blocks where that stage may end (all cut choices at once, so the search
   branches over nodes only); the relaxation's layers prune nodes from which
   the end is out of reach, failed states (node, used nodes, ends) are
   remembered, and nodes that get farthest along the chain go first. It runs
   for the fewest stages, then up to ``EXTRA_STAGES`` more, each within
   ``DFS_BUDGET`` expansions; the cuts are then read back, smallest
   transfer first. A search that runs out of options (not of budget) for
   every stage count is also a proof.

The search over ``beta``: a probe without limit gives the incumbent; the
relaxation alone (cheap) is bisected up to the smallest value it does not
refute (a proven lower bound, since the optimum of the communication
objective is the transfer time of some cut over some link, a finite set of
*candidates*); full probes then bisect between that bound and the
incumbent in log scale, on the exact candidates once few are left, probing
the bound itself once the incumbent is near it (a tight relaxation ends the
search at once). A plan whose value no unrefuted candidate undercuts is
reported ``optimal`` with that bound. Otherwise (a reconstruction gave up,
the time ran out, or the ``max`` objective, whose candidates are not
enumerated) the plan is polished by
:func:`partopt.solvers.local_search.improve`.

References
----------
Pinar, A. and Aykanat, C. (2004). Fast optimal load balancing algorithms for
1D partitioning. J. Parallel Distrib. Comput. 64(8). (Probe-based bottleneck
search for chain partitioning.)
Punnen, A. P. (1991). A linear time algorithm for the maximum capacity path
problem. EJOR 53(3). (Threshold search for bottleneck objectives.)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from partopt.problem import Problem
from partopt.solvers import SolverOutput, register
from partopt.solvers._plans import bottleneck_s, node_windows, to_plan
from partopt.solvers.local_search import improve

__all__ = ["Probe", "BottleneckProber", "solve_bottleneck_search"]

DFS_BUDGET = 300
"""Node expansions of the reconstruction per probe before it gives up."""

EXTRA_STAGES = 2
"""Stages the reconstruction may use beyond the fewest the relaxation needs."""

COARSE_RATIO = 1.02
"""Geometric bisection stops when upper / lower end is below this; exact candidates follow."""

SEARCH_TIME_S = 2.0
"""After this many seconds the search stops probing and keeps its best plan (a safety
net: the ``exact`` method is there for proofs)."""

TIGHT_CHECK_RATIO = 1.1
"""The probe at the relaxation's bound waits until the incumbent is within this factor."""

REL_TOL = 1e-4
"""No bisection probe once the incumbent is within this of the largest failed threshold
(and, for the ``max`` objective, the step of the probe below the incumbent)."""

MAX_PROBES = 200
"""A safety cap on probes (and on relaxation tests) per search."""

MAX_CANDIDATES = 4096
"""Exact candidates are only enumerated when there are this few; else bisection continues."""


@dataclass(frozen=True)
class _Context:
    """What a probe at ``beta`` derives once."""

    beta: float
    far: np.ndarray  # (B, N): last block a stage starting at block a may reach on node v
    usable: np.ndarray  # (U,): cuts that some link can carry within beta
    links: np.ndarray  # (U, N, N): link u -> v carries cut usable[i] within beta
    links_f: np.ndarray  # the same as float32, for batched matrix products
    next_first: np.ndarray  # (U,): the block after each usable cut
    next_last: np.ndarray  # (U, N): the last block a stage starting there may reach on w


@dataclass(frozen=True)
class Probe:
    """Answer to "is there a plan with bottleneck at most ``beta``?".

    ``plan`` is ``(cuts, nodes)`` or ``None``; ``proven_infeasible`` is true
    when no plan meets ``beta``: the relaxation failed, or the search over
    distinct nodes ran to completion without a plan.
    """

    beta: float
    plan: tuple[list[int], list[int]] | None
    proven_infeasible: bool


class BottleneckProber:
    """Feasibility probes for one problem (arrays prepared once).

    Examples
    --------
    >>> from partopt import Chain, Cluster
    >>> p = Problem(Chain.from_arrays([2, 2, 2], [2e6, 1e6]),
    ...             Cluster.uniform(3, memory_bytes=4, bandwidth_mbps=8.0))
    >>> prober = BottleneckProber(p)
    >>> prober.probe(1.0).plan, prober.probe(0.5).proven_infeasible
    (([1], [0, 1]), True)
    """

    def __init__(
        self, problem: Problem, dfs_budget: int = DFS_BUDGET, extra_stages: int = EXTRA_STAGES
    ):
        self.problem = problem
        self.dfs_budget = dfs_budget
        self.extra_stages = extra_stages
        b, n = problem.num_blocks, problem.num_nodes
        self.b, self.n = b, n
        self.t = np.asarray(problem.transfer_bytes, dtype=float)
        self.ltpb = problem.link_time_per_byte  # inf where there is no link
        self.linked = np.isfinite(self.ltpb)
        self.min_ltpb = float(self.ltpb.min()) if n > 1 else math.inf
        self.far_mem = node_windows(problem)  # (B, N)
        self.ltpb_sorted = np.unique(self.ltpb[self.linked])  # distinct seconds per byte
        self.t_positive = self.t[self.t > 0]
        self.blocks = np.arange(b)
        if problem.uses_compute:
            self.flops_prefix = np.concatenate([[0.0], np.cumsum(problem.chain.flops)])
            self.speed = np.asarray(problem.cluster.flops_per_s, dtype=float)

    def value(self, cuts, nodes) -> float:
        """Bottleneck of a plan in the probes' own arithmetic (``bytes * seconds_per_byte``).

        It can differ from :func:`partopt.plan.evaluate` in the last bit; the
        search compares plans and candidates with this one only, so that a plan
        found at a candidate value never looks worse than that candidate.
        """
        nodes = np.asarray(nodes, dtype=int)
        worst = 0.0
        if len(cuts):
            worst = float(
                np.max(self.t[np.asarray(cuts, dtype=int)] * self.ltpb[nodes[:-1], nodes[1:]])
            )
        if self.problem.uses_compute:
            edges = [-1, *cuts, self.b - 1]
            for i, v in enumerate(nodes):
                flops = self.flops_prefix[edges[i + 1] + 1] - self.flops_prefix[edges[i] + 1]
                worst = max(worst, float(flops / self.speed[v]))
        return worst

    # -- the relaxation -----------------------------------------------------

    def _context(self, beta: float) -> _Context:
        far = self.far_mem
        if self.problem.uses_compute and math.isfinite(beta):
            budget = self.flops_prefix[:-1, None] + beta * self.speed[None, :] * (1 + 1e-12)
            ends = np.searchsorted(self.flops_prefix, budget.ravel(), side="right")
            far = np.minimum(far, ends.reshape(budget.shape) - 2)
        usable = np.flatnonzero(self.t * self.min_ltpb <= beta)
        links = (self.t[usable, None, None] * self.ltpb[None, :, :] <= beta) & self.linked[None]
        first = usable + 1
        return _Context(beta, far, usable, links, links.astype(np.float32), first, far[first])

    def _stage_ends(self, far: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """``ends[j, v]``: a stage on ``v`` may end at block ``j``, starting where ``starts[:, v]``.

        A stage is an interval ``a..far[a, v]`` or shorter, and ``far`` grows
        with ``a``, so block ``j`` is reachable iff the latest start at or
        before ``j`` reaches it.
        """
        latest = np.maximum.accumulate(np.where(starts, self.blocks[:, None], -1), axis=0)
        return (latest >= 0) & (
            np.take_along_axis(far, np.maximum(latest, 0), 0) >= self.blocks[:, None]
        )

    def _finishing(self, ctx: _Context, more: np.ndarray) -> np.ndarray:
        """One backward step: ``out[j, v]`` iff a stage on ``v`` ending at ``j`` can be followed
        by a stage on some ``w`` after which ``more`` holds (or ``more[j, v]`` itself)."""
        out = more.copy()
        if len(ctx.usable) == 0:
            return out
        # soonest[a, w]: first block >= a where a stage on w may end and be completed
        soonest = np.minimum.accumulate(np.where(more, self.blocks[:, None], self.b)[::-1], axis=0)[
            ::-1
        ]
        ok = soonest[ctx.next_first] <= ctx.next_last  # (U, N): a stage on w after cut e
        out[ctx.usable] |= (ctx.links_f @ ok[:, :, None].astype(np.float32))[:, :, 0] > 0
        return out

    def _relaxation(self, ctx: _Context, first_stage: np.ndarray):
        """``(fewest, back)``: the fewest stages of any plan within ``ctx.beta`` when nodes may
        repeat (``None``: no plan at all), and the backward layers computed on the way.

        ``back[r][j, v]``: a stage on ``v`` ending at block ``j`` can be completed with at
        most ``r`` more stages.
        """
        b, n = self.b, self.n
        done = np.zeros((b, n), dtype=bool)
        done[b - 1] = True
        back = [done]
        for r in range(min(n, b)):
            if r:
                back.append(self._finishing(ctx, back[-1]))
            if (first_stage & back[r]).any():
                return r + 1, back
            if r and np.array_equal(back[r], back[r - 1]):
                break  # nothing new: no number of stages reaches the end
        return None, back

    def relaxed_feasible(self, beta: float) -> bool:
        """Whether some plan meets ``beta`` when nodes may repeat (``False`` is a proof)."""
        ctx = self._context(beta)
        first_stage = self.blocks[:, None] <= ctx.far[0][None, :]
        return self._relaxation(ctx, first_stage)[0] is not None

    def probe(self, beta: float) -> Probe:
        """Decide (relaxation) and construct (search) a plan with bottleneck at most ``beta``."""
        b, n = self.b, self.n
        ctx = self._context(beta)
        first_stage = self.blocks[:, None] <= ctx.far[0][None, :]  # (B, N): stage 0..j fits v
        fewest, back = self._relaxation(ctx, first_stage)
        if fewest is None:
            return Probe(beta, None, True)
        most = min(fewest + self.extra_stages, n, b)
        while len(back) < most:
            back.append(self._finishing(ctx, back[-1]))
        complete = True
        for stages in range(fewest, most + 1):  # fewest stages first: the tightest pruning
            plan, finished = self._reconstruct(ctx, first_stage, back[:stages])
            complete &= finished
            if plan is not None:
                return Probe(beta, plan, False)
        if complete and most < min(n, b):
            # The search ran out of options, not of budget: allow every stage count
            # (the back layers stop changing early), and a complete failure is a proof.
            while len(back) < min(n, b) and (
                len(back) < 2 or not np.array_equal(back[-1], back[-2])
            ):
                back.append(self._finishing(ctx, back[-1]))
            back += [back[-1]] * (min(n, b) - len(back))
            plan, complete = self._reconstruct(ctx, first_stage, back)
        return Probe(beta, plan, plan is None and complete)

    # -- the reconstruction ---------------------------------------------------

    def _reconstruct(self, ctx: _Context, first_stage: np.ndarray, back: list[np.ndarray]):
        """A plan with distinct nodes and at most ``len(back)`` stages, or ``None``; and whether
        the search was complete (not cut short by the budget).

        Depth-first over node sequences. The state after placing a stage is
        its node and the *set* of blocks where it may end (every cut choice
        at once), so the search branches over nodes only; the relaxation's
        ``back`` layers prune nodes from which the end is out of reach.
        Nodes that get farthest along the chain are tried first.
        """
        b, n, usable, links, far = self.b, self.n, ctx.usable, ctx.links, ctx.far
        most = len(back)
        budget = [self.dfs_budget]
        used = np.zeros(n, dtype=bool)
        path: list[tuple[int, np.ndarray]] = []  # (node, blocks where its stage may end)
        failed: set = set()  # (node, nodes used before it, its stage ends) known to fail
        bandwidth = self.problem.cluster.bandwidth_mbps

        def ordered(ends: np.ndarray, viable: np.ndarray, width: np.ndarray) -> np.ndarray:
            """Column indices of the viable candidates, farthest progress first."""
            progress = np.where(ends, self.blocks[:, None], -1).max(axis=0)
            cand = np.flatnonzero(viable)
            return cand[np.lexsort((-width[cand], -progress[cand]))]

        def visit(v: int, ends: np.ndarray) -> bool:
            budget[0] -= 1
            path.append((v, ends))
            if ends[b - 1]:
                return True
            more = most - len(path)  # stages still allowed
            if more > 0 and budget[0] >= 0:
                after = ends[usable, None] & links[:, v, :]  # (U, N): cut e, then node w
                cols = np.flatnonzero(after.any(axis=0) & ~used)  # the candidates w
                starts = np.zeros((b, len(cols)), dtype=bool)
                starts[usable + 1] = after[:, cols]
                nxt = self._stage_ends(far[:, cols], starts)
                viable = (nxt & back[more - 1][:, cols]).any(axis=0)
                mask = int.from_bytes(np.packbits(used).tobytes(), "little")
                for i in ordered(nxt, viable, bandwidth[v, cols]):
                    w = int(cols[i])
                    key = (w, mask, nxt[:, i].tobytes())
                    if key in failed:
                        continue  # the same node after the same nodes, with the same stage ends
                    used[w] = True
                    if visit(w, nxt[:, i]):
                        return True
                    used[w] = False
                    if budget[0] < 0:
                        break
                    failed.add(key)
            path.pop()
            return False

        viable = (first_stage & back[most - 1]).any(axis=0)
        for v in ordered(first_stage, viable, bandwidth.max(axis=1)):
            used[v] = True
            if visit(int(v), first_stage[:, v]):
                return self._cuts_for(ctx, path), True
            used[v] = False
            if budget[0] < 0:
                return None, False
        return None, True

    def _cuts_for(self, ctx: _Context, path) -> tuple[list[int], list[int]]:
        """Cuts for a node sequence found by the search, the smallest transfer at every step."""
        usable, links, far = ctx.usable, ctx.links, ctx.far
        nodes = [v for v, _ in path]
        cuts: list[int] = []
        j = self.b - 1
        for i in range(len(path) - 1, 0, -1):
            u, prev_ends = path[i - 1]
            v = nodes[i]
            ok = (
                prev_ends[usable]
                & links[:, u, v]
                & (usable + 1 <= j)
                & (far[np.minimum(usable + 1, self.b - 1), v] >= j)
            )
            cand = usable[ok]
            e = int(cand[np.argmin(self.t[cand])])
            cuts.append(e)
            j = e
        return cuts[::-1], nodes


def _candidates(prober: BottleneckProber, lo: float, hi: float) -> tuple[int, np.ndarray | None]:
    """Transfer times ``t_e * seconds_per_byte(u, v)`` strictly between ``lo`` and ``hi``.

    Returns their count (with repeats) and, when it is at most
    ``MAX_CANDIDATES``, the sorted distinct values.
    """
    ltpb, t = prober.ltpb_sorted, prober.t_positive
    first = np.searchsorted(ltpb, lo / t, side="right")
    last = np.searchsorted(ltpb, hi / t, side="left")
    count = int(np.maximum(last - first, 0).sum())
    if count > MAX_CANDIDATES:
        return count, None
    parts = [t[i] * ltpb[first[i] : last[i]] for i in range(len(t)) if last[i] > first[i]]
    values = np.unique(np.concatenate(parts)) if parts else np.empty(0)
    return count, values[(values > lo) & (values < hi)]


def _largest_below(prober: BottleneckProber, value: float) -> float:
    """The largest transfer time ``t_e * seconds_per_byte(u, v)`` below ``value`` (or -inf)."""
    ltpb, t = prober.ltpb_sorted, prober.t_positive
    if len(ltpb) == 0 or len(t) == 0:
        return -math.inf
    idx = np.searchsorted(ltpb, value / t, side="left") - 1
    for _ in range(2):  # the division may round up: step down where the product is too big
        cand = t * ltpb[np.maximum(idx, 0)]
        idx = np.where((idx >= 0) & (cand >= value), idx - 1, idx)
    cand = t * ltpb[np.maximum(idx, 0)]
    ok = (idx >= 0) & (cand < value)
    return float(cand[ok].max()) if ok.any() else -math.inf


def _floor(prober: BottleneckProber) -> float:
    """A bottleneck no plan can beat (no probe needed).

    Every block runs somewhere, at best on the fastest node (``max``
    objective); and when the chain fits no node whole, some cut is sent
    over some link, at best the smallest transfer over the fastest link.
    """
    p = prober.problem
    floor = 0.0
    if p.uses_compute:
        floor = float(p.chain.flops.max() / p.cluster.flops_per_s.max())
    if not (prober.far_mem[0] >= prober.b - 1).any() and len(prober.t):
        floor = max(floor, float(prober.t.min() * prober.min_ltpb))
    return floor


def search(
    problem: Problem,
    *,
    deadline: float = math.inf,
    dfs_budget: int = DFS_BUDGET,
    extra_stages: int = EXTRA_STAGES,
    search_time_s: float = SEARCH_TIME_S,
    rel_tol: float = REL_TOL,
):
    """Search the smallest bottleneck the probes can meet (see the module docstring).

    1. A probe without limit gives the incumbent.
    2. The relaxation alone (cheap) is bisected up to the smallest value it
       does not refute: a proven lower bound ``lo``.
    3. Full probes: just below the incumbent (stop when that fails), then
       bisection between ``lo`` and the incumbent.

    Returns ``(best, lower_bound_s, info)`` where ``best`` is ``(cuts, nodes,
    bottleneck_s)`` or ``None``; ``lower_bound_s`` is proven (``inf`` when the
    relaxation shows that no plan exists at all).
    """
    deadline = min(deadline, time.perf_counter() + search_time_s)
    prober = BottleneckProber(problem, dfs_budget, extra_stages)
    log = {"probes": 0, "relaxations": 0, "reconstruction_failures": 0}
    first = prober.probe(math.inf)
    log["probes"] += 1
    if first.plan is None:
        return None, (math.inf if first.proven_infeasible else 0.0), log
    best = (*first.plan, prober.value(*first.plan))
    exact = not problem.uses_compute  # the optimum is then one of the transfer times
    tolerance = 1e-9 if exact else 1e-6

    def values(lo: float, hi: float) -> np.ndarray | None:
        """Candidate optima in ``[lo, hi)``, or ``None`` when not enumerable."""
        if not exact:
            return None
        _, cand = _candidates(prober, np.nextafter(lo, -math.inf), hi)
        return cand

    # 2. Relaxation bisection: every beta < lo is proven infeasible.
    lo, top = _floor(prober), best[2]
    while (
        top > max(lo, 1e-300) * (1 + tolerance)
        and log["relaxations"] < MAX_PROBES
        and time.perf_counter() < deadline
    ):
        cand = values(lo, top) if top <= lo * COARSE_RATIO else None
        if cand is not None:
            a, z = 0, len(cand)  # smallest candidate the relaxation accepts: cand[a] (or top)
            while a < z:
                m = (a + z) // 2
                log["relaxations"] += 1
                if prober.relaxed_feasible(float(cand[m])):
                    z = m
                else:
                    a = m + 1
            lo = float(cand[a]) if a < len(cand) else top
            break
        mid = math.sqrt(lo * top) if lo > 0 else top / 16
        log["relaxations"] += 1
        if prober.relaxed_feasible(mid):
            top = mid
        else:
            lo = mid
    at_least = lo  # the optimum is at least this
    refuted = -math.inf  # and above this (a complete search found no plan within it)

    def run(beta: float) -> bool:
        nonlocal best, refuted
        p = prober.probe(beta)
        log["probes"] += 1
        if p.plan is not None:
            value = prober.value(*p.plan)
            if value < best[2]:
                best = (*p.plan, value)
            return True
        if p.proven_infeasible:
            refuted = max(refuted, beta)
        else:
            log["reconstruction_failures"] += 1
        return False

    # 3. Full probes. Failed probes cost the most (the search must run out of options),
    # so each round first asks for anything better than the incumbent (the largest
    # candidate below it): when that fails, the incumbent stays, and when the failure is
    # a proof it is optimal. A success is followed by one bisection probe between the
    # bound and the new incumbent. A tight relaxation is checked once, at its bound.
    tight_checked = False
    while (
        best[2] > lo * (1 + tolerance)
        and log["probes"] < MAX_PROBES
        and time.perf_counter() < deadline
    ):
        if not tight_checked and best[2] <= lo * TIGHT_CHECK_RATIO:
            tight_checked = True
            if not run(lo):
                lo = float(np.nextafter(lo, math.inf))
            continue
        below = _largest_below(prober, best[2]) if exact else best[2] * (1 - rel_tol)
        if below < lo or not run(below):
            break
        if best[2] > lo * (1 + rel_tol) and time.perf_counter() < deadline:
            beta = math.sqrt(lo * best[2])
            if not run(beta):
                lo = float(np.nextafter(beta, math.inf)) if exact else beta
    bound = max(at_least, refuted)
    if exact and best[2] > bound:
        # Candidates that are neither below the relaxation's bound nor refuted.
        count, _ = _candidates(prober, max(np.nextafter(at_least, -math.inf), refuted), best[2])
        if count == 0:
            bound = best[2]  # no transfer time lies in between: the plan is optimal
    return best, min(bound, best[2]), log


@register(
    "bottleneck-search",
    description=(
        "binary search on the bottleneck: layered relaxation DP + distinct-node reconstruction, "
        "then local search"
    ),
)
def solve_bottleneck_search(
    problem: Problem,
    *,
    time_limit_s=None,
    seed: int = 0,
    dfs_budget: int = DFS_BUDGET,
    extra_stages: int = EXTRA_STAGES,
    search_time_s: float = SEARCH_TIME_S,
    rel_tol: float = REL_TOL,
    polish: bool = True,
    **_,
) -> SolverOutput:
    """Bottleneck search (module docstring); deterministic, ``seed`` is unused.

    Parameters
    ----------
    dfs_budget
        Reconstruction expansions per stage count and probe.
    extra_stages
        Stage counts tried beyond the fewest the relaxation needs.
    search_time_s
        Seconds after which no new probe starts (``time_limit_s`` too).
    rel_tol
        Bisection stops when the incumbent is within this relative distance
        of the largest threshold no plan was found for.
    polish
        Run :func:`~partopt.solvers.local_search.improve` on a plan not proven optimal.
    """
    deadline = math.inf if time_limit_s is None else time.perf_counter() + time_limit_s
    best, bound, info = search(
        problem,
        deadline=deadline,
        dfs_budget=dfs_budget,
        extra_stages=extra_stages,
        search_time_s=search_time_s,
        rel_tol=rel_tol,
    )
    if best is None and math.isinf(bound):
        return SolverOutput(
            "infeasible",
            info={
                **info,
                "reason": "no sequence of linked nodes with enough memory covers the chain",
            },
        )
    if best is None:
        from partopt.solvers.greedy import solve_greedy

        start = solve_greedy(problem)
        if start.plan is None:
            return SolverOutput(
                "no_solution",
                info={**info, "reason": "the reconstruction and the greedy start found no plan"},
            )
        best = (list(start.plan.cuts), list(start.plan.nodes), start.objective_s)
        info["start"] = "greedy"
    cuts, nodes, _ = best
    value = bottleneck_s(problem, cuts, nodes)
    proven = value <= bound * (1 + 1e-9)  # equal up to the last bit of arithmetic
    if polish and not proven:
        cuts, nodes, info["polish_rounds"] = improve(problem, cuts, nodes, deadline=deadline)
        value = bottleneck_s(problem, cuts, nodes)
        proven = value <= bound * (1 + 1e-9)
    status = "optimal" if proven else "feasible"
    return SolverOutput(
        status,
        to_plan(problem, cuts, nodes),
        objective_s=value,
        lower_bound_s=bound,
        info={**info, "stages": len(nodes)},
    )
