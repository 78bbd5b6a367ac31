"""The dispatcher: deploys a plan as worker processes, feeds requests, survives faults.

One :class:`Emulator` run:

1. checks the plan with :func:`partopt.plan.evaluate` (stages cover the
   chain, fit their nodes' memory, consecutive nodes linked), splits the
   model into stages (:func:`partopt.export.split_model`) and binds every
   listening socket it needs, so that a bad plan or a port in use fails
   with one line before any process starts;
2. starts one worker process per stage (:mod:`partopt.emulator.worker`),
   wired ``dispatcher -> stage 0 -> ... -> stage K-1 -> dispatcher`` over
   loopback TCP; the link between stages ``k`` and ``k + 1`` is shaped to
   the bandwidth between their nodes, divided by the time scale;
3. keeps ``window`` requests in flight (closed loop, so the pipeline stays
   full and the measured rate is the pipeline's capacity) and collects the
   results, each request id delivered exactly once;
4. watches the workers: a process that exits, stops sending heartbeats
   (frozen), computes for too long (hung), sends for too long (stalled
   link) or sends frames that fail their checks (garbage) is a fault. The
   dispatcher then tears the pipeline down, re-plans on the nodes and links
   that remain (:func:`partopt.replan.replan`, warm-started from
   the current plan), deploys the new plan and re-sends every request that
   had no result yet. Results are keyed by request id, so a request that
   somehow completes twice is delivered once (the copy is counted in
   ``duplicates_dropped``).

Times in the report are emulated seconds (wall seconds / time scale).
Faults given as ``NAME@SECONDS`` fire at that emulated time after the first
request is sent.
"""

from __future__ import annotations

import collections
import math
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from partopt.emulator.auth import Unauthenticated, accept_peer, authenticate_to, new_secret
from partopt.emulator.config import WorkerConfig
from partopt.emulator.report import EmulationReport, steady_throughput
from partopt.emulator.wire import (
    KIND_DATA,
    KIND_HELLO,
    ControlChannel,
    Garbage,
    decode_tensors,
    dtype_of,
    encode_tensors,
    payload_size,
    recv_frame,
    send_frame,
)
from partopt.errors import PartoptError
from partopt.export import (
    Export,
    missing_weights,
    random_inputs,
    random_weights,
    session,
    split_model,
)
from partopt.plan import InvalidPlan, Plan, evaluate
from partopt.problem import Problem
from partopt.replan import check_replan_method, replan

__all__ = [
    "FAULT_KINDS",
    "EmulatorError",
    "Fault",
    "EmulatorOptions",
    "Emulator",
    "emulate",
    "parse_fault",
]

FAULT_KINDS = ("kill", "freeze", "hang", "stall", "garbage")
"""kill: SIGKILL the worker; freeze: SIGSTOP it (heartbeats stop); hang: its compute
never returns (heartbeats go on); stall: its outgoing link goes silent mid-message;
garbage: it sends corrupt frames."""

_DISPATCHER_ID = 0xFFFF

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


class EmulatorError(PartoptError):
    """The emulation cannot start (or go on); the message says why, in one line."""


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


@dataclass
class _Worker:
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
class _Deployment:
    epoch: int
    plan: Plan
    export: Export
    workers: list[_Worker]
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


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


