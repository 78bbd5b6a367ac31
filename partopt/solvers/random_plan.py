"""``random``: the original work's random baseline, made to respect memory and links."""

from __future__ import annotations

import math
import time

import numpy as np

from partopt.feasibility import farthest_ends
from partopt.plan import Plan, Stage
from partopt.problem import Problem
from partopt.solvers import SolverOutput, register

MAX_ATTEMPTS = 1000


def _attempt(problem: Problem, rng: np.random.Generator, ends_by_node) -> Plan | None:
    b, n = problem.num_blocks, problem.num_nodes
    bw = problem.cluster.bandwidth_mbps
    used = np.zeros(n, dtype=bool)
    stages: list[Stage] = []
    first, prev = 0, -1
    while first < b:
        reachable = np.flatnonzero(~used & ((bw[prev] > 0) if prev >= 0 else True))
        candidates = [v for v in reachable if ends_by_node[v][first] >= first]
        if not candidates:
            return None
        node = int(rng.choice(candidates))
        last = int(rng.integers(first, ends_by_node[node][first] + 1))  # a cut inside the window
        stages.append(Stage(first, last, node))
        used[node] = True
        first, prev = last + 1, node
    return Plan(tuple(stages))


@register("random", description="random memory-feasible cuts on random distinct linked nodes")
def solve_random(problem: Problem, *, time_limit_s=None, seed: int = 0, **_) -> SolverOutput:
    """Random cuts inside each node's memory window, random distinct nodes (seeded).

    Each stage starts on a random unused node linked to the previous one and
    ends at a uniformly random block among those that still fit that node.
    A draw that runs out of nodes is thrown away and redrawn, up to
    ``MAX_ATTEMPTS`` times or until ``time_limit_s`` (read before each
    redraw); the first complete plan is returned.
    """
    deadline = math.inf if time_limit_s is None else time.perf_counter() + time_limit_s
    rng = np.random.default_rng(seed)
    caps = problem.cluster.memory_bytes
    ends = {}
    for cap in np.unique(caps):
        ends[float(cap)] = farthest_ends(problem, float(cap))
    ends_by_node = [ends[float(c)] for c in caps]
    attempt = 0
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if attempt > 1 and time.perf_counter() > deadline:
            return SolverOutput(
                "no_solution",
                info={"attempts": attempt - 1, "reason": "time limit: no random draw completed"},
            )
        plan = _attempt(problem, rng, ends_by_node)
        if plan is not None:
            return SolverOutput("feasible", plan, info={"attempts": attempt})
    return SolverOutput(
        "no_solution", info={"attempts": attempt, "reason": "no random draw completed a plan"}
    )
