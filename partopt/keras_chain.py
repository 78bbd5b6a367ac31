"""The original work's chain, computed from a Keras layer graph, and its chain files.

The original code (SEIFER) did not read ONNX: it walked the Keras layer graph
of each ``keras.applications`` model. This module redoes that computation on
a plain list of layers (:class:`KerasLayer`), so that it can be checked
without TensorFlow, and reads and writes the resulting *chain files*
(``models/<name>.keras-chain.json``) that planning uses in place of the
ONNX-derived chain when the cut family is ``keras``.

What the original computed, per model:

* **cut points**: layers alone on their longest-path level (levels counted
  from the input layer, every edge weighing 1) such that every path from the
  previous cut point reaches them before going past their level; the input
  layer is the first point, the output layer the last;
* **segment memory**: for the layers whose level lies after a point's level
  and up to the next point's, ``4 x output elements + parameter count``
  (float32 outputs, parameters counted as one byte each, BatchNorm's four
  per channel included);
* **transfer** of a point: ``outbound nodes x elements x 8 / 1.44 x 8 /
  1024**2`` "Mbit" (float64 elements, zfp compression ratio 1.44, each
  consumer counted).

The chain has one block per point: block 0 holds the input layer alone
(the original could cut right after it, sending the image), block ``k >= 1``
the segment ending at point ``k``. Cut ``c`` lies right after point ``c``.

References
----------
Parthasarathy, A. and Krishnamachari, B. (2022). Partitioning and placement
of deep neural networks on distributed edge devices to maximize inference
throughput. ITNAC 2022 (arXiv:2210.12219).
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import NamedTuple

import numpy as np

from partopt.errors import PartoptError

__all__ = [
    "CHAIN_FILE_SUFFIX",
    "KerasChainError",
    "KerasLayer",
    "chain_file_for",
    "load_keras_chain",
    "original_chain_data",
    "original_cut_points",
    "original_levels",
]

CHAIN_FILE_SUFFIX = ".keras-chain.json"
FORMAT = "partopt-keras-chain/1"

_BYTES_PER_OUTPUT_ELEMENT = 4  # the original's float32 layer outputs
_PAPER_BYTES_PER_ELEMENT = 8  # the original's transfer: float64 elements
_PAPER_COMPRESSION = 1.44  # zfp's ratio as the original assumed it
_MBIT = 1024**2  # the original's "Mbit"
_BITS_PER_MBIT_OF_BANDWIDTH = 10**6  # our bandwidth unit: Mbit/s = 10**6 bit/s


class KerasChainError(PartoptError):
    """A layer list or chain file that does not describe one connected single-input model."""


class KerasLayer(NamedTuple):
    """One Keras layer as the original code saw it.

    Parameters
    ----------
    name
        Layer name (unique).
    next
        Names of the layers its outbound nodes feed, one entry per outbound
        node (``len(layer.outbound_nodes)`` in Keras).
    output_elements
        Elements of the (first) output, batch dimension excluded.
    params
        Parameter count (trainable and non-trainable).
    """

    name: str
    next: tuple[str, ...]
    output_elements: int
    params: int

    @property
    def memory(self) -> int:
        """The original's memory of the layer: 4 x output elements + parameter count."""
        return _BYTES_PER_OUTPUT_ELEMENT * self.output_elements + self.params

    @property
    def transfer_mbit(self) -> float:
        """The original's transfer of the layer's output, in its Mbit (1024**2 bits)."""
        bits = self.output_elements * _PAPER_BYTES_PER_ELEMENT / _PAPER_COMPRESSION * 8
        return len(self.next) * bits / _MBIT


