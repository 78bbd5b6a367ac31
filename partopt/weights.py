"""Model weights: loading them from disk safely, and drawing random ones.

partopt plans without weights; running a model (the shape probe, the export
check, the emulator) needs them. :func:`load_model` reads an ONNX file with
its external data when that data is shipped next to it (and refuses data
that points outside the model's folder); :func:`random_weights` gives an
architecture-only model weights of the right shapes and dtypes, seeded.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from partopt.errors import PartoptError

__all__ = [
    "WeightsError",
    "external_locations",
    "load_model",
    "load_external_weights",
    "missing_weights",
    "random_weights",
]


class WeightsError(PartoptError):
    """A model whose weights cannot be read or made; the message is one line."""


def _stored_tensors(
    graph: onnx.GraphProto,
) -> Iterable[tuple[onnx.TensorProto, onnx.NodeProto | None]]:
    """Every stored tensor of ``graph`` and its subgraphs, with the Constant node holding it."""
    for t in graph.initializer:
        yield t, None
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield attr.t, node
            elif attr.type == AttributeProto.GRAPH:
                yield from _stored_tensors(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _stored_tensors(g)


def _is_external(t: onnx.TensorProto) -> bool:
    return t.data_location == TensorProto.EXTERNAL


def external_locations(model: onnx.ModelProto) -> list[str]:
    """The external data files the model's stored tensors point to, as written in the file."""
    locations: dict[str, None] = {}
    for t, _ in _stored_tensors(model.graph):
        if _is_external(t):
            for kv in t.external_data:
                if kv.key == "location":
                    locations[kv.value] = None
    return list(locations)


def _inside(folder: Path, location: str) -> Path:
    """``folder / location``, refused unless it stays inside ``folder``."""
    if os.path.isabs(location) or Path(location).drive:
        raise WeightsError(
            f"the model's external data location {location!r} is an absolute path; external "
            "data must lie in the model's folder (re-save the model with relative locations)"
        )
    target = (folder / location).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise WeightsError(
            f"the model's external data location {location!r} points outside its folder "
            f"{str(folder)!r}; external data must lie next to the model"
        )
    return target


