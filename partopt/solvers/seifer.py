"""``seifer`` and ``seifer-original``: the k-path-matching algorithm of the original work.

Steps (Parthasarathy and Krishnamachari 2022):

1. Partition: the minimum-sum-of-transfers partition with at most ``N``
   stages, every stage within the node capacity
   (:func:`partopt.partition.min_sum_partition`).
2. Classes: the transfer sizes of *all* candidate cuts are binned into ``C``
   equal-width classes (``numpy.histogram_bin_edges``); every chosen cut gets
   the class of its transfer (class ``C`` holds the largest transfers).
3. Placement ("k-path matching"): for ``X = C, C - 1, ..., 1``, for every
   maximal run of consecutive chosen cuts of class ``X``, longest run first,
   find a simple path of run length + 1 nodes among the unused nodes, joined
   to the nodes already placed at either end of the run, that maximises its
   smallest bandwidth: binary search over the bandwidths present, testing
   each threshold with randomized colour coding
   (:func:`partopt.colorcoding.find_path`, seeded).

``seifer`` is this algorithm without the original code's defects.
``seifer-original`` is the same code with the defects switched back on, so
that the published numbers can be explained. Each defect is a keyword option
of both methods (``seifer`` defaults all to off, ``seifer-original`` all to
on); pass one explicitly to isolate its effect:

``memo_ignores_stage_limit``
    The partition memo keeps one cheapest continuation per start block,
    whatever its number of stages, and the limit of ``N`` stages is checked
    only afterwards: instances with a partition of at most ``N`` stages can
    be declared infeasible.
``leaky_memo``
    The memo lives on an object reused across calls and is never cleared, so
    the partition for one capacity reuses continuations computed for an
    earlier one (possibly too large for the current capacity, or needlessly
    small). ``True`` keeps one memo per :class:`~partopt.chain.Chain` object
    (and memory and transfer model) for the life of the process, so solving
    the same loaded model at several capacities leaks as the original did
    (see :func:`clear_leaky_memo`); a ``dict`` is used as the memo itself.
    Implies ``memo_ignores_stage_limit``.
``memo_history``
    Capacities in MB (2**20 bytes) the original solved this model at before
    this one, in order (its loop went up the capacities): the partition memo
    is first filled by partitioning at each of them, so that one run gives
    what the original gave at that point of its loop without depending on
    the runs before it. Implies a fresh ``leaky_memo`` dict.
``skip_block_memory``
    Stage memory summed ``partition_mems[i:j-1]``, where ``partition_mems[k]``
    covers the segment after cut point ``k``: every stage leaves out its
    first block (the segment right after the cut that starts it), so stages
    can exceed the capacity. ``"after"`` is that (the original's); ``True``
    (or ``"before"``) leaves out the last block of every stage but the last
    instead (see :func:`partopt.partition.stage_fits_matrix`).
``digitize_overflow``
    ``np.digitize`` puts a transfer equal to the largest candidate transfer
    in class ``C + 1``, which the loop over ``C..1`` never visits: that cut's
    link is never optimised (and its stages may stay unplaced).
``colours_factor``
    The colour coding drew ``int(1.3 k + 1) - 1`` colours but its DP uses
    only ``k``: a vertex with another colour is unusable in that trial, so
    paths are missed more often. ``1.0`` draws ``k`` colours.
``stop_early``
    (Off in the original.) With it, thresholds where no path can exist are
    recognised without running all ``10 e^k`` trials (see
    :mod:`partopt.colorcoding`). Off, every infeasible threshold costs all trials.

The original's plan for an instance that fits one node was an exception
(counted as latency 0); both methods return the one-stage plan. When a
defect yields a partition that does not fit memory, or leaves a stage
unplaced, the method returns ``no_solution`` and says why in ``info``
(``info["unchecked_bottleneck_s"]`` is the latency the original would have
reported for an over-memory plan).

Clusters beyond the original's (several capacities, missing links): a node
is a candidate for a stage only if the stage fits its memory, and ``seifer``
partitions once per capacity level and keeps the best plan;
``seifer-original`` partitions for the smallest capacity, as the original
deployment code did.

References
----------
Parthasarathy, A. and Krishnamachari, B. (2022). Partitioning and placement
of deep neural networks on distributed edge devices to maximize inference
throughput. ITNAC 2022 (arXiv:2210.12219).
Alon, N., Yuster, R. and Zwick, U. (1995). Color-coding. J. ACM 42(4).
"""

from __future__ import annotations

import inspect
import math
import time
import weakref

import numpy as np

