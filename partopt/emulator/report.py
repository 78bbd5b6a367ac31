"""What an emulation run measured, next to what :func:`partopt.plan.evaluate` predicted.

All times are *emulated* seconds: wall-clock seconds divided by the time
scale (with ``--time-scale 0.01`` one emulated second passes in 10 ms), so
that they compare directly with the plan's predicted bottleneck.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["EmulationReport", "steady_throughput", "format_report"]


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
                f"  {st['stage']}: {st['node']:>8} blocks {st['first_block']}..{st['last_block']}, "
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
