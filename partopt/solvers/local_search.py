"""``local-search``: improve a plan by moving cuts and exchanging nodes.

:func:`improve` takes a valid plan (cuts and nodes) and applies, while one
exists, the best move that lowers the objective ``(bottleneck, sum of all
stage times)`` lexicographically (the second key lets the search cross
plateaus of the bottleneck without cycling). The moves:

* *replace*: put stage ``j`` on an unused node;
* *swap*: exchange the nodes of two stages;
* *shift*: move the cut between stages ``j`` and ``j + 1`` anywhere between
  its neighbouring cuts;
* *merge*: drop a cut, running both stages on one of their two nodes;
* *split*: cut stage ``j`` in two, the second part on an unused node;
* *shift and split*: move a bottleneck cut to a smaller transfer beyond
  where its neighbouring stage fits, and hand that stage's surplus to an
  unused node.

Every move keeps memory, links and distinct nodes valid. The method
``local-search`` starts from the ``greedy`` plan.
"""

from __future__ import annotations

import math
import time

import numpy as np

from partopt.plan import MEMORY_TOLERANCE
from partopt.problem import Problem
from partopt.solvers import SolverOutput, register
from partopt.solvers._plans import bottleneck_s, node_windows, stage_bounds, to_plan

__all__ = ["improve", "solve_local_search"]

MAX_ROUNDS = 1000

CHECK_EVERY = 64
"""Candidates evaluated between two looks at the clock."""


