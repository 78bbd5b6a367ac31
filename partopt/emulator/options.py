"""Settings of an emulation run, and the error it raises for bad ones."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from partopt.errors import PartoptError
from partopt.replan import check_replan_method

if TYPE_CHECKING:
    from partopt.emulator.faults import Fault

__all__ = ["FAULT_KINDS", "EmulatorError", "EmulatorOptions"]

FAULT_KINDS = ("kill", "freeze", "hang", "stall", "garbage")
"""kill: SIGKILL the worker; freeze: SIGSTOP it (heartbeats stop); hang: its compute
never returns (heartbeats go on); stall: its outgoing link goes silent mid-message;
garbage: it sends corrupt frames."""


class EmulatorError(PartoptError):
    """The emulation cannot start (or go on); the message says why, in one line."""


@dataclass
class EmulatorOptions:
    """Settings of a run.

    Parameters
    ----------
    requests
        Number of requests (inferences) to serve.
    time_scale
        Wall seconds per emulated second: every link is ``1 / time_scale``
        times faster than its bandwidth, and emulated node compute (when the
        cluster gives FLOP/s) ``time_scale`` times shorter. Real onnxruntime
        compute is *not* scaled; keep it small next to the scaled link times.
    window
        Requests in flight (default ``2 * stages + 2``).
    faults
        Scheduled faults.
    random_faults
        Number of extra faults of random kinds (``fault_kinds``), at random
        times in the middle 70% of the expected run, on random stages.
    port
        First of ``stages + 2`` consecutive TCP ports on ``host`` for the
        first deployment (control, results, one per stage); 0 lets the
        system pick. Re-deployments always let the system pick.
    replan_method
        Solver for re-planning (``auto``: see :data:`partopt.replan.AUTO_METHODS`).
    detect_timeout_s
        Wall seconds without a heartbeat, or inside one computation or one
        send, that make a worker faulty; default from the plan's link times.
    verify
        Compare every result with the unsplit model's output for the same input.
    emulate_compute
        When the cluster gives FLOP/s, hold each stage's result until its
        node would have finished (``flops / speed``, scaled).
    """

    requests: int = 100
    time_scale: float = 1.0
    window: int | None = None
    faults: tuple[Fault, ...] = ()
    random_faults: int = 0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    replan_method: str = "auto"
    replan_time_limit_s: float | None = 10.0
    heartbeat_s: float = 0.05
    detect_timeout_s: float | None = None
    startup_timeout_s: float = 120.0
    verify: bool = False
    emulate_compute: bool = True
    chunk_s: float = 0.002
    burst_s: float = 0.01

    def check(self) -> None:
        if int(self.requests) < 1:
            raise EmulatorError(f"--requests must be at least 1, got {self.requests}")
        if not (self.time_scale > 0 and math.isfinite(self.time_scale)):
            raise EmulatorError(f"--time-scale must be a positive number, got {self.time_scale}")
        if self.window is not None and int(self.window) < 1:
            raise EmulatorError(f"--window must be at least 1, got {self.window}")
        if not 0 <= int(self.port) <= 65535:
            raise EmulatorError(f"--port must be in 0..65535, got {self.port}")
        if self.random_faults < 0:
            raise EmulatorError(f"--random-faults must be >= 0, got {self.random_faults}")
        check_replan_method(self.replan_method)
        limit = self.replan_time_limit_s
        if limit is not None and not (limit > 0 and math.isfinite(limit)):
            raise EmulatorError(
                f"--replan-time-limit must be a positive number of seconds, got {limit}"
            )
        for k in self.fault_kinds:
            if k not in FAULT_KINDS:
                raise EmulatorError(
                    f"unknown fault kind {k!r}; choose from {', '.join(FAULT_KINDS)}"
                )
