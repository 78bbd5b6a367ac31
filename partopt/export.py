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

import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from partopt.errors import PartoptError, first_line
from partopt.onnx_graph import node_reads, subgraphs, topological_order
from partopt.probe import (
    ProbeError,
    index_bounds,
    make_inputs,
    probe_shapes,
    random_inputs,
    session,
)
from partopt.weights import load_model, missing_weights, random_weights

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
        dims: list[int] | None = []
        for d in tt.shape.dim:
            if not d.HasField("dim_value") or dims is None:
                dims = None
                break
            dims.append(int(d.dim_value))
        shape = None if dims is None else tuple(dims)
    return TensorSpec(vi.name, int(tt.elem_type), shape)


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
    specs: dict[str, TensorSpec] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        s = _spec_from_value_info(vi)
        if s is not None and (s.name not in specs or specs[s.name].shape is None):
            specs[s.name] = s
    return specs


# -- plans -------------------------------------------------------------------------------


def stage_ranges(plan, chain, memory: str | None = None) -> list[tuple[object, int, int]]:
    """``(node, first_block, last_block)`` per stage of a plan, checked against the chain.

    ``plan`` is a :class:`~partopt.plan.Plan`, the dict ``partopt solve --json``
    prints (``{"stages": [{"node", "first_block", "last_block"}, ...], ...}``)
    or its list of stages; ``chain`` is the :class:`~partopt.chain.Chain` it was
    made for (or a block count, when only the structure is to be checked).

    The plan is read with :meth:`Plan.from_dict <partopt.plan.Plan.from_dict>`
    and checked with :func:`~partopt.plan.evaluate`. Export has no cluster, so
    the problem evaluated is the one the plan itself defines: one node per
    stage, named as the plan names it (integer nodes keep their index), whose
    capacity is the memory the plan records for its stage (``memory_bytes``,
    as ``partopt solve --json`` writes it; without a record, exactly the
    stage's memory), complete links of equal bandwidth, and the plan's memory
    model (``memory``, else the plan's ``"memory"``, else ``peak``). So the
    stages must cover the chain contiguously, on distinct nodes, each within
    the memory its plan claims for it; bandwidths and speeds are not checked
    (export does not time anything).
    """
    from partopt.chain import Chain
    from partopt.cluster import Cluster
    from partopt.plan import InvalidPlan, Plan, Stage, evaluate
    from partopt.problem import Problem

    if isinstance(chain, numbers.Integral):
        chain = Chain.from_arrays(np.zeros(int(chain)), np.zeros(max(int(chain) - 1, 0)))
    if isinstance(plan, Plan):
        stages: list = [
            {"node": s.node, "first_block": s.first_block, "last_block": s.last_block}
            for s in plan.stages
            if isinstance(s, Stage)
        ]
    else:
        given = plan.get("stages") if isinstance(plan, dict) else plan
        if not isinstance(given, list) or not given:
            status = plan.get("status") if isinstance(plan, dict) else None
            why = (
                f" (the solver's status was {status!r})"
                if status not in (None, "optimal", "feasible")
                else ""
            )
            raise InvalidPlan(f'plan has no "stages" list{why}')
        stages = given
    if memory is None:
        memory = plan.get("memory") if isinstance(plan, dict) else None
    labels = [d.get("node") if isinstance(d, dict) else None for d in stages]
    indices = [
        int(x) for x in labels if isinstance(x, numbers.Integral) and not isinstance(x, bool)
    ]
    names = [str(i) for i in range(max(indices, default=-1) + 1)]
    names += list(dict.fromkeys(x for x in labels if isinstance(x, str) and x not in names))
    n = max(len(names), 1)
    names += [str(i) for i in range(len(names), n)]

    def problem(capacity: np.ndarray) -> Problem:
        cluster = Cluster(tuple(names), capacity, np.ones((n, n)))
        return Problem(chain, cluster, memory=memory or "peak")

    provisional = problem(np.ones(n))
    parsed = Plan.from_dict(stages, provisional)
    capacity = np.ones(n)
    b = chain.num_blocks
    for d, st in zip(stages, parsed.stages, strict=True):
        if not 0 <= st.node < n:
            continue  # evaluate names the node
        said = d.get("memory_bytes") if isinstance(d, dict) else None
        if isinstance(said, numbers.Real) and not isinstance(said, bool) and float(said) > 0:
            capacity[st.node] = float(said)
        elif 0 <= st.first_block <= st.last_block < b:
            capacity[st.node] = max(provisional.stage_memory(st.first_block, st.last_block), 1.0)
    try:
        evaluate(problem(capacity), parsed)
    except InvalidPlan as exc:
        msg = str(exc)
        if "chain has" in msg:
            msg += " (was the plan made for another model or another --cuts family?)"
        elif "bytes but node" in msg:
            msg += ", the memory the plan records for its stage"
        raise InvalidPlan(msg) from None
    return [
        (label, st.first_block, st.last_block)
        for label, st in zip(labels, parsed.stages, strict=True)
    ]


