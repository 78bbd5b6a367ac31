"""Regenerate the architecture-only ONNX models in this folder.

    pip install -e '.[models]'          # tensorflow-cpu + tf2onnx, only for the Keras models
    python models/generate.py           # every model
    python models/generate.py --only bert_base --only resnet50

The Keras applications are built with ``weights=None`` and then given random weights
(see ``randomize_weights``), exported with tf2onnx at opset 17, batch dimension symbolic.
BERT-base is written directly with ``onnx.helper`` and needs no TensorFlow.

Every floating-point tensor (the weights) is moved to external data whose file is then
*not* written (unless ``--keep-weights``), so the committed ``.onnx`` files hold the graph
only: load them with ``onnx.load(path, load_external_data=False)``. Integer tensors (shapes,
axes, indices) stay inside the graph, since shape inference needs their values. Each file is
verified with ``check.py`` after it is written.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check import FLOAT_TYPES, check_file, fix_batch, graph_tensors, print_summary  # noqa: E402

HERE = Path(__file__).resolve().parent
OPSET = 17  # LayerNormalization needs 17; tf2onnx 1.17 supports up to 18
IR_VERSION = 8  # the IR version that goes with opset 17
BATCH = "batch"  # name of the symbolic batch dimension
SEED = 0

# file stem -> (keras.applications constructor, default input size)
KERAS_MODELS = {
    "resnet50": ("ResNet50", 224),
    "mobilenetv2": ("MobileNetV2", 224),
    "efficientnetb1": ("EfficientNetB1", 240),
    "inceptionresnetv2": ("InceptionResNetV2", 299),
    "densenet201": ("DenseNet201", 224),
}


# --------------------------------------------------------------------------- Keras family


def randomize_weights(model, seed: int = SEED) -> None:
    """Give every variable random values in [0.5, 1.5).

    ``weights=None`` initialises biases, BatchNorm betas and moving means to exactly zero
    (and gammas/variances to one); TensorFlow's constant folding then deletes the additions
    and multiplications by those values, so the exported graph would lack ops that a trained
    model has (e.g. MobileNetV2 has 123 instead of 141 nodes). Values that are neither 0 nor
    1 (and positive, so variances stay valid) keep the graph a trained model would give.
    """
    rng = np.random.default_rng(seed)
    for var in model.weights:
        var.assign(rng.uniform(0.5, 1.5, size=tuple(var.shape)).astype(var.dtype))


def rename_batch_dim(model: onnx.ModelProto) -> None:
    """tf2onnx names unknown dimensions 'unk__N'; call the leading one of inputs and outputs
    'batch' so that it reads as what it is."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH


def canonicalize_names(model: onnx.ModelProto) -> None:
    """Rename nodes, intermediate tensors and initializers from their position in the graph.

    tf2onnx's generated names ("Conv__338", "const_fold_opt__601") and its choice among
    deduplicated constants vary from run to run although the graph does not; naming
    everything by position makes regeneration give the same file. Node names keep their
    TensorFlow scope with the generated suffix removed; a node's outputs become
    "<node name>:<i>"; an initializer becomes "<first consumer>:<input slot>".
    Graph inputs and outputs keep their names. Initializers are ordered by first use.
    """
    graph = model.graph
    keep = {v.name for v in list(graph.input) + list(graph.output)}
    used: set[str] = set()
    renamed: dict[str, str] = {}
    for node in graph.node:
        base = re.sub(r"__\d+$", "", node.name) or node.op_type
        name, k = base, 0
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        node.name = name
        for i, out in enumerate(node.output):
            if out and out not in keep:
                renamed[out] = f"{name}:{i}"
    initializers = {t.name: t for t in graph.initializer}
    order: list[TensorProto] = []
    for node in graph.node:
        for slot, inp in enumerate(node.input):
            if inp in initializers and inp not in renamed:
                renamed[inp] = f"{node.name}:in{slot}"
                order.append(initializers[inp])
    for tensor in order:
        tensor.name = renamed[tensor.name]
    for node in graph.node:
        node.input[:] = [renamed.get(x, x) for x in node.input]
        node.output[:] = [renamed.get(x, x) for x in node.output]
    graph.ClearField("value_info")
    first_use = {id(t) for t in order}
    tensors = [copy.deepcopy(t) for t in order]
    tensors += [copy.deepcopy(t) for t in graph.initializer if id(t) not in first_use]  # unused
    graph.ClearField("initializer")
    graph.initializer.extend(tensors)


