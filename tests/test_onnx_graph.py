"""ONNX -> layer graph: parameters, tensor bytes, FLOPs, bad input."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from partopt.onnx_graph import ModelError, load_graph, parse_input_shape
from tests import onnx_models as M

F = TensorProto.FLOAT


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


# -- tiny models, numbers worked out by hand ----------------------------------------------


def test_chain_model_layers():
    g = load_graph(M.chain_model())
    assert [n.name for n in g.nodes] == ["conv", "relu", "pool", "flatten", "fc"]
    conv, relu, pool, flatten, fc = g.nodes
    # Conv: W 4*3*3*3 + B 4 = 112 floats; 2 * (4*8*8 outputs) * (3*3*3) + 256 for the bias.
    assert (conv.param_count, conv.param_bytes, conv.flops) == (112, 448, 2 * 256 * 27 + 256)
    assert (relu.flops, pool.flops, flatten.flops) == (256, 64 * 4, 0)
    # Gemm: W 10*64 + C 10 = 650 floats; 2*M*N*K + M*N = 2*1*10*64 + 10.
    assert (fc.param_count, fc.param_bytes, fc.flops) == (650, 2600, 1290)
    assert conv.inputs == ("X",) and fc.inputs == ("f",)
    assert g.inputs == ["X"] and g.outputs == ["Y"]
    assert {t: g.tensors[t].bytes for t in g.tensors} == {
        "X": 768, "c": 1024, "r": 1024, "p": 256, "f": 256, "Y": 40,
    }  # fmt: skip
    assert g.tensors["p"].shape == (1, 4, 4, 4) and g.tensors["p"].dtype == "FLOAT"
    assert g.param_bytes == 448 + 2600 and g.flops == 14080 + 256 + 256 + 1290


def test_graph_helpers():
    g = load_graph(M.residual_block())
    assert g.producer["c2"] == "conv2" and "X" not in g.producer
    assert g.consumers["X"] == ["conv1", "add"]
    assert g.position["add"] == 3
    assert sorted(g.dag.edges) == sorted(
        [("conv1", "relu1"), ("relu1", "conv2"), ("conv2", "add"), ("add", "relu2")]
    )
    assert g.dag["conv2"]["add"]["tensors"] == ["c2"]


def test_residual_block_flops_and_params():
    g = load_graph(M.residual_block())
    by = {n.name: n for n in g.nodes}
    assert by["conv1"].flops == 2 * 256 * 36  # no bias
    assert by["add"].inputs == ("X", "c2") and by["add"].flops == 256
    assert g.param_bytes == 2 * 4 * 4 * 9 * 4


def test_two_inputs():
    g = load_graph(M.two_inputs())
    assert g.inputs == ["A", "B"]  # the initializer W is not an input
    assert g.nodes[0].flops == 2 * 16 * 8 and g.nodes[0].param_bytes == 8 * 16 * 4


def test_constant_weights_are_folded_and_counted_once():
    g = load_graph(M.constant_weights())
    # No Constant, Cast or constant-only Mul becomes a layer or a source.
    assert [n.name for n in g.nodes] == ["mm1", "mm2", "add"]
    mm1, mm2, add = g.nodes
    assert mm1.param_bytes == 64 and mm1.params == ("Wc",)  # float32 [4,4]
    assert mm2.param_bytes == 0  # shared constant: counted for its first consumer
    # float16 [4] (8 bytes) through the folded Cast, value_floats [4] (16 bytes).
    assert add.param_bytes == 8 + 16 and set(add.params) == {"bc16", "sc"}
    assert add.inputs == ("m2",)
    assert g.param_bytes == 88 and mm1.param_count + add.param_count == 24


def test_if_subgraph_is_one_layer_with_its_weights():
    g = load_graph(M.if_subgraph())
    by = {n.name: n for n in g.nodes}
    node = by["if"]
    assert node.inputs == ("cond", "r")  # the outer-scope read counts as an input
    assert node.param_bytes == 32 and node.param_count == 8  # Wt and We
    assert node.flops == 4  # max over the branches
    assert by["greater"].param_bytes == 4  # the main-graph initializer "zero"
    assert g.consumers["r"] == ["sum", "if"]


def test_unnamed_and_duplicate_names_are_made_unique():
    g = load_graph(M.unnamed_nodes())
    names = [n.name for n in g.nodes]
    assert names == ["Relu_0", "Sigmoid_1", "dup", "dup_1"]
    # stored out of order: shapes are still inferred (nodes sorted first)
    assert all(t.bytes == 16 for t in g.tensors.values())


def test_dtype_aware_bytes():
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT16, [1, 6])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT16, [1, 6])
    b = numpy_helper.from_array(np.zeros((6,), np.float16), "b")
    g = helper.make_graph([helper.make_node("Add", ["X", "b"], ["Y"])], "f16", [x], [y], [b])
    graph = load_graph(helper.make_model(g))
    assert graph.tensors["X"].bytes == 12 and graph.nodes[0].param_bytes == 12
    int4 = helper.make_tensor("q", TensorProto.INT4, [3, 5], np.zeros(15, np.int8))
    from partopt.onnx_graph import _tensor_proto_size

    assert _tensor_proto_size(int4) == (8, 15)  # 15 half-bytes, rounded up


def _single_op(op, in_shapes, out_shape, inits=(), **attrs):
    names = [f"i{k}" for k in range(len(in_shapes))]
    init_names = [t.name for t in inits]
    node = helper.make_node(op, names + init_names, ["Y"], name="op", **attrs)
    g = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info(n, F, s) for n, s in zip(names, in_shapes, strict=True)],
        [helper.make_tensor_value_info("Y", F, out_shape)],
        list(inits),
    )
    return load_graph(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])).nodes[0]


def _zeros(name, shape):
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


@pytest.mark.parametrize(
    ("op", "ins", "out", "inits", "attrs", "flops"),
    [
        # ConvTranspose: 2 * in elements * prod(W.shape[1:]) = 2 * (2*3*3) * (4*2*2).
        ("ConvTranspose", [[1, 2, 3, 3]], [1, 4, 6, 6], [_zeros("W", (2, 4, 2, 2))],
         {"strides": [2, 2]}, 2 * 18 * 16),
        # Gemm with transA: A [K=5, M=3], B [5, 7]: 2*3*7*5.
        ("Gemm", [[5, 3]], [3, 7], [_zeros("B", (5, 7))], {"transA": 1}, 2 * 3 * 7 * 5),
        # MatMul batched: out 2*3*4, K = 5.
        ("MatMul", [[2, 3, 5]], [2, 3, 4], [_zeros("B", (5, 4))], {}, 2 * 24 * 5),
        ("AveragePool", [[1, 2, 4, 4]], [1, 2, 2, 2], [], {"kernel_shape": [3, 3],
         "strides": [2, 2], "pads": [1, 1, 1, 1]}, 8 * 9),
        ("GlobalAveragePool", [[1, 2, 4, 4]], [1, 2, 1, 1], [], {}, 32),
        ("BatchNormalization", [[1, 2, 4, 4]], [1, 2, 4, 4],
         [_zeros(n, (2,)) for n in ("s", "b", "m", "v")], {}, 2 * 32),
        ("LayerNormalization", [[1, 3, 4]], [1, 3, 4], [_zeros("g", (4,))], {}, 5 * 12),
        ("Softmax", [[1, 10]], [1, 10], [], {}, 30),
        ("ReduceMean", [[2, 6]], [2, 1], [], {}, 12),
        ("Sum", [[1, 4], [1, 4], [1, 4]], [1, 4], [], {}, 8),
        ("Sigmoid", [[1, 7]], [1, 7], [], {}, 7),
        ("Transpose", [[2, 3]], [3, 2], [], {}, 0),
        ("Einsum", [[2, 3], [3, 4]], [2, 4], [], {"equation": "ij,jk->ik"}, 8),  # unknown: out
    ],
)  # fmt: skip
def test_flops_formulas(op, ins, out, inits, attrs, flops):
    assert _single_op(op, ins, out, inits, **attrs).flops == flops


def test_lstm_flops():
    # T=5, B=1, I=3, H=2, one direction, 4 gates: 2 * T * B * 8 * (I + H).
    x = helper.make_tensor_value_info("X", F, [5, 1, 3])
    y = helper.make_tensor_value_info("Y", F, None)
    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=2)
    g = helper.make_graph(
        [node], "lstm", [x], [y], [_zeros("W", (1, 8, 3)), _zeros("R", (1, 8, 2))]
    )
    graph = load_graph(helper.make_model(g))
    assert graph.nodes[0].flops == 2 * 5 * 1 * 8 * (3 + 2)
    assert graph.nodes[0].param_bytes == (24 + 16) * 4


# -- shapes ---------------------------------------------------------------------------


def test_parse_input_shape():
    assert parse_input_shape("input_ids=1x128") == ("input_ids", (1, 128))
    assert parse_input_shape("x=1,3,8,8") == ("x", (1, 3, 8, 8))
    for bad in ("x", "=1x3", "x=1xa", "x=0x3", "x="):
        with pytest.raises(ModelError) as e:
            parse_input_shape(bad)
        assert "NAME=" in _one_line_error(e)


def test_symbolic_batch_is_one_and_other_dims_settable():
    g = load_graph(M.symbolic_dims())
    assert g.tensors["ids"].shape == (1, None) and g.tensors["f"].bytes is None
    g = load_graph(M.symbolic_dims(), {"ids": (1, 128)})
    assert g.tensors["ids"].bytes == 128 * 8 and g.tensors["Y"].bytes == 128 * 4
    assert g.tensors["Y"].shape == (1, 128)


def test_symbol_set_on_one_input_applies_to_all():
    ins = [helper.make_tensor_value_info(n, F, ["batch", "seq"]) for n in ("a", "b")]
    g = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["Y"])],
        "shared",
        ins,
        [helper.make_tensor_value_info("Y", F, ["batch", "seq"])],
    )
    graph = load_graph(helper.make_model(g), {"a": (2, 16)})
    assert graph.tensors["b"].shape == (2, 16) and graph.tensors["Y"].bytes == 2 * 16 * 4


def test_bad_input_shapes():
    with pytest.raises(ModelError) as e:
        load_graph(M.symbolic_dims(), {"nope": (1, 8)})
    msg = _one_line_error(e)
    assert "nope" in msg and "ids" in msg
    with pytest.raises(ModelError) as e:
        load_graph(M.symbolic_dims(), {"ids": (1, 8, 8)})
    assert "dimensions" in _one_line_error(e)


# -- files and bad input ----------------------------------------------------------------


def test_load_from_file_and_name(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(M.chain_model(), path)
    g = load_graph(path)
    assert g.name == "chain_model" and len(g.nodes) == 5


def test_missing_external_data_still_loads(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save_model(
        M.chain_model(),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    os.remove(tmp_path / "weights.bin")
    g = load_graph(path)
    assert g.param_bytes == load_graph(M.chain_model()).param_bytes == 3048
    assert g.nodes[0].flops == 14080


def test_truncated_file(tmp_path):
    data = M.chain_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as e:
        load_graph(path)
    msg = _one_line_error(e)
    assert "cut.onnx" in msg and "truncated" in msg


def test_non_onnx_and_missing_files(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n")
    with pytest.raises(ModelError) as e:
        load_graph(path)
    assert "not an ONNX model" in _one_line_error(e) or "not a readable" in str(e.value)
    with pytest.raises(ModelError) as e:
        load_graph(tmp_path / "absent.onnx")
    assert "not found" in _one_line_error(e)


def test_cyclic_graph():
    with pytest.raises(ModelError) as e:
        load_graph(M.cyclic_model())
    msg = _one_line_error(e)
    assert "cyclic" in msg and "relu" in msg and "add" in msg


def test_undefined_tensor():
    g = helper.make_graph(
        [helper.make_node("Add", ["X", "ghost"], ["Y"], name="add")],
        "ghost",
        [helper.make_tensor_value_info("X", F, [1, 4])],
        [helper.make_tensor_value_info("Y", F, [1, 4])],
    )
    with pytest.raises(ModelError) as e:
        load_graph(helper.make_model(g))
    assert "ghost" in _one_line_error(e)


def _custom_op_model(value_info_shape, input_shape=("batch", "seq")):
    nodes = [
        helper.make_node("Relu", ["X"], ["a"], name="relu"),
        helper.make_node("Mystery", ["a"], ["b"], name="mystery", domain="custom"),
        helper.make_node("Relu", ["b"], ["Y"], name="out"),
    ]
    g = helper.make_graph(
        nodes,
        "custom",
        [helper.make_tensor_value_info("X", F, list(input_shape))],
        [helper.make_tensor_value_info("Y", F, None)],
        value_info=[helper.make_tensor_value_info("b", F, value_info_shape)],
    )
    return helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)]
    )


def test_recorded_shapes_of_unknown_ops_keep_their_bound_symbols():
    # ONNX cannot infer the custom op; its recorded shape uses the input's symbols.
    g = load_graph(_custom_op_model(["batch", "seq"]), {"X": (1, 8)})
    assert g.tensors["b"].shape == (1, 8) and g.tensors["Y"].bytes == 32
    g = load_graph(_custom_op_model(["batch", 6], ("batch", 6)))
    assert g.tensors["b"].shape == (1, 6)
    # A fixed size given another value: recorded shapes are dropped, not trusted.
    g = load_graph(_custom_op_model(["batch", 6], ("batch", 6)), {"X": (1, 7)})
    assert g.tensors["a"].shape == (1, 7) and g.tensors["b"].bytes is None


def test_loop_body_weights_and_outer_reads_belong_to_the_loop():
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["x_in", "Wb"], ["x1"]),
            helper.make_node("Mul", ["x1", "r"], ["x_out"]),  # r: from the outer graph
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", F, [1, 4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", F, [1, 4]),
        ],
        [_zeros("Wb", (4,))],
    )
    trip = numpy_helper.from_array(np.array(3, np.int64), "trip")
    nodes = [
        helper.make_node("Relu", ["X"], ["r"], name="relu"),
        helper.make_node("Loop", ["trip", "", "X"], ["Y"], name="loop", body=body),
    ]
    g = helper.make_graph(
        nodes,
        "loop",
        [helper.make_tensor_value_info("X", F, [1, 4])],
        [helper.make_tensor_value_info("Y", F, [1, 4])],
        [trip],
    )
    graph = load_graph(helper.make_model(g))
    loop = graph.nodes[1]
    assert loop.inputs == ("X", "r")
    assert loop.param_bytes == 16 + 8  # Wb in the body, the trip count outside
    assert loop.flops == 4 + 4  # one iteration of the body (Identity is free)
    assert graph.consumers["r"] == ["loop"]
