"""The results file of a sweep: one JSON record per run, appended, read, locked.

A results file is JSON lines: every line is one record (a JSON object with
a ``run_key``, written by :func:`append_record` in one flushed ``write``).
A killed writer can leave only one kind of damage: a last line without its
newline that starts like a record. :func:`read_records` drops such a torn
record (and with ``repair`` cuts it off the file); anything else that is not
a record means the file is not a results file, and it is refused untouched.
:func:`lock_results` makes one sweep at a time the writer of a file.

This module knows nothing about solvers or runners, so that reports can read
records without importing them.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from partopt.errors import PartoptError

__all__ = [
    "SCHEMA",
    "TIMING_FIELDS",
    "CLASS_OPTION_NAMES",
    "ResultsFileError",
    "json_value",
    "json_info",
    "snapshot_path",
    "read_records",
    "drop_records",
    "append_record",
    "lock_results",
    "strip_timings",
]

SCHEMA = 1
"""Version of the record layout; bump when a field changes meaning."""

TIMING_FIELDS = ("runtime_s", "wall_s", "finished_at")
"""Record fields that differ between two runs of the same sweep."""

CLASS_OPTION_NAMES = ("classes", "num_classes", "bandwidth_classes", "C")
"""Method options that mean the number of bandwidth classes ``C`` (copied to ``record["C"]``)."""

_RECORD_START = b'{"'
"""How every record line begins: a JSON object's first key."""


class ResultsFileError(PartoptError):
    """A file that is not a results file, or one another sweep is writing."""


def json_value(v):
    """``v`` as plain JSON (non-finite floats become None), or raise TypeError."""
    if isinstance(v, bool | str) or v is None:
        return v
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, list | tuple):
        return [json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    raise TypeError(type(v).__name__)


def json_info(info: dict) -> dict:
    """The JSON-ready entries of a solver's ``info`` (objects and arrays are left out)."""
    out = {}
    for k, v in info.items():
        try:
            out[str(k)] = json_value(v)
        except TypeError:
            continue  # solver internals that are not data (objects, arrays) stay out
    return out


def _json_loads() -> tuple[Callable, tuple[type[Exception], ...]]:
    """``(loads, error types)``: orjson's when installed (reports read 10^5 records), else json's."""
    try:
        import orjson

        return orjson.loads, (orjson.JSONDecodeError,)
    except ImportError:
        return json.loads, (json.JSONDecodeError,)


def snapshot_path(path: str | Path) -> Path:
    """The committed, gzip-compressed copy of a results file: ``NAME.jsonl.gz``."""
    path = Path(path)
    return path.with_name(path.name + ".gz")


def _torn_record(tail: bytes) -> bool:
    """Whether ``tail`` (a last line without newline) is the start of a record."""
    n = min(len(tail), len(_RECORD_START))
    return tail[:n] == _RECORD_START[:n]


def read_records(path: str | Path, *, repair: bool = False) -> list[dict]:
    """Records of a JSON-lines results file, plain or ``.gz`` (``[]`` if it does not exist).

    A last line without its newline that starts like a record is what a
    killed writer leaves: it is ignored, and with ``repair`` cut off the
    file so that appending can go on. Every other line must be a record;
    otherwise :class:`ResultsFileError` is raised and the file is left as it
    was (it is somebody else's file, or damaged in a way no kill causes).
    """
    path = Path(path)
    if not path.exists():
        return []
    if path.is_dir():
        raise ResultsFileError(f"{path} is a folder, not a results file; give a .jsonl file")
    data = path.read_bytes()
    if path.suffix == ".gz":
        data, repair = gzip.decompress(data), False
    complete = data.rfind(b"\n") + 1
    tail = data[complete:]
    not_ours = (
        f"{path} is not a results file (JSON lines of sweep records); "
        "it was left unchanged: give another --out"
    )
    if tail and not _torn_record(tail):
        raise ResultsFileError(f"{not_ours} (its last line is not a record)")
    loads, errors = _json_loads()
    records = []
    for lineno, line in enumerate(data[:complete].splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = loads(line)
        except errors:
            raise ResultsFileError(f"{not_ours} (line {lineno} is not JSON)") from None
        if not isinstance(rec, dict) or "run_key" not in rec:
            raise ResultsFileError(f"{not_ours} (line {lineno} has no run_key)")
        records.append(rec)
    if repair and tail:
        with open(path, "r+b") as fh:
            fh.truncate(complete)
    return records


def _dumps(record: dict) -> str:
    return json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n"


def drop_records(path: Path, records: list[dict], keys: set[str]) -> list[dict]:
    """Rewrite ``path`` in place without the records whose run key is in ``keys``.

    In place, so that a lock held on the file (:func:`lock_results`) stays
    on it; a copy of the old content is kept in ``NAME.bak`` until the new
    one is on disk.
    """
    keep = [r for r in records if r["run_key"] not in keys]
    if len(keep) == len(records):
        return records
    backup = path.with_name(path.name + ".bak")
    backup.write_bytes(path.read_bytes())
    with open(path, "r+b") as fh:
        fh.truncate(0)
        fh.write("".join(_dumps(r) for r in keep).encode())
        fh.flush()
        os.fsync(fh.fileno())
    backup.unlink()
    return keep


def append_record(fd: int, record: dict) -> None:
    """Append one record to an ``O_APPEND`` file descriptor in a single ``write``."""
    line = _dumps(record).encode()
    written = os.write(fd, line)
    if written != len(line):  # a short write: finish it, so the line is whole
        view = memoryview(line)[written:]
        while view:
            view = view[os.write(fd, view) :]


@contextlib.contextmanager
def lock_results(path: Path) -> Iterator[int]:
    """Open ``path`` for appending and hold an exclusive lock on it; yield the descriptor.

    A second sweep on the same file is refused at once (it does not wait):
    two writers would both run, and record, every run they have not seen.
    The lock is ``flock`` on the file itself, released when the sweep's
    process ends however it ends. Where ``fcntl`` is missing (Windows) the
    file is opened without a lock.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ResultsFileError(
                    f"{path} is being written by another sweep; wait for it to finish "
                    "or give another --out"
                ) from None
        yield fd
    finally:
        os.close(fd)


def strip_timings(record: dict) -> dict:
    """The record without the fields that differ between identical runs.

    Those are :data:`TIMING_FIELDS` and solver details about time (info keys
    with ``time`` in their name, such as ``timed_out``).
    """
    out = {k: v for k, v in record.items() if k not in TIMING_FIELDS}
    out["info"] = {k: v for k, v in record.get("info", {}).items() if "time" not in k}
    return out
