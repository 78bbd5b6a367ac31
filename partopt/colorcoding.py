"""Randomized colour coding: find a simple path of ``k`` vertices.

Alon, Yuster and Zwick's method colours every vertex at random with one of
``k`` colours and looks for a *colourful* path (all colours distinct), which
is necessarily simple; a dynamic program over (set of colours used, last
vertex) finds one in ``O(2^k m)``. A fixed simple path is colourful with
probability ``k!/k^k > e^-k``, so ``10 e^k`` independent colourings (the
original SEIFER code's trial count) miss an existing path with probability
below ``e^-10``.

This implementation keeps, per trial, one boolean layer per path length:
``R_s[t, S, v]`` says that trial ``t`` has a colourful path of ``s`` vertices
using exactly the colour set ``S`` and ending at ``v``. One step is a boolean
matrix product with the adjacency matrix (BLAS, all trials and colour sets at
once) followed by one gather that adds the colour of the new last vertex.
Trials run in batches of growing size, so that a dense graph (where the first
colouring almost always works) costs one small batch.

The search also supports what SEIFER's placement needs: a fixed first and/or
last vertex, and per-position allowed vertices (``allowed[p, v]``: vertex
``v`` may be the ``p``-th vertex of the path).

With ``stop_early`` (the default) two exact shortcuts replace trials that
cannot change the answer: if no *walk* of ``k`` vertices satisfies the end
and position constraints, no path exists (proven, zero trials); and when
the vertices that lie on such walks are few enough that the same dynamic
program with one colour per vertex (which is exact) is cheaper than the
remaining trials, it runs once and decides. Without it, every one of the
``max_trials`` colourings is tried before giving up, as in the original.

References
----------
Alon, N., Yuster, R. and Zwick, U. (1995). Color-coding. J. ACM 42(4).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["PathSearch", "default_trials", "find_path"]

MAX_BATCH_WORDS = 1 << 18
"""Largest batch, in 64-bit words of one DP layer (colour sets x vertices x trials / 64)."""

EXACT_MAX_CELLS = 1 << 18
"""The exact (one colour per vertex) DP is only used when its largest layer is this small."""


@dataclass(frozen=True)
class PathSearch:
    """Outcome of :func:`find_path`.

    Attributes
    ----------
    path
        The vertices of the path in order, or ``None``.
    trials
        Random colourings tried.
    proven
        ``True`` when the answer is certain: a path was found, or its absence
        was proven (no walk, too few vertices, or the exact DP).
    how
        ``"colour-coding"``, ``"pruned"`` (no walk, or no component with k vertices), ``"exact"``
        or ``"time limit"`` (gave up at the deadline): what decided.
    """

    path: list[int] | None
    trials: int
    proven: bool
    how: str


def default_trials(k: int) -> int:
    """The original's trial count ``int(10 e^k)``.

    Examples
    --------
    >>> [default_trials(k) for k in (1, 2, 5)]
    [27, 73, 1484]
    """
    return int(10 * math.e**k)


@lru_cache(maxsize=64)
def _layers(q: int, k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Colour-set layers for ``q`` colours and paths of ``k`` vertices.

    ``sets[s - 1]``: sorted bitmasks of the colour sets of size ``s``;
    ``gather[s - 1][c, j]``: position in layer ``s`` of set ``j`` of layer
    ``s + 1`` without colour ``c``, or ``len(sets[s - 1])`` (a sentinel that
    is always false) when ``c`` is not in it. Row ``q`` is all sentinel, for
    vertices without a usable colour.
    """
    bit = np.left_shift(np.int64(1), np.arange(q, dtype=np.int64))
    sets = [bit.copy()]
    gather = []
    for _ in range(1, k):
        lower = sets[-1]
        grown = lower[:, None] | bit[None, :]
        upper = np.unique(grown[(lower[:, None] & bit[None, :]) == 0])
        has = (upper[None, :] & bit[:, None]) != 0  # (q, |upper|)
        pos = np.searchsorted(lower, upper[None, :] & ~bit[:, None])
        g = np.where(has, pos, len(lower))
        gather.append(np.vstack([g, np.full((1, len(upper)), len(lower))]).astype(np.intp))
        sets.append(upper)
    return sets, gather