class Emulator:
    """One emulation run of ``plan`` for ``problem`` (see module docstring).

    Parameters
    ----------
    model
        The ONNX model (architecture-only models get random weights, seeded
        by ``options.seed``).
    problem
        Chain (built from ``model``, with ``block_nodes``), cluster and the
        memory/transfer/objective models the plan was made with.
    plan
        The plan, with node indices of ``problem.cluster``.
    layer_graph
        The :class:`~partopt.onnx_graph.LayerGraph` the chain was built from.
    input_shapes
        Shapes of graph inputs (symbolic dimensions otherwise 1).
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        problem: Problem,
        plan: Plan,
        options: EmulatorOptions | None = None,
        *,
        layer_graph=None,
        input_shapes=None,
    ) -> None:
        self.opts = options or EmulatorOptions()
        self.opts.check()
        self.model = model
        self.problem = problem
        self.plan = plan
        self.layer_graph = layer_graph
        self.input_shapes = input_shapes
        self.weights = "model"
        self.events: queue.Queue = queue.Queue()
        self.rng = random.Random(self.opts.seed)
        self.alive = set(range(problem.num_nodes))
        self.dead_links: set[tuple[int, int]] = set()
        self.deployments: list[_Deployment] = []
        self.dep: _Deployment | None = None
        self.epoch_out_specs: dict[int, list[dict]] = {}
        self.fault_records: list[dict] = []
        self.injected: list[dict] = []
        self.warnings: list[str] = []
        self.error: str | None = None
        self.tmp: Path | None = None
        self.listeners: list[socket.socket] = []
        self.all_workers: list[_Worker] = []
        self.closing = False
        self.secret = new_secret()  # known to this process and its workers only
        # request bookkeeping
        self.done: dict[int, float] = {}
        self.done_epoch: dict[int, int] = {}
        self.delivered: list[int] = []  # request ids in the order their results were accepted
        self.outputs: dict[int, list[np.ndarray]] = {}
        self.first_sent: dict[int, float] = {}
        self.inflight: set[int] = set()
        self.pending: collections.deque[int] = collections.deque()
        self.next_new = 0
        self.retransmissions = 0
        self.duplicates = 0
        self.cache: dict[int, list] = {}

    # -- set-up ---------------------------------------------------------------------

    def _prepare(self) -> tuple[Export, list[socket.socket]]:
        evaluate(self.problem, self.plan)  # InvalidPlan: one line, nothing started
        for f in self.opts.faults:
            if f.node is not None:
                self.problem.cluster.index(f.node)  # ClusterError for an unknown node
        if missing_weights(self.model):
            self.model = random_weights(self.model, self.opts.seed)
            self.weights = f"random (seed {self.opts.seed}; the model has no weight data)"
        export = self._split(self.plan)
        k = len(self.plan.stages)
        self.tmp = Path(tempfile.mkdtemp(prefix="partopt-emulate-"))
        base = int(self.opts.port)
        ports = [0] * (k + 2) if base == 0 else list(range(base, base + k + 2))
        if base and ports[-1] > 65535:
            raise EmulatorError(
                f"--port {base} leaves too few ports below 65536 for {k + 2} sockets"
            )
        socks = [self._bind(p) for p in ports]
        self.control_listener, self.result_listener = socks[0], socks[1]
        for target, lst in ((self._accept_control, socks[0]), (self._accept_results, socks[1])):
            threading.Thread(target=target, args=(lst,), daemon=True).start()
        return export, socks[2:]

    def _split(self, plan: Plan) -> Export:
        export = split_model(
            self.model,
            self.problem.chain,
            plan,
            input_shapes=self.input_shapes,
            layer_graph=self.layer_graph,
        )
        for s in export.stages:
            for t in (*s.inputs, *s.outputs):
                if t.shape is None:
                    raise EmulatorError(f"tensor {t.name!r} has no known shape; give --input-shape")
                try:
                    dtype_of(t.elem_type)
                except ValueError as exc:
                    raise EmulatorError(str(exc)) from None
        return export

    def _bind(self, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((self.opts.host, port))
        except OSError as exc:
            s.close()
            if exc.errno in (98, 48):  # EADDRINUSE (Linux, BSD)
                raise EmulatorError(
                    f"port {port} on {self.opts.host} is already in use; choose another --port "
                    "(the emulator needs stages + 2 consecutive ports) or leave --port out"
                ) from None
            raise EmulatorError(
                f"cannot listen on {self.opts.host}:{port}: {exc.strerror}"
            ) from None
        s.listen(16)
        self.listeners.append(s)
        return s

    # -- I/O threads ------------------------------------------------------------------

    def _accept_control(self, lst: socket.socket) -> None:
        while True:
            try:
                conn, _ = lst.accept()
            except OSError:
                return
            threading.Thread(target=self._read_control, args=(conn,), daemon=True).start()

    def _read_control(self, conn: socket.socket) -> None:
        try:
            accept_peer(conn, self.secret)
        except (Unauthenticated, OSError):
            conn.close()  # a stranger: no event, no effect on the run
            return
        chan = ControlChannel(conn)
        try:
            conn.settimeout(self.opts.startup_timeout_s)
            hello = chan.recv()
            conn.settimeout(None)
            if not hello or hello.get("type") != "hello":
                chan.close()
                return
            epoch, stage, pid = int(hello["epoch"]), int(hello["stage"]), int(hello["pid"])
        except (OSError, Garbage, ValueError, KeyError, TypeError):
            chan.close()
            return
        self.events.put(("hello", epoch, stage, chan, pid))
        try:
            while True:
                msg = chan.recv()
                if msg is None:
                    break
                self.events.put(("ctl", epoch, stage, msg, time.monotonic(), chan))
        except (OSError, Garbage):
            pass
        self.events.put(("ctl_closed", epoch, stage, chan))

    def _accept_results(self, lst: socket.socket) -> None:
        while True:
            try:
                conn, _ = lst.accept()
            except OSError:
                return
            threading.Thread(target=self._read_results, args=(conn,), daemon=True).start()

    def _read_results(self, conn: socket.socket) -> None:
        epoch = stage = -1
        try:
            accept_peer(conn, self.secret)
        except (Unauthenticated, OSError):
            conn.close()  # a stranger: no event, no effect on the run
            return
        try:
            kind, epoch, stage, _ = recv_frame(conn)
            if kind != KIND_HELLO or epoch not in self.epoch_out_specs:
                raise Garbage("result connection did not start with a hello")
            self.events.put(("conn", epoch, conn))
            specs = self.epoch_out_specs[epoch]
            expected = payload_size(specs)
            while True:
                kind, ep, rid, payload = recv_frame(conn, expected)
                if kind != KIND_DATA or ep != epoch:
                    raise Garbage(f"unexpected frame kind {kind} of epoch {ep}")
                arrays = decode_tensors(payload, specs)
                self.events.put(("result", epoch, rid, arrays, time.monotonic()))
        except Garbage as exc:
            self.events.put(("garbage", epoch, stage, str(exc)))
        except (EOFError, ConnectionError, OSError):
            pass

    def _feeder(self, dep: _Deployment, addr) -> None:
        try:
            s = socket.create_connection(addr, timeout=10)
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            dep.conns.append(s)
            authenticate_to(s, self.secret)
            send_frame(s, KIND_HELLO, dep.epoch, _DISPATCHER_ID, [])
            while True:
                item = dep.feed_q.get()
                if item is None:
                    break
                rid, buffers = item
                send_frame(s, KIND_DATA, dep.epoch, rid, buffers)
        except OSError:
            pass

    # -- deployment -------------------------------------------------------------------

    def _deploy(self, plan: Plan, export: Export | None = None, listeners=None) -> _Deployment:
        epoch = len(self.deployments)
        export = export or self._split(plan)
        k = len(plan.stages)
        evaluation = evaluate(self.problem, plan)
        bw = self.problem.cluster.bandwidth_mbps
        scale = self.opts.time_scale
        rates: list[float | None] = []
        for j in range(k):
            if j + 1 < k:
                rates.append(
                    float(bw[plan.stages[j].node, plan.stages[j + 1].node]) * 1e6 / 8 / scale
                )
            else:
                rates.append(None)
        listeners = listeners or [self._bind(0) for _ in range(k)]
        self.epoch_out_specs[epoch] = [t.to_dict() for t in export.outputs]
        dep = _Deployment(epoch, plan, export, [], evaluation.bottleneck_s, rates)
        self.deployments.append(dep)
        self.dep = dep
        here = Path(__file__).resolve().parent
        bootstrap = _BOOTSTRAP.format(pkg=str(here.parent), emu=str(here))
        speeds = self.problem.cluster.flops_per_s
        for j, s in enumerate(export.stages):
            path = self.tmp / f"e{epoch}_stage{j}.onnx"
            onnx.save(s.model, str(path))
            node = plan.stages[j].node
            floor = 0.0
            if self.opts.emulate_compute and speeds is not None:
                flops = self.problem.stage_flops(s.first_block, s.last_block)
                floor = flops / float(speeds[node]) * scale
            rate = rates[j]
            chunk = 65536 if rate is None else int(min(65536, max(1024, rate * self.opts.chunk_s)))
            down = (
                listeners[j + 1].getsockname() if j + 1 < k else self.result_listener.getsockname()
            )
            cfg = WorkerConfig(
                stage=j,
                epoch=epoch,
                model_path=str(path),
                inputs=[t.to_dict() for t in s.inputs],
                outputs=[t.to_dict() for t in s.outputs],
                listen_fd=listeners[j].fileno(),
                downstream=down,
                control=self.control_listener.getsockname(),
                parent_pid=os.getpid(),
                rate_bytes_per_s=rate,
                burst_bytes=None if rate is None else max(2 * chunk, rate * self.opts.burst_s),
                chunk_bytes=chunk,
                compute_floor_s=floor,
                heartbeat_s=self.opts.heartbeat_s,
                threads=1,
            )
            cfg_path = self.tmp / f"e{epoch}_stage{j}.json"
            cfg.save(cfg_path)
            log_path = self.tmp / f"e{epoch}_stage{j}.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-c", bootstrap, str(cfg_path)],
                    pass_fds=(listeners[j].fileno(),),
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:  # the secret travels through a pipe only this process writes to
                assert proc.stdin is not None
                proc.stdin.write(self.secret.hex().encode() + b"\n")
                proc.stdin.close()
            except OSError:
                pass  # the worker died at once: reported by _wait_ready
            w = _Worker(j, node, proc, log_path)
            dep.workers.append(w)
            self.all_workers.append(w)
        feed_addr = listeners[0].getsockname()
        dep.stage_addrs = [lst.getsockname() for lst in listeners]
        for lst in listeners:  # the workers hold their own copies now
            lst.close()
            self.listeners.remove(lst)
        self._wait_ready(dep)
        link_s = [(s.output_bytes or 0) / r for s, r in zip(export.stages, rates, strict=True) if r]
        warm = max((w.warmup_s for w in dep.workers), default=0.0)
        hb = self.opts.heartbeat_s
        dep.hb_timeout_s = self.opts.detect_timeout_s or max(1.5, 30 * hb)
        # a send or computation 10x (20x) longer than planned is a fault, and never before
        # a frozen worker (silent for hb_timeout_s) could have been caught as such
        dep.stall_timeout_s = (self.opts.detect_timeout_s or 0.0) or max(
            dep.hb_timeout_s + 0.5, 10 * max(link_s, default=0.0) + 20 * warm
        )
        dep.started = time.monotonic()
        for w in dep.workers:
            w.last_hb = dep.started
        threading.Thread(target=self._feeder, args=(dep, feed_addr), daemon=True).start()
        return dep

    def _wait_ready(self, dep: _Deployment) -> None:
        end = time.monotonic() + self.opts.startup_timeout_s
        while not all(w.ready for w in dep.workers):
            for w in dep.workers:
                if w.proc.poll() is not None or w.error:
                    why = w.error or _last_line(w.log_path) or f"exit code {w.proc.returncode}"
                    raise EmulatorError(
                        f"worker for stage {w.stage} on node "
                        f"{self.problem.cluster.names[w.node]!r} failed to start: {why}"
                    )
            if time.monotonic() > end:
                raise EmulatorError(
                    f"workers not ready after {self.opts.startup_timeout_s:g} s; "
                    "the machine may be overloaded"
                )
            self._drain_events(0.02)

    # -- events ---------------------------------------------------------------------

    def _drain_events(self, timeout: float) -> None:
        try:
            ev = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._handle(ev)
            try:
                ev = self.events.get_nowait()
            except queue.Empty:
                return

    def _worker(self, epoch: int, stage: int) -> _Worker | None:
        if 0 <= epoch < len(self.deployments):
            workers = self.deployments[epoch].workers
            if 0 <= stage < len(workers):
                return workers[stage]
        return None

    def _handle(self, ev) -> None:
        kind, epoch = ev[0], ev[1]
        current = self.dep is not None and epoch == self.dep.epoch and self.dep.ended is None
        if kind == "result":
            _, _, rid, arrays, t = ev
            self._result(epoch, rid, arrays, t)
        elif kind == "conn":
            dep = self.deployments[epoch]
            dep.conns.append(ev[2])
            if dep.ended is not None:
                ev[2].close()
        elif kind == "garbage":
            if current and self.dep.garbage is None:
                self.dep.garbage = (ev[2], ev[3])
        elif kind == "hello":
            w = self._worker(epoch, ev[2])
            if w is not None and w.control is None and w.proc.pid == ev[4]:
                w.control = ev[3]
            else:
                ev[3].close()
        elif kind == "ctl":
            _, _, stage, msg, t, chan = ev
            w = self._worker(epoch, stage)
            if w is None or w.control is not chan:
                return
            typ = msg.get("type")
            if typ == "ready":
                w.ready, w.warmup_s, w.last_hb = True, float(msg.get("warmup_s", 0.0)), t
            elif typ in ("hb", "stats"):
                w.state, w.last_hb = msg, t
            elif typ == "garbage":
                # stage k received garbage: the sender, stage k - 1, is the culprit
                if current and self.dep.garbage is None and stage > 0:
                    self.dep.garbage = (stage - 1, msg.get("detail", ""))
            elif typ == "error":
                w.error = str(msg.get("detail", "error"))
        elif kind == "ctl_closed":
            w = self._worker(epoch, ev[2])
            if w is not None and w.control is ev[3]:
                w.closed = True

    def _result(self, epoch: int, rid: int, arrays, t: float) -> None:
        if not 0 <= rid < self.opts.requests or rid not in self.first_sent:
            dep = self.deployments[epoch]
            if dep is self.dep and dep.garbage is None:
                dep.garbage = (len(dep.workers) - 1, f"result for unknown request {rid}")
            return
        if rid in self.done:
            self.duplicates += 1
            return
        self.done[rid] = t
        self.done_epoch[rid] = epoch
        self.delivered.append(rid)
        self.inflight.discard(rid)
        self.cache.pop(rid, None)
        if self.opts.verify:
            self.outputs[rid] = [np.array(a) for a in arrays]
        for rec in self.fault_records:
            if rec.get("_resume_epoch") == epoch and rec.get("resumed_at_s") is None:
                rec["resumed_at_s"] = self._emu(t)
                rec["outage_s"] = rec["resumed_at_s"] - (
                    rec["injected_at_s"]
                    if rec["injected_at_s"] is not None
                    else rec["detected_at_s"]
                )

    # -- requests ---------------------------------------------------------------------

    def _emu(self, wall: float) -> float:
        return (wall - self.t_start) / self.opts.time_scale

    def _request(self, rid: int) -> list:
        if rid not in self.cache:
            export = self.dep.export
            arrays = random_inputs(
                export.inputs, self._input_seed(rid), export.meta.get("index_bounds")
            )
            self.cache[rid] = encode_tensors([arrays[t.name] for t in self.dep.export.inputs])
        return self.cache[rid]

    def _input_seed(self, rid: int) -> int:
        return (self.opts.seed * 1_000_003 + rid + 1) & 0x7FFFFFFF

    def _feed(self, window: int) -> None:
        now = time.monotonic()
        while len(self.inflight) < window and (self.pending or self.next_new < self.opts.requests):
            if self.pending:
                rid = self.pending.popleft()
                if rid in self.done:
                    continue
                self.retransmissions += 1
            else:
                rid = self.next_new
                self.next_new += 1
            self.dep.feed_q.put((rid, self._request(rid)))
            self.inflight.add(rid)
            self.first_sent.setdefault(rid, now)

    # -- faults ---------------------------------------------------------------------

    def _schedule(self, predicted_s: float) -> list[Fault]:
        faults = list(self.opts.faults)
        if self.opts.random_faults:
            span = (
                self.opts.requests * predicted_s
                if math.isfinite(predicted_s) and predicted_s > 0
                else 1.0
            )
            for _ in range(self.opts.random_faults):
                faults.append(
                    Fault(
                        self.rng.choice(self.opts.fault_kinds),
                        None,
                        self.rng.uniform(0.15, 0.85) * span,
                    )
                )
        return sorted(faults, key=lambda f: f.at_s)

    def _inject(self, fault: Fault, now: float) -> None:
        dep = self.dep
        names = self.problem.cluster.names
        if fault.node is None:
            w = self.rng.choice(dep.workers)
            node = w.node
        else:
            node = self.problem.cluster.index(fault.node)
            w = next((x for x in dep.workers if x.node == node), None)
        rec = {
            "kind": fault.kind,
            "node": names[node],
            "at_s": self._emu(now),
            "epoch": dep.epoch,
            "stage": None if w is None else w.stage,
            "matched": False,
        }
        self.injected.append(rec)
        if w is None:
            if fault.kind == "kill" and node in self.alive:
                self.alive.discard(node)  # an idle node dies: later re-plans do without it
                rec["note"] = "node hosted no stage; removed from the cluster"
            else:
                rec["note"] = "node hosts no stage; nothing to inject"
            rec["matched"] = True
            return
        try:
            if fault.kind == "kill":
                os.kill(w.proc.pid, signal.SIGKILL)
            elif fault.kind == "freeze":
                os.kill(w.proc.pid, signal.SIGSTOP)
            elif w.control is not None:
                w.control.send({"cmd": "inject", "fault": fault.kind})
        except OSError:
            pass

    def _detect(self, now: float) -> tuple[str, int, str] | None:
        dep = self.dep
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

    def _recover(self, kind: str, stage: int, detail: str, now: float) -> bool:
        dep = self.dep
        names = self.problem.cluster.names
        node = dep.plan.stages[stage].node
        lost: str
        if kind == "stalled link" and stage + 1 < len(dep.plan.stages):
            nxt = dep.plan.stages[stage + 1].node
            self.dead_links.add((node, nxt))
            lost = f"link {names[node]} -> {names[nxt]}"
        else:
            self.alive.discard(node)
            lost = f"node {names[node]}"
        injected = next(
            (
                r
                for r in self.injected
                if not r["matched"] and r["epoch"] == dep.epoch and r["node"] == names[node]
            ),
            None,
        )
        if injected is not None:
            injected["matched"] = True
        # Faults injected into this pipeline but not caught yet (two nodes failing at
        # once) go down with it; their nodes and links are lost too, not redeployed on.
        also = []
        for r in self.injected:
            if r["matched"] or r["epoch"] != dep.epoch or r["stage"] is None:
                continue
            r["matched"] = True
            v = self.problem.cluster.index(r["node"])
            if r["kind"] == "stall" and r["stage"] + 1 < len(dep.plan.stages):
                nxt = dep.plan.stages[r["stage"] + 1].node
                self.dead_links.add((v, nxt))
                r["lost"] = f"link {names[v]} -> {names[nxt]}"
            else:
                self.alive.discard(v)
                r["lost"] = f"node {names[v]}"
            also.append(r)
        self._teardown(dep, now)
        resend = sorted(r for r in self.inflight if r not in self.done)
        self.pending = collections.deque(sorted(set(self.pending) | set(resend)))
        self.inflight.clear()
        rp = replan(
            self.problem,
            dep.plan,
            self.alive,
            self.dead_links,
            method=self.opts.replan_method,
            time_limit_s=self.opts.replan_time_limit_s,
            seed=self.opts.seed,
        )
        rec = {
            "kind": injected["kind"] if injected else "unplanned",
            "node": injected["node"] if injected else names[node],
            "detected_as": kind,
            "stage": stage,
            "lost": lost,
            "detail": detail,
            "injected_at_s": injected["at_s"] if injected else None,
            "detected_at_s": self._emu(now),
            "detection_s": (self._emu(now) - injected["at_s"]) if injected else None,
            "resumed_at_s": None,
            "outage_s": None,
            "requests_resent": len(resend),
            "predicted_throughput_before": _throughput(dep.predicted_bottleneck_s),
            "predicted_throughput_after": None if rp.plan is None else _throughput(rp.bottleneck_s),
            "replan": rp.to_dict(names),
        }
        self.fault_records.append(rec)
        for r in also:
            self.fault_records.append(
                {
                    **{
                        k: rec[k]
                        for k in (
                            "detected_at_s",
                            "resumed_at_s",
                            "outage_s",
                            "requests_resent",
                            "predicted_throughput_before",
                            "predicted_throughput_after",
                            "replan",
                        )
                    },
                    "kind": r["kind"],
                    "node": r["node"],
                    "detected_as": f"lost with the pipeline torn down for {lost}",
                    "stage": r["stage"],
                    "lost": r["lost"],
                    "detail": "",
                    "injected_at_s": r["at_s"],
                    "detection_s": rec["detected_at_s"] - r["at_s"],
                }
            )
        rec["also_lost"] = [r["lost"] for r in also]
        if rp.plan is None:
            self.error = (
                f"after losing {lost}: {rp.reason}; "
                f"{self.opts.requests - len(self.done)} requests unanswered"
            )
            return False
        try:
            new = self._deploy(rp.plan)
        except (EmulatorError, InvalidPlan) as exc:
            self.error = f"re-deployment after losing {lost} failed: {exc}"
            return False
        for r in self.fault_records:
            if r.get("detected_at_s") == rec["detected_at_s"]:
                r["_resume_epoch"] = new.epoch
        return True

    # -- teardown -------------------------------------------------------------------

    def _teardown(self, dep: _Deployment, now: float | None = None) -> None:
        if dep.ended is not None:
            return
        dep.ended = time.monotonic() if now is None else now
        for w in dep.workers:
            _kill(w.proc)
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

    def _collect_stats(self, dep: _Deployment) -> None:
        """Ask live workers for final counters (heartbeats are otherwise up to one period old)."""
        asked = []
        for w in dep.workers:
            if w.control is not None and w.proc.poll() is None:
                try:
                    w.control.send({"cmd": "stats"})
                    asked.append(w)
                except OSError:
                    pass
        end = time.monotonic() + 2.0
        while asked and time.monotonic() < end:
            self._drain_events(0.02)
            if all(w.state.get("type") == "stats" for w in asked):
                break

    def shutdown(self) -> None:
        """Kill every worker this emulator started and remove its files; idempotent."""
        for w in self.all_workers:
            _kill(w.proc)
        for w in self.all_workers:
            try:
                w.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        for dep in self.deployments:
            if dep.ended is None:
                dep.ended = time.monotonic()
            dep.feed_q.put(None)
            for c in dep.conns:
                try:
                    c.close()
                except OSError:
                    pass
        for s in self.listeners:
            s.close()
        self.listeners.clear()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    # -- the run --------------------------------------------------------------------

    def run(self) -> EmulationReport:
        """Deploy, serve ``options.requests`` requests (re-planning on faults), report."""
        t_wall = time.monotonic()
        try:
            export, listeners = self._prepare()
            self.t_start = time.monotonic()  # provisional, for records made while starting
            dep = self._deploy(self.plan, export, listeners)
            self.t_start = dep.started
            window = self.opts.window or 2 * len(self.plan.stages) + 2
            schedule = collections.deque(self._schedule(dep.predicted_bottleneck_s))
            last_progress = time.monotonic()
            n_done = 0
            while len(self.done) < self.opts.requests:
                now = time.monotonic()
                while schedule and self._emu(now) >= schedule[0].at_s:
                    self._inject(schedule.popleft(), now)
                self._feed(window)
                self._drain_events(0.005)
                now = time.monotonic()
                if len(self.done) != n_done:
                    n_done, last_progress = len(self.done), now
                found = self._detect(now)
                if found is not None:
                    if not self._recover(*found, now):
                        break
                    window = self.opts.window or 2 * len(self.dep.plan.stages) + 2
                    last_progress = time.monotonic()
                    continue
                limit = max(30.0, 5 * self.dep.stall_timeout_s + 5 * self.dep.hb_timeout_s)
                if now - last_progress > limit:
                    self.error = (
                        f"no result for {now - last_progress:.0f} wall s and no faulty worker "
                        f"found; giving up with {self.opts.requests - len(self.done)} unanswered"
                    )
                    break
            t_end = time.monotonic()
            if self.dep.ended is None:
                self._collect_stats(self.dep)
                self._teardown(self.dep, t_end)
            return self._report(t_wall)
        finally:
            self.shutdown()

    # -- report -----------------------------------------------------------------------

    def _report(self, t_wall: float) -> EmulationReport:
        scale = self.opts.time_scale
        names = self.problem.cluster.names
        lat = np.array([(self.done[r] - self.first_sent[r]) / scale for r in self.done])
        deployments = []
        for dep in self.deployments:
            times = sorted(
                self._emu(t) for r, t in self.done.items() if self.done_epoch[r] == dep.epoch
            )
            deployments.append(
                {
                    "epoch": dep.epoch,
                    "plan": [
                        {
                            "node": names[s.node],
                            "first_block": s.first_block,
                            "last_block": s.last_block,
                        }
                        for s in dep.plan.stages
                    ],
                    "predicted_bottleneck_s": dep.predicted_bottleneck_s,
                    "predicted_throughput": _throughput(dep.predicted_bottleneck_s),
                    "measured_throughput": steady_throughput(times),
                    "results": len(times),
                    "started_at_s": self._emu(dep.started),
                    "ended_at_s": None if dep.ended is None else self._emu(dep.ended),
                }
            )
        first = self.deployments[0]
        links, stages = [], []
        for j, (s, w) in enumerate(zip(first.export.stages, first.workers, strict=True)):
            st = w.state
            computed = st.get("computed", 0)
            stages.append(
                {
                    "stage": j,
                    "node": names[w.node],
                    "first_block": s.first_block,
                    "last_block": s.last_block,
                    "onnx_nodes": s.onnx_nodes,
                    "input_bytes": s.input_bytes,
                    "output_bytes": s.output_bytes,
                    "computed": computed,
                    "compute_wall_s": st.get("compute_busy_s", 0.0) / computed
                    if computed
                    else None,
                }
            )
            rate = first.rates[j]
            if rate is None:
                continue
            nxt = first.plan.stages[j + 1].node
            util = None
            t0, t1 = st.get("first_send_t"), st.get("last_send_end_t")
            if t0 is not None and t1 is not None and t1 > t0:
                util = st.get("bytes_sent", 0) / rate / (t1 - t0)
            cut = s.last_block
            links.append(
                {
                    "src": names[w.node],
                    "dst": names[nxt],
                    "bandwidth_mbps": float(self.problem.cluster.bandwidth_mbps[w.node, nxt]),
                    "bytes_per_request": s.output_bytes,
                    "chain_transfer_bytes": float(self.problem.transfer_bytes[cut]),
                    "predicted_s": self.problem.transfer_time_s(cut, w.node, nxt),
                    "utilisation": util,
                }
            )
            if (
                s.output_bytes
                and abs(s.output_bytes - self.problem.transfer_bytes[cut]) > 0.01 * s.output_bytes
            ):
                self.warnings.append(
                    f"cut after block {cut}: {s.output_bytes} bytes cross it, the chain's "
                    f"{self.problem.transfer} model says {self.problem.transfer_bytes[cut]:.0f}; "
                    "the prediction uses the chain"
                )
        bott_wall = first.predicted_bottleneck_s * scale
        for st in stages:
            c = st["compute_wall_s"]
            if c and bott_wall > 0 and c > 0.5 * bott_wall:
                self.warnings.append(
                    f"stage {st['stage']} computes for {1e3 * c:.1f} wall ms per request, "
                    f"{100 * c / bott_wall:.0f}% of the predicted bottleneck ({1e3 * bott_wall:.1f} "
                    "wall ms): this machine's CPU, not the links, may set the pace; use a larger "
                    "--time-scale"
                )
        verified, max_rel = None, None
        if self.opts.verify and self.outputs:
            verified, max_rel = self._verify()
        done_times = [self._emu(t) for t in self.done.values()]
        overall = None
        if len(done_times) >= 2 and max(done_times) > 0:
            overall = len(done_times) / max(done_times)
        faults = [{k: v for k, v in r.items() if not k.startswith("_")} for r in self.fault_records]
        for r in self.injected:
            if not r["matched"] or r.get("note"):
                faults.append(
                    {
                        "kind": r["kind"],
                        "node": r["node"],
                        "injected_at_s": r["at_s"],
                        "detected_as": None if not r.get("note") else "no stage",
                        "note": r.get("note", "not detected before the run ended"),
                        "detected_at_s": None,
                        "detection_s": None,
                        "outage_s": None,
                        "replan": {"source": "-", "runtime_s": None},
                    }
                )
        faults.sort(key=lambda f: (f["injected_at_s"] is None, f["injected_at_s"] or 0.0))
        return EmulationReport(
            predicted_throughput=_throughput(first.predicted_bottleneck_s),
            predicted_bottleneck_s=first.predicted_bottleneck_s,
            measured_throughput=deployments[0]["measured_throughput"],
            overall_throughput=overall,
            latency_p50_s=float(np.percentile(lat, 50)) if lat.size else None,
            latency_p99_s=float(np.percentile(lat, 99)) if lat.size else None,
            latency_mean_s=float(lat.mean()) if lat.size else None,
            requests_sent=self.opts.requests,
            results_received=len(self.done),
            duplicates_dropped=self.duplicates,
            retransmissions=self.retransmissions,
            time_scale=scale,
            wall_time_s=time.monotonic() - t_wall,
            emulated_time_s=max(done_times, default=0.0),
            window=self.opts.window or 2 * len(self.plan.stages) + 2,
            plan=deployments[0]["plan"],
            links=links,
            stages=stages,
            deployments=deployments,
            faults=faults,
            verified=verified,
            verify_max_rel_error=max_rel,
            weights=self.weights,
            warnings=self.warnings,
            error=self.error,
        )

    def _verify(self) -> tuple[bool, float]:
        export = self.deployments[0].export
        from partopt.export import _with_input_shapes

        fixed = _with_input_shapes(self.model, {t.name: t.shape for t in export.inputs})
        sess = session(fixed)
        names = [t.name for t in export.outputs]
        ok, max_rel = True, 0.0
        for rid, got in sorted(self.outputs.items()):
            inputs = random_inputs(
                export.inputs, self._input_seed(rid), export.meta.get("index_bounds")
            )
            want = sess.run(names, inputs)
            for a, b in zip(want, got, strict=True):
                a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
                if a64.shape != b64.shape:
                    return False, math.inf
                err = float(np.max(np.abs(a64 - b64))) if a64.size else 0.0
                scale = float(np.max(np.abs(a64))) if a64.size else 0.0
                rel = err / scale if scale > 0 else (0.0 if err == 0 else math.inf)
                max_rel = max(max_rel, rel)
                if err > 1e-5 + 1e-3 * scale:
                    ok = False
        return ok, max_rel


def _throughput(bottleneck_s: float | None) -> float | None:
    if bottleneck_s is None or not math.isfinite(bottleneck_s) or bottleneck_s <= 0:
        return None
    return 1.0 / bottleneck_s


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            proc.kill()  # SIGKILL also ends a stopped (frozen) process
        except OSError:
            pass


def emulate(
    model: onnx.ModelProto,
    problem: Problem,
    plan: Plan,
    options: EmulatorOptions | None = None,
    **kwargs,
) -> EmulationReport:
    """Run ``plan`` on an emulated cluster and report (see :class:`Emulator`)."""
    return Emulator(model, problem, plan, options, **kwargs).run()
