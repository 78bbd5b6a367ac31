"""Experiment sweeps: configs, deterministic instances, a resumable runner.

A sweep config (TOML, or YAML of the same shape) names one or more *grids*;
each grid is the cross product of models, memory and transfer models, cut
families, node capacities, node counts and cluster seeds, with a list of
methods to run on every instance of the grid::

    name = "smoke"
    results = "../results/smoke.jsonl"   # relative to the config file
    time_limit_s = 60                    # default limit per run (seconds)

    [[grid]]
    models = ["synthetic:1:8", "resnet50"]   # bundled models/NAME.onnx or synthetic:SEED:BLOCKS
    memory = ["peak"]                        # weights | peak | paper
    transfer = ["bytes"]                     # bytes | paper
    cuts = ["single"]                        # single | multi
    capacity_mb = [64, 128]
    nodes = [5, 10]
    seeds = { start = 0, count = 50 }        # or a list [0, 1, 2]
    cluster = "paper"                        # the original work's geometric generator
    methods = ["random", "exact", { name = "seifer", classes = [2, 20] }]

    [methods.exact]                          # options for a method in every grid
    time_limit_s = 10

Method options are passed to :func:`partopt.solve.solve` as keyword
arguments; a list-valued option gives one run per value (the bandwidth
classes ``C`` of ``seifer``). ``time_limit_s`` and ``solver_seeds`` (list;
default: the cluster seed) are not passed through as options.

The runner writes **one JSON record per (instance, method, options, solver
seed)**, appended to a JSON-lines file with one flushed ``write`` the moment
the run finishes. Every record carries a ``run_key``; a rerun reads the file,
skips runs it already has, and so resumes a killed sweep with nothing lost
and nothing duplicated (a line cut short by the kill is dropped and rerun).
Runs go to a process pool on this machine, or with ``scheduler=ADDRESS`` to
an existing Dask distributed cluster; the records are the same either way
except for :data:`TIMING_FIELDS`.

Examples
--------
>>> runs = expand({"grid": [{"models": ["synthetic:0:6"], "capacity_mb": [512],
...                          "nodes": [3], "seeds": [0, 1], "methods": ["random"]}]})
>>> [r.key for r in runs][0]
'synthetic:0:6|mem=peak|tr=bytes|cuts=single|obj=communication|cluster=paper|cap=512MB|N=3|seed=0|random|s=0'
>>> rec = execute(runs[0])
>>> rec["status"], rec["stages"] >= 1, rec["seed"], rec["nodes"]
('feasible', True, 0, 3)
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
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

import numpy as np

__all__ = [
    "SCHEMA",
    "TIMING_FIELDS",
    "Instance",
    "Run",
    "SweepConfig",
    "ConfigError",
    "load_config",
    "expand",
    "synthetic_chain",
    "build_problem",
    "execute",
    "read_records",
    "snapshot_path",
    "append_record",
    "strip_timings",
    "run_sweep",
]

SCHEMA = 1
"""Version of the record layout; bump when a field changes meaning."""

TIMING_FIELDS = ("runtime_s", "wall_s", "finished_at")
"""Record fields that differ between two runs of the same sweep."""

CLASS_OPTION_NAMES = ("classes", "num_classes", "bandwidth_classes", "C")
"""Method options that mean the number of bandwidth classes ``C`` (copied to ``record["C"]``)."""

_RESERVED_OPTIONS = ("name", "time_limit_s", "solver_seeds")
_GRID_KEYS = {
    "models",
    "memory",
    "transfer",
    "cuts",
    "capacity_mb",
    "nodes",
    "seeds",
    "cluster",
    "objective",
    "methods",
}
_TOP_KEYS = {"name", "description", "results", "time_limit_s", "models_dir", "grid", "methods"}
_CLUSTERS = ("paper",)
_CUTS = ("single", "multi", "keras")  # keras: the original's chain files


class ConfigError(ValueError):
    """A sweep config that cannot be run; the message says which key and why."""


# -- instances and runs ---------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    """One partitioning instance of a sweep: a model under chosen models on one cluster.

    ``capacity_mb`` is node memory in MB (2**20 bytes), ``num_nodes`` the
    cluster size N and ``seed`` the cluster generator's seed.
    """

    model: str
    memory: str
    transfer: str
    cuts: str
    objective: str
    cluster: str
    capacity_mb: float
    num_nodes: int
    seed: int

    @property
    def key(self) -> str:
        return (
            f"{self.model}|mem={self.memory}|tr={self.transfer}|cuts={self.cuts}"
            f"|obj={self.objective}|cluster={self.cluster}|cap={self.capacity_mb:g}MB"
            f"|N={self.num_nodes}|seed={self.seed}"
        )


@dataclass(frozen=True)
class Run:
    """One solver run: an instance, a method, its options and the solver's seed."""

    instance: Instance
    method: str
    options: tuple[tuple[str, object], ...] = ()
    solver_seed: int = 0
    time_limit_s: float | None = None
    models_dir: str | None = None

    @property
    def key(self) -> str:
        parts = [self.instance.key, self.method]
        parts += [f"{k}={_fmt_option(v)}" for k, v in self.options]
        if self.time_limit_s is not None:
            parts.append(f"tl={self.time_limit_s:g}")
        parts.append(f"s={self.solver_seed}")
        return "|".join(parts)


