"""One pipeline stage as a process: receive, compute with onnxruntime, send (shaped).

Started by the dispatcher as ``python -m partopt.emulator.worker CONFIG.json``
(a :class:`~partopt.emulator.config.WorkerConfig`) with its listening socket
inherited (``listen_fd``) and the run's secret on standard input. Every
connection it makes or accepts is authenticated with that secret
(:mod:`partopt.emulator.auth`); strangers are dropped without a word, and
without any effect on the stage. Three threads keep the
stage busy the way a device would: one reads frames from upstream, one runs
the stage's ONNX model, one sends results downstream through a token bucket,
so that a stage computes request ``i + 1`` while request ``i`` is on the wire.
The main thread reports progress to the dispatcher every ``heartbeat_s``
seconds and obeys its commands (fault injection, stats, stop).

A worker never outlives the dispatcher: the kernel kills it when its parent
dies (``PR_SET_PDEATHSIG``), and it exits as soon as its control connection
closes or on SIGINT/SIGTERM.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING

from partopt.emulator.auth import Unauthenticated, accept_peer, authenticate_to
from partopt.emulator.config import WorkerConfig
from partopt.emulator.wire import (
    KIND_DATA,
    KIND_HELLO,
    ControlChannel,
    Garbage,
    TokenBucket,
    decode_tensors,
    encode_tensors,
    payload_size,
    recv_frame,
    send_frame,
)

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

__all__ = ["main", "die_with_parent"]


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent exits (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _quit(*_):
    os._exit(0)


class Stage:
    """State shared by the worker's threads; counters are read by the heartbeat."""

    def __init__(self, cfg: WorkerConfig, secret: bytes, control: ControlChannel) -> None:
        self.cfg = cfg
        self.secret = secret
        self.control = control
        self.index = cfg.stage
        self.epoch = cfg.epoch
        self.in_specs = cfg.inputs
        self.out_specs = cfg.outputs
        self.in_q: queue.Queue = queue.Queue()
        self.out_q: queue.Queue = queue.Queue()
        self.received = self.computed = self.sent = 0
        self.bytes_sent = 0
        self.compute_busy_s = self.link_busy_s = 0.0
        self.computing_since: float | None = None
        self.sending_since: float | None = None
        self.first_send_t: float | None = None
        self.last_send_end_t: float | None = None
        self.fault: str | None = None
        self.frozen = threading.Event()  # set: block forever (hang / stall faults)
        self.session: InferenceSession | None = None  # loaded before the threads start

    # -- threads ----------------------------------------------------------------------

    def receive(self, listener: socket.socket) -> None:
        conn = self._accept_upstream(listener)
        expected = payload_size(self.in_specs)
        try:
            while True:
                kind, epoch, rid, payload = recv_frame(conn, expected)
                if kind != KIND_DATA or epoch != self.epoch:
                    raise Garbage(f"unexpected frame kind {kind} of epoch {epoch}")
                arrays = decode_tensors(payload, self.in_specs)
                self.received += 1
                self.in_q.put((rid, arrays))
        except Garbage as exc:
            self._report({"type": "garbage", "detail": str(exc)})
        except (EOFError, ConnectionError, OSError):
            pass

    def _accept_upstream(self, listener: socket.socket) -> socket.socket:
        """The first connection that proves the secret and says hello for this epoch.

        Each connection is checked in its own thread, with a time limit, so a
        stranger who connects and says nothing cannot delay the real upstream;
        connections after it are closed unread.
        """
        chosen: queue.Queue = queue.Queue()
        taken = threading.Event()

        def check(conn: socket.socket) -> None:
            try:
                if taken.is_set():
                    raise Unauthenticated("upstream already connected")
                accept_peer(conn, self.secret)
                conn.settimeout(5.0)
                kind, epoch, _, _ = recv_frame(conn)
                conn.settimeout(None)
                if kind != KIND_HELLO or epoch != self.epoch or taken.is_set():
                    raise Unauthenticated(f"expected one hello for epoch {self.epoch}")
                taken.set()
            except (Unauthenticated, Garbage, EOFError, OSError):
                conn.close()
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            chosen.put(conn)

        def accept_loop() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                threading.Thread(target=check, args=(conn,), daemon=True).start()

        threading.Thread(target=accept_loop, daemon=True).start()
        return chosen.get()

    def compute(self) -> None:
        names = [s["name"] for s in self.out_specs]
        in_names = [s["name"] for s in self.in_specs]
        floor_s = self.cfg.compute_floor_s
        assert self.session is not None, "the stage model loads before the compute thread starts"
        while True:
            rid, arrays = self.in_q.get()
            if self.fault == "hang":
                self.computing_since = time.monotonic()
                threading.Event().wait()
            t0 = time.monotonic()
            self.computing_since = t0
            outs = self.session.run(names, dict(zip(in_names, arrays, strict=True)))
            if floor_s:
                # a node slower than this machine: hold the result for the rest of its time
                rest = floor_s - (time.monotonic() - t0)
                if rest > 0:
                    time.sleep(rest)
            self.compute_busy_s += time.monotonic() - t0
            self.computing_since = None
            self.computed += 1
            self.out_q.put((rid, outs))

    def send(self, conn: socket.socket) -> None:
        rate = self.cfg.rate_bytes_per_s
        burst = self.cfg.burst_bytes or 2.0 * self.cfg.chunk_bytes
        bucket = TokenBucket(rate, burst) if rate else None
        chunk = self.cfg.chunk_bytes
        try:
            send_frame(conn, KIND_HELLO, self.epoch, self.index, [])
            while True:
                rid, outs = self.out_q.get()
                t0 = time.monotonic()
                self.sending_since = t0
                if self.first_send_t is None:
                    self.first_send_t = t0
                buffers = encode_tensors(outs)
                size = sum(len(b) if isinstance(b, bytes) else b.nbytes for b in buffers)
                n = send_frame(
                    conn,
                    KIND_DATA,
                    self.epoch,
                    rid,
                    buffers,
                    bucket,
                    chunk,
                    corrupt=self.fault == "garbage",
                    # a stalled link goes quiet halfway through a message and stays so
                    stall_after=size // 2 if self.fault == "stall" else None,
                )
                t1 = time.monotonic()
                self.bytes_sent += n
                self.link_busy_s += t1 - t0
                self.last_send_end_t = t1
                self.sending_since = None
                self.sent += 1
        except OSError:
            pass

    # -- reporting --------------------------------------------------------------------

    def state(self) -> dict:
        now = time.monotonic()
        return {
            "type": "hb",
            "stage": self.index,
            "epoch": self.epoch,
            "t": now,
            "received": self.received,
            "computed": self.computed,
            "sent": self.sent,
            "bytes_sent": self.bytes_sent,
            "compute_busy_s": self.compute_busy_s,
            "link_busy_s": self.link_busy_s,
            "computing_for": 0.0 if self.computing_since is None else now - self.computing_since,
            "sending_for": 0.0 if self.sending_since is None else now - self.sending_since,
            "first_send_t": self.first_send_t,
            "last_send_end_t": self.last_send_end_t,
            "queued": self.in_q.qsize() + self.out_q.qsize(),
        }

    def _report(self, msg: dict) -> None:
        msg.update(stage=self.index, epoch=self.epoch)
        try:
            self.control.send(msg)
        except OSError:
            os._exit(0)