def remove_identity_reshapes(model: onnx.ModelProto) -> int:
    """Drop Reshape nodes that keep their input's shape for every batch size; return how many.

    tf2onnx leaves such a Reshape in EfficientNet's squeeze-and-excitation blocks, but its
    optimizer removes it from a random one of them in some runs (not reproducible even with a
    fixed PYTHONHASHSEED), so the node count would differ from run to run.
    """
    inferred = onnx.shape_inference.infer_shapes(fix_batch(model), strict_mode=True)
    shapes = {
        v.name: [
            d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim
        ]
        for v in list(inferred.graph.value_info) + list(inferred.graph.input)
    }
    constants = {t.name: t for t in model.graph.initializer if t.data_type == TensorProto.INT64}
    graph_outputs = {v.name for v in model.graph.output}
    bypass: dict[str, str] = {}
    keep = []
    for node in model.graph.node:
        node.input[:] = [bypass.get(x, x) for x in node.input]
        dims = shapes.get(node.input[0]) if node.op_type == "Reshape" else None
        target = constants.get(node.input[1]) if dims is not None else None
        if target is not None and node.output[0] not in graph_outputs and None not in dims:
            target = numpy_helper.to_array(target).tolist()
            if (
                len(target) == len(dims)
                and target[0] in (-1, 0)
                and all(t in (0, d) for t, d in zip(target[1:], dims[1:], strict=True))
            ):
                bypass[node.output[0]] = node.input[0]
                continue
        keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    used = {x for node in keep for x in node.input}
    unused = [t for t in model.graph.initializer if t.name not in used]
    for tensor in unused:
        model.graph.initializer.remove(tensor)
    return len(bypass)


def keras_application(name: str) -> onnx.ModelProto:
    """Export one ``keras.applications`` model (NHWC float32 input, softmax output)."""
    try:  # heavy optional dependencies, never imported by partopt itself
        import keras
        import tensorflow as tf
        import tf2onnx
    except ImportError as exc:
        sys.exit(f"error: {name} needs TensorFlow and tf2onnx ({exc}); pip install -e '.[models]'")

    constructor, size = KERAS_MODELS[name]
    keras.backend.clear_session()
    net = getattr(keras.applications, constructor)(weights=None, input_shape=(size, size, 3))
    params = net.count_params()
    randomize_weights(net)
    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="input"),)
    tf2onnx.utils.INTERNAL_NAME = 1  # restart generated names ("Conv__N"): same file every run
    model, _ = tf2onnx.convert.from_keras(net, input_signature=spec, opset=OPSET)
    rename_batch_dim(model)
    removed = remove_identity_reshapes(model)
    canonicalize_names(model)
    model.graph.name = name
    model.doc_string = (
        f"keras.applications.{constructor}(weights=None), input {size}x{size}x3 (NHWC), "
        f"{params:,} Keras parameters; exported with tf2onnx {tf2onnx.__version__} "
        f"(TensorFlow {tf.__version__}, Keras {keras.__version__}), opset {OPSET}, from random "
        f"weights; {removed} no-op Reshape(s) removed, names canonicalised. "
        "Architecture only: the weight file is not shipped."
    )
    return model


# --------------------------------------------------------------------------- BERT family


class GraphBuilder:
    """Small helper to write an ONNX graph by hand: nodes, initializers, unique names."""

    def __init__(self, seed: int = SEED) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.rng = np.random.default_rng(seed)

    def const(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, name: str, shape: tuple[int, ...], std: float = 0.02) -> str:
        """Random float32 weight, like BERT's truncated-normal initialiser (values unused)."""
        data = (self.rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)
        return self.const(name, data)

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        """Add a node with one output named after the node; return that output."""
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name


