"""Strangers on the wire, exit codes and clean-up of the emulator.

A live emulation on loopback is attacked by a local "stranger" who does not
know the run's secret: spoofed result frames, a spoofed control hello
followed by a close, and connections announcing 2^31-byte frames. The run
must be unaffected (every result, verified, no fault, one deployment) and
the dispatcher's memory must stay bounded.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from partopt import Problem
from partopt.emulator import Emulator, EmulatorError, EmulatorOptions
from partopt.emulator.auth import accept_peer, authenticate_to, new_secret
from partopt.emulator.wire import (
    HEADER,
    KIND_DATA,
    KIND_HELLO,
    MAGIC,
    Garbage,
    encode_tensors,
    recv_frame,
)
from partopt.errors import PartoptError
from tests.test_emulator import SCALE, _cli, _live_children, cluster, elementwise_chain, thirds
from tests.test_export import chain_of

ROOT = Path(__file__).resolve().parent.parent


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _header(kind: int, epoch: int, ident: int, size: int) -> bytes:
    return HEADER.pack(MAGIC, kind, epoch, ident, size, 0)


# -- frames and handshakes -------------------------------------------------------------


def test_length_prefixes_are_bounded_before_anything_is_read():
    a, b = socket.socketpair()
    a.sendall(_header(KIND_DATA, 0, 1, 1 << 31))
    with pytest.raises(Garbage, match=f"{1 << 31} bytes, expected 100"):
        recv_frame(b, 100)
    a.sendall(_header(KIND_HELLO, 0, 1, 1 << 31))
    with pytest.raises(Garbage, match="hello frame announces"):
        recv_frame(b, 100)
    a.sendall(_header(KIND_DATA, 0, 1, 8))
    with pytest.raises(Garbage, match="none is expected"):
        recv_frame(b)
    a.close(), b.close()


def test_handshake_needs_the_secret_on_both_sides():
    key = new_secret()
    for client_key, ok in ((key, True), (new_secret(), False)):
        a, b = socket.socketpair()
        outcome: list = []

        def server(conn=a, out=outcome):
            try:
                accept_peer(conn, key, 5.0)
                out.append(True)
            except ConnectionError:
                out.append(False)
                conn.close()

        t = threading.Thread(target=server)
        t.start()
        try:
            authenticate_to(b, client_key, 5.0)
            client_ok = True
        except ConnectionError:
            client_ok = False
        t.join(10)
        assert outcome == [ok] and client_ok is ok
        a.close(), b.close()
    # silence is not a way in: the listener gives up after its time limit
    a, b = socket.socketpair()
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="in time"):
        accept_peer(a, key, 0.3)
    assert time.monotonic() - start < 3
    a.close(), b.close()


# -- a live emulation under attack ----------------------------------------------------


def _stranger(addr, payload: bytes, hold_s: float = 0.0) -> None:
    """Connect, send ``payload`` without answering the challenge, linger, close."""
    try:
        s = socket.create_connection(addr, timeout=5)
        s.sendall(payload)
        time.sleep(hold_s)
        s.close()
    except OSError:
        pass


def _guessing_stranger(addr, then: bytes) -> None:
    """Speak the handshake with a wrong key, then send ``then`` anyway."""
    try:
        s = socket.create_connection(addr, timeout=5)
        try:
            authenticate_to(s, new_secret(), 5.0)
        except ConnectionError:
            pass
        s.sendall(then)
        s.close()
    except OSError:
        pass


def test_strangers_cannot_steer_a_live_emulation():
    model = elementwise_chain()
    graph, chain = chain_of(model, "single")
    problem = Problem(chain, cluster(4, mbps=4.0, slow={(1, 2): 1.0}))
    opts = EmulatorOptions(requests=120, time_scale=SCALE, verify=True)
    emu = Emulator(model, problem, thirds(chain), opts, layer_graph=graph)
    out: dict = {}
    runner = threading.Thread(target=lambda: out.update(report=emu.run()))
    rss0 = _rss_bytes()
    runner.start()
    end = time.monotonic() + 120
    while (emu.dep is None or len(emu.done) < 5) and time.monotonic() < end:
        time.sleep(0.01)
    assert emu.dep is not None and len(emu.done) >= 5, "the run did not start"
    result_addr = emu.result_listener.getsockname()
    control_addr = emu.control_listener.getsockname()
    stage_addrs = list(emu.dep.stage_addrs)
    out_specs = emu.epoch_out_specs[0]
    fake = [np.zeros(s["shape"], dtype=np.float32) for s in out_specs]
    payload = b"".join(bytes(b) for b in encode_tensors(fake))
    crc = zlib.crc32(payload)
    frames = HEADER.pack(MAGIC, KIND_HELLO, 0, 2, 0, 0)
    for rid in range(len(emu.done), len(emu.done) + 10):  # spoofed results, right size and CRC
        frames += HEADER.pack(MAGIC, KIND_DATA, 0, rid, len(payload), crc) + payload
    hello = json.dumps({"type": "hello", "epoch": 0, "stage": 1, "pid": 1}).encode() + b"\n"
    attacks = [
        (_stranger, (result_addr, bytes(frames))),
        (_guessing_stranger, (result_addr, bytes(frames))),
        (_stranger, (control_addr, hello)),
        (_guessing_stranger, (control_addr, hello)),
        *[(_stranger, (stage_addrs[1], bytes(frames), 0.5)) for _ in range(2)],
        (_guessing_stranger, (stage_addrs[2], bytes(frames))),
        *[(_stranger, (result_addr, _header(KIND_DATA, 0, 0, 1 << 31), 1.0)) for _ in range(3)],
        *[(_stranger, (stage_addrs[1], _header(KIND_HELLO, 0, 0, 1 << 31), 1.0)) for _ in range(3)],
    ]
    threads = [threading.Thread(target=f, args=args) for f, args in attacks]
    peak = 0
    for t in threads:
        t.start()
    assert len(emu.done) < 120, "the attack must hit a running pipeline"
    while runner.is_alive() and any(t.is_alive() for t in threads):
        peak = max(peak, _rss_bytes())
        time.sleep(0.02)
    for t in threads:
        t.join(30)
    runner.join(300)
    peak = max(peak, _rss_bytes())
    r = out["report"]
    assert r.error is None, r.error
    assert r.results_received == r.requests_sent == 120 and r.duplicates_dropped == 0
    assert sorted(emu.delivered) == list(range(120))
    assert r.verified is True
    assert r.faults == [] and len(r.deployments) == 1
    assert peak - rss0 < 200 * 2**20, f"dispatcher grew by {(peak - rss0) / 2**20:.0f} MB"
    assert not _live_children(os.getpid())


# -- command line --------------------------------------------------------------------


def _plan_doc(chain, plan) -> dict:
    return {
        "status": "feasible",
        "cuts": "single",
        "stages": [
            {
                "node": f"n{s.node}",
                "first_block": s.first_block,
                "last_block": s.last_block,
                "memory_bytes": chain.stage_memory(s.first_block, s.last_block),
            }
            for s in plan.stages
        ],
    }


def noisy_chain() -> onnx.ModelProto:
    """An elementwise chain whose output adds unseeded noise: no two runs agree."""
    m = elementwise_chain(width=4096)
    m.graph.node[-1].output[0] = "t_last"
    m.graph.node.append(helper.make_node("RandomUniformLike", ["t_last"], ["noise"], name="noise"))
    m.graph.node.append(helper.make_node("Add", ["t_last", "noise"], ["y"], name="add_noise"))
    return m


@pytest.fixture
def emu_files(tmp_path):
    model = elementwise_chain()
    _, chain = chain_of(model, "single")
    onnx.save(model, str(tmp_path / "m.onnx"))
    cluster(4, mbps=4.0, slow={(1, 2): 1.0}).save(tmp_path / "c.json")
    (tmp_path / "plan.json").write_text(json.dumps(_plan_doc(chain, thirds(chain))))
    noisy = noisy_chain()
    _, nchain = chain_of(noisy, "single")
    onnx.save(noisy, str(tmp_path / "noisy.onnx"))
    (tmp_path / "noisy.json").write_text(json.dumps(_plan_doc(nchain, thirds(nchain))))
    return tmp_path


def test_verify_mismatch_exits_non_zero(emu_files):
    f = emu_files
    common = ["--cluster", f / "c.json", "--requests", 8, "--time-scale", SCALE, "--verify"]
    out = _cli("emulate", f / "noisy.onnx", f / "noisy.json", *common)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "DO NOT match" in out.stdout and "do not match" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = _cli("emulate", f / "m.onnx", f / "plan.json", *common)
    assert out.returncode == 0, out.stderr
    assert "results match" in out.stdout


def test_replan_options_are_checked(emu_files):
    f = emu_files
    base = ["emulate", f / "m.onnx", f / "plan.json", "--cluster", f / "c.json"]
    out = _cli(*base, "--replan-method", "nosuch")
    assert out.returncode == 1 and "nosuch" in out.stderr and "auto" in out.stderr
    assert "exact" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = _cli(*base, "--replan-time-limit", "-1")
    assert out.returncode != 0 and "--replan-time-limit" in out.stderr
    with pytest.raises(EmulatorError, match="replan-time-limit"):
        EmulatorOptions(replan_time_limit_s=-1.0).check()
    with pytest.raises(PartoptError, match="unknown re-planning method 'nosuch'"):
        EmulatorOptions(replan_method="nosuch").check()
    EmulatorOptions(replan_method="exact", replan_time_limit_s=None).check()


def test_sigterm_removes_workers_and_temporary_files(emu_files, tmp_path):
    f = emu_files
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "partopt.cli",
            "emulate",
            str(f / "m.onnx"),
            str(f / "plan.json"),
            "--cluster",
            str(f / "c.json"),
            "--requests",
            "100000",
            "--time-scale",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    try:
        end = time.monotonic() + 60
        while len(_live_children(proc.pid)) < 3 and time.monotonic() < end:
            time.sleep(0.1)
        workers = _live_children(proc.pid)
        assert len(workers) >= 3
        assert list(tmp.glob("partopt-emulate-*")), "the run keeps its files in TMPDIR"
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert not list(tmp.glob("partopt-emulate-*"))
    time.sleep(0.2)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()]
    assert not [w for w in alive if Path(f"/proc/{w}/stat").read_text().split(") ")[1][0] != "Z"]


# -- layering --------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_the_emulator_runs_plans_and_never_makes_them():
    """Planning (solvers, the registry, solve) is reached only through partopt.replan."""
    for path in sorted((ROOT / "partopt" / "emulator").glob("*.py")):
        bad = {
            m
            for m in _imports(path)
            if m.startswith(("partopt.solvers", "partopt.solve", "partopt.bounds"))
        }
        assert not bad, f"{path.name} imports {sorted(bad)}; re-plan through partopt.replan"
    # and planning never needs the emulator
    assert not any(m.startswith("partopt.emulator") for m in _imports(ROOT / "partopt/replan.py"))