def _index(layers: list[KerasLayer]) -> tuple[dict[str, int], list[list[int]], int]:
    pos = {layer.name: i for i, layer in enumerate(layers)}
    if len(pos) != len(layers):
        raise KerasChainError("layer names must be unique")
    succ: list[list[int]] = []
    indeg = [0] * len(layers)
    for layer in layers:
        try:
            out = [pos[n] for n in layer.next]
        except KeyError as e:
            raise KerasChainError(
                f"layer {layer.name!r} feeds unknown layer {e.args[0]!r}"
            ) from None
        succ.append(out)
        for v in set(out):
            indeg[v] += 1
    inputs = [i for i, d in enumerate(indeg) if d == 0]
    if len(inputs) != 1:
        names = [layers[i].name for i in inputs]
        raise KerasChainError(f"the model needs exactly one input layer, found {names}")
    return pos, succ, inputs[0]


def original_levels(layers: list[KerasLayer]) -> list[int]:
    """Longest-path level of every layer from the input layer (edges weigh 1).

    Examples
    --------
    >>> L = KerasLayer
    >>> original_levels([L("in", ("a", "b"), 4, 0), L("a", ("b",), 4, 1), L("b", (), 4, 1)])
    [0, 1, 2]
    """
    _, succ, source = _index(layers)
    n = len(layers)
    indeg = [0] * n
    for out in succ:
        for v in out:
            indeg[v] += 1
    level = [-1] * n
    level[source] = 0
    ready = deque([source])
    seen = 0
    while ready:
        u = ready.popleft()
        seen += 1
        for v in succ[u]:
            level[v] = max(level[v], level[u] + 1)
            indeg[v] -= 1
            if indeg[v] == 0:
                ready.append(v)
    if seen != n:
        raise KerasChainError("the layer graph has a cycle")
    return level


def original_cut_points(layers: list[KerasLayer]) -> list[int]:
    """Indices of the original's cut points, input layer first, in level order.

    A candidate is a layer alone on its level; the next point after point
    ``p`` is the first candidate ``d`` such that no layer reachable from
    ``p`` without passing ``d`` lies on a level beyond ``d``'s (every path
    from ``p`` reaches ``d``).

    Examples
    --------
    A residual block: ``add`` is a point, the two branches are not.

    >>> L = KerasLayer
    >>> layers = [L("in", ("conv", "add"), 8, 0), L("conv", ("add",), 8, 10),
    ...           L("add", ("out",), 8, 0), L("out", (), 2, 18)]
    >>> [layers[i].name for i in original_cut_points(layers)]
    ['in', 'add', 'out']
    """
    level = original_levels(layers)
    _, succ, source = _index(layers)
    by_level: dict[int, list[int]] = {}
    for i, lv in enumerate(level):
        by_level.setdefault(lv, []).append(i)
    singletons = [by_level[lv][0] for lv in sorted(by_level) if len(by_level[lv]) == 1]

    def every_path_reaches(p: int, d: int) -> bool:
        seen = {p}
        todo = [p]
        while todo:
            u = todo.pop()
            if level[u] > level[d]:
                return False
            if u == d:
                continue
            for v in succ[u]:
                if v not in seen:
                    seen.add(v)
                    todo.append(v)
        return True

    points = [source]
    for d in singletons:
        if level[d] > level[points[-1]] and every_path_reaches(points[-1], d):
            points.append(d)
    return points


