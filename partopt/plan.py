"""Plans and the one evaluator that scores them.

Every solver returns a :class:`Plan`; only :func:`evaluate` says what it is
worth. A plan is an ordered list of stages, each a contiguous run of blocks
on a distinct node; the bottleneck is the largest time any stage needs per
inference, for sending its output to the next stage (and, with the ``max``
objective, for computing).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from partopt.errors import PartoptError
from partopt.problem import Problem

__all__ = ["InvalidPlan", "Plan", "Stage", "StageReport", "Evaluation", "evaluate"]

MEMORY_TOLERANCE = 1e-9
"""Relative slack on memory checks, so that float sums do not reject exact fits."""


class InvalidPlan(PartoptError):
    """A plan that breaks a rule of the problem; the message names the rule."""


@dataclass(frozen=True, order=True)
class Stage:
    """Blocks ``first_block..last_block`` (inclusive) run on cluster node ``node`` (index)."""

    first_block: int
    last_block: int
    node: int


@dataclass(frozen=True)
class Plan:
    """Ordered stages of a pipeline.

    Examples
    --------
    >>> Plan.from_cuts([1], [2, 0]).stages
    (Stage(first_block=0, last_block=1, node=2), Stage(first_block=2, last_block=2, node=0))
    """

    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))

    @classmethod
    def from_cuts(
        cls, cuts: Sequence[int], nodes: Sequence[int], num_blocks: int | None = None
    ) -> Plan:
        """Stages from the cuts taken (cut ``c`` is after block ``c``) and one node per stage.

        ``num_blocks`` defaults to ``max(cuts) + 2`` (one block after the last cut).
        """
        cuts = sorted(int(c) for c in cuts)
        if len(nodes) != len(cuts) + 1:
            raise InvalidPlan(f"{len(cuts)} cuts need {len(cuts) + 1} nodes, got {len(nodes)}")
        if num_blocks is None:
            num_blocks = (cuts[-1] + 2) if cuts else 1
        bounds = [-1, *cuts, num_blocks - 1]
        return cls(
            tuple(Stage(bounds[k] + 1, bounds[k + 1], int(nodes[k])) for k in range(len(nodes)))
        )

    @property
    def cuts(self) -> tuple[int, ...]:
        return tuple(s.last_block for s in self.stages[:-1])

    @property
    def nodes(self) -> tuple[int, ...]:
        return tuple(s.node for s in self.stages)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def to_dict(self, problem: Problem | None = None) -> list[dict]:
        """JSON-ready stages; node names come from ``problem``'s cluster when given."""
        out = []
        for s in self.stages:
            d = {
                "node": problem.cluster.names[s.node] if problem else s.node,
                "first_block": s.first_block,
                "last_block": s.last_block,
            }
            out.append(d)
        return out

    @classmethod
    def from_dict(cls, stages: Sequence[dict], problem: Problem) -> Plan:
        """Inverse of :meth:`to_dict`; nodes may be names or indices (whole numbers, not ``0.5``)."""
        out = []
        for k, d in enumerate(stages):
            if not isinstance(d, dict) or not {"node", "first_block", "last_block"} <= set(d):
                raise InvalidPlan(f"stage {k} needs 'node', 'first_block' and 'last_block'")
            for key in ("first_block", "last_block", "node"):
                v = d[key]
                if key == "node" and isinstance(v, str):
                    continue
                if not isinstance(v, numbers.Integral) or isinstance(v, bool):
                    raise InvalidPlan(
                        f"stage {k}: {key} must be a whole number"
                        + (" or a node name" if key == "node" else "")
                        + f", got {v!r}"
                    )
            node = d["node"]
            idx = problem.cluster.index(node) if isinstance(node, str) else int(node)
            out.append(Stage(int(d["first_block"]), int(d["last_block"]), idx))
        return cls(tuple(out))


@dataclass(frozen=True)
class StageReport:
    """One stage as :func:`evaluate` sees it (times in seconds per inference)."""

    node: int
    first_block: int
    last_block: int
    memory_bytes: float
    capacity_bytes: float
    compute_s: float
    transfer_s: float  # outgoing; 0 for the last stage
    transfer_bytes: float


