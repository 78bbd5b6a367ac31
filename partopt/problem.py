"""A partitioning-and-placement instance: chain + cluster + model choices."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from partopt.chain import MEMORY_MODELS, TRANSFER_MODELS, Chain
from partopt.cluster import Cluster
from partopt.costs import transfer_time_s
from partopt.errors import PartoptError

__all__ = ["ProblemError", "OBJECTIVES", "Problem"]

OBJECTIVES = ("communication", "max")
"""``communication``: the paper's objective, the largest transfer time.
``max``: max(largest transfer time, largest stage compute time); needs speeds."""


class ProblemError(PartoptError):
    """A problem whose models or objective do not fit its chain and cluster."""


@dataclass(frozen=True, eq=False)
class Problem:
    """Min-bottleneck partitioning and placement of ``chain`` on ``cluster``.

    Parameters
    ----------
    chain, cluster
        The block chain and the cluster.
    memory
        Memory model: ``weights``, ``peak`` (default) or ``paper``.
    transfer
        Transfer model: ``bytes`` (default) or ``paper``.
    objective
        ``communication`` (default) or ``max`` (communication and compute).

    Examples
    --------
    >>> from partopt.cluster import Cluster
    >>> p = Problem(Chain.from_arrays([1, 2, 3], [8e6, 4e6]),
    ...             Cluster.uniform(2, memory_bytes=4, bandwidth_mbps=8.0))
    >>> p.stage_memory(1, 2), p.transfer_time_s(0, 0, 1)
    (5.0, 8.0)
    """

    chain: Chain
    cluster: Cluster
    memory: str = "peak"
    transfer: str = "bytes"
    objective: str = "communication"

    def __post_init__(self) -> None:
        if not isinstance(self.chain, Chain):
            raise TypeError(
                f"chain must be a partopt Chain, got {self.chain!r} ({type(self.chain).__name__})"
            )
        if not isinstance(self.cluster, Cluster):
            raise TypeError(
                f"cluster must be a partopt Cluster, got {self.cluster!r} "
                f"({type(self.cluster).__name__})"
            )
        if self.memory not in MEMORY_MODELS:
            raise ProblemError(
                f"unknown memory model {self.memory!r}; choose one of {MEMORY_MODELS}"
            )
        if self.transfer not in TRANSFER_MODELS:
            raise ProblemError(
                f"unknown transfer model {self.transfer!r}; choose one of {TRANSFER_MODELS}"
            )
        if self.objective not in OBJECTIVES:
            raise ProblemError(f"unknown objective {self.objective!r}; choose one of {OBJECTIVES}")
        if self.objective == "max" and self.cluster.flops_per_s is None:
            raise ProblemError(
                "objective 'max' needs compute speeds: give flops_per_s for every cluster node"
            )

    # -- sizes ------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        return self.chain.num_blocks

    @property
    def num_nodes(self) -> int:
        return self.cluster.num_nodes

    @property
    def uses_compute(self) -> bool:
        return self.objective == "max"

    # -- arrays (computed once) ---------------------------------------------

    @cached_property
    def mem_sum(self) -> np.ndarray:
        return self.chain.memory_terms(self.memory)[0]

    @cached_property
    def mem_max(self) -> np.ndarray:
        return self.chain.memory_terms(self.memory)[1]

    @cached_property
    def transfer_bytes(self) -> np.ndarray:
        """Bytes crossing the cut after block ``b``, shape ``(B - 1,)``."""
        return self.chain.transfers(self.transfer)

    @cached_property
    def _mem_prefix(self) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(self.mem_sum)])

    @cached_property
    def _flops_prefix(self) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(self.chain.flops)])

    @cached_property
    def _mem_max_table(self) -> list[np.ndarray]:
        """Sparse table: ``table[k][i]`` = max of ``mem_max[i : i + 2**k]``."""
        table = [self.mem_max]
        k = 1
        while (1 << k) <= self.num_blocks:
            prev, half = table[-1], 1 << (k - 1)
            table.append(np.maximum(prev[: len(prev) - half], prev[half:]))
            k += 1
        return table

    def stage_memory_many(self, first, last) -> np.ndarray:
        """Vectorised :meth:`stage_memory` for integer arrays with ``first <= last``."""
        first, last = np.asarray(first, dtype=int), np.asarray(last, dtype=int)
        k = np.floor(np.log2(np.maximum(last - first + 1, 1))).astype(int)
        peak = np.empty(first.shape)
        for kk in np.unique(k):
            sel = k == kk
            row = self._mem_max_table[kk]
            peak[sel] = np.maximum(row[first[sel]], row[last[sel] - (1 << kk) + 1])
        return self._mem_prefix[last + 1] - self._mem_prefix[first] + peak

    @cached_property
    def stage_memory_matrix(self) -> np.ndarray:
        """``M[i, j]`` = memory of a stage of blocks ``i..j`` (``inf`` for ``j < i``)."""
        b = self.num_blocks
        s = self._mem_prefix
        total = s[None, 1:] - s[:b, None]
        run_max = np.full((b, b), -np.inf)
        for i in range(b):
            run_max[i, i:] = np.maximum.accumulate(self.mem_max[i:])
        out = total + run_max
        out[np.tril_indices(b, -1)] = np.inf
        return out

    @cached_property
    def link_time_per_byte(self) -> np.ndarray:
        """Seconds per byte on each link, ``inf`` where there is no link."""
        bw = self.cluster.bandwidth_mbps
        with np.errstate(divide="ignore"):
            t = np.where(bw > 0, 8.0 / (bw * 1e6), np.inf)
        np.fill_diagonal(t, np.inf)
        return t

    # -- scalar queries -----------------------------------------------------

    def stage_memory(self, first: int, last: int) -> float:
        """Memory in bytes of a stage running blocks ``first..last``."""
        return float(
            self._mem_prefix[last + 1]
            - self._mem_prefix[first]
            + self.mem_max[first : last + 1].max()
        )

    def stage_flops(self, first: int, last: int) -> float:
        return float(self._flops_prefix[last + 1] - self._flops_prefix[first])

    def compute_time_s(self, first: int, last: int, node: int) -> float:
        """Seconds per inference to run blocks ``first..last`` on ``node`` (0 without speeds)."""
        speeds = self.cluster.flops_per_s
        if not self.uses_compute or speeds is None:
            return 0.0
        return self.stage_flops(first, last) / float(speeds[node])

    def transfer_time_s(self, cut: int, src: int, dst: int) -> float:
        """Seconds to send the cut after block ``cut`` from ``src`` to ``dst`` (``inf``: no link)."""
        bw = float(self.cluster.bandwidth_mbps[src, dst])
        if bw <= 0 or src == dst:
            return float("inf")
        lat = self.cluster.latency_s
        return transfer_time_s(
            float(self.transfer_bytes[cut]), bw, 0.0 if lat is None else float(lat[src, dst])
        )

    def with_cluster(self, cluster: Cluster) -> Problem:
        """The same problem on another cluster."""
        return Problem(self.chain, cluster, self.memory, self.transfer, self.objective)