def bert_base(
    layers: int = 12,
    hidden: int = 768,
    heads: int = 12,
    ffn: int = 3072,
    seq_len: int = 128,
    vocab: int = 30522,
    max_positions: int = 512,
    type_vocab: int = 2,
    eps: float = 1e-12,
) -> onnx.ModelProto:
    """BERT-base encoder (as in Devlin et al. 2019 / HF ``BertModel``) with its pooler.

    Inputs ``input_ids``, ``token_type_ids``, ``attention_mask``: int64 [batch, seq_len].
    Output ``pooler_output``: float32 [batch, hidden] (tanh(dense(first token))).
    """
    g = GraphBuilder()
    head_dim = hidden // heads

    # Shared small constants. Integer ones stay inside the graph (shape inference reads them).
    split_heads = g.const("shape_split_heads", np.array([0, 0, heads, head_dim], np.int64))
    merge_heads = g.const("shape_merge_heads", np.array([0, 0, hidden], np.int64))
    mask_axes = g.const("axes_mask", np.array([1, 2], np.int64))
    position_ids = g.const("position_ids", np.arange(seq_len, dtype=np.int64)[None, :])
    first_token = g.const("first_token", np.array(0, np.int64))
    one = g.const("one", np.array(1.0, np.float32))
    half = g.const("half", np.array(0.5, np.float32))
    sqrt2 = g.const("sqrt2", np.array(np.sqrt(2.0), np.float32))
    attn_scale = g.const("attention_scale", np.array(np.sqrt(head_dim), np.float32))
    mask_value = g.const("mask_value", np.array(-10000.0, np.float32))

    def dense(x: str, n_in: int, n_out: int, prefix: str) -> str:
        w = g.weight(f"{prefix}.weight", (n_in, n_out))
        b = g.const(f"{prefix}.bias", np.zeros(n_out, np.float32))
        return g.op("Add", [g.op("MatMul", [x, w], f"{prefix}/MatMul"), b], f"{prefix}/Add")

    def layer_norm(x: str, prefix: str) -> str:
        scale = g.const(f"{prefix}.weight", np.ones(hidden, np.float32))
        bias = g.const(f"{prefix}.bias", np.zeros(hidden, np.float32))
        return g.op("LayerNormalization", [x, scale, bias], prefix, axis=-1, epsilon=eps)

    # Embeddings: word + position + token type, then LayerNorm.
    p = "embeddings"
    words = g.op(
        "Gather",
        [g.weight(f"{p}.word_embeddings", (vocab, hidden)), "input_ids"],
        f"{p}/word/Gather",
    )
    positions = g.op(
        "Gather",
        [g.weight(f"{p}.position_embeddings", (max_positions, hidden)), position_ids],
        f"{p}/position/Gather",
    )
    types = g.op(
        "Gather",
        [g.weight(f"{p}.token_type_embeddings", (type_vocab, hidden)), "token_type_ids"],
        f"{p}/token_type/Gather",
    )
    x = g.op("Add", [g.op("Add", [words, positions], f"{p}/Add"), types], f"{p}/Add_1")
    x = layer_norm(x, f"{p}/LayerNorm")

    # Additive attention mask: 0 where attended, -10000 where masked; [batch, 1, 1, seq].
    mask = g.op("Unsqueeze", ["attention_mask", mask_axes], "mask/Unsqueeze")
    mask = g.op("Cast", [mask], "mask/Cast", to=TensorProto.FLOAT)
    mask = g.op("Sub", [one, mask], "mask/Sub")
    mask = g.op("Mul", [mask, mask_value], "mask/Mul")

    for i in range(layers):
        p = f"encoder.layer.{i}"
        # Self-attention: project, split heads, scaled dot product, merge heads.
        q = g.op(
            "Reshape",
            [dense(x, hidden, hidden, f"{p}.attention.query"), split_heads],
            f"{p}/query/Reshape",
        )
        q = g.op("Transpose", [q], f"{p}/query/Transpose", perm=[0, 2, 1, 3])
        k = g.op(
            "Reshape",
            [dense(x, hidden, hidden, f"{p}.attention.key"), split_heads],
            f"{p}/key/Reshape",
        )
        k = g.op("Transpose", [k], f"{p}/key/Transpose", perm=[0, 2, 3, 1])
        v = g.op(
            "Reshape",
            [dense(x, hidden, hidden, f"{p}.attention.value"), split_heads],
            f"{p}/value/Reshape",
        )
        v = g.op("Transpose", [v], f"{p}/value/Transpose", perm=[0, 2, 1, 3])
        scores = g.op("MatMul", [q, k], f"{p}/scores/MatMul")
        scores = g.op("Div", [scores, attn_scale], f"{p}/scores/Div")
        scores = g.op("Add", [scores, mask], f"{p}/scores/Add")
        probs = g.op("Softmax", [scores], f"{p}/Softmax", axis=-1)
        ctx = g.op("MatMul", [probs, v], f"{p}/context/MatMul")
        ctx = g.op("Transpose", [ctx], f"{p}/context/Transpose", perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_heads], f"{p}/context/Reshape")
        attn = dense(ctx, hidden, hidden, f"{p}.attention.output.dense")
        attn = g.op("Add", [attn, x], f"{p}/attention/residual")
        x = layer_norm(attn, f"{p}/attention/LayerNorm")
        # Feed-forward with exact (erf) GELU: 0.5 * h * (1 + erf(h / sqrt(2))).
        h = dense(x, hidden, ffn, f"{p}.intermediate.dense")
        gelu = g.op("Erf", [g.op("Div", [h, sqrt2], f"{p}/gelu/Div")], f"{p}/gelu/Erf")
        gelu = g.op("Add", [gelu, one], f"{p}/gelu/Add")
        gelu = g.op("Mul", [h, gelu], f"{p}/gelu/Mul")
        gelu = g.op("Mul", [gelu, half], f"{p}/gelu/Mul_1")
        out = dense(gelu, ffn, hidden, f"{p}.output.dense")
        out = g.op("Add", [out, x], f"{p}/output/residual")
        x = layer_norm(out, f"{p}/output/LayerNorm")

    # Pooler: dense + tanh on the first ([CLS]) token.
    cls = g.op("Gather", [x, first_token], "pooler/Gather", axis=1)
    pooled = g.op("Tanh", [dense(cls, hidden, hidden, "pooler.dense")], "pooler/Tanh")
    g.nodes.append(helper.make_node("Identity", [pooled], ["pooler_output"], name="output"))

    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, [BATCH, seq_len])
        for name in ("input_ids", "token_type_ids", "attention_mask")
    ]
    outputs = [helper.make_tensor_value_info("pooler_output", TensorProto.FLOAT, [BATCH, hidden])]
    graph = helper.make_graph(g.nodes, "bert_base", inputs, outputs, g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="partopt models/generate.py",
        doc_string=(
            f"BERT-base encoder: {layers} layers, hidden {hidden}, {heads} heads, FFN {ffn}, "
            f"sequence length {seq_len}, vocabulary {vocab}, erf GELU, with pooler; random "
            "weights. Architecture only: the weight file is not shipped."
        ),
    )
    model.ir_version = IR_VERSION
    return model