def _fmt_option(v) -> str:
    if isinstance(v, tuple):
        return "+".join(map(_fmt_option, v))
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass
class SweepConfig:
    """A loaded config: its name, default results file and the runs it expands to."""

    name: str
    runs: list[Run]
    results: Path | None = None
    path: Path | None = None
    methods: tuple[str, ...] = ()
    description: str = ""


# -- config loading -----------------------------------------------------------------------


def _read_config_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc.strerror}") from exc
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"config {str(path)!r} does not parse: {first}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config {str(path)!r} must be a table of keys (name, grid, methods)")
    return data


def _as_list(value, what: str) -> list:
    if isinstance(value, list | tuple):
        if not value:
            raise ConfigError(f"{what} is an empty list")
        return list(value)
    return [value]


def _seeds(value, what: str) -> list[int]:
    if isinstance(value, dict):
        unknown = set(value) - {"start", "count"}
        if unknown or "count" not in value:
            raise ConfigError(f"{what} must be a list or {{ start = S, count = K }}")
        start, count = value.get("start", 0), value["count"]
        if not isinstance(start, int) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"{what}: start and count must be integers, count >= 1")
        return list(range(start, start + count))
    seeds = _as_list(value, what)
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{what} must be integers")
    return seeds


def _method_entries(grid_methods, global_options: dict, what: str) -> list[tuple[str, dict]]:
    out = []
    for entry in _as_list(grid_methods, what):
        if isinstance(entry, str):
            name, local = entry, {}
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            name, local = entry["name"], {k: v for k, v in entry.items() if k != "name"}
        else:
            raise ConfigError(f"{what}: each method is a name or {{ name = ..., option = ... }}")
        opts = dict(global_options.get(name, {}))
        opts.update(local)
        out.append((name, opts))
    return out


