r"""The DAG problem: operators, tensors, boundary states (ideals) and stages.

A pipeline stage is a convex set of operators, and the stages of a pipeline
are the differences of a nested sequence of *ideals* (downward-closed
operator sets) ``{} = I_0 < I_1 < ... < I_k = all``. This module holds

* :class:`Dag`: operators (parameter bytes, memory terms, FLOPs or given
  compute times), tensors (bytes, producer, consumers, optional star cost)
  and colocation classes (operators that must share a device);
* :class:`StateSpace`: the ideals of a :class:`Dag` (its *boundary states*),
  generated lazily in order of size up to a stated cap, and the stages
  ``(s, t)`` between them (``s`` a proper subset of ``t``) that fit the
  largest node's memory;
* :class:`DagProblem`: a :class:`Dag` on a :class:`~partopt.cluster.Cluster`
  under a memory model and an objective (:mod:`partopt.costs`).

Engine interface
----------------
A solver sees a :class:`StateSpace` through arrays, states numbered so that
a subset comes before its supersets (state 0 is ``{}``, the last state is
all operators):

* ``members[s]``: boolean row over operators, ``out_bytes[s]``: bytes
  crossing boundary ``s`` (produced in ``s`` or a graph input, read outside);
* ``pair_start``, ``pair_end``, ``pair_memory``, ``pair_flops``,
  ``pair_compute_s``, ``pair_star_s``: one entry per stage ``(s, t)``;
  ``pairs_from[s]`` the stage indices starting at ``s``;
* ``complete``: ``False`` when a cap stopped the generation. Then the states
  are only part of the lattice (ideals of few units, the prefixes of one
  topological order and the full set), every plan found is valid but a
  solver may not call it optimal.

A chain is the special case whose states form a line (:meth:`Dag.from_chain`).

Reductions
----------
Only one reduction is applied, and it keeps every optimum: each colocation
class is replaced by its *convex hull* (the operators on some path between
two of its members), merged with overlapping hulls until none overlap, and
the hull becomes one *unit* that ideals contain wholly or not at all. In
every valid plan a colocation class lies in one stage and a stage is convex,
so the hull lies in that stage, and no ideal of the plan splits it: the
plans over units are exactly the valid plans. Costs are always computed on
the original operators. Without colocation, units are single operators.

References
----------
Tarnawski, J., Phanishayee, A., Devanur, N., Mahajan, D. and Nina Paravecino,
F. (2020). Efficient algorithms for device placement of DNN graph operators.
NeurIPS 33. (Ideals as pipeline boundaries; the star cost model.)

Examples
--------
>>> d = Dag.from_edges(4, [(0, 1), (0, 2), (1, 3), (2, 3)], tensor_bytes=[1, 2, 3, 4])
>>> s = d.state_space()
>>> s.num_states, s.complete  # {}, {0}, {0,1}, {0,2}, {0,1,2}, all
(6, True)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from partopt.chain import MEMORY_MODELS, Chain
from partopt.cluster import Cluster
from partopt.costs import OBJECTIVES
from partopt.errors import PartoptError

__all__ = [
    "MAX_STATES",
    "MAX_PAIRS",
    "Dag",
    "DagError",
    "DagProblem",
    "StateSpace",
    "build_dag",
    "crossing_bytes",
]

MAX_STATES = 20_000
"""Ideals generated before the generation stops (results are then at best ``feasible``)."""

MAX_PAIRS = 12_000_000
"""Stages (pairs of states) generated before the generation stops (same consequence)."""


class DagError(PartoptError):
    """A DAG description that cannot be used; the message says why."""


def _farr(values, length: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.shape != (length,):
        raise DagError(f"{what}: expected {length} values, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise DagError(f"{what}: values must be finite and non-negative")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Dag:
    """Operators joined by tensors.

    Parameters
    ----------
    name
        Model name.
    op_names
        One name per operator (node ids of a workload, ONNX node names...).
    param_bytes, activation_peak_bytes, paper_memory_bytes
        Per operator: parameter bytes; peak live activation bytes while it
        runs (whole-graph liveness in one topological order, as
        :mod:`partopt.chain`); the original work's memory figure. The memory
        of a stage is ``sum(mem_sum) + max(mem_max)`` over its operators, as
        for blocks of a chain.
    flops
        FLOPs per operator.
    tensor_bytes
        Bytes per tensor.
    tensor_producer
        Producing operator per tensor, ``-1`` for a graph input.
    tensor_consumers
        Reading operators per tensor.
    compute_s
        Optional given compute time per operator in seconds (identical
        devices); when set it replaces ``flops / flops_per_s``.
    tensor_cost_s
        Optional given cost per tensor in seconds for the ``star`` model;
        without it a tensor costs its bytes over the cluster's (uniform) link.
    colocate
        Classes of operators that must run on one device.
    order
        A topological order of the operators (computed when empty); its
        prefixes are the states of the multi-tensor chain.
    tensor_is_output
        Optional flag per tensor: a graph output, which the last stage
        returns, so it crosses every boundary after its producer.
    """

    name: str
    op_names: tuple[str, ...]
    param_bytes: Any  # array-like in, read-only ndarray after construction
    activation_peak_bytes: Any  # array-like in, read-only ndarray after construction
    paper_memory_bytes: Any  # array-like in, read-only ndarray after construction
    flops: Any  # array-like in, read-only ndarray after construction
    tensor_bytes: Any  # array-like in, read-only ndarray after construction
    tensor_producer: Any  # array-like in, read-only ndarray after construction
    tensor_consumers: Any  # sequences of operator indices, tuples after construction
    compute_s: Any = None
    tensor_cost_s: Any = None
    colocate: tuple[tuple[int, ...], ...] = ()
    order: tuple[int, ...] = ()
    tensor_is_output: Any = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.op_names)
        if n < 1:
            raise DagError("a DAG needs at least one operator")
        object.__setattr__(self, "op_names", tuple(str(x) for x in self.op_names))
        for name in ("param_bytes", "activation_peak_bytes", "paper_memory_bytes", "flops"):
            object.__setattr__(self, name, _farr(getattr(self, name), n, name))
        t = len(np.asarray(self.tensor_bytes).reshape(-1))
        object.__setattr__(self, "tensor_bytes", _farr(self.tensor_bytes, t, "tensor_bytes"))
        prod = np.asarray(self.tensor_producer, dtype=np.int64).reshape(-1)
        if prod.shape != (t,) or np.any(prod < -1) or np.any(prod >= n):
            raise DagError("tensor_producer: one operator index (or -1) per tensor")
        prod.setflags(write=False)
        object.__setattr__(self, "tensor_producer", prod)
        cons = tuple(tuple(int(c) for c in cs) for cs in self.tensor_consumers)
        if len(cons) != t or any(not 0 <= c < n for cs in cons for c in cs):
            raise DagError("tensor_consumers: a list of operator indices per tensor")
        object.__setattr__(self, "tensor_consumers", cons)
        if self.compute_s is not None:
            object.__setattr__(self, "compute_s", _farr(self.compute_s, n, "compute_s"))
        if self.tensor_cost_s is not None:
            object.__setattr__(self, "tensor_cost_s", _farr(self.tensor_cost_s, t, "tensor_cost_s"))
        outs = np.zeros(t, dtype=bool)
        if self.tensor_is_output is not None:
            outs = np.asarray(self.tensor_is_output, dtype=bool).reshape(-1)
            if outs.shape != (t,):
                raise DagError("tensor_is_output: one flag per tensor")
        outs.setflags(write=False)
        object.__setattr__(self, "tensor_is_output", outs)
        classes = tuple(tuple(sorted({int(o) for o in c})) for c in self.colocate)
        if any(not 0 <= o < n for c in classes for o in c):
            raise DagError("colocate: operator indices out of range")
        object.__setattr__(self, "colocate", classes)
        order = tuple(int(v) for v in self.order) or self._topological_order()
        if sorted(order) != list(range(n)):
            raise DagError("order must list every operator once")
        pos = np.empty(n, dtype=np.int64)
        pos[list(order)] = np.arange(n)
        for p, cs in zip(prod, cons, strict=True):
            if p >= 0 and any(pos[c] <= pos[p] for c in cs):
                raise DagError(
                    f"operator {self.op_names[p]!r} reads its own output through a cycle, or "
                    "order is not topological"
                )
        object.__setattr__(self, "order", order)

    # -- construction -----------------------------------------------------

    @classmethod
    def from_edges(
        cls,
        num_ops: int,
        edges: Sequence[tuple[int, int]],
        *,
        tensor_bytes: Sequence[float] | None = None,
        param_bytes: Sequence[float] | None = None,
        flops: Sequence[float] | None = None,
        name: str = "dag",
    ) -> Dag:
        """One tensor per edge ``(u, v)`` (``tensor_bytes`` per edge, default 1).

        Use one tensor per *producer* with several consumers to send it once;
        this helper is for small hand-made examples.
        """
        e = len(edges)
        z = np.zeros(num_ops)
        return cls(
            name=name,
            op_names=tuple(str(i) for i in range(num_ops)),
            param_bytes=z if param_bytes is None else param_bytes,
            activation_peak_bytes=z,
            paper_memory_bytes=z,
            flops=z if flops is None else flops,
            tensor_bytes=np.ones(e) if tensor_bytes is None else tensor_bytes,
            tensor_producer=[u for u, _ in edges],
            tensor_consumers=[(v,) for _, v in edges],
        )

    @classmethod
    def from_chain(cls, chain: Chain) -> Dag:
        """The chain as a line DAG: block ``b`` is operator ``b``, cut ``c`` one tensor.

        Its states are the ``B + 1`` prefixes, so every chain problem is a
        DAG problem with the same plans and costs (``transfer="bytes"``).
        """
        b = chain.num_blocks
        return cls(
            name=chain.name,
            op_names=tuple(f"block{i}" for i in range(b)),
            param_bytes=chain.param_bytes,
            activation_peak_bytes=chain.activation_peak_bytes,
            paper_memory_bytes=chain.paper_memory_bytes,
            flops=chain.flops,
            tensor_bytes=chain.transfer_bytes,
            tensor_producer=np.arange(b - 1),
            tensor_consumers=tuple((c + 1,) for c in range(b - 1)),
            order=tuple(range(b)),
            meta={"from_chain": True},
        )

    # -- structure ----------------------------------------------------------

    @property
    def num_ops(self) -> int:
        return len(self.op_names)

    @property
    def num_tensors(self) -> int:
        return int(self.tensor_bytes.shape[0])

    @cached_property
    def preds(self) -> tuple[frozenset[int], ...]:
        """Operators whose output each operator reads."""
        out: list[set[int]] = [set() for _ in range(self.num_ops)]
        for p, cs in zip(self.tensor_producer, self.tensor_consumers, strict=True):
            if p >= 0:
                for c in cs:
                    if c != p:
                        out[c].add(int(p))
        return tuple(frozenset(s) for s in out)

    def _topological_order(self) -> tuple[int, ...]:
        n = self.num_ops
        preds: list[set[int]] = [set() for _ in range(n)]
        succs: list[set[int]] = [set() for _ in range(n)]
        for p, cs in zip(self.tensor_producer, self.tensor_consumers, strict=True):
            for c in cs:
                if p >= 0 and c != p:
                    preds[c].add(int(p))
                    succs[int(p)].add(c)
                elif p == c:
                    raise DagError(f"operator {self.op_names[c]!r} reads its own output")
        indeg = [len(s) for s in preds]
        ready = [v for v in range(n) if indeg[v] == 0]
        order: list[int] = []
        while ready:
            v = ready.pop()
            order.append(v)
            for w in sorted(succs[v]):
                indeg[w] -= 1
                if indeg[w] == 0:
                    ready.append(w)
        if len(order) != n:
            raise DagError(f"DAG {self.name!r} has a cycle; operators must form a DAG")
        return tuple(order)

    def memory_terms(self, model: str = "peak") -> tuple[np.ndarray, np.ndarray]:
        """``(mem_sum, mem_max)`` per operator, as :meth:`partopt.chain.Chain.memory_terms`."""
        z = np.zeros(self.num_ops)
        if model == "weights":
            return self.param_bytes, z
        if model == "peak":
            return self.param_bytes, self.activation_peak_bytes
        if model == "paper":
            return self.paper_memory_bytes, z
        raise DagError(f"unknown memory model {model!r}; choose one of {MEMORY_MODELS}")

    @cached_property
    def units(self) -> tuple[tuple[int, ...], ...]:
        """The operators ideals take or leave together (see Reductions), in topological order."""
        n = self.num_ops
        if not self.colocate:
            return tuple((v,) for v in self.order)
        succs: list[list[int]] = [[] for _ in range(n)]
        for v, ps in enumerate(self.preds):
            for p in ps:
                succs[p].append(v)

        def reach(starts, nbrs) -> set[int]:
            seen, stack = set(starts), list(starts)
            while stack:
                for w in nbrs[stack.pop()]:
                    if w not in seen:
                        seen.add(w)
                        stack.append(w)
            return seen

        preds_l = [list(p) for p in self.preds]
        groups = [set(c) for c in self.colocate if len(c) > 1]
        changed = True
        while changed:
            changed = False
            hulls = [reach(g, succs) & reach(g, preds_l) for g in groups]
            merged: list[set[int]] = []
            for h in hulls:
                for m in merged:
                    if m & h:
                        m |= h
                        changed = True
                        break
                else:
                    merged.append(set(h))
            changed = changed or any(h != g for h, g in zip(hulls, groups, strict=False))
            groups = merged
        owner = {v: i for i, g in enumerate(groups) for v in g}
        pos = {v: k for k, v in enumerate(self.order)}
        out: list[tuple[int, ...]] = []
        done: set[int] = set()
        for v in self.order:
            if v in owner:
                gi = owner[v]
                if gi not in done:
                    done.add(gi)
                    out.append(tuple(sorted(groups[gi], key=pos.__getitem__)))
            else:
                out.append((v,))
        # a unit's place: after all its predecessors' units (hulls are convex)
        unit_of = {v: i for i, u in enumerate(out) for v in u}
        upreds = [{unit_of[p] for v in u for p in self.preds[v]} - {i} for i, u in enumerate(out)]
        order: list[int] = []
        placed: set[int] = set()
        pending = list(range(len(out)))
        while pending:
            nxt = [i for i in pending if upreds[i] <= placed]
            if not nxt:
                raise DagError("colocation classes make the DAG cyclic")
            for i in nxt:
                placed.add(i)
                order.append(i)
            pending = [i for i in pending if i not in placed]
        return tuple(out[i] for i in order)

    def state_space(
        self,
        memory: str = "peak",
        max_capacity_bytes: float = np.inf,
        max_states: int = MAX_STATES,
        max_pairs: int = MAX_PAIRS,
    ) -> StateSpace:
        """The ideals of this DAG and the stages between them (see :class:`StateSpace`)."""
        return StateSpace(self, memory, float(max_capacity_bytes), max_states, max_pairs)

    def count_ideals(self, limit: int = MAX_STATES) -> int | None:
        """Number of ideals (over units), or ``None`` if there are more than ``limit``."""
        masks, complete = _ideals(self, limit)
        return len(masks) if complete else None


def crossing_bytes(dag: Dag, members: np.ndarray) -> np.ndarray:
    """Bytes crossing each boundary: rows of ``members`` are ideals (boolean over operators).

    A tensor crosses when it is produced inside (graph inputs count as
    produced before everything) and read outside, or is a graph output and
    the ideal is not everything; each crossing tensor counts once.
    """
    rows = np.atleast_2d(members)
    out = np.zeros(rows.shape[0])
    not_full = ~rows.all(axis=1)
    for t in range(dag.num_tensors):
        cons = list(dag.tensor_consumers[t])
        if not cons and not dag.tensor_is_output[t]:
            continue
        p = int(dag.tensor_producer[t])
        inside = np.ones(rows.shape[0], dtype=bool) if p < 0 else rows[:, p]
        read_out = ~rows[:, cons].all(axis=1) if cons else np.zeros(rows.shape[0], dtype=bool)
        if dag.tensor_is_output[t]:
            read_out |= not_full
        out += np.where(inside & read_out, dag.tensor_bytes[t], 0.0)
    return out


def _unit_masks(dag: Dag) -> tuple[list[int], list[int]]:
    """Per unit: its own bit, and the bits of the units it reads from."""
    units = dag.units
    unit_of = {v: i for i, u in enumerate(units) for v in u}
    bit = [1 << i for i in range(len(units))]
    pred = []
    for i, u in enumerate(units):
        m = 0
        for v in u:
            for p in dag.preds[v]:
                if unit_of[p] != i:
                    m |= bit[unit_of[p]]
        pred.append(m)
    return bit, pred


def _ideals(dag: Dag, limit: int) -> tuple[list[int], bool]:
    """Ideals as unit bitmasks in order of size (breadth first); ``complete`` unless capped."""
    bit, pred = _unit_masks(dag)
    nu = len(bit)
    succ: list[list[int]] = [[] for _ in range(nu)]
    for i in range(nu):
        m = pred[i]
        j = 0
        while m:
            if m & 1:
                succ[j].append(i)
            m >>= 1
            j += 1
    start = frozenset(i for i in range(nu) if pred[i] == 0)
    out = [0]
    level: dict[int, frozenset[int]] = {0: start}
    while level:
        nxt: dict[int, frozenset[int]] = {}
        for mask, avail in level.items():
            for u in avail:
                new = mask | bit[u]
                if new in nxt:
                    continue
                add = [w for w in succ[u] if (pred[w] & ~new) == 0]
                nxt[new] = (avail - {u}) | frozenset(add)
                if len(out) + len(nxt) > limit:
                    out.extend(nxt)
                    return out, False
        out.extend(nxt)
        level = nxt
    return out, True


class StateSpace:
    """Boundary states (ideals) of a :class:`Dag` and the stages between them.

    See the module docstring for the arrays. States are ideals over units,
    numbered by size; a stage ``(s, t)`` is kept when ``t`` is a proper
    superset of ``s`` and the operators ``t - s`` fit ``max_capacity_bytes``
    (memory is monotone in the operator set, so the generation walks up from
    ``s`` one unit at a time and stops where memory is exceeded).
    """

    def __init__(
        self,
        dag: Dag,
        memory: str = "peak",
        max_capacity_bytes: float = np.inf,
        max_states: int = MAX_STATES,
        max_pairs: int = MAX_PAIRS,
    ) -> None:
        self.dag = dag
        self.memory = memory
        self.max_states = max_states
        self.max_pairs = max_pairs
        masks, complete = _ideals(dag, max_states)
        units = dag.units
        nu = len(units)
        full = (1 << nu) - 1
        if not complete:
            # keep the prefixes of the topological unit order, so a plan exists
            prefix = 0
            have = set(masks)
            for i in range(nu):
                prefix |= 1 << i
                if prefix not in have:
                    masks.append(prefix)
                    have.add(prefix)
        masks = sorted(set(masks), key=lambda m: (m.bit_count(), m))
        if masks[-1] != full:
            masks.append(full)
        self.complete = complete
        self.states_complete = complete
        self.masks = masks
        self.index = {m: k for k, m in enumerate(masks)}
        s, n = len(masks), dag.num_ops
        # unit bits of every state at once (little-endian bytes), then each operator's unit
        width = max(1, (len(units) + 7) // 8)
        raw = np.frombuffer(b"".join(m.to_bytes(width, "little") for m in masks), np.uint8)
        unit_bits = np.unpackbits(raw.reshape(s, width), axis=1, bitorder="little")
        unit_of = np.empty(n, dtype=np.int64)
        for i, u in enumerate(units):
            unit_of[list(u)] = i
        members = unit_bits[:, unit_of].astype(bool)
        members.setflags(write=False)
        self.members = members
        self.num_states = s
        self.out_bytes = self._crossing_bytes(members)
        self._pairs(max_capacity_bytes)

    def _crossing_bytes(self, members: np.ndarray) -> np.ndarray:
        return crossing_bytes(self.dag, members)

    def _pairs(self, max_capacity_bytes: float) -> None:
        dag = self.dag
        units = dag.units
        mem_sum, mem_max = dag.memory_terms(self.memory)
        u_sum = np.array([float(mem_sum[list(u)].sum()) for u in units])
        u_max = np.array([float(mem_max[list(u)].max()) for u in units])
        u_flops = np.array([float(dag.flops[list(u)].sum()) for u in units])
        u_time = (
            None
            if dag.compute_s is None
            else np.array([float(dag.compute_s[list(u)].sum()) for u in units])
        )
        cap = max_capacity_bytes * (1 + 1e-9)
        self.additive = not np.any(mem_max) and bool(np.all(mem_sum >= 0))
        self._cap = cap
        if self.additive:
            self._additive_pairs(cap, mem_sum, u_time)
            return
        masks, index = self.masks, self.index
        nu = len(units)
        # one-unit steps between present states
        step: list[list[tuple[int, int]]] = []
        for m in masks:
            row = []
            for i in range(nu):
                b = 1 << i
                if not m & b and (m | b) in index:
                    row.append((i, index[m | b]))
            step.append(row)
        chunks: list[np.ndarray] = []  # per start state: (end, memory, flops, time) rows
        total = 0
        complete = True
        for s in range(self.num_states):
            seen = {s: (0.0, 0.0, 0.0, 0.0)}
            stack = [s]
            while stack:
                a = stack.pop()
                sm, mx, fl, tm = seen[a]
                for i, t in step[a]:
                    if t in seen:
                        continue
                    nsm, nmx = sm + u_sum[i], max(mx, u_max[i])
                    if nsm + nmx > cap:
                        continue
                    seen[t] = (
                        nsm,
                        nmx,
                        fl + u_flops[i],
                        tm + (0.0 if u_time is None else u_time[i]),
                    )
                    stack.append(t)
            del seen[s]
            if seen:
                rows = np.array(
                    [(t, sm + mx, fl, tm) for t, (sm, mx, fl, tm) in sorted(seen.items())]
                )
                chunks.append(np.column_stack([np.full(len(rows), s), rows]))
                total += len(rows)
            if total > self.max_pairs:
                complete = False
                break
        self.complete = self.complete and complete
        table = np.concatenate(chunks) if chunks else np.zeros((0, 5))
        self.pair_start = table[:, 0].astype(np.int64)
        self.pair_end = table[:, 1].astype(np.int64)
        self.pair_memory = table[:, 2].copy()
        self.pair_flops = table[:, 3].copy()
        self.pair_compute_s = None if u_time is None else table[:, 4].copy()
        self._index_pairs()

    def _index_pairs(self) -> None:
        self.num_pairs = int(self.pair_start.size)
        bounds = np.searchsorted(self.pair_start, np.arange(self.num_states + 1))
        self.pairs_from = [np.arange(bounds[k], bounds[k + 1]) for k in range(self.num_states)]

    def _additive_pairs(
        self,
        cap: float,
        mem_sum: np.ndarray,
        u_time: np.ndarray | None,
        weight: np.ndarray | None = None,
        limit: float = np.inf,
        floor: float = 0.0,
        usable: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Stages when memory is a plain sum over operators (no peak term), vectorised.

        Then a stage's memory, FLOPs and time are differences of per-state
        totals, and the stages from ``s`` are the states ``t`` numbered after
        ``s`` (a proper superset has more units) whose unit bits contain
        ``s``'s and whose memory exceeds ``s``'s by at most the capacity:
        one vectorised subset test per start state over the packed unit bits.
        The same stages as the one-unit walk, since every ideal between ``s``
        and ``t`` fits when ``t - s`` does. With a non-negative per-operator
        ``weight``, only the stages whose weight lies in ``[floor, limit]``
        are kept (a window of the states sorted by weight; a hair wider), and
        with ``usable = (starts, ends)`` (boolean over states) only stages
        from a usable start to a usable end.
        """
        dag, ns = self.dag, self.num_states
        nw = max(1, (len(dag.units) + 63) // 64)
        words = np.zeros((ns, nw), dtype=np.uint64)
        low = (1 << 64) - 1
        for k, m in enumerate(self.masks):
            for w in range(nw):
                words[k, w] = (m >> (64 * w)) & low
        mem = self.members.astype(float)
        s_mem = mem @ np.asarray(mem_sum, dtype=float)
        s_flops = mem @ np.asarray(dag.flops, dtype=float)
        s_time = None if u_time is None else mem @ np.asarray(dag.compute_s, dtype=float)
        windowed = weight is not None and math.isfinite(limit)
        if windowed:
            s_w = mem @ np.asarray(weight, dtype=float)
            by_w = np.argsort(s_w, kind="stable")
            w_sorted = s_w[by_w]
            slack = 1e-9 * float(np.abs(s_w).max(initial=0.0)) + 1e-300
        starts: list[np.ndarray] = []
        ends: list[np.ndarray] = []
        total = 0
        complete = True
        for s in range(ns - 1):
            if usable is not None and not usable[0][s]:
                continue
            if windowed:
                lo = np.searchsorted(w_sorted, s_w[s] + floor - slack, side="left")
                hi = np.searchsorted(w_sorted, s_w[s] + limit + slack, side="right")
                t = by_w[lo:hi]
                t = np.sort(t[t > s])
                dw = s_w[t] - s_w[s]
                t = t[(dw <= limit) & (dw >= floor - slack)]
                t = t[s_mem[t] - s_mem[s] <= cap]
                if usable is not None:
                    t = t[usable[1][t]]
            else:
                t = np.flatnonzero(s_mem[s + 1 :] - s_mem[s] <= cap) + (s + 1)
            for w in range(nw):
                if t.size == 0:
                    break
                ws = words[s, w]
                if ws:
                    t = t[(words[t, w] & ws) == ws]
            if t.size:
                starts.append(np.full(t.size, s, dtype=np.int64))
                ends.append(t)
                total += t.size
            if total > self.max_pairs:
                complete = False
                break
        self.complete = self.complete and complete
        self.pair_start = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
        self.pair_end = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
        a, b = self.pair_start, self.pair_end
        self.pair_memory = s_mem[b] - s_mem[a]
        self.pair_flops = s_flops[b] - s_flops[a]
        self.pair_compute_s = None if s_time is None else s_time[b] - s_time[a]
        self._index_pairs()

    def light_stages(
        self,
        weight: np.ndarray,
        limit: float,
        floor: float = 0.0,
        usable: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> StateSpace:
        """The same states with only the stages whose summed ``weight`` is in ``[floor, limit]``.

        ``weight`` is non-negative per operator (FLOPs or compute time); only
        for spaces whose memory is a plain sum (:attr:`additive`). The stages
        are generated afresh, so the cap on stages counts the kept ones; the
        result is :attr:`complete` when the states are and the kept stages
        fit the cap.
        """
        if not self.additive:
            raise DagError("light_stages needs a memory model without a peak term")
        if np.any(np.asarray(weight) < 0):
            raise DagError("light_stages needs non-negative operator weights")
        out = copy.copy(self)
        for derived in ("is_line", "size_groups"):  # they depend on the stages
            out.__dict__.pop(derived, None)
        out.complete = self.states_complete
        dag = self.dag
        u_time = None if dag.compute_s is None else np.zeros(len(dag.units))
        mem_sum, _ = dag.memory_terms(self.memory)
        out._additive_pairs(self._cap, mem_sum, u_time, weight, limit, floor, usable)
        return out

    def stage_ops(self, s: int, t: int) -> tuple[int, ...]:
        """Operators of the stage between states ``s`` and ``t``, in topological order."""
        d = self.members[t] & ~self.members[s]
        return tuple(v for v in self.dag.order if d[v])

    @cached_property
    def is_line(self) -> bool:
        """Whether the states form a line (a chain problem)."""
        return self.num_states == len(self.dag.units) + 1

    @cached_property
    def prefixes(self) -> np.ndarray:
        """Boolean over the states: the prefixes of the topological unit order (a chain in the space).

        The empty and the full state are always among them; other prefixes
        only where the state enumeration kept them.
        """
        out = np.zeros(self.num_states, dtype=bool)
        out[[0, self.num_states - 1]] = True
        mask = 0
        for i in range(len(self.dag.units)):
            mask |= 1 << i
            k = self.index.get(mask)
            if k is not None:
                out[k] = True
        return out

    @cached_property
    def size_groups(self) -> list[tuple[int, int, int, int]]:
        """Groups of states of equal size, largest first: ``(first, stop, pair lo, pair hi)``.

        A stage ends at a proper superset, which has more units, so a group
        depends only on groups processed before it. States are numbered by
        size and stages by start, so both are contiguous ranges; the full
        state, which starts no stage, is left out.
        """
        full = self.num_states - 1
        sizes = np.array([m.bit_count() for m in self.masks], dtype=np.int64)
        bounds = np.searchsorted(self.pair_start, np.arange(self.num_states + 1))
        cuts = np.flatnonzero(np.diff(sizes)) + 1
        edges = np.concatenate([[0], cuts, [self.num_states]])
        out = []
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            b = min(int(b), full)
            if a < b:
                out.append((int(a), b, int(bounds[a]), int(bounds[b])))
        return out[::-1]


# -- problem -------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DagProblem:
    """Min-bottleneck pipeline partitioning of ``dag`` over ``cluster``.

    Parameters
    ----------
    dag, cluster
        The operator DAG and the cluster.
    memory
        Memory model: ``weights``, ``peak`` (default) or ``paper``.
    objective
        Stage-load model of :mod:`partopt.costs`: ``communication``
        (default), ``max``, ``sum`` or ``star``.
    max_states, max_pairs
        Caps of the state generation (see :class:`StateSpace`).

    Examples
    --------
    >>> from partopt.cluster import Cluster
    >>> d = Dag.from_edges(3, [(0, 1), (1, 2)], tensor_bytes=[1e6, 2e6], param_bytes=[1, 1, 1])
    >>> p = DagProblem(d, Cluster.uniform(2, memory_bytes=2, bandwidth_mbps=8.0))
    >>> p.states.num_states, float(p.states.out_bytes[1])
    (4, 1000000.0)
    """

    dag: Dag
    cluster: Cluster
    memory: str = "peak"
    objective: str = "communication"
    max_states: int = MAX_STATES
    max_pairs: int = MAX_PAIRS
    transfer: str = "bytes"

    def __post_init__(self) -> None:
        if self.memory not in MEMORY_MODELS:
            raise DagError(f"unknown memory model {self.memory!r}; choose one of {MEMORY_MODELS}")
        if self.objective not in OBJECTIVES:
            raise DagError(f"unknown objective {self.objective!r}; choose one of {OBJECTIVES}")
        if self.transfer != "bytes":
            raise DagError("DAG problems use exact tensor bytes (transfer model 'bytes')")
        needs_speed = self.objective != "communication" and self.dag.compute_s is None
        if needs_speed and self.cluster.flops_per_s is None:
            raise DagError(
                f"objective {self.objective!r} needs compute times: give flops_per_s for every "
                "cluster node, or compute_s per operator"
            )
        if self.objective == "star" and self.dag.tensor_cost_s is None:
            bw = self.cluster.bandwidth_mbps[~np.eye(self.num_nodes, dtype=bool)]
            if bw.size and (bw.min() <= 0 or bw.max() != bw.min()):
                raise DagError(
                    "the star model sends tensors through host memory over one uniform link: "
                    "give a cluster whose links all have the same bandwidth, or tensor costs"
                )

    @property
    def num_nodes(self) -> int:
        return self.cluster.num_nodes

    @property
    def uses_compute(self) -> bool:
        return self.objective != "communication"

    @cached_property
    def states(self) -> StateSpace:
        return self.dag.state_space(
            self.memory,
            float(self.cluster.memory_bytes.max()),
            self.max_states,
            self.max_pairs,
        )

    @cached_property
    def tensor_star_cost_s(self) -> np.ndarray:
        """Seconds each tensor costs in the star model (given, or bytes over the uniform link)."""
        from partopt.costs import transfer_times_s

        if self.dag.tensor_cost_s is not None:
            return self.dag.tensor_cost_s
        n = self.num_nodes
        if n < 2:
            return np.zeros(self.dag.num_tensors)
        t = transfer_times_s(
            self.dag.tensor_bytes, self.cluster.bandwidth_mbps, self.cluster.latency_s
        )
        return t[:, 0, 1]

    def with_cluster(self, cluster: Cluster) -> DagProblem:
        return DagProblem(
            self.dag, cluster, self.memory, self.objective, self.max_states, self.max_pairs
        )


def build_dag(graph, order: Sequence[int] | None = None) -> Dag:
    """The operator DAG of an ONNX layer graph (:func:`partopt.onnx_graph.load_graph`).

    Operator memory terms are those of the multi-tensor chain (one layer per
    block, whole-graph liveness in its topological order), so a stage of
    consecutive layers of that order has the same memory here and there.
    """
    from partopt.chain import build_chain
    from partopt.onnx_graph import ModelError

    chain = build_chain(graph, "multi")
    names = [b[0] for b in chain.block_nodes]
    op_of = {name: k for k, name in enumerate(names)}
    a = graph.arrays
    pos_name = [graph.nodes[v].name for v in range(len(graph.nodes))]
    tb, tp, tc, tn = [], [], [], []
    outs: list[bool] = []
    for t, tname in enumerate(a.tensor_names):
        cons = sorted({op_of[pos_name[c]] for c in a.consumers[t]})
        if not cons and not a.is_output[t]:
            continue
        size = a.tensor_bytes[t]
        if size is None:
            raise ModelError(
                f"tensor {tname!r} has an unknown shape; DAG cuts need every tensor's size: "
                f"set the graph input shapes, e.g. {graph.shape_hint()}"
            )
        p = a.producer[t]
        outs.append(bool(a.is_output[t]))
        tb.append(float(size))
        tp.append(-1 if p < 0 else op_of[pos_name[p]])
        tc.append(tuple(cons))
        tn.append(tname)
    return Dag(
        name=chain.name,
        op_names=tuple(names),
        param_bytes=chain.param_bytes,
        activation_peak_bytes=chain.activation_peak_bytes,
        paper_memory_bytes=chain.paper_memory_bytes,
        flops=chain.flops,
        tensor_bytes=tb,
        tensor_producer=tp,
        tensor_consumers=tuple(tc),
        order=tuple(range(len(names))),
        tensor_is_output=outs,
        meta={**chain.meta, "cuts": "dag", "tensor_names": tuple(tn)},
    )