def _connect(addr, secret: bytes, deadline_s: float) -> socket.socket:
    """A connection to ``addr`` that passed the handshake (retried until ``deadline_s``)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            s = socket.create_connection(tuple(addr), timeout=5)
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.02)
            continue
        try:
            authenticate_to(s, secret)
            return s
        except OSError:
            s.close()
            raise


def _read_secret() -> bytes:
    """The run's secret, from standard input (a pipe only the dispatcher writes to)."""
    data = sys.stdin.buffer.read()
    try:
        return bytes.fromhex(data.decode("ascii").strip())
    except ValueError:
        raise SystemExit("the run's secret on standard input is not hex") from None


def _warm_up(stage: Stage) -> float:
    """Run the stage once on zeros so that the first request is not slowed by lazy set-up."""
    import numpy as np

    from partopt.emulator.wire import dtype_of

    feed = {}
    for s in stage.in_specs:
        shape = s["shape"] if s.get("shape") is not None else []
        feed[s["name"]] = np.zeros(shape, dtype=dtype_of(s["elem_type"]))
    assert stage.session is not None, "the stage model loads before the warm-up"
    t0 = time.monotonic()
    try:
        stage.session.run([s["name"] for s in stage.out_specs], feed)
    except Exception:  # noqa: BLE001 - zeros may be invalid input (indices...); not fatal
        pass
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = WorkerConfig.load(argv[0])
    die_with_parent(cfg.parent_pid)
    signal.signal(signal.SIGINT, _quit)
    signal.signal(signal.SIGTERM, _quit)
    secret = _read_secret()

    listener = socket.socket(fileno=cfg.listen_fd)
    control = ControlChannel(_connect(cfg.control, secret, 30))
    stage = Stage(cfg, secret, control)
    stage._report({"type": "hello", "pid": os.getpid()})

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cfg.threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        stage.session = ort.InferenceSession(
            cfg.model_path, opts, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # noqa: BLE001 - reported, then exit
        stage._report(
            {"type": "error", "detail": f"cannot load stage model: {exc}".splitlines()[0]}
        )
        return 1
    warm = _warm_up(stage)
    down = _connect(cfg.downstream, secret, 30)
    for target, args in ((stage.receive, (listener,)), (stage.compute, ()), (stage.send, (down,))):
        threading.Thread(target=target, args=args, daemon=True).start()
    stage._report({"type": "ready", "warmup_s": warm})

    def commands() -> None:
        while True:
            try:
                msg = control.recv()
            except (OSError, Garbage):
                msg = None
            if msg is None or msg.get("cmd") == "stop":
                os._exit(0)
            if msg.get("cmd") == "inject":
                stage.fault = msg.get("fault")
            elif msg.get("cmd") == "stats":
                stage._report({**stage.state(), "type": "stats"})

    threading.Thread(target=commands, daemon=True).start()
    period = cfg.heartbeat_s
    while True:
        time.sleep(period)
        stage._report(stage.state())


if __name__ == "__main__":
    sys.exit(main())
