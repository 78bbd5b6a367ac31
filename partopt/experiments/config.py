"""Sweep configs: reading, validating and expanding them into runs.

A sweep config (TOML, or YAML of the same shape) names one or more *grids*;
each grid is the cross product of models, memory and transfer models, cut
families, node capacities, node counts and cluster seeds, with a list of
methods to run on every instance of the grid (see :mod:`partopt.experiments`
for an example). Everything is checked here, before the first run: keys,
values, sizes, and every method option against the method's signature, so
that a typo is one line of error and not a sweep of error records.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from partopt.errors import PartoptError, first_line

__all__ = [
    "MAX_NODES",
    "MAX_SYNTHETIC_BLOCKS",
    "ConfigError",
    "Instance",
    "Run",
    "SweepConfig",
    "parse_synthetic",
    "check_registered",
    "method_options",
    "expand",
    "load_config",
]

MAX_NODES = 5000
"""Largest cluster a sweep builds: its N x N bandwidth and distance matrices take
16 N^2 bytes (400 MB at N = 5000), and every method needs more on top."""

MAX_SYNTHETIC_BLOCKS = 100_000
"""Longest synthetic chain a sweep builds (the bundled models have at most 714 blocks)."""

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
_CUTS = ("single", "multi", "keras", "dag")  # keras: the original's chain files; dag: ideals


class ConfigError(PartoptError):
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


def parse_synthetic(spec: str) -> tuple[int, int]:
    """``(SEED, BLOCKS)`` of a generated model's name ``synthetic:SEED:BLOCKS``
    (or ``resnetlike:SEED:BLOCKS``), checked against :data:`MAX_SYNTHETIC_BLOCKS`."""
    parts = spec.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        seed, blocks = int(parts[1]), int(parts[2])
        if blocks < 1:
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"synthetic model {spec!r}: write {parts[0]}:SEED:BLOCKS (integers, BLOCKS >= 1)"
        ) from None
    if blocks > MAX_SYNTHETIC_BLOCKS:
        raise ConfigError(
            f"synthetic model {spec!r}: {blocks:,} blocks is more than a sweep builds "
            f"(at most {MAX_SYNTHETIC_BLOCKS:,}; its arrays alone would take "
            f"{32 * blocks / 2**30:.1f} GiB); use fewer blocks"
        )
    return seed, blocks


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
        raise ConfigError(f"config {str(path)!r} does not parse: {first_line(exc)}") from exc
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
                f"{what}.models: each model is a name (resnet50), synthetic:SEED:BLOCKS "
                "or resnetlike:SEED:BLOCKS"
            )
        if m.startswith(("synthetic:", "resnetlike:")):
            parse_synthetic(m)
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
    if "dag" in cuts and any(t != "bytes" for t in transfer):
        raise ConfigError(
            f"{what}: cuts 'dag' charges the tensors' bytes; give transfer 'bytes' only "
            "(or put the DAG runs in a grid entry of their own)"
        )


def check_registered(methods: Iterable[str]) -> None:
    from partopt import solvers

    registered = solvers.available()
    for name in methods:
        if name not in registered:
            raise ConfigError(
                f"method {name!r} is not registered; available: {', '.join(registered)}"
            )


def method_options(name: str) -> tuple[str, ...] | None:
    """The options a sweep may give method ``name``, sorted (``None``: not registered here).

    They are the keyword options of the method's solver function
    (:func:`partopt.solvers.option_names`, the set :func:`partopt.solve.solve`
    accepts); ``time_limit_s`` and ``solver_seeds`` are the sweep's own.
    """
    from partopt import solvers

    if name not in solvers.available():
        return None
    return tuple(sorted(solvers.option_names(name)))


def _check_options(name: str, opts: dict, what: str) -> None:
    known = method_options(name)
    if known is None:  # an unregistered method is refused when (if) it is run
        return
    for option in opts:
        if option not in known and option not in _RESERVED_OPTIONS:
            takes = ", ".join(known + ("time_limit_s", "solver_seeds"))
            raise ConfigError(f"{what}: {name} has no option {option!r}; it takes {takes}")


def _check_time_limit(tl: object, what: str) -> None:
    if tl is None:
        return
    if isinstance(tl, bool) or not isinstance(tl, int | float) or not tl > 0:
        raise ConfigError(f"{what} must be a positive number of seconds, got {tl!r}")
    if not math.isfinite(tl):
        raise ConfigError(f"{what} = {tl!r}: leave time_limit_s out for no limit")


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
        if max(nodes) > MAX_NODES:
            n = max(nodes)
            raise ConfigError(
                f"{what}.nodes: a cluster of {n:,} nodes is more than a sweep builds "
                f"(at most {MAX_NODES:,}; its N x N matrices alone would take "
                f"{16 * n * n / 2**30:.1f} GiB); use at most {MAX_NODES:,} nodes"
            )
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
            check_registered(name for name, _ in methods)
        for name, opts in methods:
            _check_options(name, opts, f"{what}.methods")
        for model, mem, tr, cut, cap, n, seed in itertools.product(
            models, memory, transfer, cuts, caps, nodes, seeds
        ):
            inst = Instance(model, mem, tr, cut, objective, cluster, float(cap), int(n), int(seed))
            for name, opts in methods:
                tl = opts.get("time_limit_s", default_tl)
                _check_time_limit(tl, f"{what}: {name}.time_limit_s")
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