def _option_runs(opts: dict, what: str) -> list[tuple[tuple[str, object], ...]]:
    """Expand list-valued options into their cross product (keys sorted)."""
    keys = sorted(k for k in opts if k not in _RESERVED_OPTIONS)
    values = []
    for k in keys:
        v = opts[k]
        vals = _as_list(v, f"{what} option {k}")
        for x in vals:
            if not isinstance(x, str | int | float | bool):
                raise ConfigError(f"{what} option {k}: values must be numbers, strings or booleans")
        values.append(vals)
    return [tuple(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def _check_models(models: list, memory: list, transfer: list, cuts: list, what: str) -> None:
    from partopt.chain import MEMORY_MODELS, TRANSFER_MODELS

    for m in models:
        if not isinstance(m, str) or not m:
            raise ConfigError(
                f"{what}.models: each model is a name (resnet50) or synthetic:SEED:BLOCKS"
            )
        if m.startswith("synthetic:"):
            _parse_synthetic(m)
    for x in memory:
        if x not in MEMORY_MODELS:
            raise ConfigError(
                f"{what}.memory: unknown memory model {x!r}; choose from {MEMORY_MODELS}"
            )
    for x in transfer:
        if x not in TRANSFER_MODELS:
            raise ConfigError(
                f"{what}.transfer: unknown transfer model {x!r}; choose from {TRANSFER_MODELS}"
            )
    for x in cuts:
        if x not in _CUTS:
            raise ConfigError(f"{what}.cuts: unknown cut family {x!r}; choose from {_CUTS}")


def _check_registered(methods: Iterable[str]) -> None:
    from partopt import solvers

    registered = solvers.available()
    for name in methods:
        if name not in registered:
            raise ConfigError(
                f"method {name!r} is not registered; available: {', '.join(registered)}"
            )


def expand(data: dict, *, models_dir: str | None = None, check_methods: bool = True) -> list[Run]:
    """All runs of a parsed config, in a deterministic order, without duplicates.

    Raises :class:`ConfigError` for a malformed config or (with
    ``check_methods``) a method that is not registered.
    """
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(
            f"unknown config key {sorted(unknown)[0]!r}; known: {', '.join(sorted(_TOP_KEYS))}"
        )
    grids = data.get("grid")
    if isinstance(grids, dict):
        grids = [grids]
    if not grids or not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids):
        raise ConfigError("config needs at least one [[grid]] table")
    global_options = data.get("methods", {})
    if not isinstance(global_options, dict) or not all(
        isinstance(v, dict) for v in global_options.values()
    ):
        raise ConfigError("[methods.NAME] must be tables of options")
    default_tl = data.get("time_limit_s")

    runs: list[Run] = []
    seen: set[str] = set()
    for gi, grid in enumerate(grids):
        what = f"grid[{gi}]"
        unknown = set(grid) - _GRID_KEYS
        if unknown:
            raise ConfigError(
                f"{what}: unknown key {sorted(unknown)[0]!r}; known: {', '.join(sorted(_GRID_KEYS))}"
            )
        for key in ("models", "capacity_mb", "nodes", "methods"):
            if key not in grid:
                raise ConfigError(f"{what} needs {key!r}")
        models = _as_list(grid["models"], f"{what}.models")
        memory = _as_list(grid.get("memory", "peak"), f"{what}.memory")
        transfer = _as_list(grid.get("transfer", "bytes"), f"{what}.transfer")
        cuts = _as_list(grid.get("cuts", "single"), f"{what}.cuts")
        _check_models(models, memory, transfer, cuts, what)
        caps = _as_list(grid["capacity_mb"], f"{what}.capacity_mb")
        if not all(isinstance(c, int | float) and not isinstance(c, bool) and c > 0 for c in caps):
            raise ConfigError(f"{what}.capacity_mb must be positive numbers (MB = 2**20 bytes)")
        nodes = _as_list(grid["nodes"], f"{what}.nodes")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in nodes):
            raise ConfigError(f"{what}.nodes must be integers >= 1")
        seeds = _seeds(grid.get("seeds", [0]), f"{what}.seeds")
        cluster = grid.get("cluster", "paper")
        if cluster not in _CLUSTERS:
            raise ConfigError(
                f"{what}.cluster: unknown generator {cluster!r}; choose from {_CLUSTERS}"
            )
        objective = grid.get("objective", "communication")
        if objective != "communication":
            # the paper clusters have no compute speeds, so 'max' has nothing to add
            raise ConfigError(
                f"{what}.objective: sweeps support 'communication' only, got {objective!r}"
            )
        methods = _method_entries(grid["methods"], global_options, f"{what}.methods")
        if check_methods:
            _check_registered(name for name, _ in methods)
        for model, mem, tr, cut, cap, n, seed in itertools.product(
            models, memory, transfer, cuts, caps, nodes, seeds
        ):
            inst = Instance(model, mem, tr, cut, objective, cluster, float(cap), int(n), int(seed))
            for name, opts in methods:
                tl = opts.get("time_limit_s", default_tl)
                if tl is not None and not (isinstance(tl, int | float) and tl > 0):
                    raise ConfigError(f"{what}: {name}.time_limit_s must be a positive number")
                solver_seeds = (
                    _seeds(opts["solver_seeds"], f"{name}.solver_seeds")
                    if "solver_seeds" in opts
                    else [inst.seed]
                )
                for options in _option_runs(opts, f"{what}.{name}"):
                    options = _with_memo_history(options, inst.capacity_mb, caps, what)
                    for s in solver_seeds:
                        run = Run(
                            inst,
                            name,
                            options,
                            int(s),
                            None if tl is None else float(tl),
                            models_dir,
                        )
                        if run.key not in seen:
                            seen.add(run.key)
                            runs.append(run)
    return runs