class _Moves:
    """The objective and the best move of each kind for one problem."""

    def __init__(self, problem: Problem):
        self.p = problem
        self.t = problem.transfer_bytes
        self.ltpb = problem.link_time_per_byte
        self.caps = problem.cluster.memory_bytes * (1 + MEMORY_TOLERANCE)
        self.compute = problem.uses_compute
        speeds = problem.cluster.flops_per_s
        # None exactly when compute times do not count (a max-objective problem has speeds).
        self.inv_speed: np.ndarray | None = (
            1.0 / speeds if self.compute and speeds is not None else None
        )
        self.n = problem.num_nodes
        self.b = problem.num_blocks
        self.far = node_windows(problem).T  # far[v][i]: the last block from i on v

    def costs(self, cuts, nodes) -> np.ndarray:
        """Every stage time of the plan: transfers, then compute times (seconds; inf: no link)."""
        nodes = np.asarray(nodes)
        ltpb = self.ltpb[nodes[:-1], nodes[1:]]
        if np.isinf(ltpb).any():
            return np.array([math.inf])
        out = self.t[np.asarray(cuts, dtype=int)] * ltpb
        if self.inv_speed is not None:
            flops = [self.p.stage_flops(f, la) for f, la in stage_bounds(cuts, self.b)]
            out = np.concatenate([out, np.asarray(flops) * self.inv_speed[nodes]])
        return out

    def key(self, cuts, nodes) -> tuple[float, float]:
        c = self.costs(cuts, nodes)
        return (float(c.max()), float(c.sum())) if len(c) else (0.0, 0.0)

    def fits(self, first: int, last: int) -> np.ndarray:
        """Nodes whose memory holds blocks ``first..last`` (from the windows: ``O(N)``, not ``O(B)``)."""
        return self.far[:, first] >= last

    def comp(self, first: int, last: int) -> np.ndarray:
        """Compute time of blocks ``first..last`` on every node (zeros without speeds)."""
        if self.inv_speed is None:
            return np.zeros(self.n)
        return self.p.stage_flops(first, last) * self.inv_speed

    def candidates(self, cuts, nodes):
        """Yield complete candidate plans ``(cuts, nodes)``, a few per move kind."""
        k = len(nodes)
        bounds = stage_bounds(cuts, self.b)
        used = np.zeros(self.n, dtype=bool)
        used[list(nodes)] = True
        # replace: the best unused node for each stage, scored on its own two links
        for j in range(k):
            first, last = bounds[j]
            ok = ~used & self.fits(first, last)
            if not ok.any():
                continue
            score = self.comp(first, last)
            if j > 0:
                score = np.maximum(score, self.t[cuts[j - 1]] * self.ltpb[nodes[j - 1]])
            if j + 1 < k:
                score = np.maximum(score, self.t[cuts[j]] * self.ltpb[:, nodes[j + 1]])
            score = np.where(ok, score, math.inf)
            for w in np.argsort(score, kind="stable")[:2]:
                if math.isfinite(score[w]):
                    yield cuts, [*nodes[:j], int(w), *nodes[j + 1 :]]
        # swap two stages' nodes
        for i in range(k):
            for j in range(i + 1, k):
                if self.fits(*bounds[i])[nodes[j]] and self.fits(*bounds[j])[nodes[i]]:
                    swapped = list(nodes)
                    swapped[i], swapped[j] = nodes[j], nodes[i]
                    yield cuts, swapped
        # shift a cut between its neighbours
        for j in range(k - 1):
            lo = bounds[j][0]
            hi = bounds[j + 1][1]
            for c in range(lo, hi):
                if c == cuts[j]:
                    continue
                if self.fits(lo, c)[nodes[j]] and self.fits(c + 1, hi)[nodes[j + 1]]:
                    yield [*cuts[:j], c, *cuts[j + 1 :]], nodes
        # shift a bottleneck cut to a smaller transfer where a stage then overflows, and
        # split that stage, its surplus on the unused node with the best links
        if (~used).any() and k > 1:
            times = (
                self.t[np.asarray(cuts)] * self.ltpb[np.asarray(nodes[:-1]), np.asarray(nodes[1:])]
            )
            for j in np.flatnonzero(times >= times.max()):
                lo, hi = bounds[j][0], bounds[j + 1][1]
                for c in range(lo, hi):
                    if self.t[c] >= self.t[cuts[j]]:
                        continue
                    left = self.fits(lo, c)[nodes[j]]
                    right = self.fits(c + 1, hi)[nodes[j + 1]]
                    if left == right:
                        continue  # both fit: a plain shift; neither: two splits, not tried
                    if not left:  # lo..c3 stays, c3+1..c goes to the new node
                        c3 = int(self.far[nodes[j]][lo])
                        if c3 < lo:
                            continue
                        new_cuts, at, first, last = [c3, c], j + 1, c3 + 1, c
                        before, after = nodes[j], nodes[j + 1]
                    else:  # c+1..c3 stays, c3+1..hi goes to the new node
                        c3 = int(self.far[nodes[j + 1]][c + 1])
                        if c3 < c + 1 or c3 >= hi:
                            continue
                        new_cuts, at, first, last = [c, c3], j + 2, c3 + 1, hi
                        before = nodes[j + 1]
                        after = nodes[j + 2] if j + 2 < k else None
                    ok = ~used & self.fits(first, last)
                    if not ok.any():
                        continue
                    score = np.maximum(
                        self.t[first - 1] * self.ltpb[before], self.comp(first, last)
                    )
                    if after is not None:
                        score = np.maximum(score, self.t[last] * self.ltpb[:, after])
                    score = np.where(ok, score, math.inf)
                    w = int(np.argmin(score))
                    if math.isfinite(score[w]):
                        yield (
                            [*cuts[:j], *new_cuts, *cuts[j + 1 :]],
                            [*nodes[:at], w, *nodes[at:]],
                        )
        # merge two neighbouring stages onto one of their nodes
        for j in range(k - 1):
            first, last = bounds[j][0], bounds[j + 1][1]
            fit = self.fits(first, last)
            for v in (nodes[j], nodes[j + 1]):
                if fit[v]:
                    yield [*cuts[:j], *cuts[j + 1 :]], [*nodes[:j], v, *nodes[j + 2 :]]
        # split a stage, the second part on the unused node with the best links
        if (~used).any():
            for j in range(k):
                first, last = bounds[j]
                for c in range(first, last):
                    if not self.fits(first, c)[nodes[j]]:
                        continue
                    ok = ~used & self.fits(c + 1, last)
                    if not ok.any():
                        continue
                    score = np.maximum(self.t[c] * self.ltpb[nodes[j]], self.comp(c + 1, last))
                    if j + 1 < k:
                        score = np.maximum(score, self.t[cuts[j]] * self.ltpb[:, nodes[j + 1]])
                    score = np.where(ok, score, math.inf)
                    w = int(np.argmin(score))
                    if math.isfinite(score[w]):
                        yield sorted([*cuts, c]), [*nodes[: j + 1], w, *nodes[j + 1 :]]


