"""Running a model once to learn what static shape inference cannot tell.

ONNX shape inference cannot follow sizes computed inside the graph (a
``Shape -> Gather -> Slice`` chain, a ``Reshape`` target built from shapes,
``Expand`` of a ``ConstantOfShape``, ``Loop`` outputs, many ``com.microsoft``
ops). :func:`probe_shapes` runs the model in onnxruntime with those tensors
exposed as outputs and reads their shapes. It needs weights: the model's own
when they are at hand, else random ones of the right shapes
(:func:`partopt.weights.random_weights`), since planning never depends on
weight values.

Inputs for a run come from the user (``--sample-inputs FILE.npz``, arrays by
input name; :func:`load_sample_inputs`) or are drawn by :func:`random_inputs`:
floats ~ N(0, 1), booleans, and integers bounded by what they index
(:func:`index_bounds`). Without sample inputs the model runs twice on
different values; a tensor whose shape differs between the runs depends on
input values, and its size is left unsettled rather than guessed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from partopt.errors import PartoptError, first_line

__all__ = [
    "ProbeError",
    "ProbeResult",
    "index_bounds",
    "input_specs",
    "load_sample_inputs",
    "make_inputs",
    "probe_shapes",
    "random_inputs",
    "session",
]


class ProbeError(PartoptError):
    """Inputs a model cannot be run on; the message is one line.

    ``values_may_help`` is false when real input values would not help
    either (onnxruntime lacks a kernel for an op). ``failed_node`` is the
    ``(op type, node name)`` onnxruntime stopped at, when its message says.
    """

    def __init__(
        self,
        message: str,
        *,
        values_may_help: bool = True,
        failed_node: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.values_may_help = values_may_help
        self.failed_node = failed_node


_FAILED_NODE = re.compile(r"while running (\w+) node\. Name:'([^']*)'")


def failed_node(text: str) -> tuple[str, str] | None:
    """``(op type, node name)`` of the node an onnxruntime error message names, if any."""
    m = _FAILED_NODE.search(text)
    return (m.group(1), m.group(2)) if m else None


def session(model: onnx.ModelProto | bytes | str, threads: int = 1, *, optimize: bool = True):
    """An onnxruntime CPU session with ``threads`` intra-op threads.

    ``optimize=False`` turns graph optimisations off, so that every exposed
    intermediate tensor is computed as the file says.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4  # failures reach the caller as exceptions, on one line
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


# -- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """A graph input: name, ONNX element type, shape (``None`` entries: unknown)."""

    name: str
    elem_type: int
    shape: tuple[int | None, ...] | None

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(helper.tensor_dtype_to_np_dtype(self.elem_type))


