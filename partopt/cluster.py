"""Edge clusters: node memory, optional compute speed, pairwise bandwidth.

File format (JSON, or YAML of the same shape)::

    {"nodes": [{"name": "n0", "memory_bytes": 67108864, "flops_per_s": 2e9}, ...],
     "bandwidth_mbps": [[0, 5.2, ...], ...],
     "latency_s": [[0, 0.002, ...], ...]}

Row ``i``, column ``j`` of ``bandwidth_mbps`` is the bandwidth from node ``i``
to node ``j`` in Mbit/s (1 Mbit = 10**6 bits); 0 means no link; the diagonal
is ignored. ``flops_per_s`` is optional (all nodes or none), and so is
``latency_s``, the per-link latency in seconds (same shape as
``bandwidth_mbps``, finite, >= 0, diagonal ignored). Memory capacities given
in MB elsewhere in partopt are 2**20 bytes, as in the original work.

Files are read strictly: a key partopt does not know (a typo such as
``memory_byte``) is refused with the known keys, numbers must be JSON/YAML
numbers (not ``"10"``, ``true`` or ``null``) and names must be strings.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from partopt._checks import check_int, check_real, is_number
from partopt.errors import PartoptError

__all__ = [
    "MB",
    "MAX_NODES",
    "Cluster",
    "ClusterError",
    "paper_bandwidth_mbps",
    "paper_cluster",
    "grid_cluster",
    "ring_cluster",
]

MB = 2**20
"""Bytes in one MB of node capacity (the original work's convention)."""

CLUSTER_KEYS = ("nodes", "bandwidth_mbps", "latency_s")
"""Top-level keys of a cluster file (``latency_s`` optional)."""

NODE_KEYS = ("name", "memory_bytes", "flops_per_s")
"""Keys of one node in a cluster file (``name`` and ``flops_per_s`` optional)."""

MAX_NODES = 11_585
"""Most nodes a cluster may have: its ``N x N`` bandwidth matrix stays within
2**27 cells (1 GiB of float64), the dense-table limit the solvers share."""

PAPER_SIDE_M = (1.0, 150.0)
PAPER_BANDWIDTH_CONSTANT = 283230.0


class ClusterError(PartoptError):
    """A cluster description that cannot be used; the message says why."""


def check_num_nodes(num_nodes: int, where: str = "cluster") -> int:
    """``num_nodes``, refused before anything is allocated when above :data:`MAX_NODES`.

    Every cluster holds dense ``N x N`` bandwidth (and latency) matrices, and
    the solvers add tables of ``cuts x N x N``; past :data:`MAX_NODES` the
    matrix alone would exceed the 1 GiB a table may use.
    """
    if num_nodes > MAX_NODES:
        gib = num_nodes * num_nodes * 8 / 2**30
        raise ClusterError(
            f"a {where} of {num_nodes:,} nodes needs a {num_nodes} x {num_nodes} bandwidth "
            f"matrix ({gib:.1f} GiB); partopt holds clusters of at most {MAX_NODES:,} nodes "
            "(1 GiB per matrix): use fewer nodes, e.g. the nodes near the model's source"
        )
    return num_nodes


@dataclass(frozen=True, eq=False)
class Cluster:
    """Nodes with memory capacity and a bandwidth matrix.

    Parameters
    ----------
    names
        Node names, unique.
    memory_bytes
        Memory capacity per node in bytes, shape ``(N,)``, positive.
    bandwidth_mbps
        Bandwidth from node ``i`` to node ``j`` in Mbit/s, shape ``(N, N)``;
        0 means no link; the diagonal is set to 0.
    flops_per_s
        Optional compute speed per node in FLOP/s, shape ``(N,)``.
    latency_s
        Optional latency of every link in seconds, shape ``(N, N)`` like
        ``bandwidth_mbps``, finite and >= 0 (the diagonal is set to 0); added
        to every transfer on that link.

    Examples
    --------
    >>> c = Cluster.uniform(3, memory_bytes=64 * MB, bandwidth_mbps=10.0)
    >>> c.num_nodes, float(c.bandwidth_mbps[0, 1]), float(c.bandwidth_mbps[1, 1])
    (3, 10.0, 0.0)
    """

    names: tuple[str, ...]
    memory_bytes: np.ndarray
    bandwidth_mbps: np.ndarray
    flops_per_s: np.ndarray | None = None
    latency_s: np.ndarray | None = None

    def __post_init__(self) -> None:
        if isinstance(self.names, str) or not hasattr(self.names, "__len__"):
            raise TypeError(f"names must be a sequence of node names, got {self.names!r}")
        names = tuple(str(n) for n in self.names)
        n = len(names)
        if n == 0:
            raise ClusterError("cluster has no nodes; give at least one node")
        if len(set(names)) != n:
            dup = sorted({x for x in names if names.count(x) > 1})[0]
            raise ClusterError(f"node name {dup!r} appears twice; node names must be unique")
        mem = _numeric_array(self.memory_bytes, "memory_bytes").reshape(-1)
        if mem.shape != (n,):
            raise ClusterError(f"memory_bytes has {mem.shape[0]} entries for {n} nodes")
        bad = np.flatnonzero(~np.isfinite(mem) | (mem <= 0))
        if bad.size:
            raise ClusterError(
                f"node {names[bad[0]]!r} has memory {mem[bad[0]]:g} bytes; capacities must be positive"
            )
        bw = _link_matrix(self.bandwidth_mbps, "bandwidth_mbps", names, "0 = no link")
        speed = None
        if self.flops_per_s is not None:
            speed = _numeric_array(self.flops_per_s, "flops_per_s").reshape(-1)
            if speed.shape != (n,):
                raise ClusterError(f"flops_per_s has {speed.shape[0]} entries for {n} nodes")
            bad = np.flatnonzero(~np.isfinite(speed) | (speed <= 0))
            if bad.size:
                raise ClusterError(
                    f"node {names[bad[0]]!r} has speed {speed[bad[0]]:g} FLOP/s; speeds must be positive"
                )
            speed.setflags(write=False)
        latency = None
        if self.latency_s is not None:
            latency = _link_matrix(self.latency_s, "latency_s", names, "seconds per message")
            latency.setflags(write=False)
        mem.setflags(write=False)
        bw.setflags(write=False)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "memory_bytes", mem)
        object.__setattr__(self, "bandwidth_mbps", bw)
        object.__setattr__(self, "flops_per_s", speed)
        object.__setattr__(self, "latency_s", latency)

    # -- construction -----------------------------------------------------

    @classmethod
    def uniform(
        cls,
        num_nodes: int,
        *,
        memory_bytes: float,
        bandwidth_mbps: float,
        flops_per_s: float | None = None,
    ) -> Cluster:
        """A complete cluster of identical nodes and identical links."""
        num_nodes = check_int(num_nodes, "num_nodes", minimum=1, error=ClusterError)
        check_num_nodes(num_nodes)
        memory_bytes = check_real(memory_bytes, "memory_bytes", positive=True, error=ClusterError)
        bandwidth_mbps = check_real(
            bandwidth_mbps, "bandwidth_mbps", minimum=0.0, error=ClusterError
        )
        if flops_per_s is not None:
            flops_per_s = check_real(flops_per_s, "flops_per_s", positive=True, error=ClusterError)
        bw = np.full((num_nodes, num_nodes), bandwidth_mbps)
        return cls(
            names=tuple(f"n{i}" for i in range(num_nodes)),
            memory_bytes=np.full(num_nodes, memory_bytes),
            bandwidth_mbps=bw,
            flops_per_s=None if flops_per_s is None else np.full(num_nodes, flops_per_s),
        )

    @classmethod
    def from_dict(cls, data: dict) -> Cluster:
        """Build from the documented file format (see module docstring); strict about keys and types."""
        if not isinstance(data, dict) or "nodes" not in data or "bandwidth_mbps" not in data:
            raise ClusterError(
                'cluster description needs keys "nodes" and "bandwidth_mbps" (see partopt.cluster)'
            )
        _refuse_unknown_keys(data, CLUSTER_KEYS, "cluster description")
        nodes = data["nodes"]
        if not isinstance(nodes, list) or not all(isinstance(x, dict) for x in nodes):
            raise ClusterError('"nodes" must be a list of {"name", "memory_bytes"} objects')
        check_num_nodes(len(nodes), "cluster file")
        names: list[str] = []
        mem: list[float] = []
        speeds: list[float | None] = []
        for i, node in enumerate(nodes):
            name = node.get("name", f"n{i}")
            if not isinstance(name, str):
                raise ClusterError(
                    f'node {i} has name {json.dumps(name)}; names must be strings (write "{name}")'
                )
            _refuse_unknown_keys(node, NODE_KEYS, f"node {name!r}")
            if "memory_bytes" not in node:
                raise ClusterError(f'node {i} ({name!r}) has no "memory_bytes"')
            names.append(name)
            mem.append(_file_number(node["memory_bytes"], f"node {name!r}: memory_bytes"))
            if "flops_per_s" in node:
                speeds.append(_file_number(node["flops_per_s"], f"node {name!r}: flops_per_s"))
            else:
                speeds.append(None)
        given = [s is not None for s in speeds]
        if any(given) and not all(given):
            missing = names[given.index(False)]
            raise ClusterError(
                f"node {missing!r} has no flops_per_s; give it for all nodes or none"
            )
        matrices = {
            key: _file_matrix(data[key], key, len(names))
            for key in ("bandwidth_mbps", "latency_s")
            if key in data
        }
        return cls(
            names=tuple(names),
            memory_bytes=np.array(mem),
            bandwidth_mbps=matrices["bandwidth_mbps"],
            flops_per_s=np.array(speeds, dtype=float) if all(given) and speeds else None,
            latency_s=matrices.get("latency_s"),
        )

    def to_dict(self) -> dict:
        nodes = []
        for i, name in enumerate(self.names):
            node: dict = {
                "name": name,
                "memory_bytes": int(self.memory_bytes[i])
                if float(self.memory_bytes[i]).is_integer()
                else float(self.memory_bytes[i]),
            }
            if self.flops_per_s is not None:
                node["flops_per_s"] = float(self.flops_per_s[i])
            nodes.append(node)
        out: dict = {"nodes": nodes, "bandwidth_mbps": self.bandwidth_mbps.tolist()}
        if self.latency_s is not None:
            out["latency_s"] = self.latency_s.tolist()
        return out

    @classmethod
    def load(cls, path: str | Path) -> Cluster:
        """Read a cluster file (``.json``, ``.yaml`` or ``.yml``)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ClusterError(f"cannot read cluster file {str(path)!r}: {exc.strerror}") from exc
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:  # noqa: BLE001 - any parse error is the user's file
            raise ClusterError(
                f"cluster file {str(path)!r} is not valid {path.suffix.lstrip('.') or 'JSON'}: "
                f"{str(exc).splitlines()[0]}"
            ) from exc
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    # -- queries ----------------------------------------------------------

    @property
    def num_nodes(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Position of a node by name."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ClusterError(
                f"unknown node {name!r}; the cluster has {', '.join(self.names[:8])}"
                + (", ..." if self.num_nodes > 8 else "")
            ) from None

    def subset(self, keep) -> Cluster:
        """The cluster restricted to nodes ``keep`` (indices, in that order)."""
        keep = list(keep)
        return Cluster(
            names=tuple(self.names[i] for i in keep),
            memory_bytes=self.memory_bytes[keep],
            bandwidth_mbps=self.bandwidth_mbps[np.ix_(keep, keep)],
            flops_per_s=None if self.flops_per_s is None else self.flops_per_s[keep],
            latency_s=None if self.latency_s is None else self.latency_s[np.ix_(keep, keep)],
        )


# -- checks ---------------------------------------------------------------


def _numeric_array(value, name: str) -> np.ndarray:
    """``value`` as a float array; strings, bools and ``None`` entries are refused, not converted."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ClusterError(f"{name} is not a numeric array: {exc}") from exc
    if arr.dtype.kind not in "iuf":
        raise ClusterError(
            f"{name} must hold numbers only (no strings, booleans or nulls), got {arr.dtype} values"
        )
    return np.array(arr, dtype=float)