@dataclass(frozen=True)
class Evaluation:
    """The score of a valid plan.

    ``bottleneck_s`` is seconds per inference at steady state;
    ``throughput_per_s`` is inferences per second (``inf`` when the
    bottleneck is 0, as for one stage under the communication objective).
    """

    bottleneck_s: float
    communication_s: float
    compute_s: float
    stages: tuple[StageReport, ...]

    @property
    def throughput_per_s(self) -> float:
        return float("inf") if self.bottleneck_s == 0 else 1.0 / self.bottleneck_s


def _check(problem: Problem, plan: Plan) -> None:
    if not isinstance(problem, Problem):
        raise TypeError(
            f"problem must be a partopt Problem, got {problem!r} ({type(problem).__name__})"
        )
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be a partopt Plan, got {plan!r} ({type(plan).__name__})")
    b, n = problem.num_blocks, problem.num_nodes
    stages = plan.stages
    if not stages:
        raise InvalidPlan("plan has no stages")
    if stages[0].first_block != 0:
        raise InvalidPlan(f"first stage starts at block {stages[0].first_block}, not block 0")
    for k, s in enumerate(stages):
        if s.last_block < s.first_block:
            raise InvalidPlan(f"stage {k} is empty (blocks {s.first_block}..{s.last_block})")
        if k + 1 < len(stages) and stages[k + 1].first_block != s.last_block + 1:
            raise InvalidPlan(
                f"stages {k} and {k + 1} are not contiguous: block {s.last_block} is followed "
                f"by block {stages[k + 1].first_block}"
            )
        if not 0 <= s.node < n:
            raise InvalidPlan(f"stage {k} uses node {s.node}, but the cluster has {n} nodes")
    if stages[-1].last_block != b - 1:
        raise InvalidPlan(
            f"plan covers blocks 0..{stages[-1].last_block} but the chain has {b} blocks"
        )
    seen: dict[int, int] = {}
    for k, s in enumerate(stages):
        if s.node in seen:
            raise InvalidPlan(
                f"node {problem.cluster.names[s.node]!r} hosts stages {seen[s.node]} and {k}; "
                "stages need distinct nodes"
            )
        seen[s.node] = k


def evaluate(problem: Problem, plan: Plan) -> Evaluation:
    """Check ``plan`` against ``problem`` and return its bottleneck.

    Raises :class:`InvalidPlan` naming the first violated rule: stages not
    covering the chain contiguously, a node used twice, a stage over its
    node's memory, a missing link between consecutive stages.

    Examples
    --------
    >>> from partopt.chain import Chain
    >>> from partopt.cluster import Cluster
    >>> p = Problem(Chain.from_arrays([1, 1, 1], [2e6, 1e6]),
    ...             Cluster.uniform(3, memory_bytes=2, bandwidth_mbps=8.0))
    >>> evaluate(p, Plan.from_cuts([1], [0, 1])).bottleneck_s
    1.0
    """
    _check(problem, plan)
    reports = []
    comm = comp = 0.0
    stages = plan.stages
    for k, s in enumerate(stages):
        mem = problem.stage_memory(s.first_block, s.last_block)
        cap = float(problem.cluster.memory_bytes[s.node])
        if mem > cap * (1 + MEMORY_TOLERANCE):
            raise InvalidPlan(
                f"stage {k} (blocks {s.first_block}..{s.last_block}) needs {mem:.0f} bytes but node "
                f"{problem.cluster.names[s.node]!r} has {cap:.0f}"
            )
        t_comp = problem.compute_time_s(s.first_block, s.last_block, s.node)
        t_send, sent = 0.0, 0.0
        if k + 1 < len(stages):
            nxt = stages[k + 1].node
            if problem.cluster.bandwidth_mbps[s.node, nxt] <= 0:
                raise InvalidPlan(
                    f"no link from {problem.cluster.names[s.node]!r} to "
                    f"{problem.cluster.names[nxt]!r} between stages {k} and {k + 1}"
                )
            t_send = problem.transfer_time_s(s.last_block, s.node, nxt)
            sent = float(problem.transfer_bytes[s.last_block])
        comm, comp = max(comm, t_send), max(comp, t_comp)
        reports.append(
            StageReport(s.node, s.first_block, s.last_block, mem, cap, t_comp, t_send, sent)
        )
    return Evaluation(max(comm, comp), comm, comp, tuple(reports))