def _walk_vertices(adj: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``ok`` restricted to vertices on some walk ``v_0 -> ... -> v_{k-1}`` with ``ok[p, v_p]``."""
    k = ok.shape[0]
    a = adj.astype(np.float32)
    fwd = ok.copy()
    for p in range(1, k):
        fwd[p] &= (fwd[p - 1].astype(np.float32) @ a) > 0
    both = fwd.copy()
    for p in range(k - 2, -1, -1):
        both[p] &= (a @ both[p + 1].astype(np.float32)) > 0
    return both


def _components(adj: np.ndarray) -> list[np.ndarray]:
    """Vertex index arrays of the weakly connected components of ``adj``."""
    if adj.shape[0] == 0:
        return []
    _, label = connected_components(csr_matrix(adj), directed=True, connection="weak")
    order = np.argsort(label, kind="stable")
    bounds = np.flatnonzero(np.diff(label[order])) + 1
    return np.split(order, bounds)


def _pack(mask: np.ndarray) -> np.ndarray:
    """Bool ``(T, n)`` -> uint64 ``(n, ceil(T / 64))``: bit ``t % 64`` of word ``t // 64`` is ``mask[t]``."""
    t_count, n = mask.shape
    padded = np.zeros((-(-t_count // 64) * 64, n), dtype=bool)
    padded[:t_count] = mask
    packed = np.packbits(padded, axis=0, bitorder="little")  # (T / 8, n) bytes
    return np.ascontiguousarray(packed.T).view("<u8")


def _colourful_dp(
    adj: np.ndarray, ok: np.ndarray, colours: np.ndarray, q: int
) -> tuple[int, list[int]] | None:
    """Run the DP for a batch of colourings; return (trial, path) of the first success.

    ``colours`` has shape ``(T, n)`` with values in ``[0, q)``, or ``q`` for a
    vertex that may not be used in that trial. Trials are packed 64 to a
    machine word, so that every step is a handful of bitwise numpy
    operations on arrays of shape (colour sets, vertices, words).
    """
    k, n = ok.shape
    sets, gather = _layers(q, k)
    masks = np.stack([_pack(colours == c) for c in range(q)])  # (q, n, W)
    words = masks.shape[2]
    full = np.uint64(0xFFFFFFFFFFFFFFFF)
    ok_words = np.where(ok, full, np.uint64(0))  # (k, n)
    r = masks & ok_words[0][None, :, None]  # layer 1: colour set {c} sits at index c
    layers = [r]
    heads, tails = np.nonzero(adj.T)  # edges tail -> head, grouped by head
    if k > 1 and len(heads) == 0:
        return None
    targets, starts = np.unique(heads, return_index=True)
    for s in range(1, k):
        c_s, c_next = len(sets[s - 1]), len(sets[s])
        reached = np.zeros((c_s + 1, n, words), dtype=np.uint64)  # + an always-empty sentinel set
        reached[:c_s, targets, :] = np.bitwise_or.reduceat(r[:, tails, :], starts, axis=1)
        nxt = np.zeros((c_next, n, words), dtype=np.uint64)
        for c in range(q):
            src = gather[s - 1][c]
            has = src < c_s
            nxt[has] |= reached[src[has]] & masks[c][None, :, :]
        nxt &= ok_words[s][None, :, None]
        if not nxt.any():
            return None
        r = nxt
        layers.append(r)
    hit_words = np.bitwise_or.reduce(r.reshape(-1, words), axis=0)
    nonzero = np.flatnonzero(hit_words)
    if len(nonzero) == 0:
        return None
    w = int(nonzero[0])
    word = int(hit_words[w])
    b = (word & -word).bit_length() - 1
    t = 64 * w + b

    def bits(layer: np.ndarray) -> np.ndarray:
        return ((layer[:, :, w] >> np.uint64(b)) & np.uint64(1)).astype(bool)

    # Walk back: the last vertex, then each predecessor holding the colour set minus its colour.
    j, v = (int(a[0]) for a in np.nonzero(bits(r)))
    path = [v]
    for s in range(k - 1, 0, -1):
        j = int(gather[s - 1][int(colours[t, v]), j])
        v = int(np.flatnonzero(bits(layers[s - 1])[j] & adj[:, v])[0])
        path.append(v)
    return t, path[::-1]


def find_path(
    adjacency,
    k: int,
    *,
    start: int | None = None,
    end: int | None = None,
    allowed=None,
    rng: np.random.Generator | int | None = 0,
    max_trials: int | None = None,
    colours_drawn: int | None = None,
    stop_early: bool = True,
    deadline: float = math.inf,
) -> PathSearch:
    """Find a simple path of ``k`` vertices in a directed graph by colour coding.

    Parameters
    ----------
    adjacency
        Boolean ``(n, n)`` matrix; ``adjacency[u, v]``: edge ``u -> v``
        (symmetric for an undirected graph; the diagonal is ignored).
    k
        Number of vertices on the path (``k - 1`` edges).
    start, end
        Vertices the path must begin / end with, if given.
    allowed
        Optional boolean ``(k, n)``: ``allowed[p, v]`` iff ``v`` may be the
        ``p``-th vertex.
    rng
        Generator or seed for the colourings.
    max_trials
        Cap on random colourings (default :func:`default_trials` ``(k)``).
    colours_drawn
        Colours drawn per vertex (default ``k``). The DP always uses colours
        ``0..k-1``, so with more colours drawn a vertex coloured ``>= k`` is
        unusable in that trial: this reproduces the original code, which
        drew ``1.3 k`` colours but ran its DP over ``k`` of them.
    stop_early
        Use the exact shortcuts described in the module docstring instead of
        running all trials when no path exists.
    deadline
        A ``time.perf_counter()`` instant; the clock is read between batches
        of trials, and past it the search gives up (``how="time limit"``,
        not proven).

    Examples
    --------
    >>> import numpy as np
    >>> ring = np.roll(np.eye(5, dtype=bool), 1, axis=1)  # 0->1->2->3->4->0
    >>> find_path(ring, 3, start=3).path
    [3, 4, 0]
    >>> r = find_path(ring, 3, start=3, end=1)
    >>> r.path, r.proven, r.how
    (None, True, 'pruned')
    """
    adj = np.array(adjacency, dtype=bool)
    n = adj.shape[0]
    if adj.shape != (n, n):
        raise ValueError("adjacency must be a square matrix")
    if k < 1:
        raise ValueError(f"a path needs at least one vertex, got k={k}")
    np.fill_diagonal(adj, False)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    max_trials = default_trials(k) if max_trials is None else int(max_trials)
    q_drawn = k if colours_drawn is None else int(colours_drawn)
    if q_drawn < k:
        raise ValueError(f"colours_drawn must be at least k={k}")

    ok = np.ones((k, n), dtype=bool) if allowed is None else np.array(allowed, dtype=bool)
    if ok.shape != (k, n):
        raise ValueError(f"allowed must have shape ({k}, {n})")
    if start is not None:
        ok[0] &= np.arange(n) == start
        ok[1:, start] = False
    if end is not None:
        ok[k - 1] &= np.arange(n) == end
        ok[: k - 1, end] = False

    keep = np.flatnonzero(ok.any(axis=0))  # vertices that may appear at all
    how = "colour-coding"
    if stop_early:
        ok = _walk_vertices(adj, ok)
        keep = np.flatnonzero(ok.any(axis=0))
        # A simple path stays inside one weakly connected component: drop components
        # with fewer than k vertices, and decide small ones exactly.
        parts = _components(adj[np.ix_(keep, keep)])
        rest = []
        for part in parts:
            if len(part) < k:
                continue
            verts = keep[part]
            m = len(verts)
            # words the trials would touch vs the exact DP's (one trial, m colours)
            trial_work = -(-max_trials // 64) * 2**k * m
            exact_layers = [math.comb(m, s) * m for s in range(1, k + 1)] if m <= 62 else [math.inf]
            if max(exact_layers) > EXACT_MAX_CELLS or sum(exact_layers) > trial_work:
                rest.append(verts)
                continue
            found = _colourful_dp(
                adj[np.ix_(verts, verts)],
                ok[:, verts],
                np.arange(len(verts))[None, :],
                len(verts),
            )
            if found is not None:
                return PathSearch([int(verts[v]) for v in found[1]], 0, True, "exact")
            how = "exact"
        if not rest:
            return PathSearch(None, 0, True, how if how == "exact" else "pruned")
        keep = np.sort(np.concatenate(rest))
    m = len(keep)
    sub_ok = ok[:, keep]
    sub_adj = adj[np.ix_(keep, keep)]

    largest_layer = max(math.comb(k, s) for s in range(1, k + 1)) + 1
    cap = 64 * max(1, MAX_BATCH_WORDS // (largest_layer * max(m, 1)))
    done, batch = 0, 64
    while done < max_trials:
        if done and time.perf_counter() > deadline:
            return PathSearch(None, done, False, "time limit")
        size = min(batch, cap, max_trials - done)
        drawn = rng.integers(0, q_drawn, size=(size, n))[:, keep]
        colours = np.where(drawn < k, drawn, k)  # colours >= k: unusable (see colours_drawn)
        found = _colourful_dp(sub_adj, sub_ok, colours, k) if m else None
        if found is not None:
            t, path = found
            return PathSearch([int(keep[v]) for v in path], done + t + 1, True, "colour-coding")
        done += size
        batch *= 4
    return PathSearch(None, done, False, "colour-coding")
