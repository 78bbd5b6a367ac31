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


# -- sizes that static shape inference cannot follow ------------------------------------------
# Each has real (seeded random) weights, so that it runs in onnxruntime as it is.


def _w(name: str, shape: tuple[int, ...], seed: int = 0) -> TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array(
        rng.normal(0, 1 / np.sqrt(shape[0]), size=shape).astype(np.float32), name
    )


def _ints(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def _ms_model(graph: onnx.GraphProto, *domains: str) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=opsets)


def shape_gather_slice() -> onnx.ModelProto:
    """``h = X @ W`` [1,6,8]; its second dim is read by ``Shape -> Gather``, halved, and
    ``Unsqueeze``d into the end of a ``Slice`` of ``h`` -> [1,3,8] -> ``Relu`` -> @ W2 -> Y [1,3,4].
    """
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["h"], name="mm"),
        helper.make_node("Shape", ["h"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "one"], ["d"], name="gather", axis=0),
        helper.make_node("Div", ["d", "two"], ["half"], name="div"),
        helper.make_node("Unsqueeze", ["half", "zero1"], ["end"], name="unsqueeze"),
        helper.make_node("Slice", ["h", "zero1", "end", "one1"], ["sl"], name="slice"),
        helper.make_node("Relu", ["sl"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "W2"], ["Y"], name="mm2"),
    ]
    g = helper.make_graph(
        nodes,
        "shape_gather_slice",
        [helper.make_tensor_value_info("X", F, [1, 6, 8])],
        [helper.make_tensor_value_info("Y", F, None)],
        [_w("W", (8, 8)), _w("W2", (8, 4), 1), _ints("one", 1), _ints("two", 2),
         _ints("zero1", [0]), _ints("one1", [1])],
    )  # fmt: skip
    return _model(g)


def reshape_from_shape() -> onnx.ModelProto:
    """``h = X @ W`` [1,4,6] reshaped to ``Concat(Shape(h)[:1], [-1])`` = [1,24], then @ W2 [24,5]."""
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["h"], name="mm"),
        helper.make_node("Shape", ["h"], ["s"], name="shape"),
        helper.make_node("Slice", ["s", "zero1", "one1"], ["lead"], name="lead"),
        helper.make_node("Concat", ["lead", "minus1"], ["target"], name="target", axis=0),
        helper.make_node("Reshape", ["h", "target"], ["flat"], name="reshape"),
        helper.make_node("Sigmoid", ["flat"], ["a"], name="act"),
        helper.make_node("MatMul", ["a", "W2"], ["Y"], name="mm2"),
    ]
    g = helper.make_graph(
        nodes,
        "reshape_from_shape",
        [helper.make_tensor_value_info("X", F, [1, 4, 6])],
        [helper.make_tensor_value_info("Y", F, None)],
        [_w("W", (6, 6)), _w("W2", (24, 5), 1), _ints("zero1", [0]), _ints("one1", [1]),
         _ints("minus1", [-1])],
    )  # fmt: skip
    return _model(g)


def expand_constant_of_shape() -> onnx.ModelProto:
    """``h = X @ W`` [1,4]; ``ConstantOfShape(Concat([3], Shape(h)))`` [3,1,4] of 0.5,
    ``Expand(h, Shape(c))`` [3,1,4], ``Mul`` -> Y."""
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["h"], name="mm"),
        helper.make_node("Shape", ["h"], ["s"], name="shape"),
        helper.make_node("Concat", ["three", "s"], ["cs"], name="dims", axis=0),
        helper.make_node("ConstantOfShape", ["cs"], ["c"], name="fill",
                         value=numpy_helper.from_array(np.array([0.5], np.float32))),
        helper.make_node("Shape", ["c"], ["cshape"], name="cshape"),
        helper.make_node("Expand", ["h", "cshape"], ["e"], name="expand"),
        helper.make_node("Tanh", ["e"], ["t"], name="tanh"),
        helper.make_node("Mul", ["t", "c"], ["Y"], name="mul"),
    ]  # fmt: skip
    g = helper.make_graph(
        nodes,
        "expand_constant_of_shape",
        [helper.make_tensor_value_info("X", F, [1, 4])],
        [helper.make_tensor_value_info("Y", F, None)],
        [_w("W", (4, 4)), _ints("three", [3])],
    )
    return _model(g)


