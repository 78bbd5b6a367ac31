"""Stage export: one runnable ONNX model per pipeline stage.

A plan (see :mod:`partopt.plan`) names, for every stage, a node and a
contiguous run of blocks ``first_block..last_block`` of a :class:`~partopt.chain.Chain`.
The chain knows which ONNX nodes make up each block (``Chain.block_nodes``), so a
stage is the set of ONNX nodes of its blocks. :func:`split_model` turns the
stages into standalone models:

* inputs of stage ``j`` = the tensors *crossing into* it: produced before it
  (or graph inputs) and consumed by it or by a later stage, or graph outputs;
* outputs of stage ``j`` = the tensors crossing out of it; a tensor produced in
  stage 0 and consumed in stage 2 is an output of stage 0, an input *and*
  an output of stage 1 (passed through unchanged), an input of stage 2;
* stage 0's inputs are the graph inputs; the last stage's outputs are the
  graph outputs;
* weights (initializers, also those used inside ``If``/``Loop`` bodies) go
  with every stage that uses them; ``Constant`` nodes are treated as weights
  too: copied into every stage that reads them, never sent between stages.

Plan block indices refer to the chain built with one cut family
(``single`` by default, ``multi`` on request): a plan made with
``partopt solve --cuts multi`` must be exported with the same family
(the plan JSON that ``partopt solve --json`` prints records it as ``"cuts"``).

Architecture-only models (weights in an external data file that is not
shipped) cannot run; :func:`random_weights` gives them weights of the right
shapes and dtypes, seeded, so that the split can still be checked and timed.
:func:`check_export` runs the stages in sequence with onnxruntime and
compares the final outputs with the unsplit model's on random inputs.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from partopt.errors import PartoptError

__all__ = [
    "ExportError",
    "TensorSpec",
    "StageModel",
    "Export",
    "CheckReport",
    "load_model",
    "missing_weights",
    "random_weights",
    "concrete_input_shapes",
    "stage_ranges",
    "split_model",
    "write_export",
    "index_bounds",
    "random_inputs",
    "run_stages",
    "check_export",
    "session",
]

MANIFEST = "manifest.json"
"""File name of the manifest that :func:`write_export` writes next to the stages."""


class ExportError(PartoptError):
    """A model, chain or plan that cannot be exported; the message says why."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # onnxruntime prefixes "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : "
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


# -- tensors -------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """A tensor crossing a stage boundary: name, ONNX element type, shape, bytes.

    ``shape`` is ``None`` when it is unknown (no shape inference and no probe run).
    """

    name: str
    elem_type: int
    shape: tuple[int, ...] | None

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(helper.tensor_dtype_to_np_dtype(self.elem_type))

    @property
    def nbytes(self) -> int | None:
        if self.shape is None:
            return None
        return int(math.prod(self.shape)) * self.dtype.itemsize

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "dtype": self.dtype.name,
            "elem_type": self.elem_type,
            "shape": None if self.shape is None else list(self.shape),
            "bytes": self.nbytes,
        }

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        shape = d.get("shape")
        return cls(d["name"], int(d["elem_type"]), None if shape is None else tuple(shape))

    def value_info(self) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(
            self.name, self.elem_type, None if self.shape is None else list(self.shape)
        )


def _spec_from_value_info(vi: onnx.ValueInfoProto) -> TensorSpec | None:
    if not vi.type.HasField("tensor_type") or vi.type.tensor_type.elem_type == 0:
        return None
    tt = vi.type.tensor_type
    shape: tuple[int, ...] | None = None
    if tt.HasField("shape"):
        dims = []
        for d in tt.shape.dim:
            if not d.HasField("dim_value"):
                dims = None
                break
            dims.append(int(d.dim_value))
        shape = None if dims is None else tuple(dims)
    return TensorSpec(vi.name, int(tt.elem_type), shape)


# -- loading and weights ----------------------------------------------------------------


def _stored_tensors(
    graph: onnx.GraphProto,
) -> Iterable[tuple[onnx.TensorProto, onnx.NodeProto | None]]:
    """Every stored tensor of ``graph`` and its subgraphs, with the Constant node holding it."""
    for t in graph.initializer:
        yield t, None
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield attr.t, node
            elif attr.type == AttributeProto.GRAPH:
                yield from _stored_tensors(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _stored_tensors(g)


def _is_external(t: onnx.TensorProto) -> bool:
    return t.data_location == TensorProto.EXTERNAL


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file; external weights are loaded when their files exist.

    Architecture-only models (external data file missing) load fine; their
    weights are then listed by :func:`missing_weights`.
    """
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise ExportError(f"model file {str(path)!r} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        raise ExportError(
            f"{str(path)!r} is not a readable ONNX model: {str(exc).splitlines()[0]}"
        ) from None
    locations = set()
    for t, _ in _stored_tensors(model.graph):
        if _is_external(t):
            for kv in t.external_data:
                if kv.key == "location":
                    locations.add(kv.value)
    if locations and all((path.parent / loc).is_file() for loc in locations):
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
    return model


