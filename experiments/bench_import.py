"""Benchmark: time to inspect a model (load_graph + build_chain single and multi).

For every ``models/*.onnx`` that exists and for a generated model of
``--nodes`` layers (residual and Inception-like units, weights as external
data that does not exist), time ``load_graph`` and ``build_chain`` with both
cut families, and check whether the two single-tensor cut point methods
(sink dominators, singleton levels) agree. Writes one CSV row per model
(default ``experiments/results/bench_import.csv``) and prints the CSV.

Targets: InceptionResNetV2 under 0.5 s, 10,000 layers under 5 s.

Usage::

    python experiments/bench_import.py [--repeat 3] [--nodes 10000] [--out FILE]
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import os
import platform
import statistics
import sys
import tempfile
import time

import onnx
from onnx import TensorProto, helper

from partopt.chain import _assemble, build_chain, compare_cut_methods
from partopt.onnx_graph import ModelError, load_graph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_S = {"inceptionresnetv2": 0.5, "generated": 5.0}
FIELDS = [
    "model", "nodes", "single_cuts", "load_s", "single_s", "multi_s", "total_s", "target_s",
    "meets_target", "methods_agree", "only_dominators", "only_singleton_levels",
    "multi_mean_transfer_bytes", "file_order_mean_transfer_bytes", "error", "python", "onnx",
    "machine",
]  # fmt: skip


def _weight(name: str, dims: list[int]) -> TensorProto:
    """A float32 initializer whose data lives in a file that does not exist."""
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "absent-weights.bin"), ("offset", "0"), ("length", "0")):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def generated_model(num_nodes: int, channels: int = 32, size: int = 14) -> onnx.ModelProto:
    """Alternating residual (5 layers) and Inception-like (8 layers) units."""
    c = channels
    nodes, inits = [], []
    x = "input"
    k = 0

    def conv(src: str, out_c: int, in_c: int, kernel: int) -> str:
        nonlocal k
        k += 1
        w = f"w{k}"
        inits.append(_weight(w, [out_c, in_c, kernel, kernel]))
        pad = kernel // 2
        nodes.append(
            helper.make_node(
                "Conv",
                [src, w],
                [f"t{k}"],
                name=f"conv{k}",
                kernel_shape=[kernel] * 2,
                pads=[pad] * 4,
            )
        )
        return f"t{k}"

    def op(kind: str, ins: list[str], **attrs) -> str:
        nonlocal k
        k += 1
        nodes.append(helper.make_node(kind, ins, [f"t{k}"], name=f"{kind.lower()}{k}", **attrs))
        return f"t{k}"

    unit = 0
    while len(nodes) < num_nodes:
        if unit % 2 == 0:
            r = op("Relu", [conv(x, c, c, 3)])
            x = op("Relu", [op("Add", [x, conv(r, c, c, 3)])])
        else:
            b1 = conv(x, c // 4, c, 1)
            b2 = conv(op("Relu", [conv(x, c // 4, c, 1)]), c // 4, c // 4, 3)
            pool = op("MaxPool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
            b3 = conv(pool, c // 2, c, 1)
            x = conv(op("Concat", [b1, b2, b3], axis=1), c, c, 1)
        unit += 1
    shape = [1, c, size, size]
    g = helper.make_graph(
        nodes,
        f"generated_{len(nodes)}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _time(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def bench(label: str, path: str, repeat: int) -> dict:
    row = {
        "model": label,
        "python": platform.python_version(),
        "onnx": onnx.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "target_s": TARGET_S.get(label, ""),
    }
    try:
        load_s, graph = _time(lambda: load_graph(path), repeat)
        single_s, single = _time(lambda: build_chain(graph, "single"), repeat)
        multi_s, multi = _time(lambda: build_chain(graph, "multi"), repeat)
    except ModelError as exc:
        row["error"] = str(exc)
        return row
    n = len(graph.nodes)
    cmp = compare_cut_methods(graph)
    file_order = _assemble(graph, list(range(n)), list(range(n - 1)), "multi")
    total = load_s + single_s + multi_s
    row.update(
        nodes=n,
        single_cuts=single.num_blocks - 1,
        load_s=f"{load_s:.4f}",
        single_s=f"{single_s:.4f}",
        multi_s=f"{multi_s:.4f}",
        total_s=f"{total:.4f}",
        meets_target="" if label not in TARGET_S else total < TARGET_S[label],
        methods_agree=cmp["same"],
        only_dominators=" ".join(cmp["only_dominators"]),
        only_singleton_levels=" ".join(cmp["only_singleton_levels"]),
        multi_mean_transfer_bytes=round(float(multi.transfer_bytes.mean()), 1) if n > 1 else "",
        file_order_mean_transfer_bytes=(
            round(float(file_order.transfer_bytes.mean()), 1) if n > 1 else ""
        ),
        error="",
    )
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per step; the median is kept")
    ap.add_argument("--nodes", type=int, default=10_000, help="layers of the generated model")
    ap.add_argument("--models", default=os.path.join(ROOT, "models"), help="folder of .onnx")
    ap.add_argument(
        "--out", default=os.path.join(ROOT, "experiments", "results", "bench_import.csv")
    )
    args = ap.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        warm = os.path.join(tmp, "warm.onnx")
        onnx.save(generated_model(20), warm)
        bench("warm-up", warm, 1)  # imports and first-call costs out of the timings
        for path in sorted(glob.glob(os.path.join(args.models, "*.onnx"))):
            rows.append(bench(os.path.splitext(os.path.basename(path))[0], path, args.repeat))
        gen = os.path.join(tmp, "generated.onnx")
        onnx.save(generated_model(args.nodes), gen)
        rows.append(bench("generated", gen, args.repeat))

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        fh.write(buf.getvalue())
    sys.stdout.write(buf.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
