"""The pipeline emulator: shaped links, predicted vs. measured throughput, faults, clean exits.

Runs are short: links are scaled (``time_scale``) so that the bottleneck link
takes about 20 ms of wall time per request, and tolerances are generous so
that a loaded 2-core machine passes; the 15% agreement is measured by
``experiments/emulate_scaling.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from partopt import Cluster, Plan, Problem
from partopt.cluster import ClusterError
from partopt.emulator import Emulator, EmulatorError, EmulatorOptions, parse_fault, replan
from partopt.emulator.wire import (
    HEADER,
    KIND_DATA,
    Garbage,
    TokenBucket,
    decode_tensors,
    encode_tensors,
    payload_size,
    recv_frame,
    send_frame,
)
from partopt.feasibility import min_stages
from partopt.plan import InvalidPlan
from tests.test_export import chain_of

WIDTH = 16384  # float32: 64 KiB cross every cut


def elementwise_chain(width: int = WIDTH, layers: int = 4) -> onnx.ModelProto:
    """``(Mul, Add, Tanh) * layers``: big tensors on every cut, next to no compute."""
    nodes, inits, prev = [], [], "x"
    rng = np.random.default_rng(0)
    for k in range(layers):
        inits.append(
            numpy_helper.from_array(rng.uniform(0.5, 1.5, width).astype(np.float32), f"s{k}")
        )
        inits.append(
            numpy_helper.from_array(rng.uniform(-0.1, 0.1, width).astype(np.float32), f"b{k}")
        )
        nodes += [
            helper.make_node("Mul", [prev, f"s{k}"], [f"m{k}"], name=f"mul{k}"),
            helper.make_node("Add", [f"m{k}", f"b{k}"], [f"a{k}"], name=f"add{k}"),
            helper.make_node("Tanh", [f"a{k}"], [f"t{k}"], name=f"tanh{k}"),
        ]
        prev = f"t{k}"
    nodes[-1].output[0] = "y"
    g = helper.make_graph(
        nodes,
        "elementwise_chain",
        [helper.make_tensor_value_info("x", T.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", T.FLOAT, [1, width])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def cluster(n: int, mbps: float = 4.0, slow: dict | None = None, memory: float = 1e9) -> Cluster:
    """``n`` nodes, every link ``mbps`` except ``slow[(i, j)]`` (both directions)."""
    bw = np.full((n, n), mbps)
    for (i, j), b in (slow or {}).items():
        bw[i, j] = bw[j, i] = b
    return Cluster(tuple(f"n{i}" for i in range(n)), np.full(n, memory), bw)


def thirds(chain, nodes=(0, 1, 2)) -> Plan:
    b = chain.num_blocks
    cuts = [b // 3 - 1, 2 * b // 3 - 1]
    return Plan.from_cuts(cuts, list(nodes), b)


SCALE = 0.04  # 64 KiB at 1 Mbit/s: 0.52 emulated s, 21 wall ms


@pytest.fixture(scope="module")
def model_and_chain():
    model = elementwise_chain()
    graph, chain = chain_of(model, "single")
    return model, graph, chain


def _live_children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(d.name))
    return out


# -- wire ----------------------------------------------------------------------------


def test_token_bucket_paces_a_socket_to_its_rate():
    a, b = socket.socketpair()
    received = []

    def drain():
        while sum(received) < 300_000:
            n = len(b.recv(1 << 16))
            if n == 0:
                return
            received.append(n)

    t = threading.Thread(target=drain)
    t.start()
    bucket = TokenBucket(rate=2e6, burst=8192)
    start = time.monotonic()
    send_frame(a, KIND_DATA, 0, 1, [bytes(300_000 - HEADER.size)], bucket, chunk=4096)
    t.join(timeout=10)
    elapsed = time.monotonic() - start
    assert 0.13 <= elapsed <= 1.0  # 300 kB at 2 MB/s = 0.15 s; never faster than the rate
    a.close(), b.close()


def test_frames_round_trip_and_garbage_is_caught():
    arrays = [np.arange(12, dtype=np.float32).reshape(3, 4), np.array([7], dtype=np.int64)]
    specs = [
        {"name": "a", "elem_type": 1, "shape": [3, 4], "bytes": 48},
        {"name": "b", "elem_type": 7, "shape": [1], "bytes": 8},
    ]
    a, b = socket.socketpair()
    send_frame(a, KIND_DATA, 3, 42, encode_tensors(arrays))
    kind, epoch, rid, payload = recv_frame(b, payload_size(specs))
    assert (kind, epoch, rid) == (KIND_DATA, 3, 42)
    for x, y in zip(arrays, decode_tensors(payload, specs), strict=True):
        np.testing.assert_array_equal(x, y)
    send_frame(a, KIND_DATA, 3, 43, encode_tensors(arrays), corrupt=True)
    with pytest.raises(Garbage, match="CRC"):
        recv_frame(b, payload_size(specs))
    send_frame(a, KIND_DATA, 3, 44, encode_tensors(arrays[:1]))
    with pytest.raises(Garbage, match="expected"):
        recv_frame(b, payload_size(specs))
    a.sendall(b"HTTP/1.1 200 OK\r\n" + bytes(64))
    with pytest.raises(Garbage, match="magic"):
        recv_frame(b)
    with pytest.raises(Garbage, match="shape"):
        decode_tensors(payload, [{**specs[0], "shape": [4, 3]}, specs[1]])
    a.close(), b.close()


# -- replanning ------------------------------------------------------------------------


def test_replan_keeps_surviving_stages_and_avoids_dead_links(model_and_chain):
    _, _, chain = model_and_chain
    p = Problem(chain, cluster(5, slow={(3, 1): 0.5}))
    plan = thirds(chain)
    r = replan(p, plan, alive=[0, 2, 3, 4], method="auto")
    assert r.plan is not None and 1 not in r.plan.nodes
    if len(r.plan.stages) == 3:
        assert r.plan.nodes[0] == 0 and r.plan.nodes[2] == 2
    r = replan(p, plan, alive=range(5), dead_links=[(1, 2)])
    assert r.plan is not None
    pairs = list(zip(r.plan.nodes, r.plan.nodes[1:], strict=False))
    assert (1, 2) not in pairs
    r = replan(p, plan, alive=[])
    assert r.plan is None and "no node" in r.reason


# -- runs ------------------------------------------------------------------------------


def test_three_stage_plan_reaches_predicted_throughput(model_and_chain):
    model, graph, chain = model_and_chain
    problem = Problem(chain, cluster(4, mbps=4.0, slow={(1, 2): 1.0}))
    opts = EmulatorOptions(requests=50, time_scale=SCALE, verify=True)
    emu = Emulator(model, problem, thirds(chain), opts, layer_graph=graph)
    r = emu.run()
    assert r.error is None
    assert r.results_received == r.requests_sent == 50
    assert sorted(emu.delivered) == list(range(50))
    assert r.predicted_throughput == pytest.approx(1e6 / 8 / chain.transfer_bytes[0], rel=1e-9)
    assert 0.8 <= r.throughput_ratio <= 1.1, r.to_dict()
    assert r.verified is True
    slow = next(link for link in r.links if (link["src"], link["dst"]) == ("n1", "n2"))
    fast = next(link for link in r.links if (link["src"], link["dst"]) == ("n0", "n1"))
    assert slow["utilisation"] > 0.8 and fast["utilisation"] < 0.5
    assert r.latency_p50_s <= r.latency_p99_s
    assert not _live_children(os.getpid())


def test_killed_worker_mid_run_every_request_answered_once(model_and_chain):
    model, graph, chain = model_and_chain
    # each node holds about a third of the model: re-plans need 3 stages too
    plan = thirds(chain)
    cap = max(chain.stage_memory(s.first_block, s.last_block) for s in plan.stages)
    problem = Problem(chain, cluster(5, mbps=4.0, slow={(1, 2): 1.0}, memory=cap))
    assert min_stages(problem, cap) == 3
    bottleneck = 8 * chain.transfer_bytes[0] / 1e6
    opts = EmulatorOptions(
        requests=60, time_scale=SCALE, verify=True, faults=(parse_fault(f"n1@{15 * bottleneck}"),)
    )
    emu = Emulator(model, problem, plan, opts, layer_graph=graph)
    r = emu.run()
    assert r.error is None, r.error
    assert r.results_received == r.requests_sent == 60 and r.lost == 0
    assert sorted(emu.delivered) == list(range(60))  # exactly once
    assert r.verified is True
    assert len(r.faults) == 1
    f = r.faults[0]
    assert (f["kind"], f["node"], f["detected_as"]) == ("kill", "n1", "dead")
    assert f["outage_s"] is not None and f["outage_s"] > 0
    assert len(r.deployments) == 2
    assert "n1" not in [s["node"] for s in r.deployments[1]["plan"]]
    assert r.deployments[1]["results"] > 0
    assert not _live_children(os.getpid())


@pytest.mark.parametrize(
    "kind,detected",
    [("freeze", "frozen"), ("hang", "hung"), ("stall", "stalled link"), ("garbage", "garbage")],
)
def test_other_faults_are_detected_and_survived(model_and_chain, kind, detected):
    model, graph, chain = model_and_chain
    problem = Problem(chain, cluster(5, mbps=4.0, slow={(1, 2): 1.0}))
    bottleneck = 8 * chain.transfer_bytes[0] / 1e6
    opts = EmulatorOptions(
        requests=40,
        time_scale=SCALE,
        heartbeat_s=0.02,
        detect_timeout_s=1.0,
        faults=(parse_fault(f"{kind}:n1@{10 * bottleneck}"),),
    )
    emu = Emulator(model, problem, thirds(chain), opts, layer_graph=graph)
    r = emu.run()
    assert r.error is None, r.error
    assert sorted(emu.delivered) == list(range(40))
    f = r.faults[0]
    assert f["kind"] == kind and f["detected_as"] == detected, f
    if kind == "stall":
        assert f["lost"] == "link n1 -> n2"
    else:
        assert "n1" not in [s["node"] for s in r.deployments[-1]["plan"]]
    assert not _live_children(os.getpid())


# -- bad input -----------------------------------------------------------------------


def test_port_in_use_fails_before_anything_starts(model_and_chain):
    model, graph, chain = model_and_chain
    problem = Problem(chain, cluster(3))
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    emu = Emulator(
        model, problem, thirds(chain), EmulatorOptions(requests=5, port=port - 1), layer_graph=graph
    )
    with pytest.raises(EmulatorError, match=f"port {port} .* in use"):
        emu.run()
    assert emu.all_workers == [] and not _live_children(os.getpid())
    blocker.close()


def test_plans_that_do_not_fit_are_refused_before_start(model_and_chain):
    model, graph, chain = model_and_chain
    small = Problem(chain, cluster(3, memory=chain.stage_memory(0, 0) * 1.01))
    emu = Emulator(model, small, thirds(chain), EmulatorOptions(requests=5), layer_graph=graph)
    with pytest.raises(InvalidPlan, match="needs .* bytes but node"):
        emu.run()
    no_link = Problem(chain, cluster(3, slow={(0, 1): 0.0}))
    with pytest.raises(InvalidPlan, match="no link"):
        Emulator(model, no_link, thirds(chain), layer_graph=graph).run()
    opts = EmulatorOptions(requests=5, faults=(parse_fault("n9@1"),))
    with pytest.raises(ClusterError, match="n9"):
        Emulator(model, Problem(chain, cluster(3)), thirds(chain), opts, layer_graph=graph).run()
    with pytest.raises(EmulatorError, match="time-scale"):
        EmulatorOptions(time_scale=0).check()
    assert not _live_children(os.getpid())


# -- command line ----------------------------------------------------------------------


@pytest.fixture
def files(tmp_path, model_and_chain):
    model, graph, chain = model_and_chain
    onnx.save(model, str(tmp_path / "m.onnx"))
    cluster(4, mbps=4.0, slow={(1, 2): 1.0}).save(tmp_path / "c.json")
    plan = thirds(chain)
    doc = {
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
    (tmp_path / "plan.json").write_text(json.dumps(doc))
    return tmp_path


def _cli(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "partopt.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


def test_cli_emulate_json_and_export(files):
    out = _cli(
        "emulate",
        files / "m.onnx",
        files / "plan.json",
        "--cluster",
        files / "c.json",
        "--requests",
        30,
        "--time-scale",
        SCALE,
        "--json",
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    for key in (
        "predicted_throughput",
        "measured_throughput",
        "latency_p50_s",
        "latency_p99_s",
        "requests_sent",
        "results_received",
    ):
        assert doc[key] is not None, key
    assert doc["results_received"] == doc["requests_sent"] == 30
    out = _cli("export", files / "m.onnx", files / "plan.json", files / "out")
    assert out.returncode == 0, out.stderr
    assert "outputs match" in out.stdout
    manifest = json.loads((files / "out" / "manifest.json").read_text())
    assert [s["node"] for s in manifest["stages"]] == ["n0", "n1", "n2"]


def test_cli_errors_are_one_line(files):
    doc = json.loads((files / "plan.json").read_text())
    doc["stages"][0]["memory_bytes"] *= 2
    (files / "other.json").write_text(json.dumps(doc))
    out = _cli("emulate", files / "m.onnx", files / "other.json", "--cluster", files / "c.json")
    assert out.returncode == 1 and "does not fit" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    doc = json.loads((files / "plan.json").read_text())
    doc["stages"][-1]["last_block"] += 3
    (files / "longer.json").write_text(json.dumps(doc))
    out = _cli("export", files / "m.onnx", files / "longer.json", files / "o")
    assert out.returncode == 1 and "blocks" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = _cli(
        "emulate",
        files / "m.onnx",
        files / "plan.json",
        "--cluster",
        files / "c.json",
        "--kill-node",
        "n1",
    )
    assert out.returncode == 1 and "NAME@SECONDS" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_ctrl_c_leaves_no_worker_behind(files):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "partopt.cli",
            "emulate",
            str(files / "m.onnx"),
            str(files / "plan.json"),
            "--cluster",
            str(files / "c.json"),
            "--requests",
            "100000",
            "--time-scale",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        end = time.monotonic() + 60
        while len(_live_children(proc.pid)) < 3 and time.monotonic() < end:
            time.sleep(0.1)
        workers = _live_children(proc.pid)
        assert len(workers) >= 3
        time.sleep(1.0)  # running
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in err
    time.sleep(0.2)
    assert not any(Path(f"/proc/{w}").exists() and "Z" not in _state(w) for w in workers)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_two_faults_at_once_and_a_fault_on_an_idle_node_are_recorded(model_and_chain):
    model, graph, chain = model_and_chain
    problem = Problem(chain, cluster(6, mbps=4.0, slow={(1, 2): 1.0}))
    bottleneck = 8 * chain.transfer_bytes[0] / 1e6
    faults = (
        parse_fault(f"n4@{3 * bottleneck}"),  # hosts no stage
        parse_fault(f"n1@{10 * bottleneck}"),
        parse_fault(f"freeze:n2@{10 * bottleneck}"),  # goes down with n1's pipeline
    )
    opts = EmulatorOptions(
        requests=40, time_scale=SCALE, heartbeat_s=0.02, detect_timeout_s=1.0, faults=faults
    )
    emu = Emulator(model, problem, thirds(chain), opts, layer_graph=graph)
    r = emu.run()
    assert r.error is None, r.error
    assert sorted(emu.delivered) == list(range(40))
    by_node = {f["node"]: f for f in r.faults}
    assert set(by_node) == {"n1", "n2", "n4"}
    assert by_node["n4"]["detected_as"] == "no stage" and by_node["n4"]["detected_at_s"] is None
    assert by_node["n1"]["detected_as"] == "dead" and by_node["n1"]["also_lost"] == ["node n2"]
    assert by_node["n2"]["detected_as"] == "lost with the pipeline torn down for node n1"
    assert by_node["n2"]["detected_at_s"] == by_node["n1"]["detected_at_s"]
    assert by_node["n2"]["outage_s"] is not None and by_node["n2"]["outage_s"] > 0
    assert not {"n1", "n2", "n4"} & {s["node"] for s in r.deployments[-1]["plan"]}
    assert not _live_children(os.getpid())