def _link_matrix(value, name: str, names: tuple[str, ...], zero_means: str) -> np.ndarray:
    """An ``N x N`` matrix of finite numbers >= 0 with a zero diagonal (a copy)."""
    n = len(names)
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ClusterError(f"{name} is not a numeric square matrix (one row per node)") from exc
    if arr.shape != (n, n):
        raise ClusterError(
            f"{name} has shape {'x'.join(map(str, arr.shape))}; "
            f"it must be a square {n}x{n} matrix, one row and column per node"
        )
    out = _numeric_array(arr, name)
    np.fill_diagonal(out, 0.0)
    bad = np.argwhere(~np.isfinite(out) | (out < 0))
    if bad.size:
        i, j = bad[0]
        raise ClusterError(
            f"{name} from {names[i]!r} to {names[j]!r} is {out[i, j]}; "
            f"entries must be finite and >= 0 ({zero_means})"
        )
    return out


def _refuse_unknown_keys(data: dict, known: tuple[str, ...], where: str) -> None:
    unknown = [k for k in data if k not in known]
    if not unknown:
        return
    key = unknown[0]
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    raise ClusterError(
        f'{where} has unknown key "{key}"{hint}; the known keys are {", ".join(known)}'
    )


def _file_number(value, where: str) -> float:
    if not is_number(value):
        raise ClusterError(f"{where} must be a number, got {json.dumps(value)}")
    return float(value)


