"""Tiny ONNX models built in code, named for what they exercise.

Every model is float32 with batch 1 unless said otherwise; sizes are chosen
so that the expected numbers in the tests can be worked out by hand.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "chain_model",
    "constant_weights",
    "cyclic_model",
    "dead_end",
    "early_output",
    "if_subgraph",
    "random_source",
    "residual_block",
    "symbolic_dims",
    "two_inputs",
    "unnamed_nodes",
]

F = TensorProto.FLOAT


def _init(name: str, shape: tuple[int, ...], dtype=np.float32) -> TensorProto:
    return numpy_helper.from_array(np.zeros(shape, dtype=dtype), name)


def _model(graph: onnx.GraphProto, opset: int = 17) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def chain_model() -> onnx.ModelProto:
    """A plain chain: ``conv -> relu -> pool -> flatten -> fc``.

    X [1,3,8,8] -> Conv 3x3 pad 1 (W [4,3,3,3], B [4]) -> [1,4,8,8]
    -> Relu -> MaxPool 2x2 stride 2 -> [1,4,4,4] -> Flatten -> [1,64]
    -> Gemm (W [10,64], transB, C [10]) -> Y [1,10].
    """
    nodes = [
        helper.make_node("Conv", ["X", "W1", "B1"], ["c"], name="conv", pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "W2", "B2"], ["Y"], name="fc", transB=1),
    ]  # fmt: skip
    g = helper.make_graph(
        nodes,
        "chain_model",
        [helper.make_tensor_value_info("X", F, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("Y", F, [1, 10])],
        [_init("W1", (4, 3, 3, 3)), _init("B1", (4,)), _init("W2", (10, 64)), _init("B2", (10,))],
    )
    return _model(g)


def residual_block() -> onnx.ModelProto:
    """``X -> conv1 -> relu1 -> conv2 -> add(X, .) -> relu2``, all [1,4,8,8].

    Both convolutions are 3x3, pad 1, 4 -> 4 channels, no bias.
    """

    def conv(name, x, y, w):
        return helper.make_node("Conv", [x, w], [y], name=name, pads=[1, 1, 1, 1],
                                kernel_shape=[3, 3])  # fmt: skip

    nodes = [
        conv("conv1", "X", "c1", "W1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        conv("conv2", "r1", "c2", "W2"),
        helper.make_node("Add", ["X", "c2"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["Y"], name="relu2"),
    ]
    g = helper.make_graph(
        nodes,
        "residual_block",
        [helper.make_tensor_value_info("X", F, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("Y", F, [1, 4, 8, 8])],
        [_init("W1", (4, 4, 3, 3)), _init("W2", (4, 4, 3, 3))],
    )
    return _model(g)


def two_inputs() -> onnx.ModelProto:
    """Two graph inputs joined late.

    A [1,8] -> MatMul W [8,16] -> a1 [1,16] -> Relu -> a2;
    B [1,16] -> Sigmoid -> b1; Add(a2, b1) -> s -> Relu -> Y [1,16].
    """
    nodes = [
        helper.make_node("MatMul", ["A", "W"], ["a1"], name="mm"),
        helper.make_node("Relu", ["a1"], ["a2"], name="relu_a"),
        helper.make_node("Sigmoid", ["B"], ["b1"], name="sig_b"),
        helper.make_node("Add", ["a2", "b1"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["Y"], name="relu_out"),
    ]
    g = helper.make_graph(
        nodes,
        "two_inputs",
        [
            helper.make_tensor_value_info("A", F, [1, 8]),
            helper.make_tensor_value_info("B", F, [1, 16]),
        ],
        [helper.make_tensor_value_info("Y", F, [1, 16])],
        [_init("W", (8, 16))],
    )
    return _model(g)


def constant_weights() -> onnx.ModelProto:
    """Weights held in ``Constant`` nodes, one shared, one reached through a Cast.

    X [1,4] -> MatMul(X, Wc) -> m1 -> MatMul(m1, Wc) -> m2 -> Add(m2, bc) -> Y.
    ``Wc`` is a Constant float32 [4,4] (64 bytes) read by both MatMuls
    (counted once, for ``mm1``); ``bc`` is a Constant float16 [4] (8 bytes)
    cast to float32 by a ``Cast`` node that is folded into ``add``; ``add``
    also reads a Constant ``value_floats`` of 4 floats (16 bytes) through ``Mul``.
    """
    w = helper.make_tensor("Wc_value", F, [4, 4], np.zeros(16, np.float32))
    b = numpy_helper.from_array(np.zeros(4, np.float16), "bc_value")
    nodes = [
        helper.make_node("Constant", [], ["Wc"], name="const_w", value=w),
        helper.make_node("Constant", [], ["bc16"], name="const_b", value=b),
        helper.make_node("Cast", ["bc16"], ["bc"], name="cast_b", to=F),
        helper.make_node("Constant", [], ["sc"], name="const_s", value_floats=[1.0] * 4),
        helper.make_node("Mul", ["bc", "sc"], ["bs"], name="scale_b"),
        helper.make_node("MatMul", ["X", "Wc"], ["m1"], name="mm1"),
        helper.make_node("MatMul", ["m1", "Wc"], ["m2"], name="mm2"),
        helper.make_node("Add", ["m2", "bs"], ["Y"], name="add"),
    ]
    g = helper.make_graph(
        nodes,
        "constant_weights",
        [helper.make_tensor_value_info("X", F, [1, 4])],
        [helper.make_tensor_value_info("Y", F, [1, 4])],
    )
    return _model(g)


def if_subgraph() -> onnx.ModelProto:
    """An ``If`` whose branches hold initializers and read an outer tensor.

    X [1,4] -> Relu -> r; ReduceSum(r) -> s [1,1]; Greater(s, zero) -> cond;
    If(cond): then Add(r, Wt [4]), else Mul(r, We [4]) -> y [1,4];
    Relu(y) -> Y. ``zero`` is a main-graph initializer (1 float).
    """
    then_g = helper.make_graph(
        [helper.make_node("Add", ["r", "Wt"], ["t_out"], name="then_add")],
        "then",
        [],
        [helper.make_tensor_value_info("t_out", F, [1, 4])],
        [_init("Wt", (4,))],
    )
    else_g = helper.make_graph(
        [helper.make_node("Mul", ["r", "We"], ["e_out"], name="else_mul")],
        "else",
        [],
        [helper.make_tensor_value_info("e_out", F, [1, 4])],
        [_init("We", (4,))],
    )
    nodes = [
        helper.make_node("Relu", ["X"], ["r"], name="relu"),
        helper.make_node("ReduceSum", ["r"], ["s"], name="sum", keepdims=1),
        helper.make_node("Greater", ["s", "zero"], ["cond_2d"], name="greater"),
        helper.make_node("Squeeze", ["cond_2d"], ["cond"], name="squeeze"),
        helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_g,
                         else_branch=else_g),
        helper.make_node("Relu", ["y"], ["Y"], name="relu_out"),
    ]  # fmt: skip
    g = helper.make_graph(
        nodes,
        "if_subgraph",
        [helper.make_tensor_value_info("X", F, [1, 4])],
        [helper.make_tensor_value_info("Y", F, [1, 4])],
        [_init("zero", (1,))],
    )
    return _model(g)


def unnamed_nodes() -> onnx.ModelProto:
    """Nodes without names, two with the same name, stored out of order.

    X [1,4] -> Relu -> Sigmoid -> Tanh ("dup") -> Relu ("dup") -> Y.
    """
    nodes = [
        helper.make_node("Tanh", ["b"], ["c"], name="dup"),
        helper.make_node("Relu", ["X"], ["a"]),
        helper.make_node("Sigmoid", ["a"], ["b"]),
        helper.make_node("Relu", ["c"], ["Y"], name="dup"),
    ]
    g = helper.make_graph(
        nodes,
        "unnamed_nodes",
        [helper.make_tensor_value_info("X", F, [1, 4])],
        [helper.make_tensor_value_info("Y", F, [1, 4])],
    )
    return _model(g)


def cyclic_model() -> onnx.ModelProto:
    """Two nodes feeding each other: ``a = Add(X, b)``, ``b = Relu(a)``."""
    nodes = [
        helper.make_node("Add", ["X", "b"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
    ]
    g = helper.make_graph(
        nodes,
        "cyclic_model",
        [helper.make_tensor_value_info("X", F, [1, 4])],
        [helper.make_tensor_value_info("b", F, [1, 4])],
    )
    return _model(g)


def symbolic_dims() -> onnx.ModelProto:
    """A text-model-like input ``ids [batch, seq]`` (int64) with symbolic dims.

    ids -> Cast(float) -> Relu -> Sigmoid -> Y [batch, seq].
    """
    nodes = [
        helper.make_node("Cast", ["ids"], ["f"], name="cast", to=F),
        helper.make_node("Relu", ["f"], ["r"], name="relu"),
        helper.make_node("Sigmoid", ["r"], ["Y"], name="sig"),
    ]
    g = helper.make_graph(
        nodes,
        "symbolic_dims",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("Y", F, ["batch", "seq"])],
    )
    return _model(g)


def _rows(name: str, nodes, outputs, width: int = 4, inits=()) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("X", F, [1, width])],
        [helper.make_tensor_value_info(o, F, [1, width]) for o in outputs],
        list(inits),
    )
    return _model(g)


def early_output() -> onnx.ModelProto:
    """An output produced early and also read later (held by the last block).

    X [1,4] -> relu1 -> r1 (a graph output) -> relu2 -> relu3 -> Y.
    """
    nodes = [
        helper.make_node("Relu", ["X"], ["r1"], name="relu1"),
        helper.make_node("Relu", ["r1"], ["r2"], name="relu2"),
        helper.make_node("Relu", ["r2"], ["Y"], name="relu3"),
    ]
    return _rows("early_output", nodes, ["Y", "r1"])


def dead_end() -> onnx.ModelProto:
    """A layer whose output reaches no graph output, reading X and ``a``.

    X [1,4] -> a = Relu -> b = Sigmoid -> Y = Tanh; dead = Add(X, a) is unused,
    so ``a`` dominates the sink but X crosses its cut (dead must run after a).
    """
    nodes = [
        helper.make_node("Relu", ["X"], ["a"], name="a"),
        helper.make_node("Sigmoid", ["a"], ["b"], name="b"),
        helper.make_node("Tanh", ["b"], ["Y"], name="y"),
        helper.make_node("Add", ["X", "a"], ["d"], name="dead"),
    ]
    return _rows("dead_end", nodes, ["Y"])


def random_source() -> onnx.ModelProto:
    """A layer without activation inputs (``RandomNormal``) joining late.

    X [1,4] -> a = Relu -> b = Sigmoid -> Y = Add(b, noise), noise = RandomNormal.
    """
    nodes = [
        helper.make_node("RandomNormal", [], ["noise"], name="noise", shape=[1, 4]),
        helper.make_node("Relu", ["X"], ["a"], name="a"),
        helper.make_node("Sigmoid", ["a"], ["b"], name="b"),
        helper.make_node("Add", ["b", "noise"], ["Y"], name="add"),
    ]
    return _rows("random_source", nodes, ["Y"])
