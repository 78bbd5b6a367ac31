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

This module is the request loop and the recovery; it builds on
:mod:`~partopt.emulator.deployment` (steps 1-2), :mod:`~partopt.emulator.faults`
(step 4) and :mod:`~partopt.emulator.report`. Every connection, in either
direction, is authenticated with a per-run secret (:mod:`~partopt.emulator.auth`):
a local stranger who connects to a port is dropped with no effect on the run.

Times in the report are emulated seconds (wall seconds / time scale).
Faults given as ``NAME@SECONDS`` fire at that emulated time after the first
request is sent.
"""

from __future__ import annotations

import collections
import os
import queue
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx

from partopt.dag import DagProblem
from partopt.emulator.auth import Unauthenticated, accept_peer, authenticate_to, new_secret
from partopt.emulator.config import WorkerConfig
from partopt.emulator.deployment import (
    DISPATCHER_ID,
    Deployment,
    Worker,
    kill_process,
    last_line,
    spawn_worker,
    teardown,
)
from partopt.emulator.faults import (
    Fault,
    FaultRecord,
    detect_fault,
    inject_fault,
    parse_fault,
    schedule_faults,
)
from partopt.emulator.options import FAULT_KINDS, EmulatorError, EmulatorOptions
from partopt.emulator.report import EmulationReport, build_report, throughput
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
from partopt.export import (
    Export,
    missing_weights,
    random_inputs,
    random_weights,
    split_model,
)
from partopt.plan import InvalidPlan, Plan, evaluate
from partopt.problem import Problem
from partopt.replan import replan

__all__ = [
    "FAULT_KINDS",
    "EmulatorError",
    "Fault",
    "EmulatorOptions",
    "Emulator",
    "emulate",
    "parse_fault",
]


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
    chain
        The chain whose ``block_nodes`` split the model: ``problem.chain`` by
        default; for a :class:`~partopt.dag.DagProblem` (stages are operator
        sets) the multi-tensor chain of the same layer graph, whose one-layer
        blocks are the DAG's operators.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        problem: Problem | DagProblem,
        plan: Plan,
        options: EmulatorOptions | None = None,
        *,
        layer_graph=None,
        input_shapes=None,
        chain=None,
    ) -> None:
        self.opts = options or EmulatorOptions()
        self.opts.check()
        self.model = model
        self.problem = problem
        self.plan = plan
        if chain is None and isinstance(problem, DagProblem):
            raise EmulatorError(
                "a DAG problem's stages are split by the model's multi-tensor chain: pass "
                "chain=build_chain(layer_graph, 'multi')"
            )
        self.chain = chain if chain is not None else problem.chain  # type: ignore[union-attr]
        self.layer_graph = layer_graph
        self.input_shapes = input_shapes
        self.weights = "model"
        self.events: queue.Queue = queue.Queue()
        self.rng = random.Random(self.opts.seed)
        self.alive = set(range(problem.num_nodes))
        self.dead_links: set[tuple[int, int]] = set()
        self.deployments: list[Deployment] = []
        self.dep: Deployment | None = None
        self.epoch_out_specs: dict[int, list[dict]] = {}
        self.fault_records: list[FaultRecord] = []  # injected and unplanned, in order
        self.warnings: list[str] = []
        self.error: str | None = None
        self.tmp: Path | None = None
        self.listeners: list[socket.socket] = []
        self.all_workers: list[Worker] = []
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

    @property
    def live(self) -> Deployment:
        """The current deployment (there is one from the first deployment on)."""
        assert self.dep is not None, "no deployment yet"
        return self.dep

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
            self.chain,
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

    def _feeder(self, dep: Deployment, addr) -> None:
        try:
            s = socket.create_connection(addr, timeout=10)
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            dep.conns.append(s)
            authenticate_to(s, self.secret)
            send_frame(s, KIND_HELLO, dep.epoch, DISPATCHER_ID, [])
            while True:
                item = dep.feed_q.get()
                if item is None:
                    break
                rid, buffers = item
                send_frame(s, KIND_DATA, dep.epoch, rid, buffers)
        except OSError:
            pass

    # -- deployment -------------------------------------------------------------------

    def _stage_flops(self, stage) -> float:
        """FLOPs of one stage: a block range of the chain, or a DAG stage's operators."""
        if isinstance(self.problem, DagProblem):
            return float(np.asarray(self.problem.dag.flops)[list(stage.ops)].sum())
        return float(self.problem.stage_flops(stage.first_block, stage.last_block))

    def _deploy(self, plan: Plan, export: Export | None = None, listeners=None) -> Deployment:
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
        dep = Deployment(epoch, plan, export, [], evaluation.bottleneck_s, rates)
        self.deployments.append(dep)
        self.dep = dep
        speeds = self.problem.cluster.flops_per_s
        tmp = self.tmp
        assert tmp is not None, "deployments come after _prepare"
        for j, s in enumerate(export.stages):
            path = tmp / f"e{epoch}_stage{j}.onnx"
            onnx.save(s.model, str(path))
            node = plan.stages[j].node
            floor = 0.0
            if self.opts.emulate_compute and speeds is not None:
                flops = self._stage_flops(plan.stages[j])
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
            log_path = tmp / f"e{epoch}_stage{j}.log"
            proc = spawn_worker(cfg, tmp / f"e{epoch}_stage{j}.json", log_path, self.secret)
            w = Worker(j, node, proc, log_path)
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

    def _wait_ready(self, dep: Deployment) -> None:
        end = time.monotonic() + self.opts.startup_timeout_s
        while not all(w.ready for w in dep.workers):
            for w in dep.workers:
                if w.proc.poll() is not None or w.error:
                    why = w.error or last_line(w.log_path) or f"exit code {w.proc.returncode}"
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

    def _worker(self, epoch: int, stage: int) -> Worker | None:
        if 0 <= epoch < len(self.deployments):
            workers = self.deployments[epoch].workers
            if 0 <= stage < len(workers):
                return workers[stage]
        return None

    def _handle(self, ev) -> None:
        kind, epoch = ev[0], ev[1]
        current = self.dep is not None and epoch == self.live.epoch and self.live.ended is None
        if kind == "result":
            _, _, rid, arrays, t = ev
            self._result(epoch, rid, arrays, t)
        elif kind == "conn":
            dep = self.deployments[epoch]
            dep.conns.append(ev[2])
            if dep.ended is not None:
                ev[2].close()
        elif kind == "garbage":
            if current and self.live.garbage is None:
                self.live.garbage = (ev[2], ev[3])
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
                if current and self.live.garbage is None and stage > 0:
                    self.live.garbage = (stage - 1, msg.get("detail", ""))
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
            if rec.resume_epoch == epoch and rec.resumed_at_s is None:
                rec.resumed_at_s = self._emu(t)

    # -- requests ---------------------------------------------------------------------

    def _emu(self, wall: float) -> float:
        return (wall - self.t_start) / self.opts.time_scale

    def _request(self, rid: int) -> list:
        if rid not in self.cache:
            export = self.live.export
            arrays = random_inputs(
                export.inputs, self._input_seed(rid), export.meta.get("index_bounds")
            )
            self.cache[rid] = encode_tensors([arrays[t.name] for t in self.live.export.inputs])
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
            self.live.feed_q.put((rid, self._request(rid)))
            self.inflight.add(rid)
            self.first_sent.setdefault(rid, now)

    # -- faults ---------------------------------------------------------------------

    def _inject(self, fault: Fault, now: float) -> None:
        rec = inject_fault(
            fault, self.live, self.problem.cluster, self.rng, self.alive, self._emu(now)
        )
        self.fault_records.append(rec)

    def _recover(self, kind: str, stage: int, detail: str, now: float) -> bool:
        dep = self.live
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
        rec = next(
            (
                r
                for r in self.fault_records
                if not r.matched and r.epoch == dep.epoch and r.node == names[node]
            ),
            None,
        )
        if rec is None:
            rec = FaultRecord("unplanned", names[node], dep.epoch, stage, None)
            self.fault_records.append(rec)
        rec.matched = True
        # Faults injected into this pipeline but not caught yet (two nodes failing at
        # once) go down with it; their nodes and links are lost too, not redeployed on.
        also = []
        for r in self.fault_records:
            if r.matched or r.epoch != dep.epoch or r.stage is None:
                continue
            r.matched = True
            v = self.problem.cluster.index(r.node)
            if r.kind == "stall" and r.stage + 1 < len(dep.plan.stages):
                nxt = dep.plan.stages[r.stage + 1].node
                self.dead_links.add((v, nxt))
                r.lost = f"link {names[v]} -> {names[nxt]}"
            else:
                self.alive.discard(v)
                r.lost = f"node {names[v]}"
            r.detected_as = f"lost with the pipeline torn down for {lost}"
            also.append(r)
        teardown(dep, now)
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
        rec.detected_as, rec.stage, rec.lost, rec.detail = kind, stage, lost, detail
        rec.also_lost = [r.lost for r in also if r.lost is not None]
        for r in (rec, *also):
            r.detected_at_s = self._emu(now)
            r.requests_resent = len(resend)
            r.predicted_throughput_before = throughput(dep.predicted_bottleneck_s)
            r.predicted_throughput_after = None if rp.plan is None else throughput(rp.bottleneck_s)
            r.replan = rp.to_dict(names)
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
        for r in (rec, *also):
            r.resume_epoch = new.epoch
        return True

    # -- the end --------------------------------------------------------------------

    def _collect_stats(self, dep: Deployment) -> None:
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
            kill_process(w.proc)  # also workers no deployment holds (a start that failed)
        for dep in self.deployments:
            teardown(dep)
        for w in self.all_workers:
            try:
                w.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
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
            schedule = collections.deque(
                schedule_faults(self.opts, self.rng, dep.predicted_bottleneck_s)
            )
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
                found = detect_fault(self.live, now)
                if found is not None:
                    if not self._recover(*found, now):
                        break
                    window = self.opts.window or 2 * len(self.live.plan.stages) + 2
                    last_progress = time.monotonic()
                    continue
                limit = max(30.0, 5 * self.live.stall_timeout_s + 5 * self.live.hb_timeout_s)
                if now - last_progress > limit:
                    self.error = (
                        f"no result for {now - last_progress:.0f} wall s and no faulty worker "
                        f"found; giving up with {self.opts.requests - len(self.done)} unanswered"
                    )
                    break
            t_end = time.monotonic()
            if self.live.ended is None:
                self._collect_stats(self.live)
                teardown(self.live, t_end)
            return build_report(self, t_wall)
        finally:
            self.shutdown()


def emulate(
    model: onnx.ModelProto,
    problem: Problem,
    plan: Plan,
    options: EmulatorOptions | None = None,
    **kwargs,
) -> EmulationReport:
    """Run ``plan`` on an emulated cluster and report (see :class:`Emulator`)."""
    return Emulator(model, problem, plan, options, **kwargs).run()
