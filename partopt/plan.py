"""Plans and the one evaluator that scores them.

Every solver returns a :class:`Plan`; only :func:`evaluate` says what it is
worth. A plan is an ordered list of stages on distinct nodes: for a chain
problem each stage is a contiguous run of blocks (:class:`Stage`), for a DAG
problem (:class:`partopt.dag.DagProblem`) a set of operators
(:class:`OpStage`) such that every prefix of the plan is downward closed.
The bottleneck is the largest load of a stage under the problem's objective
(:mod:`partopt.costs`): sending its output to the next stage, and with the
other objectives computing (and receiving, or the star model's traffic).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from partopt import costs
from partopt.errors import PartoptError
from partopt.problem import Problem

__all__ = ["InvalidPlan", "OpStage", "Plan", "Stage", "StageReport", "Evaluation", "evaluate"]

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
class OpStage:
    """Operators ``ops`` (indices into the DAG, sorted) run on cluster node ``node`` (index)."""

    ops: tuple[int, ...]
    node: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(sorted(int(o) for o in self.ops)))


@dataclass(frozen=True)
class Plan:
    """Ordered stages of a pipeline.

    Examples
    --------
    >>> Plan.from_cuts([1], [2, 0]).stages
    (Stage(first_block=0, last_block=1, node=2), Stage(first_block=2, last_block=2, node=0))
    """

    stages: tuple  # of Stage (chain problems) or OpStage (DAG problems)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))

    @property
    def is_dag(self) -> bool:
        """Whether the stages are operator sets (:class:`OpStage`)."""
        return bool(self.stages) and isinstance(self.stages[0], OpStage)

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

    def to_dict(self, problem=None) -> list[dict]:
        """JSON-ready stages; node (and operator) names come from ``problem`` when given."""
        out = []
        for s in self.stages:
            if isinstance(s, OpStage):
                names = getattr(getattr(problem, "dag", None), "op_names", None)
                out.append(
                    {
                        "node": problem.cluster.names[s.node] if problem else s.node,
                        "ops": [names[o] for o in s.ops] if names else list(s.ops),
                    }
                )
                continue
            d = {
                "node": problem.cluster.names[s.node] if problem else s.node,
                "first_block": s.first_block,
                "last_block": s.last_block,
            }
            out.append(d)
        return out

    @classmethod
    def from_dict(cls, stages: Sequence[dict], problem) -> Plan:
        """Inverse of :meth:`to_dict`; nodes (and operators) may be names or indices
        (whole numbers, not ``0.5``)."""

        def whole(k: int, key: str, v, names: str) -> None:
            if isinstance(v, str) and names:
                return
            if not isinstance(v, numbers.Integral) or isinstance(v, bool):
                raise InvalidPlan(
                    f"stage {k}: {key} must be a whole number"
                    + (f" or {names}" if names else "")
                    + f", got {v!r}"
                )

        out: list = []
        for k, d in enumerate(stages):
            if isinstance(d, dict) and "ops" in d:
                dag = getattr(problem, "dag", None)
                if dag is None:
                    raise InvalidPlan(f"stage {k} lists 'ops', but the problem is a chain")
                if "node" not in d or not isinstance(d["ops"], list):
                    raise InvalidPlan(
                        f"stage {k} needs 'node' and 'ops' (operator names or indices)"
                    )
                whole(k, "node", d["node"], "a node name")
                for o in d["ops"]:
                    whole(k, "ops", o, "an operator name")
                by_name = {n: i for i, n in enumerate(dag.op_names)}
                try:
                    ops = [by_name[o] if isinstance(o, str) else int(o) for o in d["ops"]]
                except KeyError as exc:
                    raise InvalidPlan(f"stage {k}: no operator named {exc.args[0]!r}") from None
                node = d["node"]
                idx = problem.cluster.index(node) if isinstance(node, str) else int(node)
                out.append(OpStage(tuple(ops), idx))
                continue
            if not isinstance(d, dict) or not {"node", "first_block", "last_block"} <= set(d):
                raise InvalidPlan(f"stage {k} needs 'node', 'first_block' and 'last_block'")
            for key in ("first_block", "last_block", "node"):
                whole(k, key, d[key], "a node name" if key == "node" else "")
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
    ops: tuple[int, ...] = ()  # operators of a DAG stage (empty for chain stages)
    load_s: float | None = None  # the stage's load under the objective (DAG problems)


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


def _check_distinct_nodes(problem, stages) -> None:
    """Raise :class:`InvalidPlan` naming the first node that hosts two stages."""
    seen: dict[int, int] = {}
    for k, s in enumerate(stages):
        if s.node in seen:
            raise InvalidPlan(
                f"node {problem.cluster.names[s.node]!r} hosts stages {seen[s.node]} and {k}; "
                "stages need distinct nodes"
            )
        seen[s.node] = k


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
                f"by block {stages[k + 1].first_block}; stages must cover the chain contiguously"
            )
        if not 0 <= s.node < n:
            raise InvalidPlan(f"stage {k} uses node {s.node}, but the cluster has {n} nodes")
    if stages[-1].last_block != b - 1:
        raise InvalidPlan(
            f"plan covers blocks 0..{stages[-1].last_block} but the chain has {b} blocks"
        )
    _check_distinct_nodes(problem, stages)


def evaluate(problem, plan: Plan) -> Evaluation:
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
    if hasattr(problem, "dag"):
        return _evaluate_dag(problem, plan)
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


def _check_dag(problem, plan: Plan) -> None:
    dag, n = problem.dag, problem.num_nodes
    stages = plan.stages
    if not stages:
        raise InvalidPlan("plan has no stages")
    seen_op: dict[int, int] = {}
    for k, s in enumerate(stages):
        if not isinstance(s, OpStage):
            raise InvalidPlan(f"stage {k} is a block range; a DAG problem needs operator sets")
        if not s.ops:
            raise InvalidPlan(f"stage {k} has no operators")
        for o in s.ops:
            if not 0 <= o < dag.num_ops:
                raise InvalidPlan(f"stage {k} lists operator {o}, but the DAG has {dag.num_ops}")
            if o in seen_op:
                raise InvalidPlan(f"operator {dag.op_names[o]!r} is in stages {seen_op[o]} and {k}")
            seen_op[o] = k
        if not 0 <= s.node < n:
            raise InvalidPlan(f"stage {k} uses node {s.node}, but the cluster has {n} nodes")
    if len(seen_op) != dag.num_ops:
        missing = next(o for o in range(dag.num_ops) if o not in seen_op)
        raise InvalidPlan(f"operator {dag.op_names[missing]!r} is in no stage")
    for o, k in seen_op.items():
        for p in dag.preds[o]:
            if seen_op[p] > k:
                raise InvalidPlan(
                    f"operator {dag.op_names[o]!r} (stage {k}) reads {dag.op_names[p]!r} from "
                    f"the later stage {seen_op[p]}: stages must follow the graph"
                )
    for cls_ in dag.colocate:
        where = {seen_op[o] for o in cls_}
        if len(where) > 1:
            raise InvalidPlan(
                f"colocated operators {[dag.op_names[o] for o in cls_]} are split over "
                f"stages {sorted(where)}"
            )
    _check_distinct_nodes(problem, stages)


def stage_compute_s(problem, ops, node: int) -> float:
    """Seconds to compute operators ``ops`` on ``node`` (0 when the objective ignores compute)."""
    dag = problem.dag
    if not problem.uses_compute:
        return 0.0
    if dag.compute_s is not None:
        return float(dag.compute_s[list(ops)].sum())
    return float(dag.flops[list(ops)].sum()) / float(problem.cluster.flops_per_s[node])


def star_traffic_s(problem, stage_of: np.ndarray, k: int) -> float:
    """The star model's communication of stage ``k``: tensors it sends to or reads from others."""
    dag = problem.dag
    cost = problem.tensor_star_cost_s
    total = 0.0
    for t in range(dag.num_tensors):
        p = int(dag.tensor_producer[t])
        readers = {int(stage_of[c]) for c in dag.tensor_consumers[t]}
        src = -1 if p < 0 else int(stage_of[p])
        if src == k and readers - {k}:
            total += float(cost[t])
        elif src != k and k in readers:
            total += float(cost[t])
    return total


