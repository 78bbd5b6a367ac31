"""The cost expressions of a pipeline stage: one function per quantity.

Every solver, the MILPs and :func:`partopt.plan.evaluate` compute times with
these functions (or, vectorised, with the same floating-point operations in
the same order), so that "bottleneck <= theta" means the same thing in a
solver's threshold test and in the scorer.

Quantities, in seconds per inference:

* transfer over a link: ``bytes * 8 / (bandwidth_mbps * 1e6) + latency_s``
  (``inf`` without a link);
* compute of a stage: ``flops / flops_per_s``, or the sum of the operators'
  given compute times;
* the load of a stage under each objective (``OBJECTIVES``):

  - ``communication``: its outgoing transfer (the original work's model);
  - ``max``: ``max(compute, outgoing)`` (compute overlapped with sending);
  - ``sum``: ``compute + incoming + outgoing`` (no overlap);
  - ``star``: ``compute + star communication``, where the star communication
    of a stage is, through host memory, the cost of every tensor it produces
    that another stage reads (once) plus the cost of every tensor it reads
    from another stage (once), after Tarnawski et al. (2020).

The bottleneck of a plan is the largest stage load.

References
----------
Tarnawski, J., Phanishayee, A., Devanur, N., Mahajan, D. and Nina Paravecino,
F. (2020). Efficient algorithms for device placement of DNN graph operators.
NeurIPS 33.

Examples
--------
>>> transfer_time_s(1e6, 8.0), transfer_time_s(1e6, 8.0, latency_s=0.5)
(1.0, 1.5)
>>> stage_load_s("sum", compute_s=1.0, incoming_s=2.0, outgoing_s=3.0)
6.0
>>> stage_load_s("max", compute_s=1.0, incoming_s=2.0, outgoing_s=3.0)
3.0
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "OBJECTIVES",
    "transfer_time_s",
    "transfer_times_s",
    "stage_load_s",
    "uses_compute",
]

OBJECTIVES = ("communication", "max", "sum", "star")
"""The stage-load models; see the module docstring."""


def uses_compute(objective: str) -> bool:
    """Whether stage compute time enters the ``objective``."""
    return objective != "communication"


def transfer_time_s(nbytes: float, bandwidth_mbps: float, latency_s: float = 0.0) -> float:
    """Seconds to send ``nbytes`` bytes over a link of ``bandwidth_mbps`` Mbit/s (``inf``: none)."""
    if bandwidth_mbps <= 0:
        return math.inf
    return float(nbytes) * 8.0 / (float(bandwidth_mbps) * 1e6) + float(latency_s)


def transfer_times_s(nbytes, bandwidth_mbps, latency_s=None) -> np.ndarray:
    """Vectorised :func:`transfer_time_s` (same operations): ``nbytes[..., None, None]`` over links.

    ``nbytes`` has any shape ``X``; ``bandwidth_mbps`` and ``latency_s`` are
    ``(N, N)``; the result is ``X + (N, N)``, ``inf`` where the bandwidth is
    0 and on the diagonal.
    """
    nb = np.asarray(nbytes, dtype=float)
    bw = np.asarray(bandwidth_mbps, dtype=float)
    n = bw.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (nb[..., None, None] * 8.0) / (bw * 1e6)
    if latency_s is not None:
        t = t + np.asarray(latency_s, dtype=float)
    link = (bw > 0) & ~np.eye(n, dtype=bool)
    return np.where(link, t, np.inf)


def stage_load_s(
    objective: str,
    *,
    compute_s: float = 0.0,
    incoming_s: float = 0.0,
    outgoing_s: float = 0.0,
    star_s: float = 0.0,
) -> float:
    """Seconds per inference one stage needs under ``objective`` (see the module docstring)."""
    if objective == "communication":
        return outgoing_s
    if objective == "max":
        return max(compute_s, outgoing_s)
    if objective == "sum":
        return compute_s + incoming_s + outgoing_s
    if objective == "star":
        return compute_s + star_s
    raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
