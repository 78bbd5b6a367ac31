"""``partopt export`` and ``partopt emulate``: from a plan to a running pipeline.

Both read PLAN.json, the document ``partopt solve --json`` prints::

    {"method": ..., "status": ..., "bottleneck_s": ...,
     "stages": [{"node": "n3", "first_block": 0, "last_block": 5, "memory_bytes": ...}, ...],
     "cuts": "single", "memory": "peak", "transfer": "bytes", "objective": "communication",
     "input_shape": ["input=1x3x224x224"]}

Block indices refer to the chain built from MODEL.onnx with the plan's cut
family (``"cuts"``: ``single`` when absent) and input shapes; the stage
memories recorded in the plan are checked against that chain, so a plan made
for another model or other options is refused with one line.

A DAG plan (``partopt solve --cuts dag``) gives each stage as ``"ops"``, a
set of operator (layer) names, instead of a block range. Its operators are
the one-layer blocks of the model's multi-tensor chain, which the split uses;
the stage memories are checked against the operator DAG of the same graph.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from partopt.cli.common import float_above, fmt_bytes, input_shapes, int_at_least, sample_inputs
from partopt.errors import PartoptError

__all__ = [
    "PipelineError",
    "add_parsers",
    "is_dag_plan",
    "load_plan_doc",
    "pipeline_chain",
    "pipeline_dag",
]


class PipelineError(PartoptError):
    """Bad input to ``export`` or ``emulate``; printed as one line."""


def load_plan_doc(path: str | Path) -> dict:
    """Read PLAN.json (see module docstring)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise PipelineError(f"cannot read plan file {str(path)!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise PipelineError(f"plan file {str(path)!r} is not valid JSON: {exc}") from None
    if isinstance(doc, list):
        doc = {"stages": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("stages"), list) or not doc["stages"]:
        status = doc.get("status") if isinstance(doc, dict) else None
        why = f" (the solver's status was {status!r})" if status else ""
        raise PipelineError(
            f'plan file {str(path)!r} has no "stages" list{why}; give what `partopt solve --json` prints'
        )
    for key, allowed in (
        ("cuts", ("single", "multi", "dag")),
        ("memory", ("weights", "peak", "paper")),
        ("transfer", ("bytes", "paper")),
    ):
        if key in doc and doc[key] not in allowed:
            raise PipelineError(f'plan file has "{key}": {doc[key]!r}; expected one of {allowed}')
    return doc


def is_dag_plan(doc: dict) -> bool:
    """Whether a plan document gives its stages as operator sets (``"ops"``)."""
    return doc.get("cuts") == "dag" or any(
        isinstance(d, dict) and "ops" in d for d in doc.get("stages", [])
    )


def _check_dag_memory(model_path: str, doc: dict, graph):
    """The operator DAG of ``graph``, checked against the DAG plan's stage memories."""
    from partopt.dag import build_dag

    dag = build_dag(graph)
    by_name = {n: i for i, n in enumerate(dag.op_names)}
    mem_sum, mem_max = dag.memory_terms(doc.get("memory", "peak"))
    name = Path(model_path).name
    for k, d in enumerate(doc["stages"]):
        if not isinstance(d, dict) or not isinstance(d.get("ops"), list) or not d["ops"]:
            raise PipelineError(
                f'the DAG plan\'s stage {k} needs "node" and a non-empty "ops" list '
                "(operator names); give what `partopt solve --cuts dag --json` prints"
            )
        try:
            ops = [by_name[o] if isinstance(o, str) else int(o) for o in d["ops"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise PipelineError(
                f"the plan does not fit {name}: stage {k} lists {exc.args[0]!r}, an operator "
                "the model does not have; was it made for another model?"
            ) from None
        if not all(0 <= o < dag.num_ops for o in ops):
            raise PipelineError(f"the plan does not fit {name}: stage {k} lists operator {ops}")
        said = d.get("memory_bytes")
        if said is None:
            continue
        have = float(mem_sum[ops].sum() + mem_max[ops].max())
        if not math.isclose(float(said), have, rel_tol=1e-6, abs_tol=1.0):
            raise PipelineError(
                f"the plan does not fit {name}: stage {k} ({len(ops)} operators) needs "
                f"{have:.0f} bytes ({doc.get('memory', 'peak')} memory) but the plan says "
                f"{float(said):.0f}; was it made for another model or --input-shape?"
            )
    return dag


def pipeline_dag(model_path: str, doc: dict, input_shape=None, sample_inputs=None):
    """``(layer_graph, multi_chain, dag, input_shapes)`` for a DAG plan, checked against it."""
    from partopt.chain import build_chain
    from partopt.onnx_graph import load_graph

    shapes = input_shapes(input_shape if input_shape else doc.get("input_shape"))
    graph = load_graph(model_path, shapes, sample_inputs=sample_inputs)
    dag = _check_dag_memory(model_path, doc, graph)
    return graph, build_chain(graph, cuts="multi"), dag, shapes


def pipeline_chain(
    model_path: str, doc: dict, cuts: str | None = None, input_shape=None, sample_inputs=None
):
    """``(layer_graph, chain, input_shapes)`` for a plan document, checked against the plan.

    ``cuts`` and ``input_shape`` override the plan's own; ``sample_inputs``
    (arrays by input name) feed the shape probe run. Raises
    :class:`PipelineError` when the plan's blocks or stage memories do not
    match the chain (another model, cut family or input shape).
    """
    from partopt.chain import build_chain
    from partopt.export import stage_ranges
    from partopt.onnx_graph import load_graph

    if is_dag_plan(doc):
        if cuts not in (None, "dag"):
            raise PipelineError(
                f"the plan's stages are operator sets (a DAG plan); drop --cuts {cuts} or give dag"
            )
        graph, chain, _, shapes = pipeline_dag(model_path, doc, input_shape, sample_inputs)
        return graph, chain, shapes
    if cuts == "dag":
        raise PipelineError(
            'the plan\'s stages are block ranges; --cuts dag needs stages of "ops" '
            "(what `partopt solve --cuts dag --json` prints)"
        )
    cuts = cuts or doc.get("cuts") or "single"
    shapes = input_shapes(input_shape if input_shape else doc.get("input_shape"))
    graph = load_graph(model_path, shapes, sample_inputs=sample_inputs)
    chain = build_chain(graph, cuts=cuts)
    try:
        ranges = stage_ranges(doc, chain)
    except ValueError as exc:
        raise PipelineError(
            f"the plan does not fit {Path(model_path).name} ({cuts} cuts): {exc}"
        ) from None
    memory = doc.get("memory", "peak")
    for k, (d, (_, first, last)) in enumerate(zip(doc["stages"], ranges, strict=True)):
        said = d.get("memory_bytes") if isinstance(d, dict) else None
        if said is None:
            continue
        have = chain.stage_memory(first, last, memory)
        if not math.isclose(float(said), have, rel_tol=1e-6, abs_tol=1.0):
            raise PipelineError(
                f"the plan does not fit {Path(model_path).name}: stage {k} (blocks {first}..{last}) "
                f"needs {have:.0f} bytes ({memory} memory) but the plan says {float(said):.0f}; "
                "was it made for another model, --cuts or --input-shape?"
            )
    return graph, chain, shapes


def _stage_words(s) -> str:
    """``blocks 0..3`` for a block range, ``3 operators`` for a DAG stage."""
    if s.ops:
        return f"{len(s.ops)} operator{'s' if len(s.ops) != 1 else ''}"
    return f"blocks {s.first_block}..{s.last_block}"


def cmd_export(args) -> int:
    from partopt.export import (
        check_export,
        load_model,
        missing_weights,
        random_weights,
        split_model,
        write_export,
    )

    doc = load_plan_doc(args.plan)
    model = load_model(args.model)
    sample = sample_inputs(args.sample_inputs or doc.get("sample_inputs"))
    graph, chain, shapes = pipeline_chain(args.model, doc, args.cuts, args.input_shape, sample)
    missing = missing_weights(model)
    weights = "model"
    if missing:
        if args.random_weights is None:
            raise PipelineError(
                f"{Path(args.model).name} has no data for {len(missing)} weights (architecture "
                "only: its external data file is missing); pass --random-weights SEED"
            )
        model = random_weights(model, args.random_weights)
        weights = f"random (seed {args.random_weights})"
    export = split_model(
        model, chain, doc, input_shapes=shapes, layer_graph=graph, sample_inputs=sample
    )
    extra = {
        "weights": weights,
        "cuts": args.cuts or doc.get("cuts") or "single",
        "memory": doc.get("memory", "peak"),
        "transfer": doc.get("transfer", "bytes"),
    }
    manifest = write_export(export, args.outdir, extra)
    for s in export.stages:
        print(
            f"stage {s.index} on {s.node}: {_stage_words(s)}, "
            f"{s.onnx_nodes} ONNX nodes, in {fmt_bytes(s.input_bytes)} "
            f"({len(s.inputs)} tensors), out {fmt_bytes(s.output_bytes)} ({len(s.outputs)} tensors)"
            f" -> {Path(args.outdir) / f'stage_{s.index}.onnx'}"
        )
    print(f"manifest: {manifest}; weights: {weights}")
    if args.no_check:
        return 0
    report = check_export(model, export, seed=args.check_seed, sample_inputs=sample)
    print(f"check: {report}")
    if not report.ok:
        print(
            f"partopt: error: the stages do not compute what the model computes ({report})",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_emulate(args) -> int:
    from partopt.cluster import Cluster
    from partopt.dag import DagProblem
    from partopt.emulator import Emulator, EmulatorOptions, format_report, parse_fault
    from partopt.export import load_model, random_weights
    from partopt.plan import Plan
    from partopt.problem import Problem

    doc = load_plan_doc(args.plan)
    cluster = Cluster.load(args.cluster)
    model = load_model(args.model)
    sample = sample_inputs(args.sample_inputs or doc.get("sample_inputs"))
    problem: Problem | DagProblem
    if is_dag_plan(doc) and args.cuts in (None, "dag"):
        graph, chain, dag, shapes = pipeline_dag(args.model, doc, args.input_shape, sample)
        problem = DagProblem(
            dag,
            cluster,
            memory=doc.get("memory", "peak"),
            objective=doc.get("objective", "communication"),
        )
    else:
        graph, chain, shapes = pipeline_chain(args.model, doc, args.cuts, args.input_shape, sample)
        problem = Problem(
            chain,
            cluster,
            memory=doc.get("memory", "peak"),
            transfer=doc.get("transfer", "bytes"),
            objective=doc.get("objective", "communication"),
        )
    plan = Plan.from_dict(doc["stages"], problem)
    faults = [parse_fault(s, "kill") for s in args.kill_node or []]
    faults += [parse_fault(s, None) for s in args.fault or []]
    opts = EmulatorOptions(
        requests=args.requests,
        time_scale=args.time_scale,
        window=args.window,
        faults=tuple(faults),
        random_faults=args.random_faults,
        seed=args.seed,
        port=args.port,
        replan_method=args.replan_method,
        replan_time_limit_s=args.replan_time_limit,
        detect_timeout_s=args.detect_timeout,
        verify=args.verify,
    )
    weights_note = None
    if args.random_weights is not None:
        model = random_weights(model, args.random_weights)
        weights_note = f"random (seed {args.random_weights})"
    emu = Emulator(model, problem, plan, opts, layer_graph=graph, input_shapes=shapes, chain=chain)
    report = _run_terminable(emu)
    if weights_note and report.weights == "model":
        report.weights = weights_note
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(format_report(report))
    if report.error:
        print(f"partopt: error: {report.error}", file=sys.stderr)
        return 1
    if report.verified is False:
        print(
            "partopt: error: the pipeline's results do not match the unsplit model's "
            f"(max relative error {report.verify_max_rel_error:.3g})",
            file=sys.stderr,
        )
        return 1
    return 0


def _run_terminable(emu):
    """Run ``emu``; SIGTERM ends the run like Ctrl-C, so workers and temporary files go too."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return emu.run()

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one clean-up, not two
        raise SystemExit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        return emu.run()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _add_chain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cuts",
        choices=("single", "multi", "dag"),
        help="cut family the plan's block indices refer to (default: the plan's \"cuts\", else "
        "single; dag: stages are operator sets)",
    )
    p.add_argument(
        "--input-shape",
        action="append",
        metavar="NAME=D1xD2x...",
        help='shape of a graph input (default: the plan\'s "input_shape"; batch 1)',
    )
    p.add_argument(
        "--sample-inputs",
        metavar="FILE.npz",
        help="real input values (arrays by input name) for the shape probe and the export "
        'check (default: the plan\'s "sample_inputs")',
    )


def add_parsers(sub) -> None:
    """Add ``export`` and ``emulate`` to the ``partopt`` command line."""
    p = sub.add_parser(
        "export",
        help="write one ONNX model per stage of a plan, and a manifest",
        description="Split MODEL.onnx by PLAN.json into OUTDIR/stage_<k>.onnx (inputs: the "
        "tensors crossing into the stage; outputs: those crossing out, including tensors passing "
        "through to later stages) and OUTDIR/manifest.json, then check that the stages in "
        "sequence compute what the whole model computes.",
    )
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("plan", metavar="PLAN.json", help="what `partopt solve --json` prints")
    p.add_argument("outdir", metavar="OUTDIR")
    p.add_argument(
        "--random-weights",
        type=int_at_least(0),
        metavar="SEED",
        help="give an architecture-only model (weight file missing) random weights",
    )
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime round-trip check")
    p.add_argument(
        "--check-seed", type=int_at_least(0), default=0, help="seed of the check's random inputs"
    )
    _add_chain_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "emulate",
        help="run a plan as a pipeline of local processes on bandwidth-shaped links",
        description="One worker process per stage runs its ONNX stage with onnxruntime; stages "
        "talk over loopback TCP, each link paced to its bandwidth in the cluster file divided by "
        "--time-scale. Reports measured against predicted throughput, latency, link "
        "utilisation, and how faults were handled. Times are emulated seconds.",
    )
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("plan", metavar="PLAN.json", help="what `partopt solve --json` prints")
    p.add_argument("--cluster", required=True, metavar="FILE", help="cluster file (JSON or YAML)")
    p.add_argument(
        "--requests", type=int_at_least(1), default=100, metavar="R", help="requests to serve (100)"
    )
    p.add_argument(
        "--time-scale",
        type=float_above(0),
        default=1.0,
        metavar="X",
        help="wall seconds per emulated second for links and emulated compute (1; 0.1 = 10x faster)",
    )
    p.add_argument(
        "--window", type=int_at_least(1), metavar="W", help="requests in flight (2 x stages + 2)"
    )
    p.add_argument(
        "--kill-node",
        action="append",
        metavar="NAME@SECONDS",
        help="kill the worker on NAME at that emulated time (repeatable)",
    )
    p.add_argument(
        "--fault",
        action="append",
        metavar="KIND:NAME@SECONDS",
        help="inject a fault: kill, freeze (SIGSTOP), hang (compute), stall (link), garbage",
    )
    p.add_argument(
        "--random-faults", type=int_at_least(0), default=0, metavar="N", help="N faults at random"
    )
    p.add_argument(
        "--seed", type=int_at_least(0), default=0, help="seed of inputs, random faults and weights"
    )
    p.add_argument(
        "--random-weights",
        type=int_at_least(0),
        metavar="SEED",
        help="random weights (automatic, seed --seed, when the model has no weight data)",
    )
    p.add_argument(
        "--port",
        type=int_at_least(0),
        default=0,
        help="first of stages + 2 consecutive loopback ports (default: chosen by the system)",
    )
    p.add_argument(
        "--replan-method", default="auto", help="solver for re-planning (auto, or a method name)"
    )
    p.add_argument(
        "--replan-time-limit",
        type=float_above(0),
        default=10.0,
        metavar="S",
        help="time limit of each re-planning solver, seconds (10)",
    )
    p.add_argument(
        "--detect-timeout",
        type=float_above(0),
        metavar="S",
        help="wall seconds of silence, or in one send or computation, that mark a fault",
    )
    p.add_argument("--verify", action="store_true", help="check every result against the model")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    _add_chain_args(p)
    p.set_defaults(func=cmd_emulate)