def _evaluate_dag(problem, plan: Plan) -> Evaluation:
    """:func:`evaluate` for DAG problems (operator-set stages)."""
    from partopt.dag import crossing_bytes

    _check_dag(problem, plan)
    dag, cl = problem.dag, problem.cluster
    stages = plan.stages
    mem_sum, mem_max = dag.memory_terms(problem.memory)
    stage_of = np.empty(dag.num_ops, dtype=np.int64)
    for k, s in enumerate(stages):
        stage_of[list(s.ops)] = k
    prefixes = stage_of[None, :] <= np.arange(len(stages))[:, None]
    out_bytes = crossing_bytes(dag, prefixes)
    lat = cl.latency_s
    reports = []
    worst = comm = comp = 0.0
    incoming = 0.0
    for k, s in enumerate(stages):
        ops = list(s.ops)
        mem = float(mem_sum[ops].sum() + mem_max[ops].max())
        cap = float(cl.memory_bytes[s.node])
        if mem > cap * (1 + MEMORY_TOLERANCE):
            raise InvalidPlan(
                f"stage {k} ({len(ops)} operators) needs {mem:.0f} bytes but node "
                f"{cl.names[s.node]!r} has {cap:.0f}"
            )
        t_comp = stage_compute_s(problem, ops, s.node)
        t_send, sent = 0.0, 0.0
        if k + 1 < len(stages):
            nxt = stages[k + 1].node
            sent = float(out_bytes[k])
            if problem.objective != "star":
                if cl.bandwidth_mbps[s.node, nxt] <= 0:
                    raise InvalidPlan(
                        f"no link from {cl.names[s.node]!r} to {cl.names[nxt]!r} between "
                        f"stages {k} and {k + 1}"
                    )
                t_send = costs.transfer_time_s(
                    sent,
                    float(cl.bandwidth_mbps[s.node, nxt]),
                    0.0 if lat is None else float(lat[s.node, nxt]),
                )
        star = star_traffic_s(problem, stage_of, k) if problem.objective == "star" else 0.0
        load = costs.stage_load_s(
            problem.objective,
            compute_s=t_comp,
            incoming_s=incoming,
            outgoing_s=t_send,
            star_s=star,
        )
        incoming = t_send
        worst = max(worst, load)
        comm, comp = max(comm, t_send if problem.objective != "star" else star), max(comp, t_comp)
        reports.append(
            StageReport(s.node, -1, -1, mem, cap, t_comp, t_send, sent, tuple(s.ops), load)
        )
    return Evaluation(worst, comm, comp, tuple(reports))
