"""Faults: what can go wrong, when it is made to happen, and how it is noticed.

A fault is scheduled (:func:`schedule_faults`: given ones and random ones),
injected into a running deployment (:func:`inject_fault`: a signal to the
worker, or a command it obeys) and detected from what the dispatcher sees
(:func:`detect_fault`: an exit, silence, a computation or send that takes
too long, frames that fail their checks). Injected faults are recorded as
dicts with the keys ``kind``, ``node``, ``at_s``, ``epoch``, ``stage``,
``matched`` (and ``note`` when the node hosted no stage).
"""

from __future__ import annotations

import math
import os
import random
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

from partopt.emulator.options import FAULT_KINDS, EmulatorError

if TYPE_CHECKING:
    from partopt.cluster import Cluster
    from partopt.emulator.deployment import Deployment, Worker
    from partopt.emulator.options import EmulatorOptions

__all__ = ["Fault", "parse_fault", "schedule_faults", "inject_fault", "detect_fault"]


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
) -> dict:
    """Inject ``fault`` into the deployment ``dep``; returns its record (see the module docstring).

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
    rec = {
        "kind": fault.kind,
        "node": names[node],
        "at_s": at_s,
        "epoch": dep.epoch,
        "stage": None if w is None else w.stage,
        "matched": False,
    }
    if w is None:
        if fault.kind == "kill" and node in alive:
            alive.discard(node)  # an idle node dies: later re-plans do without it
            rec["note"] = "node hosted no stage; removed from the cluster"
        else:
            rec["note"] = "node hosts no stage; nothing to inject"
        rec["matched"] = True
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
