r"""Workloads of Tarnawski et al. (2020): their JSON input format as a DAG problem.

The public code of *Efficient Algorithms for Device Placement of DNN Graph
Operators* (msr-fiddle/dnn-partitioning) reads a workload file of this shape::

    {"maxSizePerFPGA": 17185374208.0, "maxFPGAs": 6, "maxCPUs": 0,
     "nodes": [{"id": 1, "supportedOnFpga": 1, "cpuLatency": 0.2,
                "fpgaLatency": 0.1, "isBackwardNode": 0, "colorClass": 5,
                "size": 1024.0}, ...],
     "edges": [{"sourceId": 1, "destId": 2, "cost": 0.05}, ...]}

:func:`load_workload` turns it into a :class:`~partopt.dag.DagProblem` with
the ``star`` objective, which ``exact`` solves like any other DAG problem:

* ``maxFPGAs`` identical devices (the cluster), each with ``maxSizePerFPGA``
  bytes of memory; a stage needs the sum of its nodes' ``size`` (memory
  model ``weights``). The plan may use fewer devices than ``maxFPGAs``.
* each node is one operator, named by its ``id``; its ``fpgaLatency`` is its
  compute time (in the file's time unit);
* the edges out of one node carry that node's output, one tensor read by
  all of the edge heads; its ``cost`` (equal on all those edges, as the
  format requires) is the time to move it between a device and host memory;
* nodes sharing a ``colorClass`` must run on one device;
* stages are contiguous: differences of nested ideals of the DAG.

The load
--------
A stage ``S`` (a set of nodes on one device) has load

.. math::

    \mathrm{load}(S) = \sum_{v \in S} \mathrm{fpgaLatency}(v)
        + \sum_{u \in S,\ \exists (u, w),\ w \notin S} \mathrm{cost}(u)
        + \sum_{u \notin S,\ \exists (u, w),\ w \in S} \mathrm{cost}(u),

each node ``u`` counted at most once in each sum however many of its edges
cross: a device writes each of its outputs that another device reads once
to host memory, and reads each output of another device that it needs once.
A node outside ``S`` read by two other stages is paid by each of them. The
objective is the largest load over the stages (time per sample); it is the
``star`` model of :mod:`partopt.costs`, scored by :func:`partopt.plan.evaluate`.
This is the load their dynamic program ``throughput-dp/dp.cpp`` computes for
an accelerator (compute plus the cost of every original node with an edge
crossing the stage boundary, in either direction, taken once).

Example, computed by hand (the workload of ``tests/test_workload.py``). Six
nodes, latency/size: 1: 1/2, 2: 4/3, 3: 2/3, 4: 3/2, 5: 1/1, 6: 1/1; edges
with the cost of their source: 1->2, 1->3, 1->4 (cost 1), 2->5 (2), 3->5
(0.5), 4->6 (3), 5->6 (1); nodes 2 and 3 share a colour class; 8 bytes per
device. The plan {1} | {2, 3, 5} | {4, 6} has loads

* {1}: 1 + 1 (its output, read by 2, 3 and 4 elsewhere, written once) = 2;
* {2, 3, 5}: 4 + 2 + 1 + 1 (reads 1's output) + 1 (writes 5's output for
  node 6; the outputs of 2 and 3 stay inside) = 9;
* {4, 6}: 3 + 1 + 1 (reads 1's output) + 1 (reads 5's) = 6 (4's output
  stays inside),

so its bottleneck is 9, and 9 is the optimum on 3 devices (the other
optimum is {1, 4} | {2, 3, 5} | {6}, loads 8, 9, 5). On 2 devices two
splits fit memory: {1, 2, 3} | {4, 5, 6}, loads 7 + 3.5 and 5 + 3.5, and
{1, 4} | {2, 3, 5, 6}, loads 4 + 4 and 8 + 4: optimum 10.5. Without the
colour class, 3 devices do better: {1, 3} | {2, 5} | {4, 6} has loads
3 + 1 + 0.5 = 4.5 (writes 1 and 3), 5 + 1 + 0.5 + 1 = 7.5 (reads 1 and 3,
writes 5) and 4 + 1 + 1 = 6 (reads 1 and 5), and 7.5 is the optimum then
(brute force over all plans agrees).

Free leaves
-----------
Before solving, a *free leaf* is colocated with its only neighbour: a group
of nodes (a colour class, or a single node) of total latency 0 whose edges
to the rest of the graph all join one other group ``h``, when its size is 0
or the whole workload fits on one device (then memory binds no stage). This
keeps the optimum: take any plan with the leaf ``g`` on another device than
``h``. If all of ``g``'s outside edges go to ``h``, move ``g`` into ``h``'s
(later) stage: every prefix of the plan stays downward closed (``g``'s only
outside successors are in ``h``), ``g``'s old stage loses only the cost of
outputs that ``h`` read, ``h``'s stage stops reading them, nobody else read
them, and no compute or (binding) memory moves. If they all come from
``h``, move ``g`` into ``h``'s (earlier) stage, symmetrically (with edges
both ways, convexity already puts ``g`` beside ``h``). No load
grows, so an optimal plan with ``g`` beside ``h`` exists; repeating the
argument merges leaves of merged groups too. Their dynamic program makes
the same contraction for nodes of zero latency joined by one edge (its
"trivial node optimizations", which ignore size); partopt's plans still list
every node.

Refused, each with a one-line :class:`WorkloadError`: ``maxCPUs`` other than
0 (the CPU side of their model is not part of partopt's problem),
``maxFPGAs`` below 1, backward nodes (training workloads), nodes not
supported on the accelerator, unknown node ids in edges, self-loops, two
different costs on the edges of one node, cycles, and negative or missing
numbers.

References
----------
Tarnawski, J., Phanishayee, A., Devanur, N., Mahajan, D. and Nina Paravecino,
F. (2020). Efficient algorithms for device placement of DNN graph operators.
NeurIPS 33. Code and workloads: https://github.com/msr-fiddle/dnn-partitioning
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from partopt.cluster import Cluster
from partopt.dag import MAX_PAIRS, MAX_STATES, Dag, DagProblem
from partopt.errors import PartoptError

__all__ = ["WorkloadError", "load_workload", "workload_problem", "node_ids"]

COST_TOLERANCE = 1e-6
"""Largest difference between the costs of two edges out of one node (their reader's check)."""

UNIFORM_BANDWIDTH_MBPS = 1.0
"""The link of the cluster built for a workload; unused, since tensors carry their costs."""


class WorkloadError(PartoptError):
    """A workload file that cannot be used; the message says why."""


def _number(obj: dict, key: str, where: str, *, default: float | None = None) -> float:
    if key not in obj:
        if default is not None:
            return default
        raise WorkloadError(f'{where} has no "{key}"')
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WorkloadError(f'{where}: "{key}" must be a number, got {value!r}')
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise WorkloadError(f'{where}: "{key}" must be finite and >= 0, got {value!r}')
    return value


def _flag(obj: dict, key: str, where: str) -> bool:
    if key not in obj:
        raise WorkloadError(f'{where} has no "{key}"')
    value = obj[key]
    if value not in (0, 1) and not isinstance(value, bool):
        raise WorkloadError(f'{where}: "{key}" must be true/false or 0/1, got {value!r}')
    return bool(value)


def _integer(obj: dict, key: str, where: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise WorkloadError(f'{where}: "{key}" must be an integer, got {value!r}')
    return int(value)


def _colocation(
    color: dict[int, list[int]],
    readers: dict[int, set[int]],
    latency: list[float],
    size: list[float],
    capacity: float,
    merge_free_leaves: bool,
) -> tuple[tuple[int, ...], ...]:
    """Colocation classes: the shared colour classes, grown by the free leaves (module docstring)."""
    n = len(latency)
    parent = list(range(n))

    def find(v: int) -> int:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    for members in color.values():
        for v in members[1:]:
            parent[find(v)] = find(members[0])
    if merge_free_leaves:
        fits_anywhere = sum(size) <= capacity
        nbrs: list[set[int]] = [set() for _ in range(n)]
        for u, vs in readers.items():
            for v in vs:
                nbrs[u].add(v)
                nbrs[v].add(u)
        changed = True
        while changed:
            changed = False
            groups: dict[int, list[int]] = {}
            for v in range(n):
                groups.setdefault(find(v), []).append(v)
            for root, members in groups.items():
                if find(root) != root or any(latency[v] != 0.0 for v in members):
                    continue
                if not fits_anywhere and any(size[v] != 0.0 for v in members):
                    continue
                outside = {find(w) for v in members for w in nbrs[v]} - {root}
                if len(outside) == 1:
                    parent[root] = outside.pop()
                    changed = True
    classes: dict[int, list[int]] = {}
    for v in range(n):
        classes.setdefault(find(v), []).append(v)
    return tuple(tuple(c) for c in classes.values() if len(c) > 1)


def workload_problem(
    doc: Any,
    name: str = "workload",
    *,
    max_states: int = MAX_STATES,
    max_pairs: int = MAX_PAIRS,
    merge_free_leaves: bool = True,
) -> DagProblem:
    """The :class:`~partopt.dag.DagProblem` of a parsed workload ``doc`` (see the module docstring).

    Parameters
    ----------
    doc
        The parsed JSON document.
    name
        Name of the DAG (the file's stem in :func:`load_workload`).
    max_states, max_pairs
        Caps of the state generation, passed to the problem.
    merge_free_leaves
        Colocate free leaves with their only neighbour (see "Free leaves" in
        the module docstring); it keeps the optimum and only shrinks the
        state space.

    Raises
    ------
    WorkloadError
        For every input the module docstring lists as refused.

    Examples
    --------
    >>> doc = {"maxSizePerFPGA": 10, "maxFPGAs": 2, "maxCPUs": 0,
    ...        "nodes": [{"id": 7, "supportedOnFpga": 1, "fpgaLatency": 2.0,
    ...                   "isBackwardNode": 0, "size": 4},
    ...                  {"id": 9, "supportedOnFpga": 1, "fpgaLatency": 3.0,
    ...                   "isBackwardNode": 0, "size": 4}],
    ...        "edges": [{"sourceId": 7, "destId": 9, "cost": 0.5}]}
    >>> p = workload_problem(doc)
    >>> p.objective, p.num_nodes, node_ids(p)
    ('star', 2, [7, 9])
    """
    if not isinstance(doc, dict):
        raise WorkloadError(
            "a workload is a JSON object with maxSizePerFPGA, maxFPGAs, nodes, edges"
        )
    for key in ("maxSizePerFPGA", "maxFPGAs", "maxCPUs", "nodes", "edges"):
        if key not in doc:
            raise WorkloadError(f'the workload has no "{key}"')
    cpus = _integer(doc, "maxCPUs", "the workload")
    if cpus != 0:
        raise WorkloadError(
            f"maxCPUs is {cpus}: partopt places on identical accelerators only; "
            'set "maxCPUs": 0 in the workload file'
        )
    devices = _integer(doc, "maxFPGAs", "the workload")
    if devices < 1:
        raise WorkloadError(f"maxFPGAs must be at least 1, got {devices}")
    capacity = _number(doc, "maxSizePerFPGA", "the workload")
    nodes, edges = doc["nodes"], doc["edges"]
    if not isinstance(nodes, list) or not nodes or not all(isinstance(x, dict) for x in nodes):
        raise WorkloadError('"nodes" must be a non-empty list of objects')
    if not isinstance(edges, list) or not all(isinstance(x, dict) for x in edges):
        raise WorkloadError('"edges" must be a list of objects')

    ids: list[int] = []
    index: dict[int, int] = {}
    latency, size = [], []
    color: dict[int, list[int]] = {}
    for k, node in enumerate(nodes):
        nid = _integer(node, "id", f"node {k}")
        where = f"node {nid}"
        if nid in index:
            raise WorkloadError(f"node id {nid} appears twice")
        if _flag(node, "isBackwardNode", where):
            raise WorkloadError(
                f"{where} is a backward node: training workloads are not supported, "
                "use an inference workload"
            )
        if not _flag(node, "supportedOnFpga", where):
            raise WorkloadError(
                f"{where} is not supported on the accelerator, and without CPUs it cannot run"
            )
        index[nid] = len(ids)
        ids.append(nid)
        latency.append(_number(node, "fpgaLatency", where))
        size.append(_number(node, "size", where, default=0.0))
        if "colorClass" in node:
            color.setdefault(_integer(node, "colorClass", where), []).append(index[nid])

    # one tensor per source node: its output, read by every edge head
    cost: dict[int, float] = {}
    nbytes: dict[int, float] = {}
    readers: dict[int, set[int]] = {}
    for k, edge in enumerate(edges):
        src, dst = _integer(edge, "sourceId", f"edge {k}"), _integer(edge, "destId", f"edge {k}")
        where = f"edge {k} ({src} -> {dst})"
        for end in (src, dst):
            if end not in index:
                raise WorkloadError(f"{where} names node {end}, which is not in the workload")
        if src == dst:
            raise WorkloadError(f"{where} is a self-loop")
        c = _number(edge, "cost", where)
        u = index[src]
        if u in cost and abs(cost[u] - c) > COST_TOLERANCE:
            raise WorkloadError(
                f"node {src} has two different outgoing edge costs ({cost[u]} and {c}); "
                "the cost belongs to the node's output and must be equal on all its edges"
            )
        cost.setdefault(u, c)
        nbytes.setdefault(u, _number(edge, "size", where, default=0.0))
        readers.setdefault(u, set()).add(index[dst])

    producers = sorted(readers)
    n = len(ids)
    sizes = np.array(size)
    dag = Dag(
        name=name,
        op_names=tuple(str(i) for i in ids),
        param_bytes=sizes,
        activation_peak_bytes=np.zeros(n),
        paper_memory_bytes=sizes,
        flops=np.zeros(n),
        tensor_bytes=np.array([nbytes[u] for u in producers]),
        tensor_producer=np.array(producers, dtype=np.int64),
        tensor_consumers=tuple(tuple(sorted(readers[u])) for u in producers),
        compute_s=np.array(latency),
        tensor_cost_s=np.array([cost[u] for u in producers]),
        colocate=_colocation(color, readers, latency, size, capacity, merge_free_leaves),
        meta={"source": "workload", "node_ids": tuple(ids)},
    )
    cluster = Cluster.uniform(devices, memory_bytes=capacity, bandwidth_mbps=UNIFORM_BANDWIDTH_MBPS)
    return DagProblem(
        dag,
        cluster,
        memory="weights",
        objective="star",
        max_states=max_states,
        max_pairs=max_pairs,
    )


def load_workload(
    path: str | Path, *, max_states: int = MAX_STATES, max_pairs: int = MAX_PAIRS
) -> DagProblem:
    """Read a workload file (see the module docstring) as a star-model DAG problem."""
    p = Path(path)
    try:
        with p.open() as fh:
            doc = json.load(fh)
    except OSError as e:
        raise WorkloadError(f"cannot read workload {str(p)!r}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise WorkloadError(f"workload {str(p)!r} is not JSON: {e}") from None
    return workload_problem(doc, p.stem, max_states=max_states, max_pairs=max_pairs)


def node_ids(problem: DagProblem) -> list[int]:
    """The workload's node id of each operator of ``problem``, in operator order."""
    return list(problem.dag.meta["node_ids"])
