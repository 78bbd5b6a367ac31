"""Faults: what can go wrong, when it is made to happen, and how it is noticed.

A fault is scheduled (:func:`schedule_faults`: given ones and random ones),
injected into a running deployment (:func:`inject_fault`: a signal to the
worker, or a command it obeys) and detected from what the dispatcher sees
(:func:`detect_fault`: an exit, silence, a computation or send that takes
too long, frames that fail their checks). One :class:`FaultRecord` follows
each fault from its injection (or, for a fault nobody injected, its
detection) to the moment the service is back.
"""

from __future__ import annotations

import math
import os
import random
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from partopt.emulator.options import FAULT_KINDS, EmulatorError

if TYPE_CHECKING:
    from partopt.cluster import Cluster
    from partopt.emulator.deployment import Deployment, Worker
    from partopt.emulator.options import EmulatorOptions

__all__ = [
    "Fault",
    "FaultRecord",
    "detect_fault",
    "inject_fault",
    "parse_fault",
    "schedule_faults",
]


@dataclass(frozen=True)
class Fault:
    """Inject ``kind`` into the worker on ``node`` (``None``: a random stage) at ``at_s``."""

    kind: str
    node: str | None
    at_s: float


def parse_fault(spec: str, kind: str | None = "kill") -> Fault:
    """``NAME@SECONDS`` or ``KIND:NAME@SECONDS`` (emulated seconds after the first request).

    ``kind`` is the kind of a fault given without one (``None``: a kind is required).

    Examples
    --------
    >>> parse_fault("n3@2.5")
    Fault(kind='kill', node='n3', at_s=2.5)
    >>> parse_fault("stall:n1@0.5")
    Fault(kind='stall', node='n1', at_s=0.5)
    """
    body = spec.strip()
    head, sep, rest = body.partition(":")
    if sep and head in FAULT_KINDS:
        kind, body = head, rest
    elif kind is None:
        raise EmulatorError(
            f"bad fault {spec!r}: expected KIND:NAME@SECONDS with KIND one of {', '.join(FAULT_KINDS)}"
        )
    name, at, seconds = body.rpartition("@")
    try:
        if not at or not name:
            raise ValueError
        t = float(seconds)
        if not (t >= 0 and math.isfinite(t)):
            raise ValueError
    except ValueError:
        raise EmulatorError(
            f"bad fault {spec!r}: expected NAME@SECONDS (e.g. n3@2.5) or KIND:NAME@SECONDS "
            f"with KIND one of {', '.join(FAULT_KINDS)}"
        ) from None
    if kind not in FAULT_KINDS:
        raise EmulatorError(f"unknown fault kind {kind!r}; choose one of {', '.join(FAULT_KINDS)}")
    return Fault(kind, name, t)


@dataclass
class FaultRecord:
    """One fault, from injection (or detection) to recovery; times in emulated seconds.

    ``kind`` is the injected kind, or ``unplanned`` for a fault the dispatcher
    found without injecting it; ``epoch`` and ``stage`` say which deployment
    and stage it hit; ``lost`` the node or link given up for it; ``replan``
    the re-plan's summary (:meth:`partopt.replan.Replan.to_dict`).
    """

    kind: str
    node: str
    epoch: int
    stage: int | None
    injected_at_s: float | None
    matched: bool = False  # attributed to a detection (or nothing to detect)
    note: str = ""
    lost: str | None = None
    detected_as: str | None = None
    detected_at_s: float | None = None
    detail: str = ""
    resumed_at_s: float | None = None
    requests_resent: int | None = None
    predicted_throughput_before: float | None = None
    predicted_throughput_after: float | None = None
    replan: dict | None = None
    also_lost: list[str] | None = None
    resume_epoch: int | None = field(default=None, repr=False)

    @property
    def detection_s(self) -> float | None:
        if self.detected_at_s is None or self.injected_at_s is None:
            return None
        return self.detected_at_s - self.injected_at_s

    @property
    def outage_s(self) -> float | None:
        """From the injection (else the detection) to the first result of the new deployment."""
        if self.resumed_at_s is None:
            return None
        start = self.injected_at_s if self.injected_at_s is not None else self.detected_at_s
        return None if start is None else self.resumed_at_s - start

    def to_dict(self) -> dict:
        """The report's entry for this fault."""
        if self.detected_at_s is None:
            return {
                "kind": self.kind,
                "node": self.node,
                "injected_at_s": self.injected_at_s,
                "detected_as": "no stage" if self.note else None,
                "note": self.note or "not detected before the run ended",
                "detected_at_s": None,
                "detection_s": None,
                "outage_s": None,
                "replan": {"source": "-", "runtime_s": None},
            }
        d: dict = {
            "kind": self.kind,
            "node": self.node,
            "detected_as": self.detected_as,
            "stage": self.stage,
            "lost": self.lost,
            "detail": self.detail,
            "injected_at_s": self.injected_at_s,
            "detected_at_s": self.detected_at_s,
            "detection_s": self.detection_s,
            "resumed_at_s": self.resumed_at_s,
            "outage_s": self.outage_s,
            "requests_resent": self.requests_resent,
            "predicted_throughput_before": self.predicted_throughput_before,
            "predicted_throughput_after": self.predicted_throughput_after,
            "replan": self.replan,
        }
        if self.also_lost is not None:
            d["also_lost"] = self.also_lost
        return d


