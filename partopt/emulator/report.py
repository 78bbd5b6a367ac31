"""What an emulation run measured, next to what :func:`partopt.plan.evaluate` predicted.

All times are *emulated* seconds: wall-clock seconds divided by the time
scale (with ``--time-scale 0.01`` one emulated second passes in 10 ms), so
that they compare directly with the plan's predicted bottleneck.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from partopt.plan import evaluate
from partopt.problem import Problem

if TYPE_CHECKING:
    from partopt.emulator.dispatcher import Emulator

__all__ = [
    "EmulationReport",
    "build_report",
    "format_report",
    "steady_throughput",
    "throughput",
    "verify_outputs",
]


def steady_throughput(done_times_s, skip: int | None = None) -> float | None:
    """Completions per second at steady state, from sorted completion times.

    The first ``skip`` completions (default: a fifth, at most 8) are the
    pipeline filling up and are left out; the rate is ``(m - 1) / (t_last -
    t_first)`` over the ``m`` that remain. ``None`` with fewer than 3.

    Examples
    --------
    >>> steady_throughput([0.0, 5.0, 6.0, 7.0, 8.0, 9.0], skip=1)
    1.0
    """
    t = np.sort(np.asarray(done_times_s, dtype=float))
    if skip is None:
        skip = min(8, len(t) // 5)
    t = t[skip:]
    if len(t) < 3 or t[-1] <= t[0]:
        return None
    return float((len(t) - 1) / (t[-1] - t[0]))


def _num(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class EmulationReport:
    """Measured and predicted numbers of one run (see ``to_dict`` for the JSON keys)."""

    predicted_throughput: float | None
    predicted_bottleneck_s: float | None
    measured_throughput: float | None
    overall_throughput: float | None
    latency_p50_s: float | None
    latency_p99_s: float | None
    latency_mean_s: float | None
    requests_sent: int
    results_received: int
    duplicates_dropped: int
    retransmissions: int
    time_scale: float
    wall_time_s: float
    emulated_time_s: float
    window: int
    plan: list = field(default_factory=list)
    links: list = field(default_factory=list)
    stages: list = field(default_factory=list)
    deployments: list = field(default_factory=list)
    faults: list = field(default_factory=list)
    verified: bool | None = None
    verify_max_rel_error: float | None = None
    weights: str = "model"
    warnings: list = field(default_factory=list)
    error: str | None = None

    @property
    def lost(self) -> int:
        return self.requests_sent - self.results_received

    @property
    def throughput_ratio(self) -> float | None:
        """measured / predicted steady-state throughput of the first plan."""
        if not self.measured_throughput or not self.predicted_throughput:
            return None
        return self.measured_throughput / self.predicted_throughput

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lost"] = self.lost
        d["throughput_ratio"] = self.throughput_ratio
        return _clean(d)


def _clean(x):
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, float | np.floating):
        return _num(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _f(x, fmt="{:.3g}", none="-"):
    return none if x is None else fmt.format(x)


def _blocks_text(st: dict) -> str:
    if st.get("ops"):
        return f"{len(st['ops'])} operators ({', '.join(st['ops'][:3])}{', ...' if len(st['ops']) > 3 else ''})"
    return f"blocks {st['first_block']}..{st['last_block']}"


def format_report(r: EmulationReport) -> str:
    """The human-readable summary ``partopt emulate`` prints."""
    out = []
    ratio = r.throughput_ratio
    out.append(
        f"throughput: predicted {_f(r.predicted_throughput)} /s (bottleneck "
        f"{_f(r.predicted_bottleneck_s)} s), measured {_f(r.measured_throughput)} /s"
        + (f" ({100 * ratio:.1f}% of predicted)" if ratio else "")
    )
    out.append(
        f"latency: p50 {_f(r.latency_p50_s)} s, p99 {_f(r.latency_p99_s)} s "
        f"(window of {r.window} requests in flight)"
    )
    out.append(
        f"requests: {r.requests_sent} sent, {r.results_received} results, {r.lost} lost, "
        f"{r.duplicates_dropped} duplicates dropped, {r.retransmissions} re-sent after faults"
    )
    out.append(
        f"time: {_f(r.emulated_time_s)} emulated s in {_f(r.wall_time_s)} wall s "
        f"(time scale {r.time_scale:g}); weights: {r.weights}"
    )
    if r.links:
        out.append("links of the first plan:")
        for link in r.links:
            out.append(
                f"  {link['src']:>8} -> {link['dst']:<8} {_f(link['bandwidth_mbps'])} Mbit/s, "
                f"{link['bytes_per_request']} B/request, {_f(link['predicted_s'])} s/request, "
                f"utilisation {_f(link['utilisation'], '{:.0%}')}"
            )
    if r.stages:
        out.append("stages of the first plan (compute: wall ms per request on this machine):")
        for st in r.stages:
            c = st.get("compute_wall_s")
            out.append(
                f"  {st['stage']}: {st['node']:>8} {_blocks_text(st)}, "
                f"{st['onnx_nodes']} ONNX nodes, compute {_f(None if c is None else 1e3 * c)} ms"
            )
    for d in r.deployments[1:]:
        out.append(
            f"after fault: plan {' -> '.join(s['node'] for s in d['plan'])}: predicted "
            f"{_f(d['predicted_throughput'])} /s, measured {_f(d['measured_throughput'])} /s"
        )
    for f in r.faults:
        if f.get("detected_at_s") is None:
            out.append(
                f"fault: {f['kind']} on {f['node']} at {_f(f['injected_at_s'])} s: {f.get('note', '')}"
            )
            continue
        out.append(
            f"fault: {f['kind']} on {f['node']} at {_f(f['injected_at_s'])} s, detected as "
            f"{f['detected_as']} after {_f(f['detection_s'])} s, service back after an outage of "
            f"{_f(f['outage_s'])} s; re-plan by {f['replan']['source']} in "
            f"{_f(f['replan']['runtime_s'])} wall s"
        )
    if r.verified is not None:
        out.append(
            f"results {'match' if r.verified else 'DO NOT match'} the unsplit model "
            f"(max relative error {_f(r.verify_max_rel_error)})"
        )
    for w in r.warnings:
        out.append(f"warning: {w}")
    if r.error:
        out.append(f"error: {r.error}")
    return "\n".join(out)


def throughput(bottleneck_s: float | None) -> float | None:
    """Requests per second of a pipeline whose bottleneck is ``bottleneck_s`` (``None``: unknown)."""
    if bottleneck_s is None or not math.isfinite(bottleneck_s) or bottleneck_s <= 0:
        return None
    return 1.0 / bottleneck_s


def _op_names(emu: Emulator, ops) -> list[str]:
    dag = getattr(emu.problem, "dag", None)
    assert dag is not None, "operator-set stages belong to DAG problems"
    return [dag.op_names[o] for o in ops]


def _stage_doc(emu: Emulator, s) -> dict:
    """One stage of a deployed plan: its node and blocks, or its operators (DAG plans)."""
    node = emu.problem.cluster.names[s.node]
    if hasattr(s, "ops"):
        return {"node": node, "ops": _op_names(emu, s.ops)}
    return {"node": node, "first_block": s.first_block, "last_block": s.last_block}


def build_report(emu: Emulator, t_wall: float) -> EmulationReport:
    """The report of a finished run of ``emu`` that started at wall time ``t_wall``."""
    scale = emu.opts.time_scale
    names = emu.problem.cluster.names
    lat = np.array([(emu.done[r] - emu.first_sent[r]) / scale for r in emu.done])
    deployments: list[dict[str, Any]] = []
    for dep in emu.deployments:
        times = sorted(emu._emu(t) for r, t in emu.done.items() if emu.done_epoch[r] == dep.epoch)
        deployments.append(
            {
                "epoch": dep.epoch,
                "plan": [_stage_doc(emu, s) for s in dep.plan.stages],
                "predicted_bottleneck_s": dep.predicted_bottleneck_s,
                "predicted_throughput": throughput(dep.predicted_bottleneck_s),
                "measured_throughput": steady_throughput(times),
                "results": len(times),
                "started_at_s": emu._emu(dep.started),
                "ended_at_s": None if dep.ended is None else emu._emu(dep.ended),
            }
        )
    first = emu.deployments[0]
    dag_eval = evaluate(emu.problem, first.plan) if first.plan.is_dag else None
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
                **({"ops": _op_names(emu, s.ops)} if s.ops else {}),
                "onnx_nodes": s.onnx_nodes,
                "input_bytes": s.input_bytes,
                "output_bytes": s.output_bytes,
                "computed": computed,
                "compute_wall_s": st.get("compute_busy_s", 0.0) / computed if computed else None,
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
        if dag_eval is not None:  # operator-set stages: what evaluate charges the stage
            predicted = dag_eval.stages[j]
            links.append(
                {
                    "src": names[w.node],
                    "dst": names[nxt],
                    "bandwidth_mbps": float(emu.problem.cluster.bandwidth_mbps[w.node, nxt]),
                    "bytes_per_request": s.output_bytes,
                    "dag_transfer_bytes": predicted.transfer_bytes,
                    "predicted_s": predicted.transfer_s,
                    "utilisation": util,
                }
            )
            if (
                s.output_bytes
                and abs(s.output_bytes - predicted.transfer_bytes) > 0.01 * s.output_bytes
            ):
                emu.warnings.append(
                    f"stage {j}: {s.output_bytes} bytes leave it, the DAG's tensors say "
                    f"{predicted.transfer_bytes:.0f}; the prediction uses the DAG"
                )
            continue
        problem = emu.problem
        assert isinstance(problem, Problem), "block-range stages belong to chain problems"
        cut = s.last_block
        links.append(
            {
                "src": names[w.node],
                "dst": names[nxt],
                "bandwidth_mbps": float(emu.problem.cluster.bandwidth_mbps[w.node, nxt]),
                "bytes_per_request": s.output_bytes,
                "chain_transfer_bytes": float(problem.transfer_bytes[cut]),
                "predicted_s": problem.transfer_time_s(cut, w.node, nxt),
                "utilisation": util,
            }
        )
        if (
            s.output_bytes
            and abs(s.output_bytes - problem.transfer_bytes[cut]) > 0.01 * s.output_bytes
        ):
            emu.warnings.append(
                f"cut after block {cut}: {s.output_bytes} bytes cross it, the chain's "
                f"{problem.transfer} model says {problem.transfer_bytes[cut]:.0f}; "
                "the prediction uses the chain"
            )
    bott_wall = first.predicted_bottleneck_s * scale
    for st in stages:
        c = st["compute_wall_s"]
        if c and bott_wall > 0 and c > 0.5 * bott_wall:
            emu.warnings.append(
                f"stage {st['stage']} computes for {1e3 * c:.1f} wall ms per request, "
                f"{100 * c / bott_wall:.0f}% of the predicted bottleneck ({1e3 * bott_wall:.1f} "
                "wall ms): this machine's CPU, not the links, may set the pace; use a larger "
                "--time-scale"
            )
    verified, max_rel = None, None
    if emu.opts.verify and emu.outputs:
        verified, max_rel = verify_outputs(emu)
    done_times = [emu._emu(t) for t in emu.done.values()]
    overall = None
    if len(done_times) >= 2 and max(done_times) > 0:
        overall = len(done_times) / max(done_times)
    faults = [r.to_dict() for r in emu.fault_records]
    faults.sort(key=lambda f: (f["injected_at_s"] is None, f["injected_at_s"] or 0.0))
    return EmulationReport(
        predicted_throughput=throughput(first.predicted_bottleneck_s),
        predicted_bottleneck_s=first.predicted_bottleneck_s,
        measured_throughput=deployments[0]["measured_throughput"],
        overall_throughput=overall,
        latency_p50_s=float(np.percentile(lat, 50)) if lat.size else None,
        latency_p99_s=float(np.percentile(lat, 99)) if lat.size else None,
        latency_mean_s=float(lat.mean()) if lat.size else None,
        requests_sent=emu.opts.requests,
        results_received=len(emu.done),
        duplicates_dropped=emu.duplicates,
        retransmissions=emu.retransmissions,
        time_scale=scale,
        wall_time_s=time.monotonic() - t_wall,
        emulated_time_s=max(done_times, default=0.0),
        window=emu.opts.window or 2 * len(emu.plan.stages) + 2,
        plan=deployments[0]["plan"],
        links=links,
        stages=stages,
        deployments=deployments,
        faults=faults,
        verified=verified,
        verify_max_rel_error=max_rel,
        weights=emu.weights,
        warnings=emu.warnings,
        error=emu.error,
    )


def verify_outputs(emu: Emulator) -> tuple[bool, float]:
    """Whether every kept result matches the unsplit model; and the largest relative error."""
    export = emu.deployments[0].export
    from partopt.export import _with_input_shapes, random_inputs, session

    # an export's inputs have concrete shapes
    shapes = {t.name: t.shape for t in export.inputs if t.shape is not None}
    fixed = _with_input_shapes(emu.model, shapes)
    sess = session(fixed)
    names = [t.name for t in export.outputs]
    ok, max_rel = True, 0.0
    for rid, got in sorted(emu.outputs.items()):
        inputs = random_inputs(export.inputs, emu._input_seed(rid), export.meta.get("index_bounds"))
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
