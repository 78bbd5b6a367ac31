"""Write the original work's chain files (``NAME.keras-chain.json``) from the Keras layer graphs.

    pip install -e '.[models]'          # tensorflow-cpu + tf-keras, only for this
    python models/keras_chains.py       # the four models of the original study (~10 s each)
    python models/keras_chains.py --only resnet50

Each ``keras.applications`` model is built as the original built it (``weights=None``,
``include_top``, the default input size, batch 1) with the Keras 2 API (``tf_keras``),
read into a plain layer list (name, outbound layers, output elements, parameter count) and
handed to :func:`partopt.keras_chain.original_chain_data`, which finds the cut points and
computes the memory and transfer figures the original way. Planning reads the JSON files
and never needs TensorFlow. See models/README.md for the format.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from partopt.keras_chain import (  # noqa: E402
    CHAIN_FILE_SUFFIX,
    KerasLayer,
    original_chain_data,
)

# file stem -> (keras.applications constructor, the original's checks: cut points, MiB)
MODELS = {
    "resnet50": ("ResNet50", 41, 165.5),
    "mobilenetv2": ("MobileNetV2", 76, 86.0),
    "efficientnetb1": ("EfficientNetB1", 93, 160.0),
    "inceptionresnetv2": ("InceptionResNetV2", 105, 362.0),
}


def keras_layers(model) -> list[KerasLayer]:
    """The layer list the original code walked: outbound layers, output size, parameters."""
    out = []
    for layer in model.layers:
        shape = layer.output_shape
        if isinstance(shape, list):
            shape = shape[0]  # the original took the first output
        elements = math.prod(int(s) for s in shape[1:] if s is not None)
        nxt = tuple(node.outbound_layer.name for node in layer.outbound_nodes)
        out.append(KerasLayer(layer.name, nxt, elements, int(layer.count_params())))
    return out


def build(constructor: str):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tf_keras

    return getattr(tf_keras.applications, constructor)(weights=None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", choices=sorted(MODELS), help="one model")
    ap.add_argument("--out-dir", type=Path, default=HERE)
    args = ap.parse_args(argv)
    bad = 0
    for stem in args.only or list(MODELS):
        constructor, want_points, want_mib = MODELS[stem]
        t0 = time.perf_counter()
        data = original_chain_data(keras_layers(build(constructor)), constructor)
        path = args.out_dir / (stem + CHAIN_FILE_SUFFIX)
        path.write_text(json.dumps(data, indent=1) + "\n")
        mib = data["memory_total"] / 2**20
        ok = data["num_cut_points"] == want_points and abs(mib - want_mib) < 0.05
        bad += not ok
        print(
            f"{path.name}: {data['num_layers']} layers, {data['num_cut_points']} cut points "
            f"(expected {want_points}), memory {mib:.2f} MiB (expected ~{want_mib}) "
            f"{'ok' if ok else 'MISMATCH'} [{time.perf_counter() - t0:.1f} s]"
        )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