def missing_weights(model: onnx.ModelProto) -> list[str]:
    """Names of stored tensors whose data is not in the model (external, not loaded)."""
    out = []
    for t, node in _stored_tensors(model.graph):
        if _is_external(t):
            out.append(t.name or (node.output[0] if node is not None else "?"))
    return out


def _consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            uses.setdefault(name, []).append((node, i))
        for attr in node.attribute:
            subs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
            for g in subs:
                for k, v in _consumers(g).items():
                    uses.setdefault(k, []).extend(v)
    return uses


# (op_type, input index) -> (low, high) of a uniform draw: parameters whose sign or
# size matters for the model to compute finite numbers (variances, divisors, exponents).
_UNIFORM_BY_USE = {
    ("BatchNormalization", 1): (0.5, 1.5),
    ("BatchNormalization", 2): (-0.1, 0.1),
    ("BatchNormalization", 3): (-0.1, 0.1),
    ("BatchNormalization", 4): (0.5, 1.5),
    ("InstanceNormalization", 1): (0.5, 1.5),
    ("InstanceNormalization", 2): (-0.1, 0.1),
    ("LayerNormalization", 1): (0.5, 1.5),
    ("LayerNormalization", 2): (-0.1, 0.1),
    ("Add", 0): (-0.1, 0.1),
    ("Add", 1): (-0.1, 0.1),
    ("Sub", 0): (-0.1, 0.1),
    ("Sub", 1): (-0.1, 0.1),
    ("Div", 1): (0.5, 1.5),
    ("Pow", 1): (2.0, 2.0),
    ("Sqrt", 0): (0.5, 1.5),
    ("Log", 0): (0.5, 1.5),
    ("Reciprocal", 0): (0.5, 1.5),
}


def _random_array(t: onnx.TensorProto, use, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
    shape = tuple(int(d) for d in t.dims)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dtype)
    if dtype.kind in "iu":
        # integers are shapes, axes or indices in practice: 0 is valid for all of them
        return np.zeros(shape, dtype=dtype)
    if dtype.kind != "f":
        raise ExportError(f"cannot make random weights for tensor {t.name!r} of type {dtype}")
    bounds = _UNIFORM_BY_USE.get(use) if use else None
    if bounds is not None:
        lo, hi = bounds
        arr = np.full(shape, lo) if lo == hi else rng.uniform(lo, hi, size=shape)
    elif len(shape) >= 2:
        # variance-preserving scale, so that activations stay finite through deep models
        op = use[0] if use else ""
        fan_in = shape[0] if op == "MatMul" else math.prod(shape[1:])
        arr = rng.normal(0.0, 1.0 / math.sqrt(max(fan_in, 1)), size=shape)
    else:
        arr = rng.uniform(0.5, 1.5, size=shape)
    return arr.astype(dtype)