def _file_matrix(value, key: str, n: int) -> np.ndarray:
    """A matrix from a file: a list of ``n`` lists of ``n`` numbers (no strings, bools, nulls)."""
    if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
        raise ClusterError(f'"{key}" must be a list of rows, one list of numbers per node')
    for i, row in enumerate(value):
        for j, x in enumerate(row):
            if not is_number(x):
                raise ClusterError(
                    f'"{key}" row {i}, column {j} must be a number, got {json.dumps(x)}'
                )
    if len(value) != n or any(len(row) != n for row in value):
        shape = f"{len(value)}x{max((len(r) for r in value), default=0)}"
        raise ClusterError(
            f'"{key}" has shape {shape}; it must be a square {n}x{n} matrix, '
            "one row and column per node"
        )
    return np.array(value, dtype=float)


# -- generators -----------------------------------------------------------


def paper_bandwidth_mbps(distance_m):
    """The original work's bandwidth model ``log2(1 + 283230 / d**2)`` in Mbit/s.

    Examples
    --------
    >>> [round(float(paper_bandwidth_mbps(d)), 1) for d in (1, 50, 150)]
    [18.1, 6.8, 3.8]
    """
    d = np.asarray(distance_m, dtype=float)
    return np.log2(1.0 + PAPER_BANDWIDTH_CONSTANT / d**2)