def improve(
    problem: Problem, cuts, nodes, *, deadline: float = math.inf, max_rounds: int = MAX_ROUNDS
) -> tuple[list[int], list[int], int]:
    """Best-improvement local search from a valid plan; returns ``(cuts, nodes, rounds)``.

    The clock is read every :data:`CHECK_EVERY` candidates, so the search
    stops within about one batch of candidates after ``deadline`` (it then
    keeps the best improving move seen so far in that round).

    Examples
    --------
    >>> from partopt import Chain, Cluster
    >>> bw = [[0, 1, 9], [1, 0, 9], [9, 9, 0]]
    >>> p = Problem(Chain.from_arrays([1, 1], [9e6]),
    ...             Cluster(("a", "b", "c"), [1, 1, 1], bw))
    >>> cuts, nodes, _ = improve(p, [0], [0, 1])
    >>> bottleneck_s(p, [0], [0, 1]), bottleneck_s(p, cuts, nodes)
    (72.0, 8.0)
    """
    moves = _Moves(problem)
    cuts, nodes = list(cuts), [int(v) for v in nodes]
    best = moves.key(cuts, nodes)
    rounds = 0
    while rounds < max_rounds and time.perf_counter() < deadline:
        rounds += 1
        chosen = None
        late = False
        for count, (c2, n2) in enumerate(moves.candidates(cuts, nodes), 1):
            key = moves.key(c2, n2)
            if key < best and (chosen is None or key < chosen[0]):
                chosen = (key, list(c2), [int(v) for v in n2])
            if count % CHECK_EVERY == 0 and time.perf_counter() >= deadline:
                late = True
                break
        if chosen is not None:
            best, cuts, nodes = chosen
        if chosen is None or late:
            break
    return cuts, nodes, rounds


@register(
    "local-search",
    description="greedy plan, then moves of cuts and nodes while the bottleneck drops",
)
def solve_local_search(
    problem: Problem, *, time_limit_s=None, seed: int = 0, warm_start=None, **_
) -> SolverOutput:
    """Local search (:func:`improve`) from ``warm_start`` (a valid plan) or the ``greedy`` plan."""
    from partopt.solvers.greedy import solve_greedy

    t0 = time.perf_counter()
    deadline = math.inf if time_limit_s is None else t0 + time_limit_s
    start = (
        SolverOutput(
            "feasible", warm_start, bottleneck_s(problem, warm_start.cuts, warm_start.nodes)
        )
        if warm_start is not None
        else solve_greedy(problem, time_limit_s=time_limit_s)
    )
    greedy_s = time.perf_counter() - t0
    if start.plan is None:
        return SolverOutput(
            "no_solution",
            info={
                "reason": "the greedy start found no plan: " + start.info.get("reason", ""),
                "greedy_s": greedy_s,
            },
        )
    cuts, nodes, rounds = improve(problem, start.plan.cuts, start.plan.nodes, deadline=deadline)
    return SolverOutput(
        "feasible",
        to_plan(problem, cuts, nodes),
        objective_s=bottleneck_s(problem, cuts, nodes),
        info={
            "rounds": rounds,
            "start_s": start.objective_s,
            "greedy_s": greedy_s,
            "search_s": time.perf_counter() - t0 - greedy_s,
            "timed_out": time.perf_counter() >= deadline,
        },
    )
