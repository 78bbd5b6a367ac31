"""The chain of blocks that the optimizers see.

A DNN is cut at *cut points* into a sequence of *blocks*; a pipeline stage is
a contiguous run of blocks. :class:`Chain` holds, per block, everything the
memory and transfer models need, so that one chain serves every model:

* memory of a stage covering blocks ``i..j`` is
  ``sum(mem_sum[i..j]) + max(mem_max[i..j])`` where the two arrays depend on
  the memory model (see :meth:`Chain.memory_terms`):

  - ``weights``: parameter bytes only (``mem_max`` is zero);
  - ``peak`` (default): parameter bytes plus the peak bytes of live
    activations while the stage runs in topological order.  Liveness is the
    whole-graph liveness restricted to the stage (a tensor is live from the
    moment it is produced, or the stage starts, until its last consumer in
    the stage has run, or to the end of the stage if a later stage needs
    it), so the peak of a stage is the maximum of the peaks of its blocks;
  - ``paper``: what the original code computed, for reproduction only: for
    every layer, float32 output bytes plus the *number* of parameters.

* the transfer after block ``b`` (the cut between ``b`` and ``b + 1``) in
  bytes, under the ``bytes`` model (exact tensor bytes, each crossing tensor
  sent once) or the ``paper`` model (the original's Mbit, converted to the
  bytes that take the same time: ``Mbit * 10**6 / 8``).
"""

from __future__ import annotations

import os
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import NamedTuple

import numpy as np

from partopt.errors import PartoptError
from partopt.onnx_graph import LayerGraph, ModelError, load_graph

__all__ = [
    "ChainError",
    "CUT_FAMILIES",
    "MEMORY_MODELS",
    "TRANSFER_MODELS",
    "Chain",
    "build_chain",
    "compare_cut_methods",
    "load_chain",
    "multi_tensor_order",
    "single_tensor_cut_points",
    "singleton_level_cut_points",
]

MEMORY_MODELS = ("weights", "peak", "paper")
TRANSFER_MODELS = ("bytes", "paper")


