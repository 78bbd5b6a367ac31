"""Experiment sweeps: configs, deterministic instances, a resumable runner, records.

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
    methods = ["random", "exact", { name = "seifer", num_classes = [2, 20] }]

    [methods.exact]                          # options for a method in every grid
    time_limit_s = 10

Method options are passed to :func:`partopt.solve.solve` as keyword
arguments and checked against the method's signature before anything runs;
a list-valued option gives one run per value (the bandwidth classes ``C`` of
``seifer``). ``time_limit_s`` and ``solver_seeds`` (list; default: the
cluster seed) are not passed through as options.

The runner writes **one JSON record per (instance, method, options, solver
seed)**, appended to a JSON-lines file with one flushed ``write`` the moment
the run finishes. Every record carries a ``run_key``; a rerun reads the file,
skips runs it already has, and so resumes a killed sweep with nothing lost
and nothing duplicated (a record cut short by the kill is dropped and rerun).
One sweep at a time writes a results file (a second one is refused). Runs go
to a process pool on this machine, or with ``scheduler=ADDRESS`` to an
existing Dask distributed cluster; the records are the same either way except
for :data:`TIMING_FIELDS`.

The package has one module per role, and data flows one way:
:mod:`~partopt.experiments.config` (reading and checking configs, runs),
:mod:`~partopt.experiments.instances` (chains and problems),
:mod:`~partopt.experiments.runner` (one run, the pool, Dask) and
:mod:`~partopt.experiments.records` (the record format and the results file,
which reports read without importing the runner). The names below are
re-exported lazily, so importing one module does not import the others.

Examples
--------
>>> from partopt.experiments import execute, expand
>>> runs = expand({"grid": [{"models": ["synthetic:0:6"], "capacity_mb": [512],
...                          "nodes": [3], "seeds": [0, 1], "methods": ["random"]}]})
>>> [r.key for r in runs][0]
'synthetic:0:6|mem=peak|tr=bytes|cuts=single|obj=communication|cluster=paper|cap=512MB|N=3|seed=0|random|s=0'
>>> rec = execute(runs[0])
>>> rec["status"], rec["stages"] >= 1, rec["seed"], rec["nodes"]
('feasible', True, 0, 3)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "config": ("ConfigError", "Instance", "Run", "SweepConfig", "expand", "load_config"),
    "instances": ("synthetic_chain", "resnetlike_chain", "build_problem"),
    "records": (
        "SCHEMA",
        "TIMING_FIELDS",
        "ResultsFileError",
        "read_records",
        "snapshot_path",
        "append_record",
        "strip_timings",
    ),
    "runner": ("HARD_LIMIT_S", "SweepSummary", "execute", "run_sweep"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'partopt.experiments' has no attribute {name!r}")
    return getattr(importlib.import_module(f"partopt.experiments.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