def _with_memo_history(options: tuple, capacity_mb: float, grid_caps: list, what: str) -> tuple:
    """Resolve ``memo_history = "ascending"``: the grid's capacities below this run's."""
    opts = dict(options)
    if "memo_history" not in opts:
        return options
    if opts["memo_history"] != "ascending":
        raise ConfigError(f'{what}: memo_history must be "ascending" (the original loop order)')
    history = tuple(float(c) for c in sorted(grid_caps) if c < capacity_mb)
    if history:
        opts["memo_history"] = history
    else:
        del opts["memo_history"]  # the first capacity starts with an empty memo: no history
    return tuple(sorted(opts.items()))


def load_config(path: str | Path, *, check_methods: bool = True) -> SweepConfig:
    """Read a sweep config file (``.toml``, ``.yaml`` or ``.yml``) and expand it.

    Relative paths in the config (``results``, ``models_dir``) are relative
    to the config file.
    """
    path = Path(path)
    data = _read_config_file(path)
    base = path.resolve().parent
    models_dir = data.get("models_dir")
    if models_dir is not None:
        models_dir = str((base / models_dir).resolve())
    runs = expand(data, models_dir=models_dir, check_methods=check_methods)
    results = data.get("results")
    methods = tuple(dict.fromkeys(r.method for r in runs))
    return SweepConfig(
        name=str(data.get("name", path.stem)),
        runs=runs,
        results=None if results is None else (base / results).resolve(),
        path=path,
        methods=methods,
        description=str(data.get("description", "")),
    )


# -- chains and problems ------------------------------------------------------------------


def _parse_synthetic(spec: str) -> tuple[int, int]:
    parts = spec.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        seed, blocks = int(parts[1]), int(parts[2])
        if blocks < 1:
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"synthetic model {spec!r}: write synthetic:SEED:BLOCKS (integers, BLOCKS >= 1)"
        ) from None
    return seed, blocks


