"""``bottleneck-search``: binary search on the bottleneck with a layered feasibility DP.

For a candidate bottleneck ``beta`` (seconds per inference), a plan meets
it when every stage's outgoing transfer and (with the ``max`` objective)
compute time is at most ``beta``. Whether such a plan exists is decided in
two steps:

1. *Relaxation (exact, polynomial).* Drop only the rule that stages need
   distinct nodes. Then plans are paths in a layered graph whose states
   ``(s, j, v)`` say "``s`` stages cover blocks ``0..j``, the last one on node
   ``v``": a stage of blocks ``a..j`` may run on ``v`` if it fits ``v``'s
   memory (and compute budget), and it may follow a stage on ``u`` ending at
   block ``a - 1`` if the transfer of cut ``a - 1`` over link ``u -> v``
   takes at most ``beta``. Layer ``s`` follows from layer ``s - 1`` by one
   batched boolean matrix product (which nodes can be entered after each
   cut) and one running maximum over blocks (a stage is an interval of
   blocks, and the farthest block a stage may reach grows with its start).
   If no layer up to ``N`` reaches the last block, *no* plan meets ``beta``:
   a proof, which gives the method its lower bound.
2. *Reconstruction (heuristic).* A depth-first search walks back from the
   last block through the reachable states, taking only unused nodes,
   smallest transfer time first, within a budget of expansions; at the
   first layer that reaches the end, and a few more if distinctness fails.

The search over ``beta`` starts from the plan found with no limit (fewest
stages); every plan found lowers the upper end to its real bottleneck, every
relaxation that fails raises the proven lower end. Geometric bisection
narrows the range to a few percent, then the exact candidate values (the
transfer of some cut over some link: the optimum is one of them under the
communication objective) inside it are searched exactly. When the
candidate just below the final plan's value is proven infeasible, the plan
is optimal and is reported so. Otherwise (a reconstruction gave up, or the
``max`` objective, whose candidates are not enumerated), the plan is
polished by :func:`partopt.solvers.local_search.improve`.

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

from partopt.feasibility import farthest_ends
from partopt.problem import Problem
from partopt.solvers import SolverOutput, register
from partopt.solvers._plans import bottleneck_s, to_plan
from partopt.solvers.local_search import improve

__all__ = ["Probe", "BottleneckProber", "solve_bottleneck_search"]

DFS_BUDGET = 300
"""Node expansions of the reconstruction per probe before it gives up."""

EXTRA_STAGES = 2
"""Stages the reconstruction may use beyond the fewest the relaxation needs."""

FORWARD_AFTER = 30
"""Expansions after which the reconstruction re-checks the relaxation without used nodes."""
"""Stages the reconstruction may use beyond the fewest the relaxation needs."""

COARSE_RATIO = 1.02
"""Geometric bisection stops when upper / lower end is below this; exact candidates follow."""

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

    def __init__(self, problem: Problem, dfs_budget: int = DFS_BUDGET,
                 extra_stages: int = EXTRA_STAGES, forward_after: int = FORWARD_AFTER):
        self.problem = problem
        self.forward_after = forward_after
        self.dfs_budget = dfs_budget
        self.extra_stages = extra_stages
        b, n = problem.num_blocks, problem.num_nodes
        self.b, self.n = b, n
        self.t = np.asarray(problem.transfer_bytes, dtype=float)
        self.ltpb = problem.link_time_per_byte  # inf where there is no link
        self.linked = np.isfinite(self.ltpb)
        self.min_ltpb = float(self.ltpb.min()) if n > 1 else math.inf
        caps = problem.cluster.memory_bytes
        by_cap = {float(c): farthest_ends(problem, float(c)) for c in np.unique(caps)}
        self.far_mem = np.stack([by_cap[float(c)] for c in caps], axis=1)  # (B, N)
        self.blocks = np.arange(b)
        if problem.uses_compute:
            self.flops_prefix = np.concatenate([[0.0], np.cumsum(problem.chain.flops)])
            self.speed = np.asarray(problem.cluster.flops_per_s, dtype=float)

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
        return _Context(beta, far, usable, links, links.astype(np.float32), first,
                        far[first])

    def _stage_ends(self, far: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """``ends[j, v]``: a stage on ``v`` may end at block ``j``, starting where ``starts[:, v]``.

        A stage is an interval ``a..far[a, v]`` or shorter, and ``far`` grows
        with ``a``, so block ``j`` is reachable iff the latest start at or
        before ``j`` reaches it.
        """
        latest = np.maximum.accumulate(np.where(starts, self.blocks[:, None], -1), axis=0)
        return (latest >= 0) & (
            np.take_along_axis(far, np.maximum(latest, 0), 0) >= self.blocks[:, None])

    def _finishing(self, ctx: _Context, more: np.ndarray, free: np.ndarray | None = None
                   ) -> np.ndarray:
        """One backward step: ``out[j, v]`` iff a stage on ``v`` ending at ``j`` can be followed
        by a stage on some ``w`` (``free`` if given) after which ``more`` holds (or
        ``more[j, v]`` itself)."""
        out = more.copy()
        if len(ctx.usable) == 0:
            return out
        # soonest[a, w]: first block >= a where a stage on w may end and be completed
        soonest = np.minimum.accumulate(
            np.where(more, self.blocks[:, None], self.b)[::-1], axis=0)[::-1]
        ok = soonest[ctx.next_first] <= ctx.next_last  # (U, N): a stage on w after cut e
        if free is not None:
            ok &= free[None, :]
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
                    len(back) < 2 or not np.array_equal(back[-1], back[-2])):
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

        def ordered(ends: np.ndarray, viable: np.ndarray, width: np.ndarray) -> np.ndarray:
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
                starts = np.zeros((b, n), dtype=bool)
                starts[usable + 1] = ends[usable, None] & links[:, v, :] & ~used[None, :]
                nxt = self._stage_ends(far, starts)
                if self.dfs_budget - budget[0] > self.forward_after:
                    # After a cheap first try, redo the relaxation without the nodes on
                    # the path: prefixes that spend a node the rest needs die here.
                    rest = np.zeros((b, n), dtype=bool)
                    rest[b - 1] = True
                    for _ in range(more - 1):
                        rest = self._finishing(ctx, rest, ~used)
                    viable = (nxt & rest).any(axis=0)
                else:
                    viable = (nxt & back[more - 1]).any(axis=0)
                mask = int.from_bytes(np.packbits(used).tobytes(), "little")
                for w in ordered(nxt, viable, self.problem.cluster.bandwidth_mbps[v]):
                    key = (int(w), mask, nxt[:, w].tobytes())
                    if key in failed:
                        continue  # the same node after the same nodes, with the same stage ends
                    used[w] = True
                    if visit(int(w), nxt[:, w]):
                        return True
                    used[w] = False
                    if budget[0] < 0:
                        break
                    failed.add(key)
            path.pop()
            return False

        viable = (first_stage & back[most - 1]).any(axis=0)
        width = self.problem.cluster.bandwidth_mbps.max(axis=1)
        for v in ordered(first_stage, viable, width):
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
            ok = prev_ends[usable] & links[:, u, v] & (usable + 1 <= j) & (
                far[np.minimum(usable + 1, self.b - 1), v] >= j)
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
    ltpb = np.unique(prober.ltpb[np.isfinite(prober.ltpb)])
    t = prober.t[prober.t > 0]
    first = np.searchsorted(ltpb, lo / t, side="right")
    last = np.searchsorted(ltpb, hi / t, side="left")
    count = int(np.maximum(last - first, 0).sum())
    if count > MAX_CANDIDATES:
        return count, None
    parts = [t[i] * ltpb[first[i] : last[i]] for i in range(len(t)) if last[i] > first[i]]
    values = np.unique(np.concatenate(parts)) if parts else np.empty(0)
    return count, values[(values > lo) & (values < hi)]


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


def search(problem: Problem, *, deadline: float = math.inf, dfs_budget: int = DFS_BUDGET,
           extra_stages: int = EXTRA_STAGES, forward_after: int = FORWARD_AFTER):
    """Search the smallest bottleneck the probes can meet.

    1. A probe without limit gives the incumbent (``hi``).
    2. The relaxation alone (cheap) is bisected down to the smallest value
       it does not refute: a proven lower bound ``lo``.
    3. Full probes gallop up from ``lo`` (1, 2, 4, ... candidate values
       above it, then bisection): when the relaxation is tight, the first
       probe already meets the bound.

    Returns ``(best, lower_bound_s, info)`` where ``best`` is ``(cuts, nodes,
    bottleneck_s)`` or ``None``; ``lower_bound_s`` is proven (``inf`` when the
    relaxation shows that no plan exists at all).
    """
    prober = BottleneckProber(problem, dfs_budget, extra_stages, forward_after)
    log = {"probes": 0, "relaxations": 0, "reconstruction_failures": 0}
    first = prober.probe(math.inf)
    log["probes"] += 1
    if first.plan is None:
        return None, (math.inf if first.proven_infeasible else 0.0), log
    best = (*first.plan, bottleneck_s(problem, *first.plan))
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
    while top > max(lo, 1e-300) * (1 + tolerance) and time.perf_counter() < deadline:
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
            value = bottleneck_s(problem, *p.plan)
            if value < best[2]:
                best = (*p.plan, value)
            return True
        if p.proven_infeasible:
            refuted = max(refuted, beta)
        else:
            log["reconstruction_failures"] += 1
        return False

    # 3. Gallop up from lo with full probes; a failure raises lo (proven or not).
    step = 0
    while best[2] > lo * (1 + tolerance) and time.perf_counter() < deadline:
        cand = values(lo, best[2])
        if cand is not None:
            if len(cand) == 0:
                break
            beta = float(cand[min(2**step - 1, len(cand) - 1)])
        else:
            beta = min(lo * (1 + tolerance * 2 ** (step + 4)), math.sqrt(lo * best[2]))
        if run(beta):
            step = 0
        else:
            lo = np.nextafter(beta, math.inf) if exact else beta
            step += 1
    bound = max(at_least, refuted)
    if exact and best[2] > bound:
        # Candidates that are neither below the relaxation's bound nor refuted.
        count, _ = _candidates(prober, max(np.nextafter(at_least, -math.inf), refuted), best[2])
        if count == 0:
            bound = best[2]  # no transfer time lies in between: the plan is optimal
    return best, min(bound, best[2]), log


@register("bottleneck-search", description=(
    "binary search on the bottleneck: layered relaxation DP + distinct-node reconstruction, "
    "then local search"))
def solve_bottleneck_search(problem: Problem, *, time_limit_s=None, seed: int = 0,
                            dfs_budget: int = DFS_BUDGET, polish: bool = True,
                            extra_stages: int = EXTRA_STAGES, forward_after: int = FORWARD_AFTER,
                            **_) -> SolverOutput:
    """Bottleneck search (module docstring); deterministic, ``seed`` is unused.

    Parameters
    ----------
    dfs_budget
        Reconstruction expansions per probe.
    polish
        Run :func:`~partopt.solvers.local_search.improve` on a plan not proven optimal.
    """
    deadline = math.inf if time_limit_s is None else time.perf_counter() + time_limit_s
    best, bound, info = search(problem, deadline=deadline, dfs_budget=dfs_budget,
                               extra_stages=extra_stages, forward_after=forward_after)
    if best is None and math.isinf(bound):
        return SolverOutput("infeasible", info={
            **info, "reason": "no sequence of linked nodes with enough memory covers the chain"})
    if best is None:
        from partopt.solvers.greedy import solve_greedy

        start = solve_greedy(problem)
        if start.plan is None:
            return SolverOutput("no_solution", info={
                **info, "reason": "the reconstruction and the greedy start found no plan"})
        best = (list(start.plan.cuts), list(start.plan.nodes), start.objective_s)
        info["start"] = "greedy"
    cuts, nodes, value = best
    if polish and value > bound:
        cuts, nodes, info["polish_rounds"] = improve(problem, cuts, nodes, deadline=deadline)
        value = bottleneck_s(problem, cuts, nodes)
    status = "optimal" if value <= bound else "feasible"
    return SolverOutput(status, to_plan(problem, cuts, nodes), objective_s=value,
                        lower_bound_s=bound, info={**info, "stages": len(nodes)})
