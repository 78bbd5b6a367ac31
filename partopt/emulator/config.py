"""What a worker process is told at start: one typed record, written as JSON by the dispatcher.

The record holds no secret: the run's secret reaches the worker through its
standard input (see :mod:`partopt.emulator.auth`), so that a file or a
command line another local user can read never carries it. This module
imports only the standard library, because workers load it at start-up.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["WorkerConfig"]


@dataclass(frozen=True)
class WorkerConfig:
    """Settings of the worker that runs one stage of one deployment.

    Parameters
    ----------
    stage, epoch
        Index of the stage in the pipeline, and of the deployment (each
        re-deployment after a fault is a new epoch).
    model_path
        The stage's ONNX model.
    inputs, outputs
        Manifest entries (``name``, ``elem_type``, ``shape``, ``bytes``) of
        the tensors that cross into and out of the stage, in wire order.
    listen_fd
        File descriptor, inherited from the dispatcher, of the socket the
        upstream side connects to.
    downstream, control
        ``(host, port)`` of the next stage (or the dispatcher's result
        socket) and of the dispatcher's control socket.
    parent_pid
        The dispatcher's process id (the worker dies with it).
    rate_bytes_per_s, burst_bytes, chunk_bytes
        Token bucket of the outgoing link (``None``: unshaped, the last
        stage's link back to the dispatcher), and the size of each paced send.
    compute_floor_s
        Wall seconds a computation is held at least (an emulated slow node).
    heartbeat_s
        Period of progress reports to the dispatcher, wall seconds.
    threads
        onnxruntime intra-op threads.
    """

    stage: int
    epoch: int
    model_path: str
    inputs: list[dict]
    outputs: list[dict]
    listen_fd: int
    downstream: tuple[str, int]
    control: tuple[str, int]
    parent_pid: int
    rate_bytes_per_s: float | None = None
    burst_bytes: float | None = None
    chunk_bytes: int = 65536
    compute_floor_s: float = 0.0
    heartbeat_s: float = 0.05
    threads: int = 1

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: str | Path) -> WorkerConfig:
        d = json.loads(Path(path).read_text())
        d["downstream"] = (str(d["downstream"][0]), int(d["downstream"][1]))
        d["control"] = (str(d["control"][0]), int(d["control"][1]))
        return cls(**d)