from partopt.colorcoding import find_path
from partopt.partition import min_sum_partition, original_min_sum_partition, stage_windows
from partopt.problem import Problem
from partopt.solvers import SolverOutput, register
from partopt.solvers._plans import (
    bottleneck_s,
    capacity_levels,
    stage_bounds,
    stage_fits,
    to_plan,
)
from partopt.solvers.greedy import partitions_by_level

__all__ = [
    "DEFAULT_CLASSES",
    "ORIGINAL_DEFECTS",
    "bandwidth_classes",
    "class_runs",
    "k_path_matching",
    "clear_leaky_memo",
    "replayed_memo",
    "leaky_memo",
    "solve_seifer",
    "solve_seifer_original",
]

DEFAULT_CLASSES = 20

ORIGINAL_DEFECTS = {
    "memo_ignores_stage_limit": True,
    "leaky_memo": True,
    "skip_block_memory": "after",
    "digitize_overflow": True,
    "colours_factor": 1.3,
    "stop_early": False,
}
"""The switches ``seifer-original`` turns on (``seifer`` has them all off)."""

_LEAKY_MEMOS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def clear_leaky_memo() -> None:
    """Forget the process-wide memos of ``leaky_memo=True``."""
    _LEAKY_MEMOS.clear()


def replayed_memo(problem: Problem, history_mb, skip_block_memory) -> dict:
    """The original's partition memo after partitioning ``problem``'s chain at each
    capacity of ``history_mb`` (MB, 2**20 bytes) in turn, as its loop did before this run.

    The memo ignores the stage limit and the cluster, so only the chain, the
    memory and transfer models and ``skip_block_memory`` matter.
    """
    memo: dict = {}
    for cap_mb in history_mb:
        original_min_sum_partition(
            problem,
            float(cap_mb) * 2**20,
            problem.num_nodes,
            memo=memo,
            skip_block_memory=skip_block_memory,
        )
    return memo


def leaky_memo(problem: Problem, owner: str = "seifer") -> dict:
    """The process-wide never-cleared partition memo of ``owner`` for ``problem``'s chain
    (and memory and transfer model); :func:`clear_leaky_memo` forgets it too."""
    per_chain = _LEAKY_MEMOS.setdefault(problem.chain, {})
    key = (problem.memory, problem.transfer)
    return per_chain.setdefault(key if owner == "seifer" else (*key, owner), {})


def bandwidth_classes(
    all_transfers, chosen_transfers, num_classes: int, *, digitize_overflow: bool = False
) -> np.ndarray:
    """Class ``1..C`` of every chosen transfer; equal-width bins over all candidate transfers.

    With ``digitize_overflow`` the original's ``np.digitize`` result is kept
    as is: the largest candidate transfer falls in class ``C + 1``.

    Examples
    --------
    >>> bandwidth_classes([0, 10, 20, 40], [10, 40], 4).tolist()
    [2, 4]
    >>> bandwidth_classes([0, 10, 20, 40], [10, 40], 4, digitize_overflow=True).tolist()
    [2, 5]
    """
    edges = np.histogram_bin_edges(np.asarray(all_transfers, dtype=float), bins=num_classes)
    classes = np.digitize(np.asarray(chosen_transfers, dtype=float), edges)
    return classes if digitize_overflow else np.clip(classes, 1, num_classes)


def class_runs(classes, x: int) -> list[tuple[int, int]]:
    """Maximal runs ``(first cut index, length)`` of consecutive cuts of class ``x``, longest first.

    Ties keep the order along the chain (Python's sort is stable).

    Examples
    --------
    >>> class_runs([3, 1, 3, 3, 2, 3], 3)
    [(2, 2), (0, 1), (5, 1)]
    """
    runs, start = [], None
    for i, c in enumerate([*classes, None]):
        if c == x and start is None:
            start = i
        elif c != x and start is not None:
            runs.append((start, i - start))
            start = None
    return sorted(runs, key=lambda r: r[1], reverse=True)