def _initializer_names(graph: onnx.GraphProto) -> set[str]:
    return {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """Every declared graph input that is not an initializer, as the file declares it."""
    inits = _initializer_names(model.graph)
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape: tuple[int | None, ...] | None = None
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            shape = tuple(
                int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim
            )
        out.append(InputSpec(vi.name, int(tt.elem_type), shape))
    return out


def load_sample_inputs(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Arrays by input name from an ``.npz`` file (``numpy.savez``), as given to ``--sample-inputs``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("it holds one array, not arrays by input name")
            arrays = {name: np.asarray(data[name]) for name in data.files}
    except FileNotFoundError:
        raise ProbeError(f"sample inputs file {str(path)!r} not found") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's
        raise ProbeError(
            f"sample inputs file {str(path)!r} is not an .npz of arrays by input name "
            f"(numpy.savez(FILE, name=array, ...)): {first_line(exc, 300)}"
        ) from None
    if not arrays:
        raise ProbeError(f"sample inputs file {str(path)!r} holds no arrays")
    return arrays


def _shape_map(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Tensor name -> known dims, from the file's value infos, inputs and initializers."""
    g = model.graph
    out: dict[str, tuple[int | None, ...]] = {}
    for vi in (*g.input, *g.value_info, *g.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            out[vi.name] = tuple(
                int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim
            )
    for t in g.initializer:
        out[t.name] = tuple(int(d) for d in t.dims)
    for node in g.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = tuple(int(d) for d in a.t.dims)
    return out


# Ops through which an integer input keeps its values (index tensors are often cast,
# unsqueezed or reshaped before they index).
_PASS_THROUGH = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Expand",
                 "Tile", "Transpose", "Concat", "Slice", "Split"}  # fmt: skip
# op -> (index input, data input, axis attribute or None for "leading dims").
_INDEXING = {
    "Gather": (1, 0, "axis"),
    "GatherElements": (1, 0, "axis"),
    "GatherND": (1, 0, None),
    "ScatterElements": (1, 0, "axis"),
    "Scatter": (1, 0, "axis"),
    "ScatterND": (1, 0, None),
}


def _bound_of_use(node: onnx.NodeProto, i: int, dims: Mapping[str, tuple]) -> int | None:
    op = node.op_type
    if node.domain == "com.microsoft" and op == "EmbedLayerNormalization":
        table = {0: 2, 1: 4}.get(i)  # input_ids -> word table, segment_ids -> segment table
        shape = (
            dims.get(node.input[table]) if table is not None and len(node.input) > table else None
        )
        return shape[0] if shape else None
    if op not in _INDEXING:
        return None
    index, data, axis_attr = _INDEXING[op]
    if i != index or len(node.input) <= data:
        return None
    shape = dims.get(node.input[data])
    if not shape:
        return None
    if axis_attr is None:  # ND indices address the leading dims: the smallest is safe
        batch = next((a.i for a in node.attribute if a.name == "batch_dims"), 0)
        known = [d for d in shape[batch:] if d is not None]
        return min(known) if known else None
    axis = next((a.i for a in node.attribute if a.name == axis_attr), 0)
    axis = axis + len(shape) if axis < 0 else axis
    return shape[axis] if 0 <= axis < len(shape) else None


def index_bounds(model: onnx.ModelProto) -> dict[str, int]:
    """For integer graph inputs, one more than the largest value that is safe to feed.

    An input used, directly or through casts and reshapes, as the indices of
    ``Gather``, ``GatherElements``, ``GatherND``, ``ScatterElements`` or
    ``ScatterND`` (token ids into an embedding table, edge lists into a
    graph's node slots, positions) may go up to the smallest size it indexes;
    ``com.microsoft`` ``EmbedLayerNormalization`` ids are bounded by their
    tables. Every other integer input gets 2 (values 0 and 1, which suit
    masks as well).
    """
    g = model.graph
    if not g.value_info:  # sizes of computed tensors (what scatters index into) need inference
        try:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception:  # noqa: BLE001 - best effort: initializers and inputs still tell a lot
            pass
    dims = _shape_map(model)
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in g.node:
        for i, name in enumerate(node.input):
            if name:
                uses.setdefault(name, []).append((node, i))
    out: dict[str, int] = {}
    for spec in input_specs(model):
        if spec.elem_type == 0 or spec.elem_type == onnx.TensorProto.STRING:
            continue
        if spec.dtype.kind not in "iu":
            continue
        bound: int | None = None
        seen, todo = {spec.name}, [spec.name]
        while todo:
            name = todo.pop()
            for node, i in uses.get(name, []):
                b = _bound_of_use(node, i, dims)
                if b is not None:
                    bound = b if bound is None else min(bound, b)
                if node.op_type in _PASS_THROUGH and (i == 0 or node.op_type == "Concat"):
                    for o in node.output:
                        if o and o not in seen:
                            seen.add(o)
                            todo.append(o)
        out[spec.name] = max(1, bound if bound is not None else 2)
    return out


def random_inputs(specs: Sequence[Any], seed: int = 0, bounds: dict[str, int] | None = None):
    """Random arrays for graph inputs: floats ~ N(0, 1), booleans, and integers in
    ``[0, bounds[name])`` (default 2; see :func:`index_bounds`).

    ``specs`` are objects with ``name``, ``dtype`` and a concrete ``shape``.
    """
    rng = np.random.default_rng(seed)
    bounds = bounds or {}
    out = {}
    for s in specs:
        if s.shape is None or any(d is None for d in s.shape):
            raise ProbeError(
                f"input {s.name!r} has no known shape; give it with --input-shape or --sample-inputs"
            )
        dt = s.dtype
        if dt.kind == "f":
            out[s.name] = np.asarray(rng.standard_normal(s.shape), dtype=dt)
        elif dt.kind in "iu":
            out[s.name] = np.asarray(rng.integers(0, bounds.get(s.name, 2), size=s.shape), dtype=dt)
        elif dt.kind == "b":
            out[s.name] = np.asarray(rng.integers(0, 2, size=s.shape), dtype=dt)
        else:
            raise ProbeError(
                f"input {s.name!r} holds {dt.name if dt.kind != 'O' else 'strings'}, which random "
                "values cannot stand in for; give its values with --sample-inputs FILE.npz"
            )
    return out


def make_inputs(
    model: onnx.ModelProto,
    shapes: Mapping[str, Sequence[int]],
    *,
    sample: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A value for every declared graph input: ``sample`` where given, else random.

    ``shapes`` gives the concrete shape of each input without a sample.
    Random integers are bounded by :func:`index_bounds`.
    """
    sample = dict(sample or {})
    specs = input_specs(model)
    known = {s.name for s in specs}
    extra = sorted(set(sample) - known)
    if extra:
        raise ProbeError(
            f"sample inputs name {extra[0]!r}, which is not a graph input; the model's inputs "
            f"are: {', '.join(sorted(known)) or '(none)'}"
        )
    out: dict[str, np.ndarray] = {}
    todo = []
    for s in specs:
        if s.name in sample:
            out[s.name] = _as_input(sample[s.name], s)
        else:
            shape = tuple(shapes.get(s.name, s.shape or ()))
            todo.append(InputSpec(s.name, s.elem_type, shape))
    out.update(random_inputs(todo, seed, index_bounds(model)))
    return {s.name: out[s.name] for s in specs}


def _as_input(arr: np.ndarray, spec: InputSpec) -> np.ndarray:
    arr = np.asarray(arr)
    if spec.elem_type == onnx.TensorProto.STRING:
        if arr.dtype.kind not in "US O":
            raise ProbeError(f"sample input {spec.name!r} must hold strings, not {arr.dtype}")
        return arr.astype(object)
    want = spec.dtype
    if arr.dtype == want:
        return arr
    same_kind = (arr.dtype.kind in "iu" and want.kind in "iu") or arr.dtype.kind == want.kind
    if not same_kind:
        raise ProbeError(
            f"sample input {spec.name!r} is {arr.dtype}, but the model takes {want.name}"
        )
    return arr.astype(want)


# -- the probe run -------------------------------------------------------------------------


@dataclass
class ProbeResult:
    """What a probe run learnt.

    ``shapes`` maps tensor name -> ``(elem_type, dims)``; a dimension that
    differed between two runs on different values is ``None`` there, and the
    tensor is listed in ``varying`` with both shapes.
    """

    source: str  # "probe" (generated inputs) or "sample-inputs"
    shapes: dict[str, tuple[int, tuple[int | None, ...] | None]] = field(default_factory=dict)
    varying: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    weights: str = "model"


def _perturbed(inputs: dict[str, np.ndarray], bounds: dict[str, int], seed: int):
    """Other values of the same shapes: every integer moved by one within its bound."""
    rng = np.random.default_rng(seed + 1)
    out = {}
    for name, a in inputs.items():
        if a.dtype.kind == "f":
            out[name] = np.asarray(rng.standard_normal(a.shape), dtype=a.dtype)
        elif a.dtype.kind in "iu":
            b = max(1, bounds.get(name, 2))
            out[name] = np.asarray((a.astype(np.int64) + 1) % b, dtype=a.dtype)
        elif a.dtype.kind == "b":
            out[name] = np.logical_not(a)
        else:
            out[name] = a
    return out


def probe_shapes(
    model: onnx.ModelProto,
    names: Sequence[str],
    shapes: Mapping[str, Sequence[int]],
    *,
    sample: Mapping[str, np.ndarray] | None = None,
    model_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> ProbeResult:
    """Shapes of the main-graph tensors ``names`` observed in onnxruntime.

    Parameters
    ----------
    model
        The model, its inputs' shapes fixed; weights may be missing (external
        data is read from ``model_dir`` when it is there, else random weights
        are drawn).
    names
        Tensors to measure (node outputs of the main graph, including the
        outputs of ``If``/``Loop``/``Scan`` nodes).
    shapes
        Concrete shape of every input without a sample value.
    sample
        Real input values by name; with them the model runs once on them.
        Without, it runs on two sets of random values and a tensor whose
        shape differs is reported in ``varying``.

    Raises
    ------
    ProbeError
        onnxruntime cannot run the model on these inputs, or an input cannot
        be made up (strings, unknown shape).
    """
    from partopt.weights import load_external_weights, missing_weights, random_weights

    run = onnx.ModelProto()
    run.CopyFrom(model)
    weights = "model"
    if missing_weights(run):
        if model_dir is None or not load_external_weights(run, model_dir):
            run = random_weights(run, seed)
            weights = f"random (seed {seed})"
    inputs = make_inputs(run, shapes, sample=sample, seed=seed)
    feeds = [inputs] if sample else [inputs, _perturbed(inputs, index_bounds(run), seed)]
    original = [n.name for n in run.graph.node]
    try:
        # a Loop or Scan writes a profile event per node per iteration: expose instead
        looped = any(n.op_type in ("Loop", "Scan") for n in run.graph.node)
        runs = [{} for _ in feeds] if looped else _profiled_runs(run, names, feeds)
        rest = [n for n in names if any(n not in seen for seen in runs)]
        if rest:  # not in the profile: expose them as outputs and read them
            for seen, got in zip(runs, _exposed_runs(run, rest, feeds), strict=True):
                seen.update(got)
    except ProbeError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own message, on one line
        text = _PROBE_NAME.sub(lambda m: original[int(m.group(1))], first_line(exc, 300))
        missing = re.search(r"([\w.]*:?\w+)\(-?\d+\) is not a registered function/op", text)
        if missing or "NOT_IMPLEMENTED" in text:
            what = f"op {missing.group(1)}" if missing else "an op of the model"
            raise ProbeError(
                f"onnxruntime has no kernel for {what}, so no probe run can measure the "
                "sizes shape inference leaves unknown; declare them in the model's value_info "
                f"or replace the op ({text})",
                values_may_help=False,
            ) from None
        raise ProbeError(
            f"onnxruntime cannot run the model: {text}", failed_node=failed_node(text)
        ) from None
    result = ProbeResult("sample-inputs" if sample else "probe", weights=weights)
    for n in names:
        elem, a = runs[0][n]
        dims: tuple[int | None, ...] = a
        if len(runs) > 1:
            b = runs[1][n][1]
            if b != a:
                result.varying[n] = (a, b)
                if len(b) != len(a):
                    result.shapes[n] = (elem, None)
                    continue
                dims = tuple(x if x == y else None for x, y in zip(a, b, strict=True))
        result.shapes[n] = (elem, dims)
    return result


_PROBE_NAME = re.compile(r"partopt_probe_(\d+)")
# onnxruntime's names of tensor element types, as its profiler writes them
_ORT_ELEM = {
    "float": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6, "int64": 7,
    "string": 8, "bool": 9, "float16": 10, "double": 11, "uint32": 12, "uint64": 13,
    "bfloat16": 16,
}  # fmt: skip

Observed = dict[str, tuple[int, tuple[int, ...]]]


def _profiled_runs(
    model: onnx.ModelProto, names: Sequence[str], feeds: Sequence[Mapping[str, np.ndarray]]
) -> list[Observed]:
    """Shapes of ``names`` in one run per feed, read from onnxruntime's profile.

    The profiler records the type and shape of every node's outputs, so the
    intermediate tensors need not be graph outputs: onnxruntime frees them as
    it goes, which keeps a probe of a large model about as fast and small as
    one inference. Main-graph nodes get unique names in this copy, so that a
    node is found in the profile whatever the file calls it (or not at all).
    """
    import json
    import tempfile

    import onnxruntime as ort

    run = onnx.ModelProto()
    run.CopyFrom(model)
    for i, node in enumerate(run.graph.node):
        node.name = f"partopt_probe_{i}"
    wanted = set(names)
    outputs = [[o for o in node.output if o] for node in run.graph.node]
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 4
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "probe")
        sess = ort.InferenceSession(
            run.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        first_output = [sess.get_outputs()[0].name]
        for f in feeds:
            sess.run(first_output, dict(f))
        with open(sess.end_profiling()) as fh:
            events = json.load(fh)
    spans = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    runs: list[Observed] = [{} for _ in feeds]
    if len(spans) != len(feeds):
        return runs
    for e in events:
        m = _PROBE_NAME.fullmatch(str(e.get("name", "")).removesuffix("_kernel_time"))
        if e.get("cat") != "Node" or m is None or not e["name"].endswith("_kernel_time"):
            continue
        k = next((j for j, (a, b) in enumerate(spans) if a <= e["ts"] <= b), None)
        outs = outputs[int(m.group(1))]
        shapes = e.get("args", {}).get("output_type_shape")
        if k is None or not isinstance(shapes, list) or len(shapes) != len(outs):
            continue
        for name, ts in zip(outs, shapes, strict=True):
            if name not in wanted or not isinstance(ts, dict) or len(ts) != 1:
                continue
            ((kind, dims),) = ts.items()
            if kind in _ORT_ELEM and isinstance(dims, list):
                runs[k][name] = (_ORT_ELEM[kind], tuple(int(d) for d in dims))
    return runs


def _exposed_runs(
    model: onnx.ModelProto, names: Sequence[str], feeds: Sequence[Mapping[str, np.ndarray]]
) -> list[Observed]:
    """Shapes of ``names`` in one run per feed, the tensors made graph outputs."""
    run = onnx.ModelProto()
    run.CopyFrom(model)
    have = {o.name for o in run.graph.output}
    for n in names:
        if n not in have:
            run.graph.output.append(onnx.ValueInfoProto(name=n))
    sess = session(run, optimize=False)
    runs: list[Observed] = []
    for f in feeds:
        got = sess.run(list(names), dict(f))
        seen: Observed = {}
        for n, v in zip(names, got, strict=True):
            a = np.asarray(v)
            elem = helper.np_dtype_to_tensor_dtype(a.dtype) if a.dtype.kind != "O" else 8
            seen[n] = (int(elem), tuple(int(d) for d in a.shape))
        runs.append(seen)
    return runs