def synthetic_chain(seed: int, num_blocks: int):
    """A random chain shaped like an image DNN's (deterministic in ``seed``).

    About 100 MB of parameters in total (a factor of 2 either way), spread
    unevenly over the blocks; per-block peak activations of 0.5–8 MB;
    transfers log-uniform between 30 kB and 6 MB, shrinking on average
    towards the output as in convolutional networks. All memory models
    agree except ``peak``, which adds the activations.

    Examples
    --------
    >>> c = synthetic_chain(0, 10)
    >>> c.num_blocks, c.name, bool(np.all(synthetic_chain(0, 10).transfer_bytes == c.transfer_bytes))
    (10, 'synthetic:0:10', True)
    """
    from partopt.chain import Chain

    rng = np.random.default_rng([seed, num_blocks])
    total = 100 * 2**20 * 2.0 ** rng.uniform(-1, 1)
    params = rng.dirichlet(np.full(num_blocks, 0.7)) * total
    act = rng.uniform(0.5, 8.0, num_blocks) * 2**20
    depth = np.linspace(0.0, 1.0, max(num_blocks - 1, 1))[: num_blocks - 1]
    log_t = rng.uniform(4.5, 6.8, num_blocks - 1) - 0.8 * depth
    transfer = np.round(10.0**log_t)
    return Chain.from_arrays(
        np.round(params),
        transfer,
        activation_bytes=np.round(act),
        name=f"synthetic:{seed}:{num_blocks}",
    )


def _default_models_dir() -> Path:
    here = Path(__file__).resolve().parent.parent / "models"
    return here if here.is_dir() else Path.cwd() / "models"


def _model_path(model: str, models_dir: str | None) -> Path:
    if model.endswith(".onnx") or "/" in model or os.sep in model:
        p = Path(model)
        if not p.is_absolute() and models_dir is not None and not p.exists():
            p = Path(models_dir) / p
        return p
    return Path(models_dir) if models_dir is not None else _default_models_dir()


@functools.lru_cache(maxsize=32)
def _load_chain(model: str, cuts: str, models_dir: str | None):
    if model.startswith("synthetic:"):
        seed, blocks = _parse_synthetic(model)
        return synthetic_chain(seed, blocks)
    path = _model_path(model, models_dir)
    if path.is_dir():
        path = path / f"{model}.onnx"
    if not path.exists():
        raise ConfigError(f"model {model!r}: no file {str(path)!r}")
    from partopt import chain as chain_mod

    if hasattr(chain_mod, "load_chain"):
        return chain_mod.load_chain(path, cuts=cuts)
    from partopt.onnx_graph import load_graph  # before load_chain existed

    return chain_mod.build_chain(load_graph(path), cuts=cuts)


def build_problem(instance: Instance, models_dir: str | None = None):
    """The :class:`~partopt.problem.Problem` of an instance (chains are cached per process)."""
    from partopt.cluster import paper_cluster
    from partopt.problem import Problem

    chain = _load_chain(instance.model, instance.cuts, models_dir)
    cluster = paper_cluster(instance.num_nodes, instance.capacity_mb, instance.seed)
    return Problem(
        chain,
        cluster,
        memory=instance.memory,
        transfer=instance.transfer,
        objective=instance.objective,
    )


# -- one run -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("partopt", "numpy", "pyomo", "highspy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


@functools.lru_cache(maxsize=1)
def _machine() -> dict:
    return {
        "host": platform.node(),
        "platform": platform.platform(terse=True),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
    }


def _json_value(v):
    """``v`` as plain JSON (non-finite floats become None), or raise TypeError."""
    if isinstance(v, bool | str) or v is None:
        return v
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    raise TypeError(type(v).__name__)