def _widest_path(
    bandwidth_mbps: np.ndarray,
    vertices: np.ndarray,
    k: int,
    start: int | None,
    end: int | None,
    allowed: np.ndarray,
    rng: np.random.Generator,
    colour_options: dict,
    stats: dict,
) -> list[int] | None:
    """A simple path of ``k`` of ``vertices`` maximising its smallest bandwidth (binary search).

    Past the deadline (``colour_options["deadline"]``) it returns the widest
    path found so far (``None`` when none) before any further work: on large
    clusters the submatrix and its sorted thresholds alone take seconds.
    """
    deadline = colour_options.get("deadline", math.inf)
    if time.perf_counter() > deadline:
        stats["timed_out"] = True
        return None
    sub = bandwidth_mbps[np.ix_(vertices, vertices)]
    weights = np.unique(sub[sub > 0])[::-1]  # thresholds, widest first
    local_start = None if start is None else int(np.flatnonzero(vertices == start)[0])
    local_end = None if end is None else int(np.flatnonzero(vertices == end)[0])
    # rng.integers(1, factor * k + 1) draws int(factor * k + 1) - 1 colours
    drawn = max(k, int(colour_options["colours_factor"] * k + 1) - 1)
    lo, hi, best = 0, len(weights), None
    while lo < hi:
        if time.perf_counter() > deadline:
            stats["timed_out"] = True
            break  # keep the widest path found so far, if any
        mid = (lo + hi) // 2
        found = find_path(
            sub >= weights[mid],
            k,
            start=local_start,
            end=local_end,
            allowed=allowed[:, vertices],
            rng=rng,
            colours_drawn=drawn,
            stop_early=colour_options["stop_early"],
            max_trials=colour_options["max_trials"],
            deadline=deadline,
        )
        stats["thresholds"] += 1
        stats["trials"] += found.trials
        if found.how == "time limit":
            stats["timed_out"] = True
            break  # keep the widest path found so far, if any
        if found.path is None:
            lo = mid + 1
        else:
            hi, best = mid, found.path
    return None if best is None else [int(vertices[v]) for v in best]


def k_path_matching(
    problem: Problem,
    cuts: list[int],
    classes: np.ndarray,
    num_classes: int,
    fits: np.ndarray,
    rng: np.random.Generator,
    colour_options: dict,
    stats: dict,
    deadline: float = math.inf,
) -> list[int | None]:
    """Place the stages of ``cuts`` run by run; ``None`` marks a stage left unplaced.

    ``fits[j, v]``: stage ``j`` may go on node ``v``. Classes are visited
    from ``num_classes`` down to 1 (a class above ``num_classes`` is never
    visited, as in the original).
    """
    bw = problem.cluster.bandwidth_mbps
    n = problem.num_nodes
    nodes: list[int | None] = [None] * (len(cuts) + 1)
    used = np.zeros(n, dtype=bool)
    for x in range(num_classes, 0, -1):
        for first, length in class_runs(classes.tolist(), x):
            if time.perf_counter() > deadline:
                stats["timed_out"] = True
                return nodes
            start, end = nodes[first], nodes[first + length]
            avail = ~used
            for v in (start, end):
                if v is not None:
                    avail[v] = True
            k = length + 1
            path = _widest_path(
                bw,
                np.flatnonzero(avail),
                k,
                start,
                end,
                fits[first : first + k],
                rng,
                colour_options,
                stats,
            )
            if path is None:
                stats["failed_runs"] += 1
                continue
            nodes[first : first + k] = path
            used[path] = True
    return nodes


def _partitions(problem: Problem, options: dict) -> list[list[int]]:
    """The distinct partitions to place, one per capacity level (largest first)."""
    memo = options["leaky_memo"]
    if options["memo_history"]:
        memo = replayed_memo(problem, options["memo_history"], options["skip_block_memory"])
    elif memo is True:
        memo = leaky_memo(problem)
    elif not isinstance(memo, dict):
        memo = None  # False (or None): a fresh memo per partition
    if not (
        options["memo_ignores_stage_limit"] or memo is not None or options["skip_block_memory"]
    ):
        return partitions_by_level(problem, options["partition"])
    if options["partition"] != "min-sum":
        raise ValueError("the original's partition defects only apply to partition='min-sum'")
    out: list[list[int]] = []
    for cap in capacity_levels(problem):
        if options["memo_ignores_stage_limit"] or memo is not None:
            cuts = original_min_sum_partition(
                problem,
                cap,
                problem.num_nodes,
                memo=memo,
                skip_block_memory=options["skip_block_memory"],
            )
        else:
            windows = stage_windows(problem, cap, skip_block_memory=options["skip_block_memory"])
            cuts = min_sum_partition(problem, cap, problem.num_nodes, windows=windows)
        if cuts is not None and cuts not in out:
            out.append(cuts)
    return out