def random_weights(
    model: onnx.ModelProto, seed: int = 0, *, only_missing: bool = True
) -> onnx.ModelProto:
    """A copy of ``model`` whose weights are random, of the right shapes and dtypes.

    Parameters
    ----------
    model
        An ONNX model, typically architecture-only (weights in a missing
        external data file).
    seed
        Seed; each tensor draws from its own stream keyed by ``(seed, name)``,
        so the values do not depend on the order of tensors in the file.
    only_missing
        Replace only tensors whose data is missing (default); with ``False``
        every floating-point weight is replaced.

    Notes
    -----
    Float weights of rank >= 2 are drawn from ``N(0, 1/fan_in)`` so that
    activations keep their scale; normalisation scales and variances,
    divisors and ``Sqrt``/``Log`` operands from ``U(0.5, 1.5)``; additive
    biases from ``U(-0.1, 0.1)``; ``Pow`` exponents are 2; other vectors and
    scalars ``U(0.5, 1.5)``. Integer tensors (shapes, axes, indices) that are
    missing are filled with zeros.

    Examples
    --------
    >>> from onnx import helper, TensorProto as T
    >>> w = helper.make_tensor("w", T.FLOAT, [2, 3], np.zeros(6).tolist())
    >>> g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
    ...     [helper.make_tensor_value_info("x", T.FLOAT, [1, 2])],
    ...     [helper.make_tensor_value_info("y", T.FLOAT, [1, 3])], [w])
    >>> m = random_weights(helper.make_model(g), seed=1, only_missing=False)
    >>> numpy_helper.to_array(m.graph.initializer[0]).shape
    (2, 3)
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    uses = _consumers(out.graph)
    for t, node in _stored_tensors(out.graph):
        name = t.name or (node.output[0] if node is not None else "")
        if not _is_external(t) and (
            only_missing or np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).kind != "f"
        ):
            continue
        key = node.output[0] if node is not None else name
        use_list = uses.get(key, [])
        use = (use_list[0][0].op_type, use_list[0][1]) if use_list else None
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode())])
        arr = _random_array(t, use, rng)
        fresh = numpy_helper.from_array(arr, t.name)
        t.CopyFrom(fresh)
    return out


# -- shapes ----------------------------------------------------------------------------


def _initializer_names(graph: onnx.GraphProto) -> set[str]:
    return {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}


def concrete_input_shapes(
    model: onnx.ModelProto, input_shapes: dict[str, Sequence[int]] | None = None
) -> dict[str, tuple[int, ...]]:
    """Shape of every graph input: ``input_shapes`` where given, else symbolic dims set to 1."""
    given = dict(input_shapes or {})
    inits = _initializer_names(model.graph)
    names = [vi.name for vi in model.graph.input if vi.name not in inits]
    for name in given:
        if name not in names:
            raise ExportError(
                f"--input-shape names {name!r}, but the model's inputs are {', '.join(names)}"
            )
    out = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        if vi.name in given:
            out[vi.name] = tuple(int(d) for d in given[vi.name])
            continue
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = tuple(int(d.dim_value) if d.HasField("dim_value") else 1 for d in dims)
    return out


def _with_input_shapes(
    model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]
) -> onnx.ModelProto:
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for vi in fixed.graph.input:
        if vi.name in shapes:
            tt = vi.type.tensor_type
            tt.ClearField("shape")
            for d in shapes[vi.name]:
                tt.shape.dim.add().dim_value = int(d)
    for vi in fixed.graph.output:
        # symbolic output dims would clash with the now concrete ones
        vi.type.tensor_type.ClearField("shape")
    del fixed.graph.value_info[:]
    return fixed


def _infer(model: onnx.ModelProto) -> dict[str, TensorSpec]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - fall back to an onnxruntime probe
        inferred = model
    specs = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        s = _spec_from_value_info(vi)
        if s is not None and (s.name not in specs or specs[s.name].shape is None):
            specs[s.name] = s
    return specs


def session(model: onnx.ModelProto | bytes | str, threads: int = 1):
    """An onnxruntime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _probe(
    model: onnx.ModelProto, names: list[str], inputs: dict[str, np.ndarray]
) -> dict[str, TensorSpec]:
    """Element types and shapes of ``names`` from one onnxruntime run of ``model``."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for n in names:
        if n not in have:
            probe.graph.output.append(onnx.ValueInfoProto(name=n))
    sess = session(probe)
    outs = sess.run(names, inputs)
    return {
        n: TensorSpec(
            n, helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype), tuple(np.asarray(a).shape)
        )
        for n, a in zip(names, outs, strict=True)
    }


# -- plans -------------------------------------------------------------------------------


def stage_ranges(plan, num_blocks: int) -> list[tuple[object, int, int]]:
    """``(node, first_block, last_block)`` per stage of a plan, checked against the chain.

    ``plan`` is a :class:`~partopt.plan.Plan`, the dict ``partopt solve --json``
    prints (``{"stages": [{"node", "first_block", "last_block"}, ...], ...}``)
    or its list of stages.
    """
    from partopt.plan import InvalidPlan, Plan

    if isinstance(plan, Plan):
        items = [(s.node, s.first_block, s.last_block) for s in plan.stages]
    else:
        stages = plan.get("stages") if isinstance(plan, dict) else plan
        if not isinstance(stages, list) or not stages:
            status = plan.get("status") if isinstance(plan, dict) else None
            why = (
                f" (the solver's status was {status!r})"
                if status not in (None, "optimal", "feasible")
                else ""
            )
            raise InvalidPlan(f'plan has no "stages" list{why}')
        items = []
        for k, d in enumerate(stages):
            try:
                items.append((d["node"], int(d["first_block"]), int(d["last_block"])))
            except (KeyError, TypeError, ValueError):
                raise InvalidPlan(
                    f"stage {k} needs 'node', 'first_block' and 'last_block'"
                ) from None
    expected = 0
    for k, (_, first, last) in enumerate(items):
        if first != expected:
            raise InvalidPlan(
                f"stage {k} starts at block {first}, expected block {expected}: stages must cover "
                f"the chain's {num_blocks} blocks contiguously"
            )
        if last < first:
            raise InvalidPlan(f"stage {k} is empty (blocks {first}..{last})")
        expected = last + 1
    if expected != num_blocks:
        raise InvalidPlan(
            f"plan covers blocks 0..{expected - 1} but the chain has {num_blocks} blocks "
            "(was the plan made for another model or another --cuts family?)"
        )
    nodes = [n for n, _, _ in items]
    dup = sorted({str(n) for n in nodes if nodes.count(n) > 1})
    if dup:
        raise InvalidPlan(f"node {dup[0]!r} hosts more than one stage; stages need distinct nodes")
    return items


def _op_sets(plan, chain) -> list[tuple[object, list[int]]] | None:
    """``(node, block indices)`` per stage of a DAG plan (operator sets), ``None`` for chain plans.

    DAG operators are the blocks of the multi-tensor chain (one layer each);
    operators may be given by index or by layer name. Every block must be in
    exactly one stage; whether the stages follow the graph is checked by the split.
    """
    from partopt.plan import InvalidPlan, OpStage, Plan

    if isinstance(plan, Plan):
        if not plan.is_dag:
            return None
        items = [(s.node, list(s.ops)) for s in plan.stages if isinstance(s, OpStage)]
    else:
        stages = plan.get("stages") if isinstance(plan, dict) else plan
        if (
            not isinstance(stages, list)
            or not stages
            or not all(isinstance(d, dict) and "ops" in d for d in stages)
        ):
            return None
        by_name = {names[0]: b for b, names in enumerate(chain.block_nodes) if len(names) == 1}
        items = []
        for k, d in enumerate(stages):
            try:
                ops = [by_name[o] if isinstance(o, str) else int(o) for o in d["ops"]]
            except (KeyError, TypeError, ValueError):
                raise InvalidPlan(
                    f"stage {k} lists an operator the model's layers do not name "
                    "(export DAG plans with the multi-tensor chain of the same model)"
                ) from None
            items.append((d["node"], ops))
    seen = [b for _, ops in items for b in ops]
    if sorted(seen) != list(range(chain.num_blocks)):
        raise InvalidPlan(
            f"the DAG plan's stages must hold each of the {chain.num_blocks} layers exactly once "
            "(was it made for another model?)"
        )
    nodes = [str(n) for n, _ in items]
    if len(set(nodes)) != len(nodes):
        raise InvalidPlan("a node hosts more than one stage; stages need distinct nodes")
    return items


# -- splitting ---------------------------------------------------------------------------


@dataclass
class StageModel:
    """One exported stage: the node that runs it, its blocks, model and boundary tensors."""

    index: int
    node: object
    first_block: int
    last_block: int
    model: onnx.ModelProto
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    onnx_nodes: int = 0

    @property
    def input_bytes(self) -> int | None:
        return _sum_bytes(self.inputs)

    @property
    def output_bytes(self) -> int | None:
        return _sum_bytes(self.outputs)


def _sum_bytes(specs: Iterable[TensorSpec]) -> int | None:
    sizes = [s.nbytes for s in specs]
    return None if any(b is None for b in sizes) else int(sum(sizes))


@dataclass
class Export:
    """A split model: its stages, graph inputs and outputs (with concrete shapes)."""

    stages: list[StageModel]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    model_name: str = ""
    meta: dict = field(default_factory=dict)

    def manifest(self) -> dict:
        """JSON-ready description: stage -> node, files, input/output tensors and bytes."""
        return {
            "model": self.model_name,
            **self.meta,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "stages": [
                {
                    "stage": s.index,
                    "node": s.node,
                    "first_block": s.first_block,
                    "last_block": s.last_block,
                    "file": f"stage_{s.index}.onnx",
                    "onnx_nodes": s.onnx_nodes,
                    "inputs": [t.to_dict() for t in s.inputs],
                    "outputs": [t.to_dict() for t in s.outputs],
                    "input_bytes": s.input_bytes,
                    "output_bytes": s.output_bytes,
                }
                for s in self.stages
            ],
        }


def _subgraph_refs(graph: onnx.GraphProto) -> set[str]:
    """Outer-scope names a subgraph reads (used but not defined inside it)."""
    defined = {vi.name for vi in graph.input} | _initializer_names(graph)
    used: set[str] = set()
    for node in graph.node:
        used.update(n for n in node.input if n)
        for attr in node.attribute:
            for g in [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs):
                used |= _subgraph_refs(g)
        defined.update(node.output)
    used.update(o.name for o in graph.output)
    return used - defined


def _subgraph_list(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    out = []
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            out.append(attr.g)
        elif attr.type == AttributeProto.GRAPHS:
            out.extend(attr.graphs)
    return out


def _node_reads(node: onnx.NodeProto) -> list[str]:
    """Every name ``node`` reads: its inputs and what its subgraphs read from outside."""
    names = [n for n in node.input if n]
    for g in _subgraph_list(node):
        names.extend(sorted(_subgraph_refs(g)))
    return list(dict.fromkeys(names))


def _topological(nodes, subset: Iterable[int] | None = None) -> list[int]:
    """Indices of ``nodes`` (or of ``subset``) in a topological order, file order on ties."""
    keep = sorted(range(len(nodes)) if subset is None else set(subset))
    producer = {o: i for i in keep for o in nodes[i].output if o}
    deps = {i: {producer[r] for r in _node_reads(nodes[i]) if r in producer} - {i} for i in keep}
    users: dict[int, list[int]] = {i: [] for i in keep}
    for i in keep:
        for d in deps[i]:
            users[d].append(i)
    ready = [i for i in keep if not deps[i]]
    heapq.heapify(ready)
    out = []
    while ready:
        i = heapq.heappop(ready)
        out.append(i)
        for u in users[i]:
            deps[u].discard(i)
            if not deps[u]:
                heapq.heappush(ready, u)
    if len(out) != len(keep):
        raise ExportError("the model graph has a cycle; it is not a valid ONNX model")
    return out


def _is_weight_node(node: onnx.NodeProto) -> bool:
    return node.op_type == "Constant" and node.domain in ("", "ai.onnx")


def _node_key(node: onnx.NodeProto, position: int) -> str:
    return node.name or f"#{position}"


def split_model(
    model: onnx.ModelProto,
    chain,
    plan,
    *,
    input_shapes: dict[str, Sequence[int]] | None = None,
    layer_graph=None,
) -> Export:
    """Split ``model`` into one standalone ONNX model per stage of ``plan``.

    Parameters
    ----------
    model
        The ONNX model (weights needed only to *run* the stages).
    chain
        The :class:`~partopt.chain.Chain` the plan was made for; its
        ``block_nodes`` name the ONNX nodes of every block.
    plan
        A :class:`~partopt.plan.Plan` or the dict ``partopt solve --json`` prints.
    input_shapes
        Shapes of graph inputs; other symbolic dimensions are set to 1.
    layer_graph
        The :class:`~partopt.onnx_graph.LayerGraph` the chain was built from;
        it maps the chain's layer names to ONNX nodes also when the ONNX
        nodes are unnamed. Without it, layer names must be ONNX node names.

    Raises
    ------
    ExportError
        If the chain does not name the model's nodes, or a stage would read
        a tensor that only a later stage produces.
    """
    graph = model.graph
    if not chain.block_nodes:
        raise ExportError(
            "the chain has no block_nodes (a synthetic chain?); build it from the ONNX model "
            "with partopt.chain.load_chain"
        )
    op_sets = _op_sets(plan, chain)
    if op_sets is None:
        ranges = stage_ranges(plan, chain.num_blocks)
        blocks_of = [range(first, last + 1) for _, first, last in ranges]
    else:  # a DAG plan: stages are sets of the multi-tensor chain's one-layer blocks
        ranges = [(node, min(ops), max(ops)) for node, ops in op_sets]
        blocks_of = [ops for _, ops in op_sets]
    if len(chain.block_nodes) != chain.num_blocks:
        raise ExportError(
            f"chain has {chain.num_blocks} blocks but node lists for {len(chain.block_nodes)}"
        )
    keys = [_node_key(n, i) for i, n in enumerate(graph.node)]
    by_key = {k: i for i, k in enumerate(keys)}
    by_output = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    # Layer names of the chain builder are ONNX node names, synthesised for unnamed
    # nodes; a layer graph (when given) names the tensors each layer produces, which
    # identify the ONNX node whatever its name.
    layer_outputs = {}
    if layer_graph is not None:
        layer_outputs = {ln.name: ln.outputs for ln in layer_graph.nodes}
    stage_of: dict[int, int] = {}
    for k, blocks in enumerate(blocks_of):
        for b in blocks:
            for name in chain.block_nodes[b]:
                outs = layer_outputs.get(name, ())
                i = by_output.get(outs[0]) if outs else by_key.get(name)
                if i is None:
                    raise ExportError(
                        f"block {b} names ONNX node {name!r}, which the model does not have "
                        "(was the chain built from another model?)"
                    )
                stage_of[i] = k
    num_stages = len(ranges)
    inits = _initializer_names(graph)
    # Constant nodes, and nodes computed only from constants, are weights of the layers
    # that read them (SPEC section 1; the chain builder folds them): they are copied into
    # every stage that reads them and never sent between stages.
    weight_nodes: set[int] = set()
    constant_out: dict[str, int] = {}
    for i in _topological(graph.node):
        n = graph.node[i]
        reads = _node_reads(n)
        foldable = _is_weight_node(n) or (
            i not in stage_of
            and reads
            and not _subgraph_list(n)
            and all(r in inits or r in constant_out for r in reads)
        )
        if foldable:
            weight_nodes.add(i)
            stage_of.pop(i, None)
            constant_out.update({o: i for o in n.output if o})
    for i, n in enumerate(graph.node):
        if i not in stage_of and i not in weight_nodes:
            raise ExportError(
                f"ONNX node {keys[i]!r} ({n.op_type}) is in no block of the chain; "
                "was the chain built from another model?"
            )

    graph_inputs = [vi.name for vi in graph.input if vi.name not in inits]
    graph_outputs = [vi.name for vi in graph.output]
    producer: dict[str, int] = {name: -1 for name in graph_inputs}
    for i, n in enumerate(graph.node):
        if i in stage_of:
            for o in n.output:
                if o:
                    producer[o] = stage_of[i]
    last_use: dict[str, int] = {}
    for i, n in enumerate(graph.node):
        if i not in stage_of:
            continue
        k = stage_of[i]
        for name in _node_reads(n):
            if name in inits or name in constant_out:
                continue
            if name not in producer:
                raise ExportError(f"ONNX node {keys[i]!r} reads {name!r}, which nothing produces")
            if producer[name] > k:
                raise ExportError(
                    f"stage {k} runs node {keys[i]!r}, which reads {name!r} from stage "
                    f"{producer[name]}: the plan's cuts do not separate the graph"
                )
            last_use[name] = max(last_use.get(name, -1), k)
    for name in graph_outputs:
        if name in constant_out or name in inits:
            raise ExportError(f"graph output {name!r} is a constant; nothing to pipeline")
        last_use[name] = num_stages  # graph outputs travel to the end of the pipeline

    def crossing(boundary: int) -> list[str]:
        """Tensors produced at or before stage ``boundary`` and used after it."""
        out = [t for t in producer if producer[t] <= boundary < last_use.get(t, -1)]
        return out

    # Shapes: graph inputs made concrete, then shape inference, then a probe if needed.
    shapes = concrete_input_shapes(model, input_shapes)
    fixed = _with_input_shapes(model, shapes)
    specs = _infer(fixed)
    boundaries = [crossing(b) for b in range(-1, num_stages)]
    boundaries[0] = [t for t in graph_inputs if t in last_use]
    boundaries[-1] = list(graph_outputs)
    needed = list(dict.fromkeys(t for b in boundaries for t in b))
    unknown = [t for t in needed if t not in specs or specs[t].shape is None]
    if unknown and not missing_weights(fixed):
        probe_in = random_inputs(
            [specs[t] for t in graph_inputs], seed=0, bounds=index_bounds(model)
        )
        specs.update(_probe(fixed, [t for t in unknown if t not in graph_inputs], probe_in))
    for t in needed:
        if t not in specs:
            raise ExportError(
                f"cannot tell the type of tensor {t!r}; give the model weights "
                "(--random-weights SEED) so that a probe run can"
            )

    stages = []
    value_info = {vi.name: vi for vi in fixed.graph.value_info}
    for k, (node_label, first, last) in enumerate(ranges):
        ins, outs = boundaries[k], boundaries[k + 1]
        idx = [i for i in range(len(graph.node)) if stage_of.get(i) == k]
        # the folded constants this stage reads, with the constants they are computed from
        need = [name for j in idx for name in _node_reads(graph.node[j]) if name in constant_out]
        consts: set[int] = set()
        while need:
            i = constant_out[need.pop()]
            if i not in consts:
                consts.add(i)
                need.extend(r for r in _node_reads(graph.node[i]) if r in constant_out)
        order = _topological(graph.node, consts | set(idx))
        nodes = [graph.node[i] for i in order]
        read_names = {name for n in nodes for name in _node_reads(n)}
        stage_inits = [t for t in graph.initializer if t.name in read_names]
        stage_sparse = [t for t in graph.sparse_initializer if t.values.name in read_names]
        produced = {o for n in nodes for o in n.output}
        vis = [value_info[o] for o in sorted(produced) if o in value_info and o not in outs]
        g = helper.make_graph(
            nodes,
            f"{graph.name or 'model'}_stage{k}",
            [specs[t].value_info() for t in ins],
            [specs[t].value_info() for t in outs],
            initializer=stage_inits,
            value_info=vis,
            sparse_initializer=stage_sparse,
        )
        m = helper.make_model(
            g,
            opset_imports=list(model.opset_import),
            ir_version=model.ir_version,
            producer_name="partopt.export",
        )
        m.functions.extend(model.functions)
        stages.append(
            StageModel(
                k,
                node_label,
                first,
                last,
                m,
                tuple(specs[t] for t in ins),
                tuple(specs[t] for t in outs),
                len(idx),
            )
        )
    return Export(
        stages,
        tuple(specs[t] for t in boundaries[0]),
        tuple(specs[t] for t in graph_outputs),
        model_name=chain.name,
        meta={
            "input_shapes": {k: list(v) for k, v in shapes.items()},
            "index_bounds": index_bounds(model),
        },
    )


def write_export(export: Export, outdir: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``stage_<k>.onnx`` for every stage and ``manifest.json``; returns the manifest path."""
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(
            f"cannot create output directory {str(outdir)!r}: {exc.strerror}"
        ) from None
    for s in export.stages:
        onnx.save(s.model, str(outdir / f"stage_{s.index}.onnx"))
    manifest = export.manifest()
    if extra:
        manifest.update(extra)
    path = outdir / MANIFEST
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path