def schedule_faults(opts: EmulatorOptions, rng: random.Random, predicted_s: float) -> list[Fault]:
    """The scheduled faults plus ``opts.random_faults`` random ones, by time."""
    faults = list(opts.faults)
    if opts.random_faults:
        span = (
            opts.requests * predicted_s if math.isfinite(predicted_s) and predicted_s > 0 else 1.0
        )
        for _ in range(opts.random_faults):
            faults.append(
                Fault(
                    rng.choice(opts.fault_kinds),
                    None,
                    rng.uniform(0.15, 0.85) * span,
                )
            )
    return sorted(faults, key=lambda f: f.at_s)


def inject_fault(
    fault: Fault,
    dep: Deployment,
    cluster: Cluster,
    rng: random.Random,
    alive: set[int],
    at_s: float,
) -> FaultRecord:
    """Inject ``fault`` into the deployment ``dep``; returns its record.

    A node that hosts no stage is noted; killing it removes it from ``alive``.
    """
    names = cluster.names
    w: Worker | None
    if fault.node is None:
        w = rng.choice(dep.workers)
        node = w.node
    else:
        node = cluster.index(fault.node)
        w = next((x for x in dep.workers if x.node == node), None)
    rec = FaultRecord(fault.kind, names[node], dep.epoch, None if w is None else w.stage, at_s)
    if w is None:
        if fault.kind == "kill" and node in alive:
            alive.discard(node)  # an idle node dies: later re-plans do without it
            rec.note = "node hosted no stage; removed from the cluster"
        else:
            rec.note = "node hosts no stage; nothing to inject"
        rec.matched = True
        return rec
    try:
        if fault.kind == "kill":
            os.kill(w.proc.pid, signal.SIGKILL)
        elif fault.kind == "freeze":
            os.kill(w.proc.pid, signal.SIGSTOP)
        elif w.control is not None:
            w.control.send({"cmd": "inject", "fault": fault.kind})
    except OSError:
        pass
    return rec


def detect_fault(dep: Deployment, now: float) -> tuple[str, int, str] | None:
    """``(detected_as, stage, detail)`` of the first faulty worker of ``dep``, or ``None``.

    ``now`` is wall time (``time.monotonic``).
    """
    for w in dep.workers:
        if w.proc.poll() is not None or w.closed:
            return "dead", w.stage, f"worker exited (code {w.proc.poll()})"
    if dep.garbage is not None:
        stage, detail = dep.garbage
        return "garbage", stage, detail
    for w in dep.workers:
        silent = now - w.last_hb
        if silent > dep.hb_timeout_s:
            return "frozen", w.stage, f"no heartbeat for {silent:.2f} wall s"
    for w in dep.workers:
        # as of the worker's last heartbeat: a silent worker is caught as frozen above
        st = w.state
        if st.get("computing_for", 0.0) > dep.stall_timeout_s:
            return "hung", w.stage, f"one computation has run {st['computing_for']:.2f} wall s"
        if st.get("sending_for", 0.0) > dep.stall_timeout_s:
            return "stalled link", w.stage, f"one send has taken {st['sending_for']:.2f} wall s"
    return None