# --------------------------------------------------------------------------- writing


def externalize_weights(model: onnx.ModelProto, location: str, weights_path: Path | None) -> int:
    """Move every floating-point tensor (initializers and Constant values, subgraphs
    included) to external data in ``location``; return its total size in bytes.

    The data is written to ``weights_path`` if given, otherwise dropped: the tensors keep
    their name, dtype, dims and an (offset, length) into a file that does not exist.
    """
    offset = 0
    out = open(weights_path, "wb") if weights_path is not None else None
    try:
        for _, tensor in graph_tensors(model.graph):
            if tensor.data_type not in FLOAT_TYPES:
                continue
            data = numpy_helper.to_array(tensor).tobytes()
            for field in ("float_data", "double_data", "int32_data"):
                tensor.ClearField(field)
            tensor.raw_data = data  # set_external_data wants raw_data present
            onnx.external_data_helper.set_external_data(tensor, location, offset, len(data))
            tensor.ClearField("raw_data")
            if out is not None:
                out.write(data)
            offset += len(data)
    finally:
        if out is not None:
            out.close()
    return offset


def write_model(model: onnx.ModelProto, path: Path, keep_weights: bool) -> None:
    location = path.stem + ".weights"
    weights_path = path.with_name(location)
    if weights_path.exists():
        weights_path.unlink()
    nbytes = externalize_weights(model, location, weights_path if keep_weights else None)
    onnx.save_model(model, str(path))
    kept = f"kept in {weights_path.name}" if keep_weights else "dropped"
    print(
        f"wrote {path} ({path.stat().st_size / 1024:.0f} KB; "
        f"{nbytes / 2**20:.1f} MiB of weights {kept})",
        flush=True,
    )


BUILDERS: dict[str, Callable[[], onnx.ModelProto]] = {
    **{name: (lambda name=name: keras_application(name)) for name in KERAS_MODELS},
    "bert_base": bert_base,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the ONNX models in models/.")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"model to build (repeatable): {', '.join(BUILDERS)}",
    )
    parser.add_argument("--out-dir", type=Path, default=HERE, help="default: models/")
    parser.add_argument(
        "--keep-weights",
        action="store_true",
        help="also write the (random) weights to NAME.weights beside each file",
    )
    args = parser.parse_args(argv)
    names = args.only or list(BUILDERS)
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        parser.exit(2, f"error: unknown model {unknown[0]!r}; choose from {', '.join(BUILDERS)}\n")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        start = time.perf_counter()
        model = BUILDERS[name]()
        path = args.out_dir / f"{name}.onnx"
        write_model(model, path, args.keep_weights)
        rows.append(check_file(path))
        print(f"  {name}: built and checked in {time.perf_counter() - start:.0f} s", flush=True)
    print_summary(rows, markdown=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
