"""ONNX model -> layer DAG: parameter bytes, tensor bytes and FLOPs per layer.

partopt plans from an ONNX file without ever needing its weight values: the
model is loaded with its external data left on disk (a missing weight file is
fine), shapes come from ONNX shape inference (with data propagation), and
where that leaves an activation's size unknown, from one probe run in
onnxruntime (:mod:`partopt.probe`; the model's own weights when they are at
hand, random ones otherwise). Every size is computed from shapes and dtypes;
``LayerGraph.meta`` and ``TensorInfo.source`` say where each came from.

Conventions
-----------
* **Layers.** Every ONNX node of the main graph is a layer, except
  ``Constant`` nodes and nodes computed only from constants (initializers,
  ``Constant`` outputs or other such nodes; e.g. ``Constant -> Cast`` or
  ``Constant -> Unsqueeze``). Those are *folded*: they are neither layers nor
  graph sources, and the constants they read become parameters of the layers
  that consume them (runtimes fold them the same way at load time).
  Random generators (``RandomNormal``...) are never folded.
* **Parameters.** A layer's parameter bytes are the bytes of the initializers
  and ``Constant`` values it reads, directly or through folded nodes,
  dtype-aware (float16 = 2 bytes, int4 = half a byte, ...). A constant read by
  several layers is counted **once**, for its first consumer in topological
  order, so the layers' parameter bytes sum to the model's. A node owning
  subgraphs (``If``, ``Loop``, ``Scan``) also holds every initializer and
  ``Constant`` inside them; the tensors its subgraphs read from the enclosing
  graph count as its inputs, and it is an atomic layer (never cut inside).
* **Tensors.** Activation tensors are the graph inputs (not initializers) and
  the layers' outputs. Their bytes are ``elements x dtype size``; ``None``
  when a dimension is unknown after shape inference. The batch dimension (the
  first one, when symbolic) is set to 1; other symbolic dimensions can be set
  with ``input_shapes`` (a symbol set on one input is set on every input
  that uses it).
* **FLOPs** (one inference, a multiply-add is 2 FLOPs; ``out`` is the number
  of elements of the first output, ``in`` of the first input):

  ==========================================  =================================
  op                                           FLOPs
  ==========================================  =================================
  Conv, ConvInteger, QLinearConv               ``2 out * prod(W.shape[1:])``
                                               ``+ out`` with a bias
  ConvTranspose                                ``2 in * prod(W.shape[1:])``
                                               ``+ out`` with a bias
  Gemm                                         ``2 M N K (+ M N with C)``
  MatMul, MatMulInteger, QLinearMatMul         ``2 out * K`` (K = A.shape[-1])
  LSTM / GRU / RNN                             ``2 T B D gH (I + H)`` (g gates)
  MaxPool, AveragePool, LpPool                 ``out * prod(kernel_shape)``
  GlobalAveragePool, GlobalMaxPool, ...        ``in``
  BatchNormalization                           ``2 out`` (scale and shift)
  LayerNorm, InstanceNorm, GroupNorm, ...      ``5 out`` (mean, variance,
                                               normalise, scale, shift)
  Softmax, LogSoftmax                          ``3 out`` (exp, sum, divide)
  Reduce*, ArgMax, ArgMin                      ``in``
  element-wise (Add, Relu, Sigmoid, Erf...)    ``out`` (one per element,
                                               transcendentals included;
                                               ``(n - 1) out`` for n-ary
                                               Sum/Max/Min/Mean)
  data movement (Reshape, Transpose, Concat,   0
  Gather, Slice, Cast, Pad, Split...)
  any other op                                 ``out``
  If                                           max over its branches
  Loop, Scan                                   one iteration of the body
  ==========================================  =================================

  An unknown shape makes the estimate 0.
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import networkx as nx

from partopt.errors import PartoptError, first_line

if TYPE_CHECKING:  # onnx is imported lazily: chain.py users need not pay for it
    import onnx

__all__ = [
    "GraphArrays",
    "LayerGraph",
    "LayerNode",
    "ModelError",
    "TensorInfo",
    "graph_from_model",
    "load_graph",
    "node_reads",
    "parse_input_shape",
    "subgraphs",
    "topological_order",
]


class ModelError(PartoptError):
    """A model that partopt cannot plan for; the message is one line."""


# Bits per element of each ONNX TensorProto data type (None: variable size).
_DTYPE_BITS: dict[int, int | None] = {
    1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 8: None, 9: 8, 10: 16, 11: 64,
    12: 32, 13: 64, 14: 64, 15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4,
    22: 4, 23: 4, 24: 8, 25: 2, 26: 2, 27: 6, 28: 6,
}  # fmt: skip
_DTYPE_NAMES: dict[int, str] = {
    0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16",
    6: "INT32", 7: "INT64", 8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE",
    12: "UINT32", 13: "UINT64", 14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16",
    17: "FLOAT8E4M3FN", 18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2", 20: "FLOAT8E5M2FNUZ",
    21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1", 24: "FLOAT8E8M0", 25: "UINT2",
    26: "INT2", 27: "FLOAT6E2M3", 28: "FLOAT6E3M2",
}  # fmt: skip

# Ops that are never constant-folded although all their inputs are constant.
_NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli"}  # fmt: skip

_DATA_MOVEMENT = {
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split",
    "SplitToSequence", "Slice", "Gather", "GatherElements", "GatherND", "Identity",
    "Shape", "Size", "Cast", "CastLike", "Expand", "Tile", "Pad", "DepthToSpace",
    "SpaceToDepth", "Dropout", "ConstantOfShape", "Optional", "OptionalGetElement",
    "OptionalHasElement", "SequenceConstruct", "SequenceAt", "SequenceEmpty",
    "SequenceInsert", "SequenceErase", "SequenceLength", "ConcatFromSequence",
    "ScatterND", "ScatterElements", "Scatter", "Compress", "ReverseSequence",
    "Trilu", "EyeLike", "OneHot", "NonZero", "Range",
}  # fmt: skip
_POOL = {"MaxPool", "AveragePool", "LpPool"}
_GLOBAL_POOL = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}
_NORM5 = {
    "LayerNormalization", "InstanceNormalization", "GroupNormalization",
    "MeanVarianceNormalization", "LpNormalization", "RMSNormalization",
    "SimplifiedLayerNormalization", "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
}  # fmt: skip
_VARIADIC = {"Sum", "Max", "Min", "Mean"}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


# -- small helpers --------------------------------------------------------------


def _prod(dims) -> int:
    return math.prod(dims) if dims else 1


def _nbytes(elements: int, elem_type: int) -> int | None:
    bits = _DTYPE_BITS.get(elem_type)
    if bits is None:
        return None
    return (elements * bits + 7) // 8


def _tensor_proto_size(t) -> tuple[int, int]:
    """``(bytes, elements)`` of a TensorProto from its dims and dtype only."""
    elements = _prod(t.dims)
    nbytes = _nbytes(elements, t.data_type)
    if nbytes is None:  # strings: their stored length, when stored inline
        nbytes = sum(len(s) for s in t.string_data)
    return nbytes, elements


def _sparse_size(s) -> tuple[int, int]:
    vb, ve = _tensor_proto_size(s.values)
    ib, _ = _tensor_proto_size(s.indices)
    return vb + ib, ve


def _constant_size(node) -> tuple[int, int]:
    """``(bytes, elements)`` of the value held by a ``Constant`` node."""
    for a in node.attribute:
        if a.name == "value":
            return _tensor_proto_size(a.t)
        if a.name == "sparse_value":
            return _sparse_size(a.sparse_tensor)
        if a.name == "value_float":
            return 4, 1
        if a.name == "value_floats":
            return 4 * len(a.floats), len(a.floats)
        if a.name == "value_int":
            return 8, 1
        if a.name == "value_ints":
            return 8 * len(a.ints), len(a.ints)
        if a.name == "value_string":
            return len(a.s), 1
        if a.name == "value_strings":
            return sum(len(s) for s in a.strings), len(a.strings)
    return 0, 0


def subgraphs(node) -> list:
    """The subgraphs an ONNX node owns (``If`` branches, ``Loop``/``Scan`` bodies)."""
    out = []
    for a in node.attribute:
        if a.type == 5:  # AttributeProto.GRAPH
            out.append(a.g)
        elif a.type == 10:  # AttributeProto.GRAPHS
            out.extend(a.graphs)
    return out


_subgraphs = subgraphs


def _attr(node, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            if a.ints:
                return list(a.ints)
            if a.type == a.INT:
                return a.i
            if a.type == a.FLOAT:
                return a.f
            if a.type == a.STRING:
                return a.s.decode()
            return default
    return default


def _scan_subgraph(g) -> tuple[list[str], int, int]:
    """Outer-scope names read by subgraph ``g`` and the parameters inside it.

    Returns ``(outer_refs, param_bytes, param_count)``; nested subgraphs are
    included.
    """
    defined = {i.name for i in g.input}
    defined.update(t.name for t in g.initializer)
    defined.update(s.values.name for s in g.sparse_initializer)
    for node in g.node:
        defined.update(o for o in node.output if o)
    nbytes = count = 0
    for t in g.initializer:
        b, c = _tensor_proto_size(t)
        nbytes, count = nbytes + b, count + c
    for s in g.sparse_initializer:
        b, c = _sparse_size(s)
        nbytes, count = nbytes + b, count + c
    refs: list[str] = []
    for node in g.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            b, c = _constant_size(node)
            nbytes, count = nbytes + b, count + c
        refs.extend(t for t in node.input if t and t not in defined)
        for sub in _subgraphs(node):
            sub_refs, b, c = _scan_subgraph(sub)
            nbytes, count = nbytes + b, count + c
            refs.extend(t for t in sub_refs if t not in defined)
    # a branch may output an outer tensor as it is
    refs.extend(o.name for o in g.output if o.name and o.name not in defined)
    return list(dict.fromkeys(refs)), nbytes, count


def _collect_shapes(g, shapes: dict, *, top: bool = True) -> None:
    """Map tensor name -> (elem_type, dims with None for unknown) or None."""
    for vi in (*g.input, *g.output, *g.value_info):
        if vi.name in shapes:
            continue
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None:
            shapes[vi.name] = (0, None)
            continue
        dims = None
        if tt.HasField("shape"):
            dims = tuple(
                d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None
                for d in tt.shape.dim
            )
        shapes[vi.name] = (tt.elem_type, dims)
    for t in g.initializer:
        shapes.setdefault(t.name, (t.data_type, tuple(t.dims)))
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and node.output:
                    shapes.setdefault(node.output[0], (a.t.data_type, tuple(a.t.dims)))
        for sub in _subgraphs(node):
            _collect_shapes(sub, shapes, top=False)


def _elements_of(shape) -> int | None:
    if shape is None or any(d is None for d in shape):
        return None
    return _prod(shape)


def _node_flops(node, shape_of) -> int:
    """FLOPs estimate of one ONNX node (see the module docstring)."""
    op = node.op_type
    subs = _subgraphs(node)
    if subs:
        costs = [_graph_flops(g, shape_of) for g in subs]
        return max(costs) if op == "If" else sum(costs)
    if op in _DATA_MOVEMENT or op == "Constant":
        return 0

    def dims(i: int):
        if i >= len(node.input) or not node.input[i]:
            return None
        return shape_of(node.input[i])

    def has(i: int) -> bool:
        return i < len(node.input) and bool(node.input[i])

    out = _elements_of(shape_of(node.output[0])) if node.output and node.output[0] else None
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w = dims(3 if op == "QLinearConv" else 1)
        if out is None or w is None or any(d is None for d in w):
            return 0
        bias = has(8) if op == "QLinearConv" else (op == "Conv" and has(2))
        return 2 * out * _prod(w[1:]) + (out if bias else 0)
    if op == "ConvTranspose":
        x, w = _elements_of(dims(0)), dims(1)
        if out is None or x is None or w is None or any(d is None for d in w):
            return 0
        return 2 * x * _prod(w[1:]) + (out if has(2) else 0)
    if op == "Gemm":
        a = dims(0)
        if out is None or a is None or len(a) != 2 or a[0] is None or a[1] is None:
            return 0
        k = a[0] if _attr(node, "transA", 0) else a[1]
        return 2 * out * k + (out if has(2) else 0)
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        a = dims(0)
        if out is None or not a or a[-1] is None:
            return 0
        return 2 * out * a[-1]
    if op in _GATES:
        x, w = dims(0), dims(1)
        if x is None or w is None or len(x) != 3 or len(w) != 3:
            return 0
        if any(d is None for d in (*x, *w)):
            return 0
        t, b, i = (x[1], x[0], x[2]) if _attr(node, "layout", 0) else x
        d, gh = w[0], w[1]
        h = gh // _GATES[op]
        return 2 * t * b * d * gh * (i + h)
    if op in _POOL:
        if out is None:
            return 0
        return out * _prod(_attr(node, "kernel_shape", []) or [1])
    if op in _GLOBAL_POOL or op.startswith("Reduce") or op in ("ArgMax", "ArgMin"):
        x = _elements_of(dims(0))
        return x or 0
    if out is None:
        return 0
    if op == "BatchNormalization":
        return 2 * out
    if op in _NORM5:
        return 5 * out
    if op in ("Softmax", "LogSoftmax"):
        return 3 * out
    if op in _VARIADIC:
        return out * max(1, sum(1 for t in node.input if t) - 1)
    return out


def _graph_flops(g, shape_of) -> int:
    return sum(_node_flops(n, shape_of) for n in g.node)


def _fix_input_shapes(
    model, input_shapes: dict[str, tuple[int, ...]]
) -> tuple[dict[str, int], bool]:
    """Set symbolic input dimensions in place.

    Returns the symbol bindings (symbol -> size) and whether a dimension that
    was fixed in the file was given another size.
    """
    g = model.graph
    inits = {t.name for t in g.initializer} | {s.values.name for s in g.sparse_initializer}
    real = [vi for vi in g.input if vi.name not in inits]
    names = [vi.name for vi in real]
    for name in input_shapes:
        if name not in names:
            raise ModelError(
                f"--input-shape names {name!r}, which is not a graph input; "
                f"the model's inputs are: {', '.join(names) or '(none)'}"
            )
    # Some exporters write -1 for a dynamic dimension: it is symbolic.
    for vi in real:
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value < 0:
                d.ClearField("dim_value")
    # Symbols bound by the user, then the batch symbol of each input set to 1.
    bindings: dict[str, int] = {}
    overridden = False
    for vi in real:
        if vi.name in input_shapes and vi.type.tensor_type.HasField("shape"):
            dims = vi.type.tensor_type.shape.dim
            shape = input_shapes[vi.name]
            if len(dims) != len(shape):
                raise ModelError(
                    f"--input-shape gives {len(shape)} dimensions for input {vi.name!r}, "
                    f"which has {len(dims)}; give its full shape"
                )
            for d, v in zip(dims, shape, strict=True):
                if d.dim_param:
                    bindings[d.dim_param] = v
                elif d.HasField("dim_value") and d.dim_value != v:
                    overridden = True
    for vi in real:
        dims = vi.type.tensor_type.shape.dim
        if vi.name not in input_shapes and len(dims) and not dims[0].HasField("dim_value"):
            if dims[0].dim_param:
                bindings.setdefault(dims[0].dim_param, 1)
    for vi in real:
        if not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        if vi.name in input_shapes:
            tt.shape.ClearField("dim")
            for v in input_shapes[vi.name]:
                tt.shape.dim.add().dim_value = int(v)
            continue
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                continue
            if d.dim_param in bindings:
                d.dim_value = bindings[d.dim_param]
            elif i == 0:
                d.dim_value = 1
    return bindings, overridden


def _infer_shapes(model, bindings: dict[str, int], overridden: bool, warnings: list[str]):
    import onnx

    g = model.graph
    if overridden:
        # Shapes recorded for the file's input sizes could contradict the new ones.
        del g.value_info[:]
        for o in g.output:
            if o.type.HasField("tensor_type"):
                o.type.tensor_type.ClearField("shape")
    elif bindings:
        # Keep recorded shapes (inference may not know every op, e.g. custom
        # ones), with the symbols now bound.
        for vi in (*g.value_info, *g.output):
            for d in vi.type.tensor_type.shape.dim:
                if not d.HasField("dim_value") and d.dim_param in bindings:
                    d.dim_value = bindings[d.dim_param]
    last: Exception | None = None
    for data_prop in (True, False):
        try:
            return onnx.shape_inference.infer_shapes(
                model, check_type=False, strict_mode=False, data_prop=data_prop
            )
        except Exception as exc:  # inference is best effort: keep declared shapes
            last = exc
    why = first_line(last, 200) if last is not None else "no result"
    warnings.append(f"shape inference failed ({why}); using the declared shapes")
    return model


def node_reads(node) -> list[str]:
    """Every name an ONNX node reads: its inputs, then what its subgraphs read from outside."""
    names = [t for t in node.input if t]
    for sub in _subgraphs(node):
        names.extend(_scan_subgraph(sub)[0])
    return list(dict.fromkeys(names))


def topological_order(nodes, subset=None) -> list[int]:
    """Indices of ONNX ``nodes`` (or of those in ``subset``) in a topological order.

    Ties are broken by file order, so a valid file order is kept; reads
    through subgraphs count as dependencies. Raises :class:`ModelError` on a
    cycle.
    """
    keep = sorted(range(len(nodes)) if subset is None else set(subset))
    sub = [nodes[i] for i in keep]
    producer = {o: k for k, n in enumerate(sub) for o in n.output if o}
    deps = [[producer[t] for t in node_reads(n) if t in producer] for n in sub]
    return [keep[k] for k in _toposort(sub, deps)]


def _toposort(nodes, deps: list[list[int]]) -> list[int]:
    """Kahn's algorithm, ties broken by file order (so a valid file order is kept)."""
    n = len(nodes)
    succ: list[list[int]] = [[] for _ in range(n)]
    indeg = [0] * n
    for v, ds in enumerate(deps):
        for u in set(ds):
            succ[u].append(v)
            indeg[v] += 1
    heap = [v for v in range(n) if indeg[v] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        u = heapq.heappop(heap)
        order.append(u)
        for v in succ[u]:
            indeg[v] -= 1
            if indeg[v] == 0:
                heapq.heappush(heap, v)
    if len(order) < n:
        left = {v for v in range(n) if indeg[v] > 0}
        cyc = nx.DiGraph((u, v) for v in left for u in deps[v] if u in left)
        try:
            cycle = [u for u, _ in nx.find_cycle(cyc)]
        except nx.NetworkXNoCycle:  # pragma: no cover - left always holds a cycle
            cycle = sorted(left)
        names = " -> ".join(nodes[u].name or f"{nodes[u].op_type}#{u}" for u in cycle[:6])
        raise ModelError(
            f"the graph is cyclic ({names} -> ...); an ONNX graph must be a DAG: re-export the model"
        )
    return order


# -- public types ---------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    """An activation tensor.

    Parameters
    ----------
    name
        Tensor name.
    shape
        Dimensions (``None`` for an unknown one), or ``None`` if the rank is
        unknown.
    dtype
        ONNX data type name (``FLOAT``, ``FLOAT16``...).
    bytes
        Size in bytes, ``None`` if the shape is not fully known.
    source
        Where the shape came from: ``inference`` (ONNX shape inference with
        data propagation, or the shapes declared in the file), ``probe`` (an
        onnxruntime run on generated inputs) or ``sample-inputs`` (a run on
        the user's input values).
    """

    name: str
    shape: tuple[int | None, ...] | None
    dtype: str
    bytes: int | None
    source: str = "inference"

    @property
    def elements(self) -> int | None:
        """Number of elements, ``None`` if unknown."""
        return _elements_of(self.shape)


@dataclass(frozen=True)
class LayerNode:
    """A layer: one ONNX node that is not a folded constant.

    Parameters
    ----------
    name
        Unique node name (synthesised as ``<op_type>_<k>`` when the ONNX node
        is unnamed, suffixed when a name repeats).
    op_type
        ONNX operator type.
    inputs
        Activation tensors read (initializers and folded constants excluded;
        for a node owning subgraphs, also the activations its subgraphs read
        from the enclosing graph), without repeats.
    outputs
        Tensors produced.
    param_bytes
        Parameter bytes attributed to the layer (see module docstring).
    param_count
        Number of parameter elements attributed to the layer.
    flops
        FLOPs estimate for one inference (see module docstring).
    params
        Names of the main-graph constants counted for this layer.
    """

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    param_bytes: int
    param_count: int
    flops: int
    params: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class GraphArrays:
    """Integer-indexed view of a :class:`LayerGraph`, for linear-time passes.

    Nodes are numbered by their position in ``LayerGraph.nodes`` and tensors
    by their position in ``LayerGraph.tensors``.
    """

    tensor_names: list[str]
    tensor_bytes: list[int | None]
    producer: list[int]  # -1 for a graph input
    consumers: list[list[int]]  # distinct consumer nodes, increasing
    is_output: list[bool]
    node_in: list[list[int]]  # distinct activation inputs
    node_out: list[list[int]]
    preds: list[list[int]]  # distinct producer nodes of the inputs
    succs: list[list[int]]


@dataclass(eq=False)
class LayerGraph:
    """A DNN as a DAG of layers joined by activation tensors.

    Parameters
    ----------
    name
        Model name (the graph name, else the file stem).
    nodes
        Layers in a topological order.
    tensors
        Activation tensors by name: graph inputs and layer outputs.
    inputs
        Graph inputs that are not initializers.
    outputs
        Graph outputs that are activations (constant outputs are dropped).
    warnings
        Non-fatal problems met while loading (e.g. shape inference failed).
    meta
        How the sizes were settled: ``shape_sources`` (activation tensors
        per source, see :class:`TensorInfo`), ``probe`` (whether a probe run
        was needed, on which inputs and weights, what it measured or why it
        failed) and ``unsettled`` (tensor -> why its size is unknown).
    """

    name: str
    nodes: list[LayerNode]
    tensors: dict[str, TensorInfo]
    inputs: list[str]
    outputs: list[str]
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def position(self) -> dict[str, int]:
        """Node name -> index in :attr:`nodes`."""
        return {n.name: i for i, n in enumerate(self.nodes)}

    @cached_property
    def producer(self) -> dict[str, str]:
        """Tensor name -> name of the layer producing it (graph inputs absent)."""
        return {t: n.name for n in self.nodes for t in n.outputs}

    @cached_property
    def consumers(self) -> dict[str, list[str]]:
        """Tensor name -> names of the layers reading it, in topological order."""
        out: dict[str, list[str]] = {t: [] for t in self.tensors}
        for n in self.nodes:
            for t in n.inputs:
                out[t].append(n.name)
        return out

    @cached_property
    def arrays(self) -> GraphArrays:
        """The integer-indexed view used by the chain builders."""
        tid = {t: i for i, t in enumerate(self.tensors)}
        producer = [-1] * len(tid)
        consumers: list[list[int]] = [[] for _ in tid]
        node_in = [[tid[t] for t in n.inputs] for n in self.nodes]
        node_out = [[tid[t] for t in n.outputs] for n in self.nodes]
        for v, outs in enumerate(node_out):
            for t in outs:
                producer[t] = v
        for v, ins in enumerate(node_in):
            for t in ins:
                consumers[t].append(v)
        preds = [sorted({producer[t] for t in ins if producer[t] >= 0}) for ins in node_in]
        succs: list[list[int]] = [[] for _ in self.nodes]
        for v, ps in enumerate(preds):
            for u in ps:
                succs[u].append(v)
        is_output = [False] * len(tid)
        for out_name in self.outputs:
            is_output[tid[out_name]] = True
        return GraphArrays(
            tensor_names=list(self.tensors),
            tensor_bytes=[ti.bytes for ti in self.tensors.values()],
            producer=producer,
            consumers=consumers,
            is_output=is_output,
            node_in=node_in,
            node_out=node_out,
            preds=preds,
            succs=succs,
        )

    @cached_property
    def dag(self) -> nx.DiGraph:
        """Layers as a networkx DiGraph; edge attribute ``tensors`` lists what flows."""
        g = nx.DiGraph()
        g.add_nodes_from(n.name for n in self.nodes)
        producer = self.producer
        for n in self.nodes:
            for t in n.inputs:
                u = producer.get(t)
                if u is None:
                    continue
                if g.has_edge(u, n.name):
                    g[u][n.name]["tensors"].append(t)
                else:
                    g.add_edge(u, n.name, tensors=[t])
        return g

    @property
    def param_bytes(self) -> int:
        """Total parameter bytes of the model."""
        return sum(n.param_bytes for n in self.nodes)

    @property
    def flops(self) -> int:
        """Total FLOPs estimate of one inference."""
        return sum(n.flops for n in self.nodes)

    def size_advice(self, tensor: str) -> str:
        """Why ``tensor``'s size is unknown and what would settle it, in one clause.

        Advice the user has already followed (input shapes given, sample
        inputs given) is not repeated.
        """
        unsettled = self.meta.get("unsettled", {})
        if tensor in unsettled:
            return str(unsettled[tensor])
        probe = self.meta.get("probe", {})
        if probe.get("error"):
            return str(probe["error"])
        symbolic = [
            t for t in self.inputs if any(d is None for d in (self.tensors[t].shape or (None,)))
        ]
        if symbolic:
            return f"set the graph input shapes, e.g. {self.shape_hint()}"
        if self.meta.get("sample_inputs"):
            return "a run on the sample inputs did not produce it"
        return (
            "neither shape inference nor a probe run settled it; give real input values "
            "with --sample-inputs FILE.npz"
        )

    def shape_hint(self) -> str:
        """An ``--input-shape`` example built from the graph inputs."""
        parts = []
        open_ = [t for t in self.inputs if any(d is None for d in self.tensors[t].shape or (None,))]
        for name in open_ or self.inputs:
            shape = self.tensors[name].shape or ()
            dims = "x".join(str(d) if d is not None else "N" for d in shape) or "1x3x224x224"
            parts.append(f"--input-shape {name}={dims}")
        return " ".join(parts) or "--input-shape NAME=1x3x224x224"


# -- public functions ------------------------------------------------------------


def parse_input_shape(spec: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``NAME=D1xD2x...`` (as given to ``--input-shape``).

    Examples
    --------
    >>> parse_input_shape("input=1x3x224x224")
    ('input', (1, 3, 224, 224))
    """
    name, eq, dims = spec.strip().rpartition("=")
    try:
        if not eq or not name:
            raise ValueError
        shape = tuple(int(d) for d in dims.lower().replace(",", "x").split("x"))
        if any(d < 1 for d in shape):
            raise ValueError
    except ValueError:
        raise ModelError(
            f"bad input shape {spec!r}: expected NAME=D1xD2x... with positive integers, "
            "e.g. input=1x3x224x224"
        ) from None
    return name, shape


def graph_from_model(
    model: onnx.ModelProto,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    name: str | None = None,
    *,
    sample_inputs: Mapping[str, Any] | None = None,
    model_dir: str | os.PathLike | None = None,
    probe: bool = True,
) -> LayerGraph:
    """Build the :class:`LayerGraph` of an in-memory ONNX model.

    The model is copied, never modified. See :func:`load_graph`.
    """
    import onnx

    if not isinstance(model, onnx.ModelProto):
        raise ModelError(f"expected an ONNX ModelProto, got {type(model).__name__}")
    if not model.graph.node:
        raise ModelError(
            f"model {name or model.graph.name!r} has no graph nodes: "
            "the file is not an ONNX model or is truncated; re-export it"
        )
    m = onnx.ModelProto()
    m.CopyFrom(model)
    reads, sub_params, order = _analyse(m.graph)
    if order != sorted(order):  # shape inference needs the nodes in topological order
        nodes = [m.graph.node[i] for i in order]
        del m.graph.node[:]
        m.graph.node.extend(nodes)
        reads = [reads[i] for i in order]
        sub_params = [sub_params[i] for i in order]
    warnings: list[str] = []
    given = dict(input_shapes or {})
    shapes = _with_sample_shapes(m, given, sample_inputs)
    bindings, overridden = _fix_input_shapes(m, shapes)
    m = _infer_shapes(m, bindings, overridden, warnings)
    meta: dict[str, Any] = {
        "input_shapes": bool(given),
        "sample_inputs": bool(sample_inputs),
        "probe": {"ran": False},
        "unsettled": {},
    }
    overrides: dict[str, tuple[int, tuple | None]] = {}
    sources: dict[str, str] = {}
    if probe:
        _probe_unknown(m, sample_inputs, model_dir, meta, overrides, sources)
    graph = _build(m, name or m.graph.name or "model", warnings, reads, sub_params, overrides)
    for t, src in sources.items():
        ti = graph.tensors.get(t)
        if ti is not None and ti.bytes is not None:
            graph.tensors[t] = TensorInfo(ti.name, ti.shape, ti.dtype, ti.bytes, src)
    counts: dict[str, int] = {}
    for ti in graph.tensors.values():
        key = ti.source if ti.bytes is not None else "unknown"
        counts[key] = counts.get(key, 0) + 1
    meta["shape_sources"] = counts
    graph.meta.update(meta)
    return graph


def _with_sample_shapes(
    m, given: dict[str, tuple[int, ...]], sample: Mapping[str, Any] | None
) -> dict[str, tuple[int, ...]]:
    """Input shapes: ``given``, plus the shapes of the sample arrays (which must agree)."""
    if not sample:
        return given
    inits = {t.name for t in m.graph.initializer} | {
        s.values.name for s in m.graph.sparse_initializer
    }
    names = [vi.name for vi in m.graph.input if vi.name not in inits]
    out = dict(given)
    for key, arr in sample.items():
        if key not in names:
            raise ModelError(
                f"the sample inputs hold {key!r}, which is not a graph input; "
                f"the model's inputs are: {', '.join(names) or '(none)'}"
            )
        shape = tuple(int(d) for d in getattr(arr, "shape", ()))
        if key in given and tuple(given[key]) != shape:
            raise ModelError(
                f"input {key!r} has shape {'x'.join(map(str, shape)) or 'scalar'} in the sample "
                f"inputs but {'x'.join(map(str, given[key]))} by --input-shape; drop one of them"
            )
        out[key] = shape
    return out


def _probe_unknown(
    m,
    sample: Mapping[str, Any] | None,
    model_dir,
    meta: dict[str, Any],
    overrides: dict[str, tuple[int, tuple | None]],
    sources: dict[str, str],
) -> None:
    """Measure, in one onnxruntime run, the main-graph tensors inference left unknown."""
    import time

    g = m.graph
    shapes: dict[str, tuple[int, tuple | None]] = {}
    _collect_shapes(g, shapes)

    def known(t: str) -> bool:
        elem, dims = shapes.get(t, (0, None))
        return elem != 0 and _elements_of(dims) is not None

    inits = {t.name for t in g.initializer} | {s.values.name for s in g.sparse_initializer}
    inputs = [vi.name for vi in g.input if vi.name not in inits]
    wanted = [
        o
        for node in g.node
        if not (node.op_type == "Constant" and node.domain in ("", "ai.onnx"))
        for o in node.output
        if o and not known(o)
    ]
    wanted = list(dict.fromkeys(wanted))
    sample = dict(sample or {})
    unsized = [t for t in inputs if t not in sample and not known(t)]
    if not wanted and not unsized:
        return
    if unsized:
        dims = shapes.get(unsized[0], (0, None))[1]
        hint = "x".join("N" if d is None else str(d) for d in dims or ()) or "D1xD2x..."
        meta["probe"] = {
            "ran": False,
            "error": f"input {unsized[0]!r} has no concrete shape "
            f"({_dims_text(dims)}), so a probe run cannot measure it: give its shape "
            f"with --input-shape {unsized[0]}={hint} or its values with --sample-inputs "
            "FILE.npz",
        }
        return
    from partopt.probe import ProbeError, probe_shapes

    concrete = {t: tuple(shapes[t][1] or ()) for t in inputs if t not in sample}
    t0 = time.perf_counter()
    try:
        res = probe_shapes(m, wanted, concrete, sample=sample, model_dir=model_dir)
    except ProbeError as exc:
        why = str(exc)
        hung = _branch_dependent(g, [t for t in inputs if t not in sample])
        if hung and exc.values_may_help:
            why = _branch_failure(g, hung, exc.failed_node, why)
        if not sample and exc.values_may_help and "--sample-inputs" not in why:
            why += "; give real input values with --sample-inputs FILE.npz"
        elif sample:
            why = f"{why} (on the sample inputs)"
        meta["probe"] = {"ran": False, "error": f"a probe run failed: {why}"}
        return
    meta["probe"] = {
        "ran": True,
        "inputs": res.source,
        "weights": res.weights,
        "tensors": len(wanted),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    for t, (elem, dims) in res.shapes.items():
        overrides[t] = (elem, dims)
        sources[t] = res.source
    for t, (a, b) in res.varying.items():
        meta["unsettled"][t] = (
            f"its size depends on the input values (two probe runs on different random inputs "
            f"gave {_dims_text(a)} and {_dims_text(b)}); give real input values with "
            "--sample-inputs FILE.npz"
        )
    made_up = [t for t in inputs if t not in sample]
    for t, (node, source) in _branch_dependent(g, made_up).items():
        if t in res.shapes and t not in meta["unsettled"]:
            overrides[t] = (res.shapes[t][0], None)
            meta["unsettled"][t] = (
                f"its size follows the branch {node!r} takes, which depends on the value of "
                f"input {source!r}; give real input values with --sample-inputs FILE.npz"
            )


# Ops whose outputs carry no information about their inputs' values.
_SHAPE_ONLY = {"Shape", "Size", "EyeLike"}


def _branch_dependent(g, made_up: list[str]) -> dict[str, tuple[str, str]]:
    """Tensors whose size rests on a control-flow decision taken on made-up input values.

    An ``If`` condition, a ``Loop`` trip count or condition computed from the
    *values* of a generated input (not only from its shape) may go another way on
    real data; its outputs and every tensor computed from them are returned,
    each with the node and the input it hangs on. The nodes are sorted.
    """
    taint: dict[str, str] = {t: t for t in made_up}  # tensor -> input its value comes from
    hung: dict[str, tuple[str, str]] = {}  # tensor -> (control-flow node, input)
    for node in g.node:
        reads = node_reads(node)
        label = node.name or node.op_type
        cause = None
        if node.op_type == "If" and node.input and node.input[0] in taint:
            cause = (label, taint[node.input[0]])
        elif node.op_type == "Loop":
            ctrl = [t for t in node.input[:2] if t and t in taint]
            cause = (label, taint[ctrl[0]]) if ctrl else None
        if cause is None:
            cause = next((hung[t] for t in reads if t in hung), None)
        src = (
            None
            if node.op_type in _SHAPE_ONLY
            else next((taint[t] for t in reads if t in taint), None)
        )
        for o in node.output:
            if not o:
                continue
            if src is not None:
                taint[o] = src
            if cause is not None:
                hung[o] = cause
    return hung


def _branch_failure(g, hung: dict[str, tuple[str, str]], failed, why: str) -> str:
    """Why a probe run on made-up inputs failed where a branch rests on an input's value.

    When onnxruntime names the node it stopped at and that node reads a tensor
    computed after such a branch, the message names the node, the branch and
    the input, and leaves onnxruntime's own text out; else it keeps that text.
    """
    node = None
    if failed is not None:
        op, name = failed
        node = next((n for n in g.node if n.name == name and n.op_type == op), None)
    cause = next((hung[t] for t in (node.input if node is not None else ()) if t in hung), None)
    if node is None or cause is None:
        branch, source = next(iter(hung.values()))
        return (
            f"{why}; the branch {branch!r} takes depends on the value of input {source!r}, "
            "which was made up"
        )
    branch, source = cause
    kind = next((n.op_type for n in g.node if (n.name or n.op_type) == branch), "control-flow")
    return (
        f"onnxruntime stopped at {node.op_type} node {node.name!r}, which depends on the result "
        f"of {kind} node {branch!r}; the branch {branch!r} takes depends on the value of "
        f"input {source!r}, and on made-up values it took one the rest of the model does "
        "not fit"
    )


def _dims_text(dims) -> str:
    if dims is None:
        return "unknown rank"
    return "x".join("?" if d is None else str(d) for d in dims) or "scalar"


def load_graph(
    path: str | os.PathLike | onnx.ModelProto,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    *,
    sample_inputs: Mapping[str, Any] | None = None,
    probe: bool = True,
) -> LayerGraph:
    """Load an ONNX file as a :class:`LayerGraph`, without reading weights.

    Parameters
    ----------
    path
        ONNX file (its external data file, if any, may be missing), or an
        in-memory ``onnx.ModelProto``.
    input_shapes
        Full shapes of graph inputs, keyed by input name, fixing their
        symbolic dimensions (default: only the batch dimension, set to 1).
    sample_inputs
        Real input values (arrays by input name, as ``--sample-inputs``
        reads them); they fix the inputs' shapes and are what a probe run
        feeds the model.
    probe
        When shape inference leaves an activation's size unknown, run the
        model once in onnxruntime (see :mod:`partopt.probe`) and take the
        observed shapes; without sample inputs it runs twice on different
        random values, and a size that changes is left unsettled.

    Raises
    ------
    ModelError
        Missing, truncated or non-ONNX file, cyclic or malformed graph,
        unknown input name in ``input_shapes``.
    """
    import onnx

    if not isinstance(path, (str, os.PathLike)):
        return graph_from_model(path, input_shapes, sample_inputs=sample_inputs, probe=probe)
    if not os.path.isfile(path):
        raise ModelError(f"model file {os.fspath(path)!r} not found")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise ModelError(
            f"{os.fspath(path)!r} is not a readable ONNX model (truncated or not ONNX: "
            f"{first_line(exc, 200)}); re-export it"
        ) from None
    stem = os.path.splitext(os.path.basename(path))[0]
    if not model.graph.node:
        raise ModelError(
            f"{os.fspath(path)!r} holds no graph nodes: it is not an ONNX model or is "
            "truncated; re-export it"
        )
    return graph_from_model(
        model,
        input_shapes,
        name=model.graph.name or stem,
        sample_inputs=sample_inputs,
        model_dir=os.path.dirname(os.path.abspath(path)),
        probe=probe,
    )


# -- the builder (after inference) ---------------------------------------------------


def _analyse(g) -> tuple[list[list[str]], list[tuple[int, int]], list[int]]:
    """Check the main graph and sort it.

    Returns, per node, every name it reads (outer-scope uses of its subgraphs
    included), the parameters inside its subgraphs as ``(bytes, elements)``,
    and a topological order of the nodes.
    """
    inits = {t.name for t in g.initializer} | {s.values.name for s in g.sparse_initializer}
    defined = inits | {vi.name for vi in g.input}
    nodes = list(g.node)
    reads: list[list[str]] = []
    sub_params: list[tuple[int, int]] = []
    producer: dict[str, int] = {}
    for i, node in enumerate(nodes):
        r = [t for t in node.input if t]
        nb = nc = 0
        for sub in _subgraphs(node):
            refs, b, c = _scan_subgraph(sub)
            r.extend(refs)
            nb, nc = nb + b, nc + c
        reads.append(list(dict.fromkeys(r)))
        sub_params.append((nb, nc))
        for o in node.output:
            if not o:
                continue
            if o in producer or o in defined:
                raise ModelError(
                    f"tensor {o!r} is defined twice (node {node.name or node.op_type!r}); "
                    "the model is malformed: re-export it"
                )
            producer[o] = i
    for i, node in enumerate(nodes):
        for t in reads[i]:
            if t not in producer and t not in defined:
                raise ModelError(
                    f"node {node.name or node.op_type!r} reads tensor {t!r}, which no node, "
                    "input or initializer defines; the model is malformed: re-export it"
                )
    deps = [[producer[t] for t in reads[i] if t in producer] for i in range(len(nodes))]
    return reads, sub_params, _toposort(nodes, deps)


def _build(
    m,
    name: str,
    warnings: list[str],
    reads: list[list[str]],
    sub_params: list[tuple[int, int]],
    overrides: Mapping[str, tuple[int, tuple | None]] | None = None,
) -> LayerGraph:
    """The layer graph of a shape-inferred model whose nodes are sorted.

    ``overrides`` are shapes measured by a probe run, which win over inference.
    """
    g = m.graph
    shapes: dict[str, tuple[int, tuple | None]] = {}
    _collect_shapes(g, shapes)
    shapes.update(overrides or {})

    def shape_of(t: str):
        s = shapes.get(t)
        return None if s is None else s[1]

    leaf_size: dict[str, tuple[int, int]] = {}  # constant leaf -> (bytes, elements)
    for t in g.initializer:
        leaf_size[t.name] = _tensor_proto_size(t)
    for s in g.sparse_initializer:
        leaf_size[s.values.name] = _sparse_size(s)
    graph_inputs = [vi.name for vi in g.input if vi.name not in leaf_size]
    nodes = list(g.node)
    order = range(len(nodes))

    # Fold constants: a Constant node, or a node computed only from constants.
    leaves: dict[str, frozenset[str]] = {t: frozenset((t,)) for t in leaf_size}
    layer_ids: list[int] = []
    for i in order:
        node = nodes[i]
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for o in node.output:
                if o:
                    leaf_size[o] = _constant_size(node)
                    leaves[o] = frozenset((o,))
            continue
        if (
            reads[i]
            and node.op_type not in _NEVER_FOLD
            and not _subgraphs(node)
            and all(t in leaves for t in reads[i])
        ):
            folded = frozenset().union(*(leaves[t] for t in reads[i]))
            for o in node.output:
                if o:
                    leaves[o] = folded
            continue
        layer_ids.append(i)

    tensors: dict[str, TensorInfo] = {}

    def add_tensor(t: str) -> None:
        elem_type, dims = shapes.get(t, (0, None))
        elements = _elements_of(dims)
        nbytes = None if elements is None else _nbytes(elements, elem_type)
        tensors[t] = TensorInfo(t, dims, _DTYPE_NAMES.get(elem_type, str(elem_type)), nbytes)

    for t in graph_inputs:
        add_tensor(t)

    counted: set[str] = set()
    used_names: set[str] = set()
    layers: list[LayerNode] = []
    for i in layer_ids:
        node = nodes[i]
        base = node.name or f"{node.op_type}_{len(layers)}"
        lname, k = base, 1
        while lname in used_names:
            lname, k = f"{base}_{k}", k + 1
        used_names.add(lname)
        act = tuple(t for t in reads[i] if t not in leaves)
        mine: list[str] = []
        for t in reads[i]:
            for leaf in sorted(leaves.get(t, ())):
                if leaf not in counted:
                    counted.add(leaf)
                    mine.append(leaf)
        nb, nc = sub_params[i]
        nb += sum(leaf_size[x][0] for x in mine)
        nc += sum(leaf_size[x][1] for x in mine)
        outs = tuple(o for o in node.output if o)
        for o in outs:
            add_tensor(o)
        layers.append(
            LayerNode(
                name=lname,
                op_type=node.op_type,
                inputs=act,
                outputs=outs,
                param_bytes=int(nb),
                param_count=int(nc),
                flops=int(_node_flops(node, shape_of)),
                params=tuple(mine),
            )
        )
    outputs = list(dict.fromkeys(o.name for o in g.output if o.name in tensors))
    return LayerGraph(name, layers, tensors, graph_inputs, outputs, warnings)