def range_from_input() -> onnx.ModelProto:
    """``Range(0, n, 1)`` with ``n`` an int64 scalar input: a length set by an input *value*.

    ``h = sum(X @ W)``; ``Y = Relu(Cast(Range(0, n)) * h)`` [n].
    """
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["h"], name="mm"),
        helper.make_node("ReduceSum", ["h"], ["hs"], name="sum", keepdims=0),
        helper.make_node("Range", ["zero", "n", "one"], ["r"], name="range"),
        helper.make_node("Cast", ["r"], ["rf"], name="cast", to=F),
        helper.make_node("Mul", ["rf", "hs"], ["m"], name="mul"),
        helper.make_node("Relu", ["m"], ["Y"], name="relu"),
    ]
    g = helper.make_graph(
        nodes,
        "range_from_input",
        [
            helper.make_tensor_value_info("X", F, [1, 8]),
            helper.make_tensor_value_info("n", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("Y", F, None)],
        [_w("W", (8, 8)), _ints("zero", 0), _ints("one", 1)],
    )
    return _model(g)


def loop_scan_output() -> onnx.ModelProto:
    """A ``Loop`` of 3 iterations stacking ``tanh(state @ W)`` [1,4] as a scan output
    [3,1,4] (static inference leaves its first dimension unknown), then ``Relu``, @ W2."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep"),
            helper.make_node("MatMul", ["state_in", "W"], ["mm"], name="body_mm"),
            helper.make_node("Tanh", ["mm"], ["state_out"], name="body_tanh"),
            helper.make_node("Identity", ["state_out"], ["scan_out"], name="body_scan"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", F, [1, 4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", F, [1, 4]),
            helper.make_tensor_value_info("scan_out", F, None),
        ],
    )
    nodes = [
        helper.make_node("Relu", ["X"], ["x0"], name="pre"),
        helper.make_node("Loop", ["trips", "cond"], [], name="loop", body=body),
        helper.make_node("Relu", ["stacked"], ["r"], name="post"),
        helper.make_node("MatMul", ["r", "W2"], ["Y"], name="mm2"),
    ]
    nodes[1].input.append("x0")
    nodes[1].output.extend(["final", "stacked"])
    g = helper.make_graph(
        nodes,
        "loop_scan_output",
        [helper.make_tensor_value_info("X", F, [1, 4])],
        [
            helper.make_tensor_value_info("Y", F, None),
            helper.make_tensor_value_info("final", F, None),
        ],
        [
            _w("W", (4, 4)),
            _w("W2", (4, 2), 1),
            _ints("trips", 3),
            numpy_helper.from_array(np.array(True), "cond"),
        ],
    )
    return _model(g)


def unused_input() -> onnx.ModelProto:
    """``Y = relu(X @ W) @ W2``; a second declared input ``Z`` [1,3] that no node reads."""
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["h"], name="mm"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "W2"], ["Y"], name="mm2"),
    ]
    g = helper.make_graph(
        nodes,
        "unused_input",
        [
            helper.make_tensor_value_info("X", F, [1, 4]),
            helper.make_tensor_value_info("Z", F, [1, 3]),
        ],
        [helper.make_tensor_value_info("Y", F, [1, 2])],
        [_w("W", (4, 4)), _w("W2", (4, 2), 1)],
    )
    return _model(g)


def scatter_index() -> onnx.ModelProto:
    """Integer inputs that index: ``ids`` [1,5] into an embedding table [50,8] (``Gather``)
    and ``slots`` [1,3] into the 10 slots of ``h`` [1,10] (``ScatterElements``, axis 1)."""
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed", axis=0),
        helper.make_node("ReduceMean", ["emb"], ["pooled"], name="pool", axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W"], ["h"], name="mm"),
        helper.make_node("Cast", ["slots"], ["slots64"], name="cast", to=TensorProto.INT64),
        helper.make_node("ScatterElements", ["h", "slots64", "upd"], ["sc"], name="scatter",
                         axis=1),
        helper.make_node("Relu", ["sc"], ["Y"], name="relu"),
    ]  # fmt: skip
    g = helper.make_graph(
        nodes,
        "scatter_index",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5]),
            helper.make_tensor_value_info("slots", TensorProto.INT32, [1, 3]),
            helper.make_tensor_value_info("upd", F, [1, 3]),
        ],
        [helper.make_tensor_value_info("Y", F, [1, 10])],
        [_w("table", (50, 8)), _w("W", (8, 10), 1)],
    )
    return _model(g)


def microsoft_op() -> onnx.ModelProto:
    """``Y = Gelu(X @ W) @ W2`` with ``Gelu`` from the ``com.microsoft`` domain, whose
    output shape ONNX's own inference does not know."""
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["h"], name="mm"),
        helper.make_node("Gelu", ["h"], ["g"], name="gelu", domain="com.microsoft"),
        helper.make_node("MatMul", ["g", "W2"], ["Y"], name="mm2"),
    ]
    g = helper.make_graph(
        nodes,
        "microsoft_op",
        [helper.make_tensor_value_info("X", F, [1, 6])],
        [helper.make_tensor_value_info("Y", F, None)],
        [_w("W", (6, 6)), _w("W2", (6, 3), 1)],
    )
    return _ms_model(g, "com.microsoft")


