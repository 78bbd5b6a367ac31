"""Hypothesis strategies for partopt problems."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from partopt.chain import Chain
from partopt.cluster import Cluster
from partopt.plan import Plan, Stage
from partopt.problem import Problem


@st.composite
def chains(draw, min_blocks: int = 1, max_blocks: int = 7) -> Chain:
    """Random small chains: integer memories 1..10, transfers 1..20 MB-ish bytes."""
    b = draw(st.integers(min_blocks, max_blocks))
    mem = draw(st.lists(st.integers(1, 10), min_size=b, max_size=b))
    act = draw(st.lists(st.integers(0, 4), min_size=b, max_size=b))
    transfer = draw(st.lists(st.integers(1, 20), min_size=b - 1, max_size=b - 1))
    flops = draw(st.lists(st.integers(0, 50), min_size=b, max_size=b))
    return Chain.from_arrays(
        mem,
        np.array(transfer, dtype=float) * 1e5,
        np.array(flops, dtype=float) * 1e6,
        activation_bytes=act,
    )


@st.composite
def clusters(
    draw, min_nodes: int = 1, max_nodes: int = 4, speeds: bool = False, missing_links: bool = True
) -> Cluster:
    """Random small clusters: heterogeneous memory, asymmetric bandwidth, some links missing."""
    n = draw(st.integers(min_nodes, max_nodes))
    mem = draw(st.lists(st.integers(3, 25), min_size=n, max_size=n))
    levels = (
        st.sampled_from([0.0, 1.0, 2.0, 3.5, 5.0, 8.0])
        if missing_links
        else st.sampled_from([1.0, 2.0, 3.5, 5.0, 8.0])
    )
    bw = np.array(draw(st.lists(levels, min_size=n * n, max_size=n * n))).reshape(n, n)
    flops = None
    if speeds:
        flops = np.array(draw(st.lists(st.sampled_from([1e7, 2e7, 5e7]), min_size=n, max_size=n)))
    return Cluster(tuple(f"n{i}" for i in range(n)), np.array(mem, dtype=float), bw, flops)


@st.composite
def problems(
    draw,
    max_blocks: int = 7,
    max_nodes: int = 4,
    objective: str | None = None,
    missing_links: bool = True,
) -> Problem:
    """Tiny problems for exact-vs-brute checks (``objective`` None draws one)."""
    chain = draw(chains(max_blocks=max_blocks))
    obj = objective or draw(st.sampled_from(["communication", "max"]))
    cluster = draw(clusters(max_nodes=max_nodes, speeds=obj == "max", missing_links=missing_links))
    memory = draw(st.sampled_from(["weights", "peak"]))
    return Problem(chain, cluster, memory=memory, objective=obj)


@st.composite
def plans(draw, problem: Problem) -> Plan:
    """Any structurally complete plan (contiguous cover, distinct nodes); may break memory/links."""
    b, n = problem.num_blocks, problem.num_nodes
    k = draw(st.integers(1, min(b, n)))
    cuts = (
        sorted(draw(st.sets(st.integers(0, b - 2), min_size=k - 1, max_size=k - 1)))
        if b > 1
        else []
    )
    nodes = draw(st.permutations(range(n)))[: len(cuts) + 1]
    bounds = [-1, *cuts, b - 1]
    return Plan(tuple(Stage(bounds[i] + 1, bounds[i + 1], nodes[i]) for i in range(len(nodes))))