def load_external_weights(model: onnx.ModelProto, folder: str | os.PathLike) -> bool:
    """Load the model's external data from ``folder`` in place, when all of it is there.

    Returns whether it was loaded (``False``: some file is missing, the model
    stays architecture-only). A location outside ``folder`` raises
    :class:`WeightsError`, whether or not the file exists.
    """
    base = Path(folder)
    locations = external_locations(model)
    targets = [_inside(base, loc) for loc in locations]
    if not locations or not all(t.is_file() for t in targets):
        return False
    from onnx.external_data_helper import load_external_data_for_model

    try:
        load_external_data_for_model(model, str(base))
    except Exception as exc:  # noqa: BLE001 - a truncated or unreadable data file
        text = str(exc).strip().splitlines()
        raise WeightsError(
            f"cannot read the model's external data in {str(base)!r}: "
            f"{text[0][:200] if text else type(exc).__name__}"
        ) from None
    return True


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file; external weights are loaded when their files exist next to it.

    Architecture-only models (external data file missing) load fine; their
    weights are then listed by :func:`missing_weights`. External data that
    points outside the model's folder (an absolute path, ``../``) is refused
    with :class:`WeightsError`.
    """
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise WeightsError(f"model file {str(path)!r} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        text = str(exc).strip().splitlines()
        raise WeightsError(
            f"{str(path)!r} is not a readable ONNX model: {text[0] if text else type(exc).__name__}"
        ) from None
    load_external_weights(model, path.parent)
    return model


def missing_weights(model: onnx.ModelProto) -> list[str]:
    """Names of stored tensors whose data is not in the model (external, not loaded)."""
    out = []
    for t, node in _stored_tensors(model.graph):
        if _is_external(t):
            out.append(t.name or (node.output[0] if node is not None else "?"))
    return out


def _consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            uses.setdefault(name, []).append((node, i))
        for attr in node.attribute:
            subs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
            for g in subs:
                for k, v in _consumers(g).items():
                    uses.setdefault(k, []).extend(v)
    return uses


# (op_type, input index) -> (low, high) of a uniform draw: parameters whose sign or
# size matters for the model to compute finite numbers (variances, divisors, exponents).
_UNIFORM_BY_USE = {
    ("BatchNormalization", 1): (0.5, 1.5),
    ("BatchNormalization", 2): (-0.1, 0.1),
    ("BatchNormalization", 3): (-0.1, 0.1),
    ("BatchNormalization", 4): (0.5, 1.5),
    ("InstanceNormalization", 1): (0.5, 1.5),
    ("InstanceNormalization", 2): (-0.1, 0.1),
    ("LayerNormalization", 1): (0.5, 1.5),
    ("LayerNormalization", 2): (-0.1, 0.1),
    ("Add", 0): (-0.1, 0.1),
    ("Add", 1): (-0.1, 0.1),
    ("Sub", 0): (-0.1, 0.1),
    ("Sub", 1): (-0.1, 0.1),
    ("Div", 1): (0.5, 1.5),
    ("Pow", 1): (2.0, 2.0),
    ("Sqrt", 0): (0.5, 1.5),
    ("Log", 0): (0.5, 1.5),
    ("Reciprocal", 0): (0.5, 1.5),
}


def _random_array(t: onnx.TensorProto, use, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
    shape = tuple(int(d) for d in t.dims)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dtype)
    if dtype.kind in "iu":
        # integers are shapes, axes or indices in practice: 0 is valid for all of them
        return np.zeros(shape, dtype=dtype)
    if dtype.kind != "f":
        raise WeightsError(f"cannot make random weights for tensor {t.name!r} of type {dtype}")
    bounds = _UNIFORM_BY_USE.get(use) if use else None
    if bounds is not None:
        lo, hi = bounds
        arr = np.full(shape, lo) if lo == hi else rng.uniform(lo, hi, size=shape)
    elif len(shape) >= 2:
        # variance-preserving scale, so that activations stay finite through deep models
        op = use[0] if use else ""
        fan_in = shape[0] if op == "MatMul" else math.prod(shape[1:])
        arr = rng.normal(0.0, 1.0 / math.sqrt(max(fan_in, 1)), size=shape)
    else:
        arr = rng.uniform(0.5, 1.5, size=shape)
    return arr.astype(dtype)


def random_weights(
    model: onnx.ModelProto, seed: int = 0, *, only_missing: bool = True
) -> onnx.ModelProto:
    """A copy of ``model`` whose weights are random, of the right shapes and dtypes.

    Parameters
    ----------
    model
        An ONNX model, typically architecture-only (weights in a missing
        external data file).
    seed
        Seed; each tensor draws from its own stream keyed by ``(seed, name)``,
        so the values do not depend on the order of tensors in the file.
    only_missing
        Replace only tensors whose data is missing (default); with ``False``
        every floating-point weight is replaced.

    Notes
    -----
    Float weights of rank >= 2 are drawn from ``N(0, 1/fan_in)`` so that
    activations keep their scale; normalisation scales and variances,
    divisors and ``Sqrt``/``Log`` operands from ``U(0.5, 1.5)``; additive
    biases from ``U(-0.1, 0.1)``; ``Pow`` exponents are 2; other vectors and
    scalars ``U(0.5, 1.5)``. Integer tensors (shapes, axes, indices) that are
    missing are filled with zeros.

    Examples
    --------
    >>> from onnx import helper, TensorProto as T
    >>> w = helper.make_tensor("w", T.FLOAT, [2, 3], np.zeros(6).tolist())
    >>> g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
    ...     [helper.make_tensor_value_info("x", T.FLOAT, [1, 2])],
    ...     [helper.make_tensor_value_info("y", T.FLOAT, [1, 3])], [w])
    >>> m = random_weights(helper.make_model(g), seed=1, only_missing=False)
    >>> numpy_helper.to_array(m.graph.initializer[0]).shape
    (2, 3)
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    uses = _consumers(out.graph)
    for t, node in _stored_tensors(out.graph):
        name = t.name or (node.output[0] if node is not None else "")
        if not _is_external(t) and (
            only_missing or np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).kind != "f"
        ):
            continue
        key = node.output[0] if node is not None else name
        use_list = uses.get(key, [])
        use = (use_list[0][0].op_type, use_list[0][1]) if use_list else None
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode())])
        arr = _random_array(t, use, rng)
        fresh = numpy_helper.from_array(arr, t.name)
        t.CopyFrom(fresh)
    return out