def _solve(
    problem: Problem,
    *,
    time_limit_s,
    seed: int,
    num_classes: int,
    partition: str,
    max_trials: int | None,
    memo_history=None,
    **defects,
) -> SolverOutput:
    options = {
        **{k: False for k in ORIGINAL_DEFECTS},
        "colours_factor": 1.0,
        "stop_early": True,
        **defects,
        "partition": partition,
        "memo_history": memo_history,
    }
    unknown = set(options) - set(ORIGINAL_DEFECTS) - {"partition", "memo_history"}
    if unknown:
        raise TypeError(
            f"unknown option(s) {sorted(unknown)}; seifer takes num_classes, "
            f"partition, max_trials and {sorted(ORIGINAL_DEFECTS)}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    deadline = math.inf if time_limit_s is None else time.perf_counter() + time_limit_s
    rng = np.random.default_rng(seed)
    colour_options = {
        "stop_early": bool(options["stop_early"]),
        "max_trials": max_trials,
        "colours_factor": float(options["colours_factor"]),
        "deadline": deadline,
    }
    all_transfers = problem.transfer_bytes
    stats = {"thresholds": 0, "trials": 0, "failed_runs": 0, "timed_out": False}
    info: dict = {"num_classes": num_classes}

    partitions = _partitions(problem, options)
    if not partitions:
        return SolverOutput(
            "no_solution",
            info={**info, "reason": "the partition DP found no partition within the stage limit"},
        )
    best_value, best, reasons = math.inf, None, []
    for cuts in partitions:
        fits = stage_fits(problem, cuts)
        over = np.flatnonzero(~fits.any(axis=1))
        if len(over):
            # Only a defect (skewed memory sum, stale memo) makes a stage larger than every
            # node; place it anyway, as the original did, to report what it would have claimed.
            reasons.append(
                f"stage {int(over[0])} of the partition exceeds every node's memory "
                "(a defect of the original partition DP)"
            )
            fits[over] = True
        nodes: list[int | None]
        if len(cuts) == 0:
            nodes = [
                int(
                    np.argmin(
                        [
                            bottleneck_s(problem, [], [v]) if fits[0, v] else math.inf
                            for v in range(problem.num_nodes)
                        ]
                    )
                )
            ]
        else:
            classes = bandwidth_classes(
                all_transfers,
                all_transfers[cuts],
                num_classes,
                digitize_overflow=options["digitize_overflow"],
            )
            nodes = k_path_matching(
                problem, cuts, classes, num_classes, fits, rng, colour_options, stats, deadline
            )
        placed = [v for v in nodes if v is not None]
        if len(placed) < len(nodes):
            reasons.append(f"{len(nodes) - len(placed)} of {len(nodes)} stages left unplaced")
            continue
        value = bottleneck_s(problem, cuts, placed)
        if len(over):
            info["unchecked_bottleneck_s"] = value
            continue
        if not math.isfinite(value):
            reasons.append("two consecutive stages were placed on nodes without a link")
            continue
        if value < best_value:
            best_value, best = value, (cuts, placed)
    info.update(stats)
    if best is None:
        return SolverOutput("no_solution", info={**info, "reason": "; ".join(reasons)})
    best_cuts, best_nodes = best
    return SolverOutput(
        "feasible",
        to_plan(problem, best_cuts, best_nodes),
        objective_s=best_value,
        info={
            **info,
            "stages": len(best_nodes),
            "stage_bounds": stage_bounds(best_cuts, problem.num_blocks),
        },
    )


def _register(name: str, defaults: dict, description: str):
    @register(name, description=description)
    def solve(
        problem: Problem,
        *,
        time_limit_s=None,
        seed: int = 0,
        num_classes: int = DEFAULT_CLASSES,
        partition: str = "min-sum",
        max_trials: int | None = None,
        memo_history: tuple[float, ...] | None = None,
        **switches,
    ) -> SolverOutput:
        return _solve(
            problem,
            time_limit_s=time_limit_s,
            seed=seed,
            num_classes=num_classes,
            partition=partition,
            max_trials=max_trials,
            memo_history=memo_history,
            **{**defaults, **switches},
        )

    # The switches are keyword options like any other: show them in the signature, so that
    # callers (``solve``, sweep validation) can check option names before running.
    plain = [p for p in inspect.signature(solve).parameters.values() if p.kind != p.VAR_KEYWORD]
    off = {k: False for k in ORIGINAL_DEFECTS} | {"colours_factor": 1.0, "stop_early": True}
    switches_params = [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(k, off[k]))
        for k in ORIGINAL_DEFECTS
    ]
    solve.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*plain, *switches_params], return_annotation=SolverOutput
    )
    solve.__name__ = solve.__qualname__ = "solve_" + name.replace("-", "_")
    solve.__doc__ = f"{description}.\n\nSee :mod:`partopt.solvers.seifer` for the options."
    return solve


solve_seifer = _register(
    "seifer",
    {},
    "k-path matching (SEIFER): min-sum partition, bandwidth classes, colour-coded widest paths",
)
solve_seifer_original = _register(
    "seifer-original",
    ORIGINAL_DEFECTS,
    "SEIFER with the original code's defects switched on (to explain published numbers)",
)
