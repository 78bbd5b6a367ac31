"""The chain of blocks that the optimizers see.

A DNN is cut at *cut points* into a sequence of *blocks*; a pipeline stage is
a contiguous run of blocks. :class:`Chain` holds, per block, everything the
memory and transfer models need, so that one chain serves every model:

* memory of a stage covering blocks ``i..j`` is
  ``sum(mem_sum[i..j]) + max(mem_max[i..j])`` where the two arrays depend on
  the memory model (see :meth:`Chain.memory_terms`):

  - ``weights``: parameter bytes only (``mem_max`` is zero);
  - ``peak`` (default): parameter bytes plus the peak bytes of live
    activations while the stage runs in topological order.  Liveness is the
    whole-graph liveness restricted to the stage (a tensor is live from the
    moment it is produced, or the stage starts, until its last consumer in
    the stage has run, or to the end of the stage if a later stage needs
    it), so the peak of a stage is the maximum of the peaks of its blocks;
  - ``paper``: what the original code computed, for reproduction only: for
    every layer, float32 output bytes plus the *number* of parameters.

* the transfer after block ``b`` (the cut between ``b`` and ``b + 1``) in
  bytes, under the ``bytes`` model (exact tensor bytes, each crossing tensor
  sent once) or the ``paper`` model (the original's Mbit, converted to the
  bytes that take the same time: ``Mbit * 10**6 / 8``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["MEMORY_MODELS", "TRANSFER_MODELS", "Chain"]

MEMORY_MODELS = ("weights", "peak", "paper")
TRANSFER_MODELS = ("bytes", "paper")


def _array(values, length: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.shape != (length,):
        raise ValueError(f"{what}: expected {length} values, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{what}: values must be finite and non-negative")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Chain:
    """A chain of ``B`` blocks separated by ``B - 1`` cuts.

    Parameters
    ----------
    name
        Model name.
    param_bytes
        Parameter bytes per block, shape ``(B,)``.
    activation_peak_bytes
        Peak bytes of live activations while the block runs (whole-graph
        liveness, see module docstring), shape ``(B,)``.
    paper_memory_bytes
        The original code's per-block memory: float32 output bytes of every
        layer plus the number of parameters, shape ``(B,)``.
    flops
        Floating-point operations per block (one inference), shape ``(B,)``.
    transfer_bytes
        Exact bytes crossing the cut after each block, shape ``(B - 1,)``.
    paper_transfer_bytes
        The original's transfer size, as bytes taking the same time,
        shape ``(B - 1,)``.
    cut_names
        A label per cut (the ONNX node whose output crosses, for
        single-tensor cuts), length ``B - 1``.
    block_nodes
        ONNX node names in each block (empty for synthetic chains).
    cut_tensors
        Tensor names crossing each cut (empty for synthetic chains).

    Examples
    --------
    >>> c = Chain.from_arrays([10, 20, 30], [5, 7])
    >>> c.num_blocks, c.stage_memory(0, 2)
    (3, 60.0)
    """

    name: str
    param_bytes: np.ndarray
    activation_peak_bytes: np.ndarray
    paper_memory_bytes: np.ndarray
    flops: np.ndarray
    transfer_bytes: np.ndarray
    paper_transfer_bytes: np.ndarray
    cut_names: tuple[str, ...] = ()
    block_nodes: tuple[tuple[str, ...], ...] = ()
    cut_tensors: tuple[tuple[str, ...], ...] = ()
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        b = len(np.asarray(self.param_bytes).reshape(-1))
        if b < 1:
            raise ValueError("a chain needs at least one block")
        for name in ("param_bytes", "activation_peak_bytes", "paper_memory_bytes", "flops"):
            object.__setattr__(self, name, _array(getattr(self, name), b, name))
        for name in ("transfer_bytes", "paper_transfer_bytes"):
            object.__setattr__(self, name, _array(getattr(self, name), b - 1, name))
        if not self.cut_names:
            object.__setattr__(self, "cut_names", tuple(f"cut{c}" for c in range(b - 1)))
        if len(self.cut_names) != b - 1:
            raise ValueError("cut_names must have one label per cut")

    @classmethod
    def from_arrays(
        cls,
        memory_bytes,
        transfer_bytes,
        flops=None,
        *,
        activation_bytes=None,
        name: str = "synthetic",
    ) -> Chain:
        """A synthetic chain: ``memory_bytes`` are parameter bytes per block.

        All memory models then agree except ``peak``, which adds
        ``activation_bytes`` (default zero); both transfer models agree.
        """
        mem = np.asarray(memory_bytes, dtype=float).reshape(-1)
        act = np.zeros_like(mem) if activation_bytes is None else activation_bytes
        return cls(
            name=name,
            param_bytes=mem,
            activation_peak_bytes=act,
            paper_memory_bytes=mem,
            flops=np.zeros_like(mem) if flops is None else flops,
            transfer_bytes=transfer_bytes,
            paper_transfer_bytes=transfer_bytes,
        )

    @property
    def num_blocks(self) -> int:
        return int(self.param_bytes.shape[0])

    def memory_terms(self, model: str = "peak") -> tuple[np.ndarray, np.ndarray]:
        """``(mem_sum, mem_max)`` per block for a memory model.

        Stage memory of blocks ``i..j`` = ``mem_sum[i:j+1].sum() + mem_max[i:j+1].max()``.
        """
        zeros = np.zeros(self.num_blocks)
        if model == "weights":
            return self.param_bytes, zeros
        if model == "peak":
            return self.param_bytes, self.activation_peak_bytes
        if model == "paper":
            return self.paper_memory_bytes, zeros
        raise ValueError(
            f"unknown memory model {model!r}; choose one of {', '.join(MEMORY_MODELS)}"
        )

    def transfers(self, model: str = "bytes") -> np.ndarray:
        """Bytes crossing each cut under a transfer model, shape ``(B - 1,)``."""
        if model == "bytes":
            return self.transfer_bytes
        if model == "paper":
            return self.paper_transfer_bytes
        raise ValueError(
            f"unknown transfer model {model!r}; choose one of {', '.join(TRANSFER_MODELS)}"
        )

    def stage_memory(self, first: int, last: int, model: str = "peak") -> float:
        """Memory in bytes of a stage running blocks ``first..last`` (inclusive)."""
        s, m = self.memory_terms(model)
        return float(s[first : last + 1].sum() + m[first : last + 1].max())