# -- running and checking ----------------------------------------------------------------


def index_bounds(model: onnx.ModelProto) -> dict[str, int]:
    """For integer graph inputs, one more than the largest value that is safe to feed.

    An input used as ``Gather`` indices into a stored table (token ids,
    token types, positions) may go up to the table's size along the gather
    axis; every other integer input gets 2 (values 0 and 1, which suit
    masks as well).
    """
    graph = model.graph
    tables = {t.name: tuple(t.dims) for t in graph.initializer}
    inits = _initializer_names(graph)
    out: dict[str, int] = {}
    for vi in graph.input:
        if vi.name in inits:
            continue
        elem = vi.type.tensor_type.elem_type
        if elem == 0 or np.dtype(helper.tensor_dtype_to_np_dtype(elem)).kind not in "iu":
            continue
        bound = None
        for node in graph.node:
            if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == vi.name:
                dims = tables.get(node.input[0])
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                if dims:
                    size = int(dims[axis])
                    bound = size if bound is None else min(bound, size)
        out[vi.name] = max(1, bound if bound is not None else 2)
    return out


def random_inputs(
    specs: Sequence[TensorSpec], seed: int = 0, bounds: dict[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Random arrays for graph inputs: floats ~ N(0, 1), booleans, and integers in
    ``[0, bounds[name])`` (default 2; see :func:`index_bounds`)."""
    rng = np.random.default_rng(seed)
    bounds = bounds or {}
    out = {}
    for s in specs:
        if s.shape is None:
            raise ExportError(f"input {s.name!r} has no known shape; give --input-shape")
        dt = s.dtype
        if dt.kind == "f":
            out[s.name] = rng.standard_normal(s.shape).astype(dt)
        elif dt.kind in "iu":
            out[s.name] = rng.integers(0, bounds.get(s.name, 2), size=s.shape).astype(dt)
        elif dt.kind == "b":
            out[s.name] = rng.integers(0, 2, size=s.shape).astype(dt)
        else:
            raise ExportError(f"cannot make random values for input {s.name!r} of type {dt}")
    return out


def run_stages(
    export: Export, inputs: dict[str, np.ndarray], sessions=None
) -> dict[str, np.ndarray]:
    """Run the stages in sequence, each fed the tensors crossing into it; graph outputs."""
    sessions = sessions or [session(s.model) for s in export.stages]
    live = dict(inputs)
    for s, sess in zip(export.stages, sessions, strict=True):
        feed = {t.name: live[t.name] for t in s.inputs}
        names = [t.name for t in s.outputs]
        live = dict(zip(names, sess.run(names, feed), strict=True))
    return {t.name: live[t.name] for t in export.outputs}


@dataclass(frozen=True)
class CheckReport:
    """Largest difference between the split and the unsplit model's outputs."""

    ok: bool
    max_abs_error: float
    max_rel_error: float
    outputs: tuple[str, ...]
    stages: int

    def __str__(self) -> str:
        verdict = "match" if self.ok else "DIFFER"
        return (
            f"{self.stages} stages vs. unsplit model: outputs {verdict} "
            f"(max abs error {self.max_abs_error:.3g}, max relative error {self.max_rel_error:.3g})"
        )


def check_export(
    model: onnx.ModelProto,
    export: Export,
    *,
    seed: int = 0,
    rtol: float = 1e-3,
    atol: float = 1e-5,
) -> CheckReport:
    """Run every stage in sequence and compare with the unsplit model (same weights).

    Both run with onnxruntime on the same random inputs; outputs agree when
    ``|split - whole| <= atol + rtol * max|whole|`` element-wise (the
    reference scale is the output's largest magnitude, since random weights
    can make outputs large; graph optimisations may reorder float sums
    across what were stage boundaries).
    """
    if missing_weights(model):
        raise ExportError(
            f"the model has {len(missing_weights(model))} weights without data "
            "(architecture only); give it random weights first (--random-weights SEED)"
        )
    fixed = _with_input_shapes(model, {t.name: t.shape for t in export.inputs})
    inputs = random_inputs(export.inputs, seed, export.meta.get("index_bounds"))
    names = [t.name for t in export.outputs]
    try:
        whole = dict(zip(names, session(fixed).run(names, inputs), strict=True))
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own message, on one line
        raise ExportError(f"onnxruntime cannot run the whole model: {_one_line(exc)}") from None
    try:
        split = run_stages(export, inputs)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"onnxruntime cannot run the stages: {_one_line(exc)}") from None
    ok, max_abs, max_rel = True, 0.0, 0.0
    for n in names:
        a, b = np.asarray(whole[n]), np.asarray(split[n])
        if a.shape != b.shape or a.dtype != b.dtype:
            ok = False
            max_abs = max_rel = math.inf
            continue
        if a.dtype.kind not in "fc":
            if not np.array_equal(a, b):
                ok, max_abs, max_rel = False, math.inf, math.inf
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        if not (np.isfinite(a64).all() and np.isfinite(b64).all()):
            # equal NaNs prove little, and no finite value proves nothing
            same = np.array_equal(a64, b64, equal_nan=True) and bool(np.isfinite(a64).any())
            ok = ok and same
            if not same:
                max_abs = max_rel = math.inf
            continue
        err = float(np.max(np.abs(a64 - b64))) if a.size else 0.0
        scale = float(np.max(np.abs(a64))) if a.size else 0.0
        max_abs = max(max_abs, err)
        max_rel = max(max_rel, err / scale if scale > 0 else (0.0 if err == 0 else math.inf))
        if err > atol + rtol * scale:
            ok = False
    return CheckReport(ok, max_abs, max_rel, tuple(names), len(export.stages))