def _op_sets(plan, chain) -> list[tuple[object, list[int]]] | None:
    """``(node, block indices)`` per stage of a DAG plan (operator sets), ``None`` for chain plans.

    DAG operators are the blocks of the multi-tensor chain (one layer each);
    operators may be given by index or by layer name. Every block must be in
    exactly one stage; whether the stages follow the graph is checked by the split.
    """
    from partopt.plan import InvalidPlan, OpStage, Plan

    items: list[tuple[object, list[int]]]
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
    ops: tuple[int, ...] = ()  # a DAG stage's blocks (operators); empty for a block range

    @property
    def input_bytes(self) -> int | None:
        return _sum_bytes(self.inputs)

    @property
    def output_bytes(self) -> int | None:
        return _sum_bytes(self.outputs)


def _sum_bytes(specs: Iterable[TensorSpec]) -> int | None:
    sizes = [s.nbytes for s in specs]
    known = [b for b in sizes if b is not None]
    return None if len(known) < len(sizes) else int(sum(known))


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
                    **({"ops": list(s.ops)} if s.ops else {}),
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


def _fits(vi: onnx.ValueInfoProto, shape: tuple[int, ...] | None) -> bool:
    """Whether the declared type of ``vi`` admits a tensor of ``shape``."""
    tt = vi.type.tensor_type
    if shape is None or not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
        return shape is not None and vi.type.HasField("tensor_type")
    dims = tt.shape.dim
    return len(dims) == len(shape) and all(
        not d.HasField("dim_value") or d.dim_value <= 0 or d.dim_value == v
        for d, v in zip(dims, shape, strict=True)
    )


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
    sample_inputs: Mapping[str, np.ndarray] | None = None,
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
    sample_inputs
        Real input values by name (they fix the inputs' shapes and feed a
        probe run if one is needed).
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
    blocks_of: list[Sequence[int]]
    if op_sets is None:
        ranges = stage_ranges(plan, chain)
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
    # that read them (the chain builder folds them into their readers' parameter bytes): they are copied into
    # every stage that reads them and never sent between stages.
    weight_nodes: set[int] = set()
    constant_out: dict[str, int] = {}
    for i in topological_order(graph.node):
        n = graph.node[i]
        reads = node_reads(n)
        foldable = _is_weight_node(n) or (
            i not in stage_of
            and reads
            and not subgraphs(n)
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
        for name in node_reads(n):
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

    # Shapes: graph inputs made concrete, then shape inference, then the sizes the
    # layer graph settled (by its own probe run), then a probe run of our own.
    given = dict(input_shapes or {})
    for name, arr in (sample_inputs or {}).items():
        given.setdefault(name, tuple(np.shape(arr)))
    shapes = concrete_input_shapes(model, given)
    fixed = _with_input_shapes(model, shapes)
    specs = _infer(fixed)
    boundaries = [crossing(b) for b in range(-1, num_stages)]
    boundaries[0] = [t for t in graph_inputs if t in last_use]
    boundaries[-1] = list(graph_outputs)
    needed = list(dict.fromkeys(t for b in boundaries for t in b))

    def unknown() -> list[str]:
        return [t for t in needed if t not in specs or specs[t].shape is None]

    if unknown() and layer_graph is not None:
        for t in unknown():
            ti = layer_graph.tensors.get(t)
            if (
                ti is not None
                and ti.bytes is not None
                and ti.dtype in onnx.TensorProto.DataType.keys()
            ):
                shape = tuple(int(d) for d in ti.shape or ())
                specs[t] = TensorSpec(t, onnx.TensorProto.DataType.Value(ti.dtype), shape)
    why = ""
    todo = [t for t in unknown() if t not in graph_inputs]
    if todo:
        try:
            res = probe_shapes(fixed, todo, shapes, sample=sample_inputs)
        except ProbeError as exc:
            why = f": {exc}"
        else:
            for t, (elem, dims) in res.shapes.items():
                if dims is not None and all(d is not None for d in dims) and t not in res.varying:
                    specs[t] = TensorSpec(t, elem, tuple(int(d or 0) for d in dims))
                elif t not in specs:  # the type is enough for a stage boundary
                    specs[t] = TensorSpec(t, elem, None)
    for t in needed:
        if t not in specs:
            raise ExportError(f"cannot tell the type of tensor {t!r}{why}")

    # A graph input keeps the declaration of the file where the concrete shape fits it:
    # onnxruntime checks If branches against declared shapes, also branches never taken.
    declared = {
        vi.name: vi for vi in graph.input if vi.name in specs and _fits(vi, specs[vi.name].shape)
    }
    stages = []
    value_info = {vi.name: vi for vi in fixed.graph.value_info}
    for k, (node_label, first, last) in enumerate(ranges):
        ins, outs = boundaries[k], boundaries[k + 1]
        idx = [i for i in range(len(graph.node)) if stage_of.get(i) == k]
        # the folded constants this stage reads, with the constants they are computed from
        need = [name for j in idx for name in node_reads(graph.node[j]) if name in constant_out]
        consts: set[int] = set()
        while need:
            i = constant_out[need.pop()]
            if i not in consts:
                consts.add(i)
                need.extend(r for r in node_reads(graph.node[i]) if r in constant_out)
        order = topological_order(graph.node, consts | set(idx))
        nodes = [graph.node[i] for i in order]
        read_names = {name for n in nodes for name in node_reads(n)}
        stage_inits = [t for t in graph.initializer if t.name in read_names]
        stage_sparse = [t for t in graph.sparse_initializer if t.values.name in read_names]
        produced = {o for n in nodes for o in n.output}
        vis = [value_info[o] for o in sorted(produced) if o in value_info and o not in outs]
        g = helper.make_graph(
            nodes,
            f"{graph.name or 'model'}_stage{k}",
            [declared.get(t) or specs[t].value_info() for t in ins],
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
                () if op_sets is None else tuple(sorted(blocks_of[k])),
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
    sample_inputs: Mapping[str, np.ndarray] | None = None,
) -> CheckReport:
    """Run every stage in sequence and compare with the unsplit model (same weights).

    Both run with onnxruntime on the same inputs: ``sample_inputs`` where
    given, else random values (integers bounded by what they index, see
    :func:`partopt.probe.index_bounds`); every declared graph input is fed
    to the whole model, also one that no node reads. Outputs agree when
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
    shapes = {k: tuple(v) for k, v in export.meta.get("input_shapes", {}).items()}
    shapes.update({t.name: t.shape for t in export.inputs if t.shape is not None})
    inputs = make_inputs(model, shapes, sample=sample_inputs, seed=seed)
    fixed = _with_input_shapes(model, {k: tuple(np.shape(v)) for k, v in inputs.items()})
    names = [t.name for t in export.outputs]
    whole = None
    # The file as it is first: fixing its input shapes can make onnxruntime check a
    # branch the inputs never take (an If on a sample rate) against them.
    for candidate in (model, fixed):
        try:
            whole = dict(zip(names, session(candidate).run(names, inputs), strict=True))
            break
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own message, on one line
            error = first_line(exc, 300)
    if whole is None:
        raise ExportError(f"onnxruntime cannot run the whole model: {error}")
    try:
        split = run_stages(export, inputs)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"onnxruntime cannot run the stages: {first_line(exc, 300)}") from None
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