def if_on_sample_rate() -> onnx.ModelProto:
    """``If(sr == 16000)``: the then-branch keeps ``h = X @ W`` [1,8], the else-branch
    concatenates it twice [1,16]; ``Y = Relu(.)``. Which size is right depends on the
    *value* of the int64 scalar input ``sr``."""
    then_g = helper.make_graph(
        [helper.make_node("Identity", ["h"], ["b"], name="keep")],
        "then",
        [],
        [helper.make_tensor_value_info("b", F, None)],
    )
    else_g = helper.make_graph(
        [helper.make_node("Concat", ["h", "h"], ["b2"], name="twice", axis=1)],
        "else",
        [],
        [helper.make_tensor_value_info("b2", F, None)],
    )
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["h"], name="mm"),
        helper.make_node("Equal", ["sr", "rate"], ["is16k"], name="is16k"),
        helper.make_node("If", ["is16k"], ["branch"], name="by_rate", then_branch=then_g,
                         else_branch=else_g),
        helper.make_node("Relu", ["branch"], ["Y"], name="relu"),
    ]  # fmt: skip
    g = helper.make_graph(
        nodes,
        "if_on_sample_rate",
        [
            helper.make_tensor_value_info("X", F, [1, 8]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("Y", F, None)],
        [_w("W", (8, 8)), _ints("rate", 16000)],
    )
    return _model(g)


def if_breaks_on_made_up_rate() -> onnx.ModelProto:
    """Like :func:`if_on_sample_rate`, but ``Y = branch @ W2`` with ``W2`` [8,4]: only
    the then-branch (``sr == 16000``) runs; on any other ``sr`` the MatMul fails."""
    model = if_on_sample_rate()
    g = model.graph
    relu = next(n for n in g.node if n.name == "relu")
    g.node.remove(relu)
    g.node.append(helper.make_node("MatMul", ["branch", "W2"], ["Y"], name="project"))
    g.initializer.append(_w("W2", (8, 4), seed=1))
    g.name = "if_breaks_on_made_up_rate"
    return model
