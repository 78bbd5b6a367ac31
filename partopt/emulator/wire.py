"""What travels between the dispatcher and the workers, and how fast.

Data links carry *frames*: a fixed header (magic, kind, epoch, request id,
payload length, CRC-32 of the payload) and the payload, the tensors that
cross a stage boundary, each as ``elem_type, ndim, dims, raw bytes`` in the
order of the stage's manifest. Every data connection starts with a ``HELLO``
frame naming the deployment (epoch) and the sending stage. A receiver that
knows what to expect rejects anything else (wrong magic, length, CRC, dtype
or shape) as :class:`Garbage`.

Control connections carry one JSON object per line (at most
:data:`MAX_CONTROL_LINE` bytes). Every connection, data or control, is
authenticated first (:mod:`partopt.emulator.auth`).

Links are shaped in the sender by a :class:`TokenBucket`: bytes go out in
chunks, each waiting for its tokens, so a message of ``S`` bytes on a link of
``r`` bytes/s takes ``S / r`` seconds, as :func:`partopt.plan.evaluate` assumes.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = [
    "MAGIC",
    "KIND_DATA",
    "KIND_HELLO",
    "HEADER",
    "Garbage",
    "TokenBucket",
    "encode_tensors",
    "decode_tensors",
    "payload_size",
    "send_frame",
    "recv_frame",
    "ControlChannel",
    "MAX_CONTROL_LINE",
    "dtype_of",
]

MAGIC = b"PPT1"
KIND_DATA = 1
KIND_HELLO = 2
HEADER = struct.Struct("!4sBIQQI")  # magic, kind, epoch, request id / stage, payload bytes, crc32
_TENSOR_HEAD = struct.Struct("!BB")  # ONNX elem_type, ndim
MAX_CONTROL_LINE = 1 << 16
"""Longest control message, in bytes (heartbeats are a few hundred)."""

# ONNX TensorProto elem_type -> numpy dtype, for the types that can cross a link
_DTYPES = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32,
    7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64,
}  # fmt: skip


class Garbage(ValueError):
    """Bytes on a link that are not the frame the receiver expects."""


def dtype_of(elem_type: int) -> np.dtype:
    """numpy dtype of an ONNX element type that can be sent (raises :class:`ValueError`)."""
    try:
        return np.dtype(_DTYPES[int(elem_type)])
    except KeyError:
        raise ValueError(f"ONNX element type {elem_type} cannot be sent between stages") from None


class TokenBucket:
    """Token bucket: ``rate`` bytes/s, at most ``burst`` bytes banked.

    :meth:`take` blocks until ``n`` tokens are there and removes them. A
    small bank absorbs late wake-ups of ``time.sleep`` on a loaded machine,
    so that the long-run rate is the configured one.

    Examples
    --------
    >>> b = TokenBucket(rate=1e6, burst=1e4)   # 1 MB/s, 10 kB banked
    >>> b.take(1e4)                             # the bank: at once
    >>> b.take(2e4)                             # then 20 ms of tokens
    """

    def __init__(self, rate: float, burst: float) -> None:
        if not rate > 0:
            raise ValueError(f"token bucket rate must be positive, got {rate}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self, n: float) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= n or (n > self.burst and self.tokens >= self.burst):
                self.tokens -= n
                return
            time.sleep((min(n, self.burst) - self.tokens) / self.rate)


def encode_tensors(arrays: Sequence[np.ndarray]) -> list[memoryview | bytes]:
    """Payload buffers for ``arrays`` (no copy of the array data)."""
    out: list[memoryview | bytes] = []
    for a in arrays:
        a = np.ascontiguousarray(a)
        elem = next((k for k, v in _DTYPES.items() if np.dtype(v) == a.dtype), None)
        if elem is None:
            raise ValueError(f"arrays of dtype {a.dtype} cannot be sent between stages")
        head = _TENSOR_HEAD.pack(elem, a.ndim) + struct.pack(f"!{a.ndim}Q", *a.shape)
        out.append(head)
        if a.nbytes:
            # numpy's stubs give ndarray __buffer__ only for Python >= 3.12
            out.append(memoryview(a).cast("B"))  # type: ignore[arg-type]
    return out


def payload_size(specs: Sequence[dict]) -> int | None:
    """Exact payload bytes for tensors described by manifest entries; ``None`` if unknown."""
    total = 0
    for s in specs:
        if s.get("shape") is None:
            return None
        total += _TENSOR_HEAD.size + 8 * len(s["shape"]) + int(s["bytes"])
    return total


def decode_tensors(payload, specs: Sequence[dict]) -> list[np.ndarray]:
    """Arrays from a payload, checked against manifest entries (``elem_type``, ``shape``)."""
    mv = memoryview(payload)
    pos, out = 0, []
    for s in specs:
        if pos + _TENSOR_HEAD.size > len(mv):
            raise Garbage(f"payload ends before tensor {s['name']!r}")
        elem, ndim = _TENSOR_HEAD.unpack_from(mv, pos)
        pos += _TENSOR_HEAD.size
        if elem != int(s["elem_type"]):
            raise Garbage(f"tensor {s['name']!r} arrived as type {elem}, expected {s['elem_type']}")
        if pos + 8 * ndim > len(mv):
            raise Garbage(f"payload ends inside the shape of tensor {s['name']!r}")
        shape = struct.unpack_from(f"!{ndim}Q", mv, pos)
        pos += 8 * ndim
        if s.get("shape") is not None and list(shape) != list(s["shape"]):
            raise Garbage(
                f"tensor {s['name']!r} arrived with shape {list(shape)}, expected {s['shape']}"
            )
        dt = dtype_of(elem)
        count = int(np.prod(shape, dtype=np.int64)) if ndim else 1
        nbytes = count * dt.itemsize
        if pos + nbytes > len(mv):
            raise Garbage(f"payload ends inside the data of tensor {s['name']!r}")
        out.append(np.frombuffer(mv, dtype=dt, count=count, offset=pos).reshape(shape))
        pos += nbytes
    if pos != len(mv):
        raise Garbage(f"{len(mv) - pos} unexpected bytes after the last tensor")
    return out


def send_frame(
    sock: socket.socket,
    kind: int,
    epoch: int,
    ident: int,
    buffers: Sequence,
    bucket: TokenBucket | None = None,
    chunk: int = 65536,
    corrupt: bool = False,
    stall_after: int | None = None,
) -> int:
    """Send one frame, paced by ``bucket`` when given; returns the bytes sent.

    Fault injection: ``corrupt`` sends the right number of bytes with a
    wrong payload (the garbage a faulty worker would emit); ``stall_after``
    blocks forever once that many bytes are out (a link gone silent).
    """
    crc, size = 0, 0
    for b in buffers:
        crc = zlib.crc32(b, crc)
        size += len(b) if isinstance(b, bytes) else b.nbytes
    if corrupt:
        buffers = [bytes(size)] if size else []
        crc ^= 0xFFFFFFFF if size else 0
    header = HEADER.pack(MAGIC, kind, epoch, ident, size, crc)
    parts = [memoryview(header), *(memoryview(b).cast("B") for b in buffers)]
    total = 0
    for part in parts:
        for start in range(0, len(part), chunk):
            piece = part[start : start + chunk]
            if bucket is not None:
                bucket.take(len(piece))
            sock.sendall(piece)
            total += len(piece)
            if stall_after is not None and total >= stall_after:
                threading.Event().wait()
    return total


def _recv_exact(sock: socket.socket, n: int, what: str) -> bytearray:
    buf = bytearray(n)
    mv = memoryview(buf)
    got = 0
    while got < n:
        r = sock.recv_into(mv[got:], n - got)
        if r == 0:
            if got == 0 and what == "header":
                raise EOFError("connection closed")
            raise ConnectionError(f"connection closed inside a frame {what}")
        got += r
    return buf


def recv_frame(
    sock: socket.socket, expected_size: int | None = None
) -> tuple[int, int, int, bytearray]:
    """``(kind, epoch, ident, payload)`` of the next frame; :class:`Garbage` if malformed.

    The length prefix is checked before anything is allocated: a ``HELLO``
    carries no payload, and a data frame must be exactly ``expected_size``
    bytes, what the stage's manifest says crosses the link (``None``: no data
    frame is expected). So a peer cannot make the receiver reserve more than
    one message of the plan. Raises :class:`EOFError` on a clean close between
    frames.
    """
    head = _recv_exact(sock, HEADER.size, "header")
    magic, kind, epoch, ident, size, crc = HEADER.unpack(head)
    if magic != MAGIC:
        raise Garbage(f"bad frame magic {bytes(magic)!r}")
    if kind == KIND_HELLO:
        if size:
            raise Garbage(f"hello frame announces {size} payload bytes, expected none")
    elif kind == KIND_DATA:
        if expected_size is None:
            raise Garbage(f"data frame of {size} bytes where none is expected")
        if size != expected_size:
            raise Garbage(f"frame of {size} bytes, expected {expected_size}")
    else:
        raise Garbage(f"unknown frame kind {kind}")
    payload = _recv_exact(sock, size, "payload") if size else bytearray()
    if zlib.crc32(payload) != crc:
        raise Garbage(f"CRC mismatch in a frame of {size} bytes")
    return kind, epoch, ident, payload


class ControlChannel:
    """JSON lines over a socket; :meth:`send` is thread-safe."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._reader = sock.makefile("rb")

    def send(self, msg: dict) -> None:
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self.sock.sendall(data)

    def recv(self) -> dict | None:
        """Next message, or ``None`` when the peer closed the connection."""
        line = self._reader.readline(MAX_CONTROL_LINE + 1)
        if not line:
            return None
        if len(line) > MAX_CONTROL_LINE:
            raise Garbage(f"control line longer than {MAX_CONTROL_LINE} bytes")
        try:
            msg = json.loads(line)
        except ValueError:
            raise Garbage(f"control line is not JSON: {line[:60]!r}") from None
        if not isinstance(msg, dict):
            raise Garbage("control message is not a JSON object")
        return msg

    def close(self) -> None:
        for f in (self._reader.close, self.sock.close):
            try:
                f()
            except OSError:
                pass
