"""Hypothesis strategies: random DAG-shaped ONNX models.

Activations are float32 ``[1, w]`` rows of a few widths; layers are Relu,
MatMul (weight as an initializer, a ``Constant`` node, or a Constant shared
with an earlier MatMul), Add (equal widths) and Concat. Inputs are drawn with
a bias towards recent tensors so that models have both chain-like stretches
(with cut points) and branches and skips.
"""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

__all__ = ["dag_models"]

_WIDTHS = (2, 3, 4, 8)


@st.composite
def dag_models(
    draw,
    max_nodes: int = 12,
    dead_ends: bool = True,
    sources: bool = True,
    shuffle: bool = True,
) -> onnx.ModelProto:
    """A random DAG model.

    Parameters
    ----------
    max_nodes
        Largest number of layers (Constant nodes come on top).
    dead_ends
        Allow layers whose output reaches no graph output. Without them,
        every unread tensor is a graph output.
    sources
        Allow layers without activation inputs (``RandomNormal``), which
        lie on no path from the graph inputs.
    shuffle
        Store the nodes in a random (not topological) order.
    """
    n_inputs = draw(st.integers(1, 2))
    tensors: list[tuple[str, int]] = [
        (f"in{i}", draw(st.sampled_from(_WIDTHS))) for i in range(n_inputs)
    ]
    inputs = [helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, w]) for t, w in tensors]
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    constants: dict[tuple[int, int], str] = {}  # (w_in, w_out) -> Constant output
    read: set[str] = set()

    def pick(exclude=()) -> tuple[str, int]:
        window = [t for t in tensors[-4:] if t[0] not in exclude] or [
            t for t in tensors if t[0] not in exclude
        ]
        far = draw(st.booleans()) and draw(st.booleans())  # a quarter: any tensor
        pool = [t for t in tensors if t[0] not in exclude] if far else window
        return pool[draw(st.integers(0, len(pool) - 1))]

    for i in range(draw(st.integers(1, max_nodes))):
        out = f"t{i}"
        x, wx = pick()
        kinds = ["relu", "matmul", "matmul", "add", "concat"] + ["noise"] * sources
        kind = draw(st.sampled_from(kinds))
        if kind == "noise":
            w_out = draw(st.sampled_from(_WIDTHS))
            nodes.append(
                helper.make_node("RandomNormal", [], [out], name=f"n{i}", shape=[1, w_out])
            )
            ins = []
        elif kind == "relu":
            nodes.append(helper.make_node("Relu", [x], [out], name=f"n{i}"))
            ins, w_out = [x], wx
        elif kind == "matmul":
            w_out = draw(st.sampled_from(_WIDTHS))
            how = draw(st.sampled_from(["init", "const", "shared"]))
            if how == "shared" and (wx, w_out) in constants:
                weight = constants[(wx, w_out)]
            elif how == "init":
                weight = f"W{i}"
                inits.append(numpy_helper.from_array(np.zeros((wx, w_out), np.float32), weight))
            else:
                weight = f"C{i}"
                value = numpy_helper.from_array(np.zeros((wx, w_out), np.float32), f"{weight}_v")
                nodes.append(helper.make_node("Constant", [], [weight], name=f"c{i}", value=value))
                constants[(wx, w_out)] = weight
            nodes.append(helper.make_node("MatMul", [x, weight], [out], name=f"n{i}"))
            ins = [x]
        elif len(tensors) > 1:
            y, wy = pick(exclude=(x,))
            ins = [x, y]
            if kind == "add" and wx == wy:
                nodes.append(helper.make_node("Add", ins, [out], name=f"n{i}"))
                w_out = wx
            else:
                if kind == "concat" and len(tensors) > 2 and draw(st.booleans()):
                    z, wz = pick(exclude=(x, y))
                    ins.append(z)
                    wy += wz
                nodes.append(helper.make_node("Concat", ins, [out], name=f"n{i}", axis=1))
                w_out = wx + wy
        else:
            nodes.append(helper.make_node("Relu", [x], [out], name=f"n{i}"))
            ins, w_out = [x], wx
        read.update(ins)
        tensors.append((out, w_out))

    produced = tensors[n_inputs:]
    last = produced[-1][0]
    outputs = []
    for t, w in produced:
        unread = t not in read
        if t == last or (unread and (not dead_ends or draw(st.booleans()))):
            outputs.append((t, w))
        elif not unread and draw(st.integers(0, 9)) == 0:  # an early, also-read output
            outputs.append((t, w))
    if shuffle:
        nodes = draw(st.permutations(nodes))
    graph = helper.make_graph(
        list(nodes),
        "random_dag",
        inputs,
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, w]) for t, w in outputs],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