def _array(values, length: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.shape != (length,):
        raise ChainError(f"{what}: expected {length} values, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ChainError(f"{what}: values must be finite and non-negative")
    arr.setflags(write=False)
    return arr


class ChainError(PartoptError):
    """A chain that cannot be built or used: bad arrays, an unknown cut family or model."""


@dataclass(frozen=True, eq=False)
class Chain:
    """A chain of ``B`` blocks separated by ``B - 1`` cuts.

    Parameters
    ----------
    name
        Model name.
    param_bytes
        Parameter bytes per block, shape ``(B,)``.
    activation_peak_bytes
        Peak bytes of live activations while the block runs (whole-graph
        liveness, see module docstring), shape ``(B,)``.
    paper_memory_bytes
        The original code's per-block memory: float32 output bytes of every
        layer plus the number of parameters, shape ``(B,)``.
    flops
        Floating-point operations per block (one inference), shape ``(B,)``.
    transfer_bytes
        Exact bytes crossing the cut after each block, shape ``(B - 1,)``.
    paper_transfer_bytes
        The original's transfer size, as bytes taking the same time,
        shape ``(B - 1,)``.
    cut_names
        A label per cut (the ONNX node whose output crosses, for
        single-tensor cuts), length ``B - 1``.
    block_nodes
        ONNX node names in each block (empty for synthetic chains).
    cut_tensors
        Tensor names crossing each cut (empty for synthetic chains).

    Examples
    --------
    >>> c = Chain.from_arrays([10, 20, 30], [5, 7])
    >>> c.num_blocks, c.stage_memory(0, 2)
    (3, 60.0)
    """

    name: str
    param_bytes: np.ndarray
    activation_peak_bytes: np.ndarray
    paper_memory_bytes: np.ndarray
    flops: np.ndarray
    transfer_bytes: np.ndarray
    paper_transfer_bytes: np.ndarray
    cut_names: tuple[str, ...] = ()
    block_nodes: tuple[tuple[str, ...], ...] = ()
    cut_tensors: tuple[tuple[str, ...], ...] = ()
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        b = len(np.asarray(self.param_bytes).reshape(-1))
        if b < 1:
            raise ChainError("a chain needs at least one block")
        for name in ("param_bytes", "activation_peak_bytes", "paper_memory_bytes", "flops"):
            object.__setattr__(self, name, _array(getattr(self, name), b, name))
        for name in ("transfer_bytes", "paper_transfer_bytes"):
            object.__setattr__(self, name, _array(getattr(self, name), b - 1, name))
        if not self.cut_names:
            object.__setattr__(self, "cut_names", tuple(f"cut{c}" for c in range(b - 1)))
        if len(self.cut_names) != b - 1:
            raise ChainError("cut_names must have one label per cut")

    @classmethod
    def from_arrays(
        cls,
        memory_bytes,
        transfer_bytes,
        flops=None,
        *,
        activation_bytes=None,
        name: str = "synthetic",
    ) -> Chain:
        """A synthetic chain: ``memory_bytes`` are parameter bytes per block.

        All memory models then agree except ``peak``, which adds
        ``activation_bytes`` (default zero); both transfer models agree.
        """
        mem = np.asarray(memory_bytes, dtype=float).reshape(-1)
        act = np.zeros_like(mem) if activation_bytes is None else activation_bytes
        return cls(
            name=name,
            param_bytes=mem,
            activation_peak_bytes=act,
            paper_memory_bytes=mem,
            flops=np.zeros_like(mem) if flops is None else flops,
            transfer_bytes=transfer_bytes,
            paper_transfer_bytes=transfer_bytes,
        )

    @property
    def num_blocks(self) -> int:
        return int(self.param_bytes.shape[0])

    def memory_terms(self, model: str = "peak") -> tuple[np.ndarray, np.ndarray]:
        """``(mem_sum, mem_max)`` per block for a memory model.

        Stage memory of blocks ``i..j`` = ``mem_sum[i:j+1].sum() + mem_max[i:j+1].max()``.
        """
        zeros = np.zeros(self.num_blocks)
        if model == "weights":
            return self.param_bytes, zeros
        if model == "peak":
            return self.param_bytes, self.activation_peak_bytes
        if model == "paper":
            return self.paper_memory_bytes, zeros
        raise ChainError(
            f"unknown memory model {model!r}; choose one of {', '.join(MEMORY_MODELS)}"
        )

    def transfers(self, model: str = "bytes") -> np.ndarray:
        """Bytes crossing each cut under a transfer model, shape ``(B - 1,)``."""
        if model == "bytes":
            return self.transfer_bytes
        if model == "paper":
            return self.paper_transfer_bytes
        raise ChainError(
            f"unknown transfer model {model!r}; choose one of {', '.join(TRANSFER_MODELS)}"
        )

    def stage_memory(self, first: int, last: int, model: str = "peak") -> float:
        """Memory in bytes of a stage running blocks ``first..last`` (inclusive)."""
        s, m = self.memory_terms(model)
        return float(s[first : last + 1].sum() + m[first : last + 1].max())


# -- building a chain from a layer graph --------------------------------------------
#
# Conventions shared by the builders (positions are indices in a topological
# order of the layers; a "boundary b" lies between positions b and b + 1):
#
# * A virtual source feeds every layer that reads a graph input (when the
#   graph has no inputs, every layer without activation inputs); a virtual
#   sink reads every graph output. Graph outputs are held by the last block:
#   an output produced before a boundary crosses it (it must reach the last
#   stage, which returns the results), and nothing is sent after the last block.
# * A tensor crosses boundary b when it is produced at a position <= b (graph
#   inputs: before position 0) and read at a position > b (graph outputs: at
#   the end). It is sent once, however many layers read it.

CUT_FAMILIES = ("single", "multi")

# The original's transfer model: float64 elements, zfp compression ratio 1.44,
# Mbit = 1024**2 bits; converted to the bytes taking the same time at 10**6 bit/Mbit.
_PAPER_COMPRESSION = 1.44
_PAPER_BYTES_PER_ELEMENT = 8


class _SinglePlan(NamedTuple):
    order: list[int]  # topological order, each single cut last in its segment
    cuts: list[int]  # valid single-tensor cut points (node ids), in order
    seg: list[int]  # segment (index of the block) of every node
    candidates: list[int]  # dominators of the virtual sink (before the crossing check)


def _sources_and_sinks(graph: LayerGraph) -> tuple[list[int], list[int], bool]:
    """Layers fed by the virtual source and feeding the virtual sink.

    The third value tells whether a graph input is also a graph output (then
    it crosses every boundary and no single-tensor cut exists).
    """
    a = graph.arrays
    src: set[int] = set()
    passthrough = False
    for t, p in enumerate(a.producer):
        if p < 0:
            src.update(a.consumers[t])
            passthrough = passthrough or a.is_output[t]
    if not src:
        src = {v for v, ins in enumerate(a.node_in) if not ins}
    sink = {a.producer[t] for t, out in enumerate(a.is_output) if out and a.producer[t] >= 0}
    return sorted(src), sorted(sink), passthrough


def _reach(starts: list[int], nbrs: list[list[int]], n: int) -> list[bool]:
    seen = [False] * n
    stack = list(starts)
    for v in stack:
        seen[v] = True
    while stack:
        u = stack.pop()
        for w in nbrs[u]:
            if not seen[w]:
                seen[w] = True
                stack.append(w)
    return seen


def _sink_dominators(graph: LayerGraph) -> list[int]:
    """Layers on every path from the virtual source to the virtual sink.

    These are the dominators of the sink. In a DAG they have a linear-time
    characterisation: take any topological order and keep only *useful*
    layers (reachable from the source and reaching the sink); a useful layer
    ``d`` is on every source-sink path iff no useful edge ``(u, w)`` (virtual
    edges included) jumps over it, ``pos(u) < pos(d) < pos(w)``. (A jumping
    edge gives a path avoiding ``d``; without one, a path, whose positions
    increase, cannot get past ``pos(d)`` without visiting ``d``.) The tests
    check it against ``networkx.immediate_dominators``.
    """
    a = graph.arrays
    n = len(graph.nodes)
    src, sink, passthrough = _sources_and_sinks(graph)
    if passthrough or not src or not sink:
        return []
    fwd = _reach(src, a.succs, n)
    bwd = _reach(sink, a.preds, n)
    useful = [f and b for f, b in zip(fwd, bwd, strict=True)]
    if not any(useful):
        return []
    # diff[p + 1] marks positions p in -1..n (the virtual ends at -1 and n).
    diff = [0] * (n + 3)

    def jump(u: int, w: int) -> None:
        if w - u > 1:
            diff[u + 2] += 1
            diff[w + 1] -= 1

    for v in src:
        if useful[v]:
            jump(-1, v)
    for v in sink:
        if useful[v]:
            jump(v, n)
    for u in range(n):
        if useful[u]:
            for w in a.succs[u]:
                if useful[w]:
                    jump(u, w)
    doms, cover = [], 0
    for v in range(n):
        cover += diff[v + 1]
        if useful[v] and cover == 0:
            doms.append(v)
    return doms


def _births_deaths(graph: LayerGraph, pos: list[int]) -> tuple[list[int], list[int]]:
    """Position of each tensor's producer (-1: graph input) and of its last use.

    The last use of a graph output is ``n`` (the end); a tensor nobody reads
    dies where it is born.
    """
    a = graph.arrays
    n = len(pos)
    births, deaths = [], []
    for t, p in enumerate(a.producer):
        b = pos[p] if p >= 0 else -1
        cs = a.consumers[t]
        d = max(pos[c] for c in cs) if cs else b
        if a.is_output[t]:
            d = n
        births.append(b)
        deaths.append(d)
    return births, deaths


def _positions(order: list[int]) -> list[int]:
    pos = [0] * len(order)
    for i, v in enumerate(order):
        pos[v] = i
    return pos


def _single_plan(graph: LayerGraph) -> _SinglePlan:
    """Single-tensor cut points and a topological order that respects them.

    Every node gets a segment: for a node reachable from the virtual source,
    the number of candidate cuts among its ancestors; for any other node
    (computed from constants or random generators only), the smallest segment
    of its consumers, so that it runs as late as possible and sends nothing.
    Sorting by (segment, is-cut, position) gives a topological order in which
    the layers before a candidate ``d`` are exactly those that must run
    before it. ``d`` is kept when, at its boundary, only its own outputs cross
    and some layer comes after it (a layer that reaches no output, for
    example, can make a dominator useless as a cut).
    """
    a = graph.arrays
    n = len(graph.nodes)
    candidates = _sink_dominators(graph)
    cand_index = {v: i for i, v in enumerate(candidates)}
    src, _, _ = _sources_and_sinks(graph)
    reach = _reach(src, a.succs, n)
    seg = [0] * n
    for v in range(n):
        if reach[v]:
            s = 0
            for u in a.preds[v]:
                if reach[u]:
                    s = max(s, seg[u] + (u in cand_index))
            seg[v] = s
    k = len(candidates)
    for v in range(n - 1, -1, -1):
        if not reach[v]:
            seg[v] = min((seg[w] for w in a.succs[v]), default=k)
    order = sorted(range(n), key=lambda v: (seg[v], v in cand_index, v))
    pos = _positions(order)
    births, deaths = _births_deaths(graph, pos)
    # bad[b] > 0: a tensor not produced at position b crosses boundary b.
    bad = [0] * (n + 1)
    for b, d in zip(births, deaths, strict=True):
        lo, hi = b + 1, min(d, n)
        if hi > lo:
            bad[lo] += 1
            bad[hi] -= 1
    run, acc = [], 0
    for p in range(n):
        acc += bad[p]
        run.append(acc)
    cuts = [v for v in candidates if run[pos[v]] == 0 and pos[v] < n - 1]
    # Merge the segments of rejected candidates into the next kept one.
    kept_before = [0] * (k + 1)
    kept = set(cuts)
    for i, v in enumerate(candidates):
        kept_before[i + 1] = kept_before[i] + (v in kept)
    seg = [kept_before[s] for s in seg]
    return _SinglePlan(order, cuts, seg, candidates)


def _multi_order(graph: LayerGraph, plan: _SinglePlan) -> list[int]:
    """Memory-aware list schedule, segment by segment (see :func:`multi_tensor_order`)."""
    a = graph.arrays
    n = len(graph.nodes)
    nbytes = [b or 0 for b in a.tensor_bytes]
    remaining = [len(c) + o for c, o in zip(a.consumers, a.is_output, strict=True)]
    out_bytes = [
        sum(nbytes[t] for t in outs if a.consumers[t] or a.is_output[t]) for outs in a.node_out
    ]
    indeg = [len(p) for p in a.preds]
    seg = plan.seg
    cut_of = {plan.seg[c]: c for c in plan.cuts}
    delta: list[int | None] = [None] * n  # live-bytes growth if run now; None: not ready
    stamp = [0] * n
    done = [False] * n
    pending: list[list[int]] = [[] for _ in range(len(plan.cuts) + 1)]
    heap: list[tuple[int, int, int]] = []
    current = 0  # the segment being scheduled
    held: int | None = None  # the current segment's cut, once ready
    clock = 0
    result: list[int] = []

    def offer(v: int) -> None:
        nonlocal held
        if cut_of.get(seg[v]) == v:
            held = v  # a segment's cut runs last in it
        else:
            d = delta[v]
            assert d is not None, "only ready nodes are offered"
            heappush(heap, (d, -stamp[v], v))

    def make_ready(v: int) -> None:
        nonlocal clock
        freed = sum(nbytes[t] for t in a.node_in[v] if remaining[t] == 1)
        delta[v] = out_bytes[v] - freed
        clock += 1
        stamp[v] = clock
        if seg[v] == current:
            offer(v)
        else:
            pending[seg[v]].append(v)

    def run(v: int) -> None:
        done[v] = True
        result.append(v)
        for t in a.node_in[v]:
            remaining[t] -= 1
            if remaining[t] == 1 and not a.is_output[t]:
                w = next(c for c in a.consumers[t] if not done[c])
                d = delta[w]
                if d is not None:
                    delta[w] = d = d - nbytes[t]
                    if seg[w] == current and held != w:
                        heappush(heap, (d, -stamp[w], w))
        for w in a.succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                make_ready(w)

    for v in range(n):
        if indeg[v] == 0:
            make_ready(v)
    for s in range(len(plan.cuts) + 1):
        current = s  # the heap is empty, held is None (or seg-0 nodes)
        for v in pending[s]:
            offer(v)
        pending[s] = []
        while True:
            while heap:
                d, _, v = heappop(heap)
                if not done[v] and d == delta[v]:
                    break
            else:
                if held is None:
                    break
                v, held = held, None
            run(v)
    if len(result) != n:  # pragma: no cover - the segments are closed under predecessors
        raise RuntimeError("multi-tensor order lost nodes")
    return result


def _unknown_size(graph: LayerGraph, tensor: str, after: str) -> ModelError:
    shape = graph.tensors[tensor].shape
    dims = (
        "unknown rank" if shape is None else "x".join("?" if d is None else str(d) for d in shape)
    )
    return ModelError(
        f"tensor {tensor!r} crossing the cut after node {after!r} has an unknown shape "
        f"({dims}): {graph.size_advice(tensor)}"
    )


def _assemble(graph: LayerGraph, order: list[int], bounds: list[int], cuts: str) -> Chain:
    """Blocks between the boundaries ``bounds`` (positions) of ``order``."""
    a = graph.arrays
    nodes = graph.nodes
    n = len(order)
    pos = _positions(order)
    births, deaths = _births_deaths(graph, pos)

    # Whole-graph liveness: bytes live while running each position.
    diff = [0] * (n + 1)
    unknown = 0
    for t, (b, d) in enumerate(zip(births, deaths, strict=True)):
        size = a.tensor_bytes[t]
        if size is None:
            unknown += 1
            continue
        lo, hi = max(b, 0), min(d, n - 1)
        if d >= 0 and hi >= lo:
            diff[lo] += size
            diff[hi + 1] -= size
    live, acc = [], 0
    for p in range(n):
        acc += diff[p]
        live.append(acc)

    starts = [0] + [b + 1 for b in bounds]
    ends = [b + 1 for b in bounds] + [n]
    block_nodes, param, peak, paper_mem, flops = [], [], [], [], []
    for s, e in zip(starts, ends, strict=True):
        members = [nodes[v] for v in order[s:e]]
        block_nodes.append(tuple(m.name for m in members))
        param.append(sum(m.param_bytes for m in members))
        flops.append(sum(m.flops for m in members))
        peak.append(max(live[s:e]))
        paper_mem.append(
            sum(
                4 * sum(graph.tensors[t].elements or 0 for t in m.outputs) + m.param_count
                for m in members
            )
        )

    k = len(bounds)
    transfer = [0] * k
    paper = [0.0] * k
    crossing: list[list[int]] = [[] for _ in range(k)]
    for t, (b, d) in enumerate(zip(births, deaths, strict=True)):
        lo, hi = bisect_left(bounds, b), bisect_left(bounds, d)
        if lo >= hi:
            continue
        size = a.tensor_bytes[t]
        if size is None:
            raise _unknown_size(graph, a.tensor_names[t], nodes[order[bounds[lo]]].name)
        elements = graph.tensors[a.tensor_names[t]].elements or 0
        used_at = sorted(pos[c] for c in a.consumers[t])
        for i in range(lo, hi):
            crossing[i].append(t)
            transfer[i] += size
            readers = len(used_at) - bisect_right(used_at, bounds[i]) + a.is_output[t]
            mbit = readers * elements * _PAPER_BYTES_PER_ELEMENT / _PAPER_COMPRESSION * 8 / 1024**2
            paper[i] += mbit * 1e6 / 8
    return Chain(
        name=graph.name,
        param_bytes=np.asarray(param, dtype=float),
        activation_peak_bytes=np.asarray(peak, dtype=float),
        paper_memory_bytes=np.asarray(paper_mem, dtype=float),
        flops=np.asarray(flops, dtype=float),
        transfer_bytes=np.asarray(transfer, dtype=float),
        paper_transfer_bytes=np.asarray(paper, dtype=float),
        cut_names=tuple(nodes[order[b]].name for b in bounds),
        block_nodes=tuple(block_nodes),
        cut_tensors=tuple(tuple(a.tensor_names[t] for t in c) for c in crossing),
        meta={
            "model": graph.name,
            "num_nodes": n,
            "param_bytes": graph.param_bytes,
            "flops": graph.flops,
            "cuts": cuts,
            "unknown_size_tensors": unknown,
            "warnings": list(graph.warnings),
        },
    )


def single_tensor_cut_points(graph: LayerGraph) -> list[str]:
    """Names of the single-tensor cut points, in topological order.

    A cut point is a layer on every path from the graph inputs to its outputs
    (a dominator of a virtual sink fed by the outputs, the source feeding the
    layers that read inputs) such that, with everything that must run before
    it on one side, only its own outputs cross. The last layer is excluded
    (nothing follows it).

    Examples
    --------
    >>> from onnx import TensorProto, helper
    >>> from partopt.onnx_graph import load_graph
    >>> x, y = (helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, 8]) for t in "XY")
    >>> nodes = [
    ...     helper.make_node("Relu", ["X"], ["a"], name="relu"),
    ...     helper.make_node("Sigmoid", ["a"], ["b"], name="sigmoid"),
    ...     helper.make_node("Tanh", ["b"], ["Y"], name="tanh"),
    ... ]
    >>> model = helper.make_model(helper.make_graph(nodes, "chain", [x], [y]))
    >>> single_tensor_cut_points(load_graph(model))
    ['relu', 'sigmoid']
    """
    return [graph.nodes[v].name for v in _single_plan(graph).cuts]


def singleton_level_cut_points(graph: LayerGraph) -> list[str]:
    """The original work's cut points: layers alone on their longest-path level.

    Levels are longest-path distances from a virtual source (level 0) feeding
    the sources (layers without activation inputs from other layers and the
    readers of graph inputs). A layer is kept when no other layer shares its
    level and no edge (virtual source and sink edges included) jumps over the
    level, i.e. every path reaches it; the layer on the highest level is
    excluded (nothing follows it). Without dead ends (layers reaching no
    output) or layers computed from no input, this equals
    :func:`single_tensor_cut_points`.
    """
    a = graph.arrays
    n = len(graph.nodes)
    if n == 0:
        return []
    src, sink, passthrough = _sources_and_sinks(graph)
    is_src = [not p for p in a.preds]
    for v in src:
        is_src[v] = True
    level = [0] * n
    for v in range(n):
        level[v] = max((level[u] + 1 for u in a.preds[v]), default=1)
        if is_src[v]:
            level[v] = max(level[v], 1)
    top = max(level)
    sink_level = top + 1  # above dead ends too, which may climb higher than any output
    count = [0] * (sink_level + 2)
    jump = [0] * (sink_level + 3)

    def span(lu: int, lw: int) -> None:
        if lw - lu > 1:
            jump[lu + 1] += 1
            jump[lw] -= 1

    for v in range(n):
        count[level[v]] += 1
        if is_src[v]:
            span(0, level[v])
        for w in a.succs[v]:
            span(level[v], level[w])
    for v in sink:
        span(level[v], sink_level)
    if passthrough:
        span(0, sink_level)
    covered, acc = [], 0
    for lv in range(sink_level + 1):
        acc += jump[lv]
        covered.append(acc)
    keep = [
        v for v in range(n) if count[level[v]] == 1 and covered[level[v]] == 0 and level[v] < top
    ]
    keep.sort(key=lambda v: level[v])
    return [graph.nodes[v].name for v in keep]


def compare_cut_methods(graph: LayerGraph) -> dict:
    """Whether dominators and singleton levels find the same cut points.

    Returns
    -------
    dict
        ``model``, ``same`` (bool), ``dominators`` and ``singleton_levels``
        (cut point names), ``only_dominators`` and ``only_singleton_levels``
        (the differences, in topological order), and ``rejected_dominators``
        (sink dominators that are not cut points: something besides their
        outputs crosses their cut, or, like the last layer, nothing follows
        them).
    """
    plan = _single_plan(graph)
    doms = [graph.nodes[v].name for v in plan.cuts]
    levels = singleton_level_cut_points(graph)
    pos = graph.position
    ds, ls = set(doms), set(levels)
    kept = set(plan.cuts)
    return {
        "model": graph.name,
        "same": ds == ls,
        "dominators": doms,
        "singleton_levels": levels,
        "only_dominators": sorted(ds - ls, key=pos.__getitem__),
        "only_singleton_levels": sorted(ls - ds, key=pos.__getitem__),
        "rejected_dominators": [graph.nodes[v].name for v in plan.candidates if v not in kept],
    }


def multi_tensor_order(graph: LayerGraph) -> list[str]:
    """The topological order whose boundaries are the multi-tensor cuts.

    Every boundary of a topological order is a cut whose transfer is the set
    of live tensors there, so the order is chosen to keep the live bytes
    small: a greedy memory-aware list schedule that always runs, among the
    ready layers, the one that grows the live bytes least (output bytes minus
    the bytes of inputs it is the last reader of), preferring the most
    recently readied layer on ties (depth first: finish a branch before
    opening the next, as an Inception module is best cut). The schedule is
    run segment by segment between single-tensor cut points, each of which
    closes its segment, so the single-tensor cuts are boundaries of this
    order with the same crossing tensors.
    """
    order = _multi_order(graph, _single_plan(graph))
    return [graph.nodes[v].name for v in order]


def build_chain(graph: LayerGraph, cuts: str = "single") -> Chain:
    """The chain of blocks between consecutive cuts of ``graph``.

    Parameters
    ----------
    graph
        The layer graph (:func:`partopt.onnx_graph.load_graph`).
    cuts
        ``single``: cut at the single-tensor cut points
        (:func:`single_tensor_cut_points`); ``multi``: cut at every boundary
        of :func:`multi_tensor_order` (one layer per block).

    Returns
    -------
    Chain
        Per block: parameter bytes, peak live activation bytes (whole-graph
        liveness, see the module docstring), the original's memory (float32
        output bytes + number of parameters per layer), FLOPs. Per cut: the
        bytes of the distinct tensors crossing it, and the original's
        transfer ``consumers x elements x 8 / 1.44 x 8 / 1024**2`` Mbit as
        bytes (``x 10**6 / 8``), where ``consumers`` counts the readers after
        the cut, plus one for a graph output (the last block returns it).
        ``cut_names`` holds the layer just before each cut.

    Raises
    ------
    ModelError
        A tensor crossing a cut has an unknown size, or the model has no
        layers.

    Examples
    --------
    A residual unit ``X -> relu -> sigmoid -> add(X, .) -> tanh``: only the
    output of ``add`` crosses alone (before it, ``X`` crosses too).

    >>> from onnx import TensorProto, helper
    >>> from partopt.onnx_graph import load_graph
    >>> x, y = (helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, 8]) for t in "XY")
    >>> nodes = [
    ...     helper.make_node("Relu", ["X"], ["a"], name="relu"),
    ...     helper.make_node("Sigmoid", ["a"], ["b"], name="sigmoid"),
    ...     helper.make_node("Add", ["X", "b"], ["s"], name="add"),
    ...     helper.make_node("Tanh", ["s"], ["Y"], name="tanh"),
    ... ]
    >>> c = build_chain(load_graph(helper.make_model(helper.make_graph(nodes, "res", [x], [y]))))
    >>> c.cut_names, c.transfer_bytes.tolist()
    (('add',), [32.0])
    """
    if cuts not in CUT_FAMILIES:
        raise ChainError(f"unknown cut family {cuts!r}; choose one of {', '.join(CUT_FAMILIES)}")
    n = len(graph.nodes)
    if n == 0:
        raise ModelError(f"model {graph.name!r} has no layers (only constants); nothing to plan")
    plan = _single_plan(graph)
    if cuts == "single":
        pos = _positions(plan.order)
        return _assemble(graph, plan.order, [pos[v] for v in plan.cuts], cuts)
    return _assemble(graph, _multi_order(graph, plan), list(range(n - 1)), cuts)


def load_chain(
    path,
    cuts: str = "single",
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    sample_inputs=None,
) -> Chain:
    """Load an ONNX file and build its chain (:func:`load_graph` + :func:`build_chain`).

    ``sample_inputs`` is a mapping of arrays by input name, or the path of an
    ``.npz`` file holding them (``--sample-inputs``); they feed the shape probe.

    ``cuts="keras"`` reads instead the original work's chain, computed from
    the Keras layer graph, from the chain file beside the ONNX file
    (``resnet50.onnx`` -> ``resnet50.keras-chain.json``, see
    :mod:`partopt.keras_chain`); only its ``paper`` memory and transfer
    models are the original's figures.
    """
    if cuts == "keras":
        from partopt.keras_chain import chain_file_for, load_keras_chain

        return load_keras_chain(chain_file_for(path))
    if isinstance(sample_inputs, (str, os.PathLike)):
        from partopt.probe import load_sample_inputs

        sample_inputs = load_sample_inputs(sample_inputs)
    graph = load_graph(path, input_shapes, sample_inputs=sample_inputs)
    return build_chain(graph, cuts)
