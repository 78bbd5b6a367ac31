"""``greedy-original``: the original work's greedy ("joint") baseline, defects included.

The original partitioned with the same code as its k-path algorithm, so
with the same defects (:func:`partopt.partition.original_min_sum_partition`):
a memo keyed by the start of the rest of the chain that ignores the limit of
``N`` stages and is never cleared, and a memory sum that leaves out the
segment right after each cut. It then grows, from every start node in turn,
a chain that always takes the widest link to an unused node (ignoring
memory; ties to the lowest node index) and keeps the chain with the smallest
bottleneck.

What the original reported, kept in ``info["original_bottleneck_s"]`` for
averaging the original way: that chain's bottleneck; 0 when no partition
within ``N`` stages was found (its code then placed an empty partition and
measured no link) or the partition has one stage. The plan itself is scored
by :func:`partopt.plan.evaluate` like every other; when a stage of it does
not fit its node's memory, the method returns ``no_solution`` saying so.

References
----------
Parthasarathy, A. and Krishnamachari, B. (2022). Partitioning and placement
of deep neural networks on distributed edge devices to maximize inference
throughput. ITNAC 2022 (arXiv:2210.12219). Baseline "greedy joint
partitioning-placement".
"""

from __future__ import annotations

import math

import numpy as np

from partopt.partition import original_min_sum_partition
from partopt.problem import Problem
from partopt.solvers import SolverOutput, register
from partopt.solvers._plans import bottleneck_s, original_plan_output, stage_bounds
from partopt.solvers.greedy import widest_chain
from partopt.solvers.seifer import leaky_memo as shared_leaky_memo
from partopt.solvers.seifer import replayed_memo

__all__ = ["original_greedy_chain", "solve_greedy_original"]


def original_greedy_chain(problem: Problem, cuts: list[int]) -> tuple[list[int], float]:
    """The original's placement of ``cuts``: the best widest-link chain over all start nodes.

    Memory is not looked at; the first chain with the strictly smallest
    bottleneck wins. Returns the nodes and the bottleneck in seconds.

    Examples
    --------
    >>> from partopt.chain import Chain
    >>> from partopt.cluster import Cluster
    >>> bw = np.array([[0, 5, 9], [5, 0, 1], [9, 1, 0]], dtype=float)
    >>> cluster = Cluster(("a", "b", "c"), np.full(3, 4.0), bw)
    >>> p = Problem(Chain.from_arrays([1, 1], [1e6]), cluster)
    >>> original_greedy_chain(p, [0])  # start 0 takes its 9 Mbit/s link: 8 Mbit / 9 Mbit/s
    ([0, 2], 0.8888888888888888)
    """
    bw = problem.cluster.bandwidth_mbps
    anywhere = np.ones((len(cuts) + 1, problem.num_nodes), dtype=bool)
    best, best_value = [0], math.inf
    for first in range(problem.num_nodes):
        chain = widest_chain(bw, anywhere, first)
        if chain is None:
            continue
        value = bottleneck_s(problem, cuts, chain)
        if value < best_value:
            best, best_value = chain, value
    return best, best_value


@register(
    "greedy-original",
    description="the original's greedy baseline with its partition defects (to explain published numbers)",
)
def solve_greedy_original(
    problem: Problem,
    *,
    time_limit_s=None,
    seed: int = 0,
    leaky_memo: bool | dict = True,
    memo_history=None,
    skip_block_memory: bool | str = "after",
    **_,
) -> SolverOutput:
    """The original greedy baseline (deterministic; ``seed`` is unused).

    Parameters
    ----------
    leaky_memo
        ``True``: the process-wide never-cleared memo of this method (see
        :func:`partopt.solvers.seifer.clear_leaky_memo`); a ``dict``: that
        memo; ``False``: a fresh memo (the stage limit is still ignored).
    memo_history
        Capacities in MB the original partitioned this model at before this
        run, in its loop order: the memo is filled by partitioning at each
        of them first (:func:`partopt.solvers.seifer.replayed_memo`), so a run
        gives what the original gave at that point of its loop on its own.
        Implies a fresh memo.
    skip_block_memory
        The memory sum of the partition (``"after"``: the original's,
        :func:`partopt.partition.stage_fits_matrix`).
    """
    if memo_history:
        memo = replayed_memo(problem, memo_history, skip_block_memory)
    elif leaky_memo is True:
        memo = shared_leaky_memo(problem, "greedy-original")
    else:
        memo = leaky_memo if isinstance(leaky_memo, dict) else {}
    capacity = float(problem.cluster.memory_bytes.min())
    cuts = original_min_sum_partition(
        problem, capacity, problem.num_nodes, memo=memo, skip_block_memory=skip_block_memory
    )
    if cuts is None:
        return SolverOutput(
            "no_solution",
            info={
                "reason": "the original partition DP found no partition within the stage limit",
                "original_bottleneck_s": 0.0,
            },
        )
    nodes, value = original_greedy_chain(problem, cuts)
    info: dict = {
        "original_bottleneck_s": value,
        "stages": len(nodes),
        "stage_bounds": stage_bounds(cuts, problem.num_blocks),
    }
    return original_plan_output(
        problem,
        cuts,
        nodes,
        info,
        "plan exceeds its node's memory (the partition DP skipped the segment after each cut)",
        "the greedy chain used a missing link",
    )
