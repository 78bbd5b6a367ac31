"""``random-original``: the original work's random baseline, exactly as its code drew plans.

The original cut its list of cut points into *windows* with its own memory
sums (``partition_mems[k]``: the segment after cut point ``k``; a window
starting at point ``i`` grows while ``sum(partition_mems[i:j-1])`` stays
below the capacity, Python's slice rules included), chose each cut with
``random.randint(previous window end + 1, window end)`` and put the stages
on ``random.sample`` distinct nodes. It checked neither memory nor the number
of nodes; a cut after the output layer (the output has no consumer) sends
nothing and leaves an empty last stage.

The plan is scored by :func:`partopt.plan.evaluate` like every other; when a
stage does not fit its node's memory the method returns ``no_solution``
saying so. ``info["original_bottleneck_s"]`` is what the original reported
(0 when the model fits one node), for averaging the original way.

References
----------
Parthasarathy, A. and Krishnamachari, B. (2022). Partitioning and placement
of deep neural networks on distributed edge devices to maximize inference
throughput. ITNAC 2022 (arXiv:2210.12219). Baseline "random".
"""

from __future__ import annotations

import random

from partopt.problem import Problem
from partopt.solvers import SolverOutput, register
from partopt.solvers._plans import bottleneck_s, original_plan_output, stage_bounds

__all__ = ["original_partition_mems", "original_random_cuts", "original_windows"]


def original_partition_mems(problem: Problem) -> list[float]:
    """The original's ``partition_mems``: block ``k + 1``'s memory at ``k``, then a final 0.

    Block 0 (everything up to the first cut point) has no entry: the
    original never charged it.
    """
    s, m = problem.chain.memory_terms(problem.memory)
    per_block = (s + m).tolist()
    return [float(x) for x in per_block[1:]] + [0.0]


def original_windows(partition_mems: list[float], capacity_bytes: float) -> list[int]:
    """The window ends ("splits") the original computed, as indices of cut points.

    Examples
    --------
    Five points; the segments after them weigh 3, 3, 3, 3 (and 0 after the output):

    >>> original_windows([3, 3, 3, 3, 0], 5)  # the first window is empty (slice [0:-1])
    [0, 4]
    >>> original_windows([3, 3, 3, 3, 0], 100)  # fits one node: no window ends
    []
    """
    points = len(partition_mems)
    splits = []
    i = 0
    while i < points:
        j = i
        while sum(partition_mems[i : j - 1]) < capacity_bytes:
            j += 1
            if j > points - 1:
                break
        if j != points:
            splits.append(j)
        i = j + 1
    return splits


def original_random_cuts(splits: list[int], rng: random.Random) -> list[int]:
    """One cut point per window after the first: ``randint(previous end + 1, end)``."""
    return [rng.randint(splits[s - 1] + 1, splits[s]) for s in range(1, len(splits))]


@register(
    "random-original",
    description="the original's random baseline as its code drew it (no memory or N check)",
)
def solve_random_original(
    problem: Problem, *, time_limit_s=None, seed: int = 0, **_
) -> SolverOutput:
    """The original random baseline (``seed`` seeds Python's :class:`random.Random`)."""
    rng = random.Random(seed)
    capacity = float(problem.cluster.memory_bytes.min())
    splits = original_windows(original_partition_mems(problem), capacity)
    choices = original_random_cuts(splits, rng)
    n, b = problem.num_nodes, problem.num_blocks
    parts = len(choices) + 1
    info: dict = {"windows": splits, "original_cuts": choices}
    if parts > n:
        return SolverOutput(
            "no_solution",
            info={
                **info,
                "original_bottleneck_s": None,
                "reason": f"the draw has {parts} stages for {n} nodes "
                "(the original's random.sample would have raised)",
            },
        )
    nodes = rng.sample(range(n), parts)
    # a cut after the last block (the output layer) sends nothing: its empty stage is dropped
    cuts = [c for c in choices if c <= b - 2]
    nodes = nodes[: len(cuts) + 1]
    value = bottleneck_s(problem, cuts, nodes)
    info.update(
        {
            "original_bottleneck_s": value,
            "stages": len(nodes),
            "stage_bounds": stage_bounds(cuts, b),
        }
    )
    return original_plan_output(
        problem,
        cuts,
        nodes,
        info,
        "random plan exceeds its node's memory (the original checked none)",
        "a stage pair has no link",
    )