def _json_info(info: dict) -> dict:
    out = {}
    for k, v in info.items():
        try:
            out[str(k)] = _json_value(v)
        except TypeError:
            continue  # solver internals that are not data (objects, arrays) stay out
    return out


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
    runs its worker happened to do before. Each run starts clean instead, and
    the original's order is replayed explicitly (:func:`_leaky_memo`).
    """
    seifer = sys.modules.get("partopt.solvers.seifer")
    if seifer is not None and hasattr(seifer, "clear_leaky_memo"):
        seifer.clear_leaky_memo()


def _leaky_memo(
    instance: Instance, history_mb: tuple, models_dir: str | None, skip_block_memory="after"
) -> dict:
    """The original's partition memo after solving ``instance``'s model at the capacities
    ``history_mb`` in turn (it never cleared its memo, so these leak into the next one).

    The memo ignores the stage limit and the cluster, so the node count and
    seed of the replayed calls do not matter.
    """
    from dataclasses import replace

    from partopt.cluster import MB
    from partopt.partition import original_min_sum_partition

    memo: dict = {}
    for cap in history_mb:
        problem = build_problem(replace(instance, capacity_mb=float(cap)), models_dir)
        original_min_sum_partition(
            problem,
            float(cap) * MB,
            problem.num_nodes,
            memo=memo,
            skip_block_memory=skip_block_memory,
        )
    return memo


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
    if "memo_history" in options:
        # the replayed calls charge memory as the run itself will (the original's skip)
        skip = options.get("skip_block_memory", "after")
        options["leaky_memo"] = _leaky_memo(inst, options.pop("memo_history"), run.models_dir, skip)
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
    need = min_stages(problem, cap_bytes)
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
        "num_blocks": problem.num_blocks,
        "min_stages": int(need) if math.isfinite(need) else None,
        "max_bandwidth_mbps": float(problem.cluster.bandwidth_mbps.max()),
        "method": run.method,
        "options": {k: _json_value(v) for k, v in run.options},  # memo_history: a list
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
        "versions": _versions(),
        "machine": _machine(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started + wall)),
    }
    if result is not None:
        rec["bottleneck_s"] = _json_value(result.bottleneck_s)
        rec["lower_bound_s"] = _json_value(result.lower_bound_s)
        rec["gap"] = _json_value(result.gap)
        rec["info"] = _json_info({k: v for k, v in result.info.items() if k != "error"})
        if result.plan is not None:
            cuts = list(result.plan.cuts)
            rec["stages"] = result.plan.num_stages
            rec["plan_cuts"] = cuts
            rec["plan_nodes"] = list(result.plan.nodes)
            rec["plan_max_transfer_bytes"] = (
                float(problem.transfer_bytes[cuts].max()) if cuts else 0.0
            )
    return rec


def _execute_safely(run: Run) -> tuple[dict | None, str | None]:
    """``execute`` that reports a harness failure (not a solver's) as a message."""
    try:
        return execute(run), None
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - reported once per run, the sweep goes on
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return None, f"{run.key}: {last}"


# -- the results file -------------------------------------------------------------------------


def _json_loads():
    """``(loads, error types)``: orjson's when installed (reports read 10^5 records), else json's."""
    try:
        import orjson

        return orjson.loads, (orjson.JSONDecodeError,)
    except ImportError:
        return json.loads, (json.JSONDecodeError,)


def snapshot_path(path: str | Path) -> Path:
    """The committed, gzip-compressed copy of a results file: ``NAME.jsonl.gz``."""
    path = Path(path)
    return path.with_name(path.name + ".gz")


def read_records(path: str | Path, *, repair: bool = False) -> list[dict]:
    """Records of a JSON-lines results file, plain or ``.gz`` (``[]`` if it does not exist).

    A last line without its newline is what a killed writer leaves: it is
    ignored, and with ``repair`` cut off the file so that appending can
    go on. A malformed line elsewhere raises :class:`ValueError`.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    if path.suffix == ".gz":
        import gzip

        data, repair = gzip.decompress(data), False
    complete = data.rfind(b"\n") + 1
    if repair and complete < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(complete)
    loads, errors = _json_loads()
    records = []
    for lineno, line in enumerate(data[:complete].splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = loads(line)
        except errors as exc:
            raise ValueError(f"{path}:{lineno}: not a JSON record ({exc})") from None
        if not isinstance(rec, dict) or "run_key" not in rec:
            raise ValueError(f"{path}:{lineno}: record has no run_key")
        records.append(rec)
    return records


def _drop_records(path: Path, records: list[dict], keys: set[str]) -> list[dict]:
    """Rewrite ``path`` without the records whose run key is in ``keys`` (atomically)."""
    keep = [r for r in records if r["run_key"] not in keys]
    if len(keep) == len(records):
        return records
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        for r in keep:
            fh.write(json.dumps(r, allow_nan=False, separators=(",", ":")) + "\n")
    os.replace(tmp, path)
    return keep


def append_record(fd: int, record: dict) -> None:
    """Append one record to an ``O_APPEND`` file descriptor in a single ``write``."""
    line = (json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n").encode()
    written = os.write(fd, line)
    if written != len(line):  # a short write: finish it, so the line is whole
        view = memoryview(line)[written:]
        while view:
            view = view[os.write(fd, view) :]


def strip_timings(record: dict) -> dict:
    """The record without the fields that differ between identical runs.

    Those are :data:`TIMING_FIELDS` and solver details about time (info keys
    with ``time`` in their name, such as ``timed_out``).
    """
    out = {k: v for k, v in record.items() if k not in TIMING_FIELDS}
    out["info"] = {k: v for k, v in record.get("info", {}).items() if "time" not in k}
    return out


# -- the runner -------------------------------------------------------------------------------


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


def _pool_results(runs: list[Run], jobs: int) -> Iterator[tuple[dict | None, str | None]]:
    if jobs <= 1:
        for run in runs:
            yield _execute_safely(run)
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # fork would copy the parent's tqdm and solver state; spawn is the same everywhere
    ctx = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
    pending: set = set()
    todo = iter(runs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
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
        raise ValueError(
            "--scheduler needs dask.distributed: pip install 'dask[distributed]'"
        ) from None
    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
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
        raise ValueError(f"config {config.name!r} names no results file; give --out FILE")
    runs = config.runs
    if methods is not None:
        methods = list(methods)
        missing = [m for m in methods if m not in config.methods]
        if missing:
            raise ValueError(
                f"method {missing[0]!r} is not in config {config.name!r} "
                f"(it has {', '.join(config.methods)})"
            )
        runs = [r for r in runs if r.method in methods]
    _check_registered(r.method for r in runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    snapshot = snapshot_path(out)
    if not out.exists() and snapshot.exists():
        # a fresh clone has only the committed snapshot: resume from it
        import gzip

        out.write_bytes(gzip.decompress(snapshot.read_bytes()))
    existing = read_records(out, repair=True)
    redo = set(redo)
    if redo:
        unknown = redo - set(config.methods)
        if unknown:
            raise ValueError(
                f"--redo {sorted(unknown)[0]!r}: not a method of config {config.name!r}"
            )
        ours = {r.key for r in config.runs if r.method in redo}
        existing = _drop_records(out, existing, ours)
    done = {r["run_key"] for r in existing}
    todo = [r for r in runs if r.key not in done]
    already = len(runs) - len(todo)
    if limit is not None:
        todo = todo[: max(0, limit)]
    if scheduler is None:
        # check every model once here: a missing file is a config error, not 10,000 failed runs
        for model, cuts, mdir in dict.fromkeys(
            (r.instance.model, r.instance.cuts, r.models_dir) for r in todo
        ):
            _load_chain(model, cuts, mdir)

    commit = _git_commit()
    statuses: Counter = Counter()
    failures: list[str] = []
    start = time.perf_counter()
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(
            total=len(todo),
            desc=config.name,
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
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for rec, failure in results:
            if rec is not None:
                rec["sweep"] = config.name
                rec["versions"] = {**rec["versions"], "partopt_commit": commit}
                append_record(fd, rec)
                statuses[rec["status"]] += 1
            else:
                failures.append(failure)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(
                    " ".join(f"{k}={v}" for k, v in sorted(statuses.items()))
                    + (f" failed={len(failures)}" if failures else ""),
                    refresh=False,
                )
    finally:
        os.close(fd)
        if bar is not None:
            bar.close()
    return SweepSummary(
        len(runs), already, len(todo), statuses, failures, time.perf_counter() - start, out
    )
