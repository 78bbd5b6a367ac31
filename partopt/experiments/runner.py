"""The sweep runner: one run to one record, and a resumable sweep over a process pool or Dask.

:func:`execute` solves one :class:`~partopt.experiments.config.Run` and
returns its record; :func:`run_sweep` runs every run of a config that the
results file does not have yet, on a pool of worker processes on this
machine (which die with the sweep, however it ends) or on an existing Dask
distributed cluster, appending each record the moment its run finishes.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from partopt.errors import PartoptError
from partopt.experiments.config import ConfigError, Run, SweepConfig, check_registered
from partopt.experiments.instances import build_problem, chain_generator, load_structure
from partopt.experiments.records import (
    CLASS_OPTION_NAMES,
    SCHEMA,
    append_record,
    drop_records,
    json_info,
    json_value,
    lock_results,
    read_records,
    snapshot_path,
)

__all__ = [
    "HARD_LIMIT_S",
    "HardTimeLimit",
    "SchedulerError",
    "SweepSummary",
    "execute",
    "run_sweep",
]


class SchedulerError(PartoptError):
    """A Dask scheduler that cannot be used (not installed, not reachable)."""


# -- one run -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _versions(generator: str | None = None) -> dict:
    from importlib import metadata

    out: dict = {"python": platform.python_version()}
    for pkg in ("partopt", "numpy", "pyomo", "highspy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    if generator is not None:
        out["chain_generator"] = generator
    return out


@functools.lru_cache(maxsize=1)
def _machine() -> dict:
    return {
        "host": platform.node(),
        "platform": platform.platform(terse=True),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
    }


HARD_LIMIT_S = 600.0
"""A run that has not returned after this long (or 5 x its time limit, if more) is
stopped and recorded as an ``error``: a safety net for a solver that ignores its limit,
so that one run cannot stall a sweep. Not part of the run key."""


def _hard_limit_s(time_limit_s: float | None) -> float:
    return max(HARD_LIMIT_S, 5 * time_limit_s) if time_limit_s else HARD_LIMIT_S


class HardTimeLimit(Exception):
    """Raised inside a run that overran :data:`HARD_LIMIT_S`."""


@contextlib.contextmanager
def _hard_limit(seconds: float):
    """Raise :class:`HardTimeLimit` in this thread after ``seconds`` (main thread, POSIX only).

    ``solve`` turns the exception into a result with status ``error``.
    Elsewhere (Windows, Dask worker threads) there is no net.
    """
    if (
        not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def expire(signum, frame):
        raise HardTimeLimit(
            f"stopped by the sweep after {seconds:g} s (the solver overran its limit)"
        )

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _reset_process_state() -> None:
    """Forget what solvers keep across calls in a process.

    ``seifer-original`` reproduces the original's never-cleared partition
    memo with a process-wide memo; left alone, a record would depend on which
    runs its worker happened to do before. Each run starts clean instead; a
    run that should see the original's order says so in its options
    (``seifer-original``'s ``memo_history``).
    """
    seifer = sys.modules.get("partopt.solvers.seifer")
    if seifer is not None and hasattr(seifer, "clear_leaky_memo"):
        seifer.clear_leaky_memo()


def execute(run: Run) -> dict:
    """Solve one run and return its record (a JSON-ready dict).

    The record holds the instance's fields, the method, options and seed,
    the outcome (``status``, ``bottleneck_s``, ``lower_bound_s``, ``gap``
    against the run's own bound, ``stages``, the plan's cuts and nodes), what
    the report needs for the original study's "optimal" lower bound
    (``plan_max_transfer_bytes`` and ``max_bandwidth_mbps``), the instance's
    minimum number of stages (``min_stages``, 1 when the model fits one
    node), ``runtime_s``, versions and machine. Non-finite numbers are
    written as ``null``; ``status`` says why.

    For ``cuts = "dag"`` (a :class:`~partopt.dag.DagProblem`) ``num_blocks``
    counts operators, the plan's stages are ``plan_ops`` (operator indices
    per stage) instead of ``plan_cuts``, ``plan_max_transfer_bytes`` is the
    most bytes a stage sends (as :func:`partopt.plan.evaluate` charges them),
    ``min_stages`` is the fewest stages over the boundary states (``null``
    when the states were capped), and ``boundary_states`` and
    ``states_complete`` say how many states there were and whether that is all.
    """
    from partopt import solvers
    from partopt.feasibility import min_stages
    from partopt.solve import solve

    inst = run.instance
    started = time.time()
    t0 = time.perf_counter()
    problem = build_problem(inst, run.models_dir)
    options = dict(run.options)
    _reset_process_state()
    try:
        with _hard_limit(_hard_limit_s(run.time_limit_s)):
            result = solve(
                problem, run.method, time_limit_s=run.time_limit_s, seed=run.solver_seed, **options
            )
        status, error = result.status, result.info.get("error")
    except solvers.SolverRefused as exc:
        result, status, error = None, "error", f"refused: {exc}"
    wall = time.perf_counter() - t0

    cap_bytes = float(problem.cluster.memory_bytes.max())
    is_dag = hasattr(problem, "dag")
    need = _dag_min_stages(problem, cap_bytes) if is_dag else min_stages(problem, cap_bytes)
    rec: dict = {
        "schema": SCHEMA,
        "run_key": run.key,
        "instance_key": inst.key,
        "model": inst.model,
        "memory": inst.memory,
        "transfer": inst.transfer,
        "cuts": inst.cuts,
        "objective": inst.objective,
        "cluster": inst.cluster,
        "capacity_mb": inst.capacity_mb,
        "nodes": inst.num_nodes,
        "seed": inst.seed,
        "num_blocks": problem.dag.num_ops if is_dag else problem.num_blocks,
        "min_stages": int(need) if need is not None and math.isfinite(need) else None,
        "max_bandwidth_mbps": float(problem.cluster.bandwidth_mbps.max()),
        "method": run.method,
        "options": {k: json_value(v) for k, v in run.options},  # memo_history: a list
        "C": next((options[k] for k in CLASS_OPTION_NAMES if k in options), None),
        "solver_seed": run.solver_seed,
        "time_limit_s": run.time_limit_s,
        "status": status,
        "bottleneck_s": None,
        "lower_bound_s": None,
        "gap": None,
        "stages": None,
        "plan_cuts": None,
        "plan_nodes": None,
        "plan_max_transfer_bytes": None,
        "error": error,
        "info": {},
        "runtime_s": None if result is None else result.runtime_s,
        "wall_s": wall,
        "versions": _versions(chain_generator(inst.model)),
        "machine": _machine(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started + wall)),
    }
    if is_dag:
        rec["plan_ops"] = None
        rec["boundary_states"] = problem.states.num_states
        rec["states_complete"] = bool(problem.states.complete)
    if result is not None:
        rec["bottleneck_s"] = json_value(result.bottleneck_s)
        rec["lower_bound_s"] = json_value(result.lower_bound_s)
        rec["gap"] = json_value(result.gap)
        rec["info"] = json_info({k: v for k, v in result.info.items() if k != "error"})
        if result.plan is not None and is_dag:
            from partopt.plan import evaluate

            sent = [st.transfer_bytes for st in evaluate(problem, result.plan).stages]
            rec["stages"] = result.plan.num_stages
            rec["plan_ops"] = [list(st.ops) for st in result.plan.stages]
            rec["plan_nodes"] = list(result.plan.nodes)
            rec["plan_max_transfer_bytes"] = float(max(sent[:-1], default=0.0))
        elif result.plan is not None:
            cuts = list(result.plan.cuts)
            rec["stages"] = result.plan.num_stages
            rec["plan_cuts"] = cuts
            rec["plan_nodes"] = list(result.plan.nodes)
            rec["plan_max_transfer_bytes"] = (
                float(problem.transfer_bytes[cuts].max()) if cuts else 0.0
            )
    return rec


def _dag_min_stages(problem, capacity_bytes: float) -> float | None:
    """Fewest stages of a DAG problem whose memories fit ``capacity_bytes``; ``inf`` if none.

    A shortest path over the boundary states (ideals, numbered by size, so
    every stage goes to a higher number); ``None`` when the states were
    capped, since a missing state might shorten the path.
    """
    import numpy as np

    states = problem.states
    if not states.complete:
        return None
    fits = states.pair_memory <= capacity_bytes * (1 + 1e-9)
    dist = np.full(states.num_states, math.inf)
    dist[0] = 0.0
    for k in range(states.num_states):
        if math.isfinite(dist[k]):
            for q in states.pairs_from[k]:
                if fits[q]:
                    t = int(states.pair_end[q])
                    dist[t] = min(dist[t], dist[k] + 1.0)
    return float(dist[-1])


def _execute_safely(run: Run) -> tuple[dict | None, str | None]:
    """``execute`` that reports a harness failure (not a solver's) as a message."""
    try:
        return execute(run), None
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - reported once per run, the sweep goes on
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return None, f"{run.key}: {last}"


# -- the sweep -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return (out.stdout.strip() or None) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
PARENT_POLL_S = 1.0
"""How often a pool worker checks that the sweep that started it is still there (seconds)."""


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)  # the sweep is gone: nobody will read what this worker would write