def paper_cluster(num_nodes: int, capacity_mb: float, seed: int = 0) -> Cluster:
    """The original work's random geometric cluster.

    ``num_nodes`` nodes are placed uniformly at random in the square
    [1, 150] x [1, 150] metres (``numpy.random.default_rng(seed)``); every
    pair gets bandwidth ``log2(1 + 283230 / d**2)`` Mbit/s, ``d`` their
    Euclidean distance; every node has ``capacity_mb`` MB (2**20 bytes).
    """
    num_nodes = check_num_nodes(check_int(num_nodes, "num_nodes", minimum=1, error=ClusterError))
    capacity_mb = check_real(capacity_mb, "capacity_mb", positive=True, error=ClusterError)
    seed = check_int(seed, "seed", minimum=0, error=ClusterError)
    rng = np.random.default_rng(seed)
    lo, hi = PAPER_SIDE_M
    pos = rng.uniform(lo, hi, size=(num_nodes, 2))
    # Row blocks keep the temporaries small: the matrix itself is the only N x N array.
    bw = np.empty((num_nodes, num_nodes))
    rows = max(1, 2**22 // num_nodes)
    for r0 in range(0, num_nodes, rows):
        d = np.sqrt(((pos[r0 : r0 + rows, None, :] - pos[None, :, :]) ** 2).sum(-1))
        with np.errstate(divide="ignore"):
            block = paper_bandwidth_mbps(np.where(d > 0, d, np.inf))
        block[d == 0] = paper_bandwidth_mbps(1e-3)  # coincident points: very close, not unlinked
        bw[r0 : r0 + rows] = block
    return Cluster(
        names=tuple(f"n{i}" for i in range(num_nodes)),
        memory_bytes=np.full(num_nodes, capacity_mb * MB),
        bandwidth_mbps=bw,
    )


def _neighbour_cluster(pos: np.ndarray, edges, capacity_mb: float, seed: int | None) -> Cluster:
    n = len(pos)
    bw = np.zeros((n, n))
    rng = np.random.default_rng(seed) if seed is not None else None
    for i, j in edges:
        d = float(np.linalg.norm(pos[i] - pos[j]))
        b = float(paper_bandwidth_mbps(d))
        if rng is not None:  # jitter so that links are not all equal
            b *= rng.uniform(0.5, 1.5)
        bw[i, j] = bw[j, i] = b
    return Cluster(
        names=tuple(f"n{i}" for i in range(n)),
        memory_bytes=np.full(n, capacity_mb * MB),
        bandwidth_mbps=bw,
    )


def grid_cluster(
    rows: int, cols: int, capacity_mb: float, spacing_m: float = 30.0, seed: int | None = None
) -> Cluster:
    """Nodes on a ``rows x cols`` grid, linked to their 4 neighbours only.

    Link bandwidth follows the paper's distance model at ``spacing_m``;
    with a ``seed`` each link is scaled by a uniform factor in [0.5, 1.5].
    """
    rows = check_int(rows, "rows", minimum=1, error=ClusterError)
    cols = check_int(cols, "cols", minimum=1, error=ClusterError)
    check_num_nodes(rows * cols)
    capacity_mb = check_real(capacity_mb, "capacity_mb", positive=True, error=ClusterError)
    pos = np.array([(r * spacing_m, c * spacing_m) for r in range(rows) for c in range(cols)])
    edges = [(r * cols + c, r * cols + c + 1) for r in range(rows) for c in range(cols - 1)]
    edges += [(r * cols + c, (r + 1) * cols + c) for r in range(rows - 1) for c in range(cols)]
    return _neighbour_cluster(pos, edges, capacity_mb, seed)


def ring_cluster(
    num_nodes: int, capacity_mb: float, spacing_m: float = 30.0, seed: int | None = None
) -> Cluster:
    """Nodes on a ring, each linked to its two neighbours (see :func:`grid_cluster`)."""
    num_nodes = check_num_nodes(check_int(num_nodes, "num_nodes", minimum=1, error=ClusterError))
    capacity_mb = check_real(capacity_mb, "capacity_mb", positive=True, error=ClusterError)
    angle = 2 * math.pi * np.arange(num_nodes) / num_nodes
    radius = spacing_m / (2 * math.sin(math.pi / num_nodes)) if num_nodes > 1 else 0.0
    pos = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    edges = [(i, (i + 1) % num_nodes) for i in range(num_nodes)] if num_nodes > 1 else []
    if num_nodes == 2:
        edges = [(0, 1)]
    return _neighbour_cluster(pos, edges, capacity_mb, seed)
