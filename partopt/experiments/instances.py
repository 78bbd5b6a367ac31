"""The instances of a sweep: chains (bundled models, synthetic chains) on generated clusters.

Every model name means one chain per cut family; with ``cuts = ["dag"]`` it
means the operator DAG of the model's layer graph instead
(:func:`partopt.dag.build_dag`; a generated chain's DAG is the chain itself),
and the instance is a :class:`~partopt.dag.DagProblem`. ``synthetic:SEED:BLOCKS`` is
:func:`synthetic_chain` (see :data:`GENERATOR_VERSIONS`); the
ResNet-like chains of the first exact-solver benchmark are a different
generator and carry a different name, ``resnetlike:SEED:BLOCKS``
(:func:`resnetlike_chain`). Chains are cached per process.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from partopt.experiments.config import ConfigError, Instance, parse_synthetic

__all__ = [
    "GENERATOR_VERSIONS",
    "chain_generator",
    "synthetic_chain",
    "resnetlike_chain",
    "load_chain",
    "load_dag",
    "load_structure",
    "build_problem",
]

GENERATOR_VERSIONS = {"synthetic": "synthetic-v1", "resnetlike": "resnetlike-v1"}
"""The generator behind each generated model family, recorded in the records of its
models (``versions["chain_generator"]``). If a generator ever changes, its models get
a new family name: a name always means the same chain."""


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


def resnetlike_chain(seed: int, num_blocks: int):
    """A ResNet-like chain: weights growing along it, activations shrinking (``resnetlike:``).

    About 100 MB (10^8 bytes) of parameters, geometrically from 40 kB to
    18 MB per block with +-20 % noise; block outputs shrinking from 3.2 MB
    to 0.4 MB (+-30 %), peak activation twice the output. This is the
    generator of the exact-solver benchmark's first scaling runs (whose
    committed rows name it ``resnetlike:SEED:BLOCKS``); it is not
    :func:`synthetic_chain`.

    Examples
    --------
    >>> c = resnetlike_chain(0, 50)
    >>> c.name, round(float(c.param_bytes.sum()) / 1e6)
    ('resnetlike:0:50', 100)
    """
    from partopt.chain import Chain

    rng = np.random.default_rng(seed)
    params = np.geomspace(4e4, 1.8e7, num_blocks) * rng.uniform(0.8, 1.2, num_blocks)
    params *= 100e6 / params.sum()
    outs = np.geomspace(3.2e6, 4e5, num_blocks) * rng.uniform(0.7, 1.3, num_blocks)
    return Chain.from_arrays(
        params, outs[:-1], activation_bytes=2 * outs, name=f"resnetlike:{seed}:{num_blocks}"
    )


_GENERATORS = {"synthetic": synthetic_chain, "resnetlike": resnetlike_chain}


def chain_generator(model: str) -> str | None:
    """The generator version of a generated model's name (``None`` for a model file)."""
    return GENERATOR_VERSIONS.get(model.split(":", 1)[0]) if ":" in model else None


def _default_models_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "models"
    return here if here.is_dir() else Path.cwd() / "models"


def _model_path(model: str, models_dir: str | None) -> Path:
    if model.endswith(".onnx") or "/" in model or os.sep in model:
        p = Path(model)
        if not p.is_absolute() and models_dir is not None and not p.exists():
            p = Path(models_dir) / p
        return p
    return Path(models_dir) if models_dir is not None else _default_models_dir()


@functools.lru_cache(maxsize=32)
def load_chain(model: str, cuts: str, models_dir: str | None):
    if model.split(":", 1)[0] in _GENERATORS:
        seed, blocks = parse_synthetic(model)
        return _GENERATORS[model.split(":", 1)[0]](seed, blocks)
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


@functools.lru_cache(maxsize=32)
def load_dag(model: str, models_dir: str | None):
    """The operator DAG of a model name (``cuts = ["dag"]``); cached per process."""
    from partopt.dag import Dag, build_dag

    if model.split(":", 1)[0] in _GENERATORS:
        return Dag.from_chain(load_chain(model, "single", models_dir))
    path = _model_path(model, models_dir)
    if path.is_dir():
        path = path / f"{model}.onnx"
    if not path.exists():
        raise ConfigError(f"model {model!r}: no file {str(path)!r}")
    from partopt.onnx_graph import load_graph

    return build_dag(load_graph(path))


def load_structure(model: str, cuts: str, models_dir: str | None):
    """What a sweep partitions for ``(model, cuts)``: the DAG for ``dag``, else the chain."""
    if cuts == "dag":
        return load_dag(model, models_dir)
    return load_chain(model, cuts, models_dir)


def build_problem(instance: Instance, models_dir: str | None = None):
    """The :class:`~partopt.problem.Problem` of an instance, or a
    :class:`~partopt.dag.DagProblem` for ``cuts = "dag"`` (models are cached per process)."""
    from partopt.cluster import paper_cluster
    from partopt.problem import Problem

    cluster = paper_cluster(instance.num_nodes, instance.capacity_mb, instance.seed)
    if instance.cuts == "dag":
        from partopt.dag import DagProblem

        return DagProblem(
            load_dag(instance.model, models_dir),
            cluster,
            memory=instance.memory,
            objective=instance.objective,
        )
    chain = load_chain(instance.model, instance.cuts, models_dir)
    return Problem(
        chain,
        cluster,
        memory=instance.memory,
        transfer=instance.transfer,
        objective=instance.objective,
    )
