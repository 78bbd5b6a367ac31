"""Deployment: worker processes for one plan, wired in a pipeline, and their tear-down.

A deployment (one *epoch*) is one worker process per stage
(:mod:`partopt.emulator.worker`), each told its stage by a
:class:`~partopt.emulator.config.WorkerConfig` file and the run's secret on
its standard input, wired ``dispatcher -> stage 0 -> ... -> stage K-1 ->
dispatcher`` over loopback TCP.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from partopt.emulator.config import WorkerConfig
from partopt.emulator.wire import ControlChannel
from partopt.export import Export
from partopt.plan import Plan

__all__ = [
    "DISPATCHER_ID",
    "Deployment",
    "Worker",
    "kill_process",
    "last_line",
    "spawn_worker",
    "teardown",
]

DISPATCHER_ID = 0xFFFF
"""Stage id in the hello frames the dispatcher sends."""

# Workers import only the worker and wire modules: stub parent packages keep
# partopt/__init__ (and its networkx/onnx imports) out, so that a worker starts
# in a fraction of the time, which matters with 8 workers on 2 cores.
_BOOTSTRAP = """
import sys, types
for name, path in (("partopt", {pkg!r}), ("partopt.emulator", {emu!r})):
    mod = types.ModuleType(name)
    mod.__path__ = [path]
    sys.modules[name] = mod
from partopt.emulator.worker import main
sys.exit(main())
"""


@dataclass
class Worker:
    stage: int
    node: int
    proc: subprocess.Popen
    log_path: Path
    control: ControlChannel | None = None
    ready: bool = False
    closed: bool = False
    last_hb: float = 0.0
    state: dict = field(default_factory=dict)
    warmup_s: float = 0.0
    error: str = ""


@dataclass
class Deployment:
    epoch: int
    plan: Plan
    export: Export
    workers: list[Worker]
    predicted_bottleneck_s: float
    rates: list[float | None]
    feed_q: queue.Queue = field(default_factory=queue.Queue)
    started: float = 0.0
    ended: float | None = None
    hb_timeout_s: float = 2.0
    stall_timeout_s: float = 2.0
    garbage: tuple[int, str] | None = None
    conns: list = field(default_factory=list)
    stage_addrs: list = field(default_factory=list)  # (host, port) each stage listens on


def last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def spawn_worker(
    cfg: WorkerConfig, cfg_path: Path, log_path: Path, secret: bytes
) -> subprocess.Popen:
    """Start the worker described by ``cfg`` (saved to ``cfg_path``), output to ``log_path``."""
    here = Path(__file__).resolve().parent
    bootstrap = _BOOTSTRAP.format(pkg=str(here.parent), emu=str(here))
    cfg.save(cfg_path)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", bootstrap, str(cfg_path)],
            pass_fds=(cfg.listen_fd,),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:  # the secret travels through a pipe only this process writes to
        assert proc.stdin is not None
        proc.stdin.write(secret.hex().encode() + b"\n")
        proc.stdin.close()
    except OSError:
        pass  # the worker died at once: its exit is reported when it does not get ready
    return proc


def kill_process(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` if it runs (this also ends a stopped, frozen, process)."""
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError:
            pass


def teardown(dep: Deployment, now: float | None = None) -> None:
    """Kill the workers of ``dep`` and close its connections; idempotent."""
    if dep.ended is not None:
        return
    dep.ended = time.monotonic() if now is None else now
    for w in dep.workers:
        kill_process(w.proc)
    for w in dep.workers:
        try:
            w.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            pass
        if w.control is not None:
            w.control.close()
    dep.feed_q.put(None)
    for c in dep.conns:
        try:
            c.close()
        except OSError:
            pass