def original_chain_data(layers: list[KerasLayer], name: str) -> dict:
    """The chain-file content (a JSON-able dict) for a model given as a layer list.

    Per block: the original's memory (``memory``, the sum over its layers
    of 4 x output elements + parameter count), the parameter count, the
    largest float32 layer output in bytes and the layers. Per cut: the point
    it follows, the original's transfer in its Mbit, the output elements
    and the point's outbound node count.

    Examples
    --------
    >>> L = KerasLayer
    >>> layers = [L("in", ("conv", "add"), 8, 0), L("conv", ("add",), 8, 10),
    ...           L("add", ("out",), 8, 0), L("out", (), 2, 18)]
    >>> d = original_chain_data(layers, "toy")
    >>> [b["memory"] for b in d["blocks"]], [c["point"] for c in d["cuts"]]
    ([32, 74, 26], ['in', 'add'])
    >>> round(d["cuts"][0]["transfer_mbit"] * 1024**2 * 1.44 / 64)  # 2 consumers x 8 elements
    16
    """
    level = original_levels(layers)
    points = original_cut_points(layers)
    bounds = [level[p] for p in points]
    members: list[list[int]] = [[] for _ in points]
    for i, lv in enumerate(level):
        # block k holds the levels after point k - 1 up to point k (block 0: the input)
        k = int(np.searchsorted(bounds, lv, side="left"))
        if k >= len(points):
            raise KerasChainError(
                f"layer {layers[i].name!r} lies after the last cut point {layers[points[-1]].name!r}"
            )
        members[k].append(i)
    blocks = [
        {
            "last_layer": layers[points[k]].name,
            "memory": int(sum(layers[i].memory for i in idx)),
            "params": int(sum(layers[i].params for i in idx)),
            "max_output_bytes": int(
                max(_BYTES_PER_OUTPUT_ELEMENT * layers[i].output_elements for i in idx)
            ),
            "layers": [layers[i].name for i in idx],
        }
        for k, idx in enumerate(members)
    ]
    cuts = [
        {
            "point": layers[p].name,
            "outbound_nodes": len(layers[p].next),
            "output_elements": int(layers[p].output_elements),
            "transfer_mbit": layers[p].transfer_mbit,
        }
        for p in points[:-1]
    ]
    return {
        "format": FORMAT,
        "model": name,
        "num_layers": len(layers),
        "num_cut_points": len(points),
        "memory_total": sum(int(b["memory"]) for b in blocks[1:]),  # type: ignore[call-overload]
        "input_memory": blocks[0]["memory"],
        "blocks": blocks,
        "cuts": cuts,
    }


def chain_file_for(model_path: str | Path) -> Path:
    """The chain file beside an ONNX model (``resnet50.onnx`` -> ``resnet50.keras-chain.json``)."""
    p = Path(model_path)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(stem + CHAIN_FILE_SUFFIX)


def load_keras_chain(path: str | Path):
    """A :class:`~partopt.chain.Chain` from a chain file (no TensorFlow needed).

    ``paper_memory_bytes`` and ``paper_transfer_bytes`` are the original's
    figures (its Mbit as the bytes that take the same time at 10**6 bit per
    Mbit of bandwidth); ``param_bytes`` are float32 parameters, the
    ``peak`` activations are only the largest layer output of each block and
    ``transfer_bytes`` the float32 bytes of each point's output sent once,
    so the ``weights``, ``peak`` and ``bytes`` models on this chain are rough:
    use the ONNX chain for them. FLOPs are not recorded (zero).

    Raises
    ------
    KerasChainError
        The file is missing or is not a chain file.
    """
    from partopt.chain import Chain

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KerasChainError(
            f"no Keras chain file {str(path)!r}; generate it with models/keras_chains.py"
        ) from None
    except json.JSONDecodeError as e:
        raise KerasChainError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise KerasChainError(f"{path}: not a partopt Keras chain file (format {FORMAT!r})")
    blocks, cuts = data["blocks"], data["cuts"]
    if len(cuts) != len(blocks) - 1:
        raise KerasChainError(f"{path}: {len(blocks)} blocks need {len(blocks) - 1} cuts")
    mbit = np.array([c["transfer_mbit"] for c in cuts], dtype=float)
    return Chain(
        name=str(data["model"]),
        param_bytes=np.array([4.0 * b["params"] for b in blocks]),
        activation_peak_bytes=np.array([float(b["max_output_bytes"]) for b in blocks]),
        paper_memory_bytes=np.array([float(b["memory"]) for b in blocks]),
        flops=np.zeros(len(blocks)),
        transfer_bytes=np.array([4.0 * c["output_elements"] for c in cuts]),
        paper_transfer_bytes=mbit * _BITS_PER_MBIT_OF_BANDWIDTH / 8,
        cut_names=tuple(c["point"] for c in cuts),
        block_nodes=tuple(tuple(b["layers"]) for b in blocks),
        meta={"source": "keras-layer-graph", "file": str(path)},
    )