def _die_with_parent(parent_pid: int) -> None:
    """Pool worker initializer: end this worker when the sweep process ends.

    A killed sweep (SIGKILL, SIGTERM) cannot shut its pool down, and idle or
    busy workers would otherwise live on for as long as their run takes,
    holding the caller's pipes. On Linux the kernel sends SIGKILL the moment
    the parent dies (``PR_SET_PDEATHSIG``); everywhere a daemon thread also
    polls the parent id, which changes when the worker is orphaned.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # died before the death signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _pool_results(runs: list[Run], jobs: int) -> Iterator[tuple[dict | None, str | None]]:
    if jobs <= 1:
        for run in runs:
            yield _execute_safely(run)
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # spawn, not fork: fork would copy the parent's tqdm and solver state. Not forkserver:
    # its workers are the fork server's children, so they could not watch the sweep itself.
    ctx = multiprocessing.get_context("spawn")
    pending: set = set()
    todo = iter(runs)
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=ctx,
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        for run in itertools.islice(todo, 4 * jobs):
            pending.add(pool.submit(_execute_safely, run))
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.add(pool.submit(_execute_safely, nxt))


def _dask_results(runs: list[Run], address: str) -> Iterator[tuple[dict | None, str | None]]:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise SchedulerError(
            "--scheduler needs dask.distributed: pip install 'dask[distributed]'"
        ) from None
    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise SchedulerError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    try:
        window = max(8, 4 * sum(client.nthreads().values()))
        todo = iter(runs)
        futures = [
            client.submit(_execute_safely, r, key=f"partopt-{i}-{r.key}", pure=False)
            for i, r in enumerate(itertools.islice(todo, window))
        ]
        submitted = len(futures)
        ac = as_completed(futures)
        for fut in ac:
            yield fut.result()
            fut.release()
            nxt = next(todo, None)
            if nxt is not None:
                ac.add(
                    client.submit(
                        _execute_safely, nxt, key=f"partopt-{submitted}-{nxt.key}", pure=False
                    )
                )
                submitted += 1
    finally:
        client.close()


@dataclass
class SweepSummary:
    """What :func:`run_sweep` did."""

    total: int
    already: int
    ran: int
    statuses: Counter
    failures: list[str]
    seconds: float
    results: Path

    def line(self) -> str:
        st = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items())) or "nothing new"
        msg = (
            f"{self.results}: {self.ran} runs in {self.seconds:.1f} s ({st}); "
            f"{self.already} already done, {self.total} in the sweep"
        )
        if self.failures:
            msg += f"; {len(self.failures)} runs failed and were not recorded"
        return msg


def run_sweep(
    config: SweepConfig,
    out: str | Path | None = None,
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
    limit: int | None = None,
    methods: Iterable[str] | None = None,
    redo: Iterable[str] = (),
    progress: bool = True,
) -> SweepSummary:
    """Run every run of ``config`` not yet in the results file, appending records.

    Parameters
    ----------
    config
        A loaded config (:func:`load_config`).
    out
        Results file (JSON lines); defaults to the config's ``results``.
    jobs
        Worker processes on this machine (default: all cores; 1 runs in
        this process).
    scheduler
        Address of a Dask distributed scheduler; runs go there instead.
    limit
        Run at most this many new runs (the rest stay for the next call).
    methods
        Only runs of these methods.
    redo
        Methods whose records of this sweep are dropped from the results
        file first and run again (after a solver changed).
    progress
        Show a tqdm progress bar (runs done, rate, ETA) on stderr.

    Runs that fail in the harness itself (not in a solver: a solver's error
    is a record with status ``error``) are not recorded, so the next call
    retries them; their messages are in the summary.
    """
    out = Path(out) if out is not None else config.results
    if out is None:
        raise ConfigError(f"config {config.name!r} names no results file; give --out FILE")
    runs = config.runs
    if methods is not None:
        methods = list(methods)
        if not methods:
            raise ConfigError(
                f"no methods given; choose some of config {config.name!r}'s: "
                f"{', '.join(config.methods)}"
            )
        missing = [m for m in methods if m not in config.methods]
        if missing:
            raise ConfigError(
                f"method {missing[0]!r} is not in config {config.name!r} "
                f"(it has {', '.join(config.methods)})"
            )
        runs = [r for r in runs if r.method in methods]
    check_registered(r.method for r in runs)
    redo = set(redo)
    unknown = redo - set(config.methods)
    if unknown:
        raise ConfigError(f"--redo {sorted(unknown)[0]!r}: not a method of config {config.name!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    snapshot = snapshot_path(out)
    fresh = not out.exists() and snapshot.exists()
    read_records(out)  # refuse a file that is not a results file before touching it
    with lock_results(out) as fd:
        if fresh and os.fstat(fd).st_size == 0:
            # a fresh clone has only the committed snapshot: resume from it
            import gzip

            os.write(fd, gzip.decompress(snapshot.read_bytes()))
        existing = read_records(out, repair=True)
        if redo:
            ours = {r.key for r in config.runs if r.method in redo}
            existing = drop_records(out, existing, ours)
        done = {r["run_key"] for r in existing}
        todo = [r for r in runs if r.key not in done]
        already = len(runs) - len(todo)
        if limit is not None:
            todo = todo[: max(0, limit)]
        if scheduler is None:
            # check every model once here: a missing file is a config error, not 10,000 failures
            for model, cuts, mdir in dict.fromkeys(
                (r.instance.model, r.instance.cuts, r.models_dir) for r in todo
            ):
                load_structure(model, cuts, mdir)
        start = time.perf_counter()
        statuses, failures = _record_all(fd, config.name, todo, jobs, scheduler, progress)
    return SweepSummary(
        len(runs), already, len(todo), statuses, failures, time.perf_counter() - start, out
    )


def _record_all(
    fd: int,
    name: str,
    todo: list[Run],
    jobs: int | None,
    scheduler: str | None,
    progress: bool,
) -> tuple[Counter, list[str]]:
    """Run ``todo`` and append each record to ``fd`` as it comes; the statuses and failures."""
    commit = _git_commit()
    statuses: Counter = Counter()
    failures: list[str] = []
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(
            total=len(todo),
            desc=name,
            unit="run",
            smoothing=0.05,
            dynamic_ncols=True,
            file=sys.stderr,
        )
    results = (
        _dask_results(todo, scheduler)
        if scheduler is not None
        else _pool_results(todo, (os.cpu_count() or 1) if jobs is None else jobs)
    )
    try:
        for rec, failure in results:
            if rec is not None:
                rec["sweep"] = name
                rec["versions"] = {**rec["versions"], "partopt_commit": commit}
                append_record(fd, rec)
                statuses[rec["status"]] += 1
            elif failure is not None:
                failures.append(failure)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(
                    " ".join(f"{k}={v}" for k, v in sorted(statuses.items()))
                    + (f" failed={len(failures)}" if failures else ""),
                    refresh=False,
                )
    finally:
        if bar is not None:
            bar.close()
    return statuses, failures
