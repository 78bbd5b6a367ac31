"""``partopt inspect``, ``solve``, ``cluster`` and ``methods``: models, plans, clusters.

``inspect`` shows a model's cut points and blocks, ``solve`` plans a model
on a cluster, ``cluster`` writes a generated cluster file and ``methods``
lists the solvers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from partopt import solvers
from partopt.chain import MEMORY_MODELS, TRANSFER_MODELS
from partopt.cli.common import (
    CliError,
    float_at_least,
    fmt_bytes,
    fmt_s,
    input_shapes,
    int_at_least,
    sample_inputs,
    table,
)
from partopt.cluster import MB, Cluster, grid_cluster, paper_cluster, ring_cluster
from partopt.costs import OBJECTIVES
from partopt.dag import MAX_STATES
from partopt.problem import Problem
from partopt.solve import Result, solve

__all__ = ["add_parsers", "cmd_inspect", "cmd_solve", "print_result"]


def _resolve_cuts(args) -> None:
    """``--cuts`` default: the original's Keras chain for ``--memory paper --transfer paper``."""
    from partopt.keras_chain import chain_file_for

    if args.cuts is not None:
        return
    args.cuts = "single"
    if args.memory == "paper" and getattr(args, "transfer", None) == "paper":
        if chain_file_for(args.model).exists():
            args.cuts = "keras"
            print(
                f"partopt: note: planning the original's Keras-layer-graph chain "
                f"({chain_file_for(args.model).name}); --cuts single plans the ONNX chain",
                file=sys.stderr,
            )
        else:
            print(
                f"partopt: note: no Keras chain file beside {args.model}: the paper memory and "
                "transfer models on the ONNX-derived chain",
                file=sys.stderr,
            )


def _load_chain(args):
    from partopt.chain import build_chain
    from partopt.keras_chain import chain_file_for, load_keras_chain
    from partopt.onnx_graph import load_graph

    _resolve_cuts(args)
    if args.cuts == "keras":
        if getattr(args, "compare_cuts", False):
            raise CliError("--compare-cuts reads the ONNX graph; use --cuts single")
        return None, load_keras_chain(chain_file_for(args.model))
    sample = sample_inputs(getattr(args, "sample_inputs", None))
    graph = load_graph(args.model, input_shapes(args.input_shape), sample_inputs=sample)
    return graph, build_chain(graph, cuts=args.cuts)


def _problem_from_args(args, cluster: Cluster):
    """A chain :class:`Problem`, or a DAG problem for ``--cuts dag`` and the DAG-only objectives."""
    from partopt.dag import Dag, DagProblem, build_dag

    if args.cuts == "dag" or args.objective in ("sum", "star"):
        if args.transfer != "bytes":
            raise CliError(f"--transfer {args.transfer} is for chains; DAG problems use bytes")
        if args.cuts == "dag":
            from partopt.onnx_graph import load_graph

            graph = load_graph(
                args.model,
                input_shapes(args.input_shape),
                sample_inputs=sample_inputs(getattr(args, "sample_inputs", None)),
            )
            dag = build_dag(graph)
        else:
            dag = Dag.from_chain(_load_chain(args)[1])
        return DagProblem(
            dag, cluster, memory=args.memory, objective=args.objective, max_states=args.max_states
        )
    _, chain = _load_chain(args)
    return Problem(
        chain, cluster, memory=args.memory, transfer=args.transfer, objective=args.objective
    )


def _add_model_args(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    p.add_argument(
        "model",
        metavar="MODEL.onnx",
        nargs=None if model_required else "?",
        help="ONNX model (weights may be absent)",
    )
    p.add_argument(
        "--cuts",
        choices=("single", "multi", "dag", "keras"),
        default=None,
        help="cut family: single-tensor cut points (default), multi-tensor boundaries of one "
        "topological order, every ideal of the layer DAG (dag), or keras: the original's chain "
        "file from the Keras layer graph (the default with --memory paper --transfer paper "
        "when the file exists)",
    )
    p.add_argument(
        "--max-states",
        type=int_at_least(1),
        default=MAX_STATES,
        metavar="K",
        help=f"--cuts dag: ideals generated at most (default {MAX_STATES:,}); beyond it plans "
        "are feasible, not proven",
    )
    p.add_argument(
        "--input-shape",
        action="append",
        metavar="NAME=1x3x224x224",
        help="fix a graph input's shape (symbolic dimensions); repeatable",
    )
    p.add_argument(
        "--sample-inputs",
        metavar="FILE.npz",
        help="real input values (numpy.savez arrays by input name) for the shape probe run; "
        "they also fix the inputs' shapes",
    )
    p.add_argument(
        "--memory",
        choices=MEMORY_MODELS,
        default="peak",
        help="memory model of a stage (default: peak)",
    )


def _cluster_from_args(args) -> Cluster:
    if args.cluster and args.paper_cluster is not None:
        raise CliError("give either --cluster FILE or --paper-cluster N, not both")
    if args.cluster:
        return Cluster.load(args.cluster)
    if args.paper_cluster is None:
        raise CliError("no cluster: give --cluster FILE or --paper-cluster N --capacity-mb C")
    if args.capacity_mb is None:
        raise CliError("--paper-cluster needs --capacity-mb C (node memory in MB)")
    return paper_cluster(args.paper_cluster, args.capacity_mb, args.seed)


# -- inspect ----------------------------------------------------------------------


_SOURCE_WORDS = {
    "inference": "from shape inference",
    "probe": "from a probe run (onnxruntime, random inputs)",
    "sample-inputs": "from a run on the sample inputs",
    "unknown": "unknown",
}


def _sources_text(meta: dict) -> str:
    """Which source each activation size came from, in one line."""
    counts = meta.get("shape_sources", {})
    parts = [f"{counts[k]} {_SOURCE_WORDS.get(k, k)}" for k in _SOURCE_WORDS if counts.get(k)]
    probe = meta.get("probe", {})
    if probe.get("ran"):
        parts.append(f"probe weights: {probe.get('weights')}, {probe.get('seconds', 0):.2f} s")
    unsettled = meta.get("unsettled", {})
    if unsettled:
        parts.append(f"{len(unsettled)} depend on input values ({', '.join(list(unsettled)[:3])})")
    return "; ".join(parts) + " (activation tensors)"


def _inspect_dag(args) -> int:
    from partopt.dag import build_dag
    from partopt.onnx_graph import load_graph

    graph = load_graph(
        args.model,
        input_shapes(args.input_shape),
        sample_inputs=sample_inputs(getattr(args, "sample_inputs", None)),
    )
    dag = build_dag(graph)
    count = dag.count_ideals(limit=args.max_states)
    doc = {
        "model": dag.name,
        "num_nodes": len(graph.nodes),
        "cuts": "dag",
        "operators": dag.num_ops,
        "tensors": dag.num_tensors,
        "units": len(dag.units),
        "ideals": count,  # None: more than ideals_limit
        "ideals_limit": args.max_states,
        "ideals_exceed_limit": count is None,
        "meta": {
            "shape_sources": graph.meta.get("shape_sources", {}),
            "probe": graph.meta.get("probe", {}),
            "unsettled": graph.meta.get("unsettled", {}),
        },
    }
    if args.json:
        print(json.dumps(doc, indent=1, default=_json_default))
        return 0
    ideals = f"{count:,} ideals" if count is not None else f"more than {args.max_states:,} ideals"
    print(
        f"model {dag.name}: {dag.num_ops} operators, {dag.num_tensors} tensors, "
        f"{ideals} (boundary states)"
    )
    print(f"sizes: {_sources_text(graph.meta)}")
    return 0


def cmd_inspect(args) -> int:
    if args.cuts == "dag":
        return _inspect_dag(args)
    graph, chain = _load_chain(args)
    mem_sum, mem_max = chain.memory_terms(args.memory)
    blocks = [
        {
            "param_bytes": int(chain.param_bytes[b]),
            "memory_bytes": float(mem_sum[b] + mem_max[b]),
            "flops": float(chain.flops[b]),
        }
        for b in range(chain.num_blocks)
    ]
    cuts = [
        {"index": c, "node": chain.cut_names[c], "transfer_bytes": float(chain.transfer_bytes[c])}
        for c in range(chain.num_blocks - 1)
    ]
    total_params = float(chain.param_bytes.sum())
    doc = {
        "model": chain.name,
        "num_nodes": None if graph is None else len(graph.nodes),
        "param_bytes": int(total_params),
        "cuts": args.cuts,
        "memory": args.memory,
        "cut_points": cuts,
        "blocks": blocks,
        "meta": {
            "shape_sources": graph.meta.get("shape_sources", {}),
            "probe": graph.meta.get("probe", {}),
            "unsettled": graph.meta.get("unsettled", {}),
        },
    }
    if args.compare_cuts:
        from partopt.chain import compare_cut_methods

        doc["cut_methods"] = compare_cut_methods(graph)
    if args.json:
        print(json.dumps(doc, indent=1, default=_json_default))
        return 0
    cum = 0.0
    rows = []
    for c in cuts:
        cum += chain.param_bytes[c["index"]]
        rows.append([str(c["index"]), c["node"], fmt_bytes(c["transfer_bytes"]), fmt_bytes(cum)])
    print(
        f"model {chain.name}: "
        f"{'Keras layer graph' if graph is None else f'{len(graph.nodes)} ONNX nodes'}, "
        f"{fmt_bytes(total_params)} of parameters, {len(cuts)} {args.cuts}-tensor cut points, "
        f"{chain.num_blocks} blocks"
    )
    if graph is not None:
        print(f"sizes: {_sources_text(graph.meta)}")
    if rows:
        print(table(["cut", "after node", "transfer", "params before"], rows))
    print(
        f"total: {fmt_bytes(total_params)} parameters, {chain.flops.sum():.3g} FLOPs, "
        f"largest block {fmt_bytes(max(b['memory_bytes'] for b in blocks))} ({args.memory} memory)"
    )
    if args.compare_cuts:
        cm = doc["cut_methods"]
        print(
            f"cut points: {len(cm['dominators'])} by dominators, "
            f"{len(cm['singleton_levels'])} by singleton levels: "
            + ("the same set" if cm["same"] else "different sets")
        )
        for key in ("only_dominators", "only_singleton_levels"):
            if cm[key]:
                print(f"  {key.replace('_', ' ')}: {', '.join(cm[key])}")
    return 0


# -- solve --------------------------------------------------------------------------


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


def print_result(problem: Problem, result: Result) -> None:
    """Human-readable plan table and bottleneck."""
    print(f"method {result.method}: {result.status} in {fmt_s(result.runtime_s)}")
    if result.status == "infeasible":
        need = result.info.get("min_capacity_bytes")
        why = result.info.get("reason", "no plan fits memory and links")
        print(f"infeasible: {why}")
        if need is not None:
            print(f"every node would need at least {fmt_bytes(need)} ({need / MB:.1f} MB)")
        return
    if result.status == "error":
        print(f"error: {result.info.get('error')}")
    if result.evaluation is None:
        if result.status != "error":
            print(f"no plan: {result.info.get('reason', 'the solver found none')}")
        return
    rows = []
    show_compute = problem.uses_compute
    for k, s in enumerate(result.evaluation.stages):
        row = [
            str(k),
            problem.cluster.names[s.node],
            f"{len(s.ops)} ops" if s.ops else f"{s.first_block}..{s.last_block}",
            f"{fmt_bytes(s.memory_bytes)} / {fmt_bytes(s.capacity_bytes)}",
        ]
        if show_compute:
            row.append(fmt_s(s.compute_s))
        row.append(fmt_s(s.transfer_s) if k + 1 < len(result.evaluation.stages) else "-")
        rows.append(row)
    headers = ["stage", "node", "blocks", "memory / capacity"]
    headers += ["compute"] if show_compute else []
    headers += ["transfer out"]
    print(table(headers, rows))
    thr = result.evaluation.throughput_per_s
    print(
        f"bottleneck {fmt_s(result.bottleneck_s)} per inference "
        f"({'unbounded' if math.isinf(thr) else f'{thr:.3f} inferences/s'}); "
        f"lower bound {fmt_s(result.lower_bound_s)}; gap "
        f"{'-' if result.gap is None else f'{100 * result.gap:.2f}%'}"
    )


def _solve_workload(args) -> int:
    """``solve --workload FILE.json``: a workload of Tarnawski et al. under the star model."""
    from partopt.workload import load_workload, node_ids

    if args.model:
        raise CliError("give either MODEL.onnx or --workload FILE.json, not both")
    if args.cluster or args.paper_cluster is not None or args.capacity_mb is not None:
        raise CliError(
            "--workload brings its own devices (maxFPGAs, maxSizePerFPGA): "
            "drop --cluster, --paper-cluster and --capacity-mb"
        )
    if args.objective not in ("communication", "star"):
        raise CliError(f"--workload uses the star cost model; drop --objective {args.objective}")
    if args.time_limit is not None and not args.time_limit > 0:
        raise CliError(f"--time-limit must be positive seconds, got {args.time_limit}")
    problem = load_workload(args.workload)
    result = solve(problem, args.method, time_limit_s=args.time_limit, seed=args.seed)
    doc = result.to_dict(problem)
    ids = node_ids(problem)
    if result.evaluation is not None:
        for stage, report in zip(doc["stages"], result.evaluation.stages, strict=True):
            stage["ops"] = [ids[o] for o in report.ops]
    doc.update({"workload": args.workload, "cuts": "dag", "objective": "star"})
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(doc, fh, indent=1, default=_json_default)
    if args.json:
        print(json.dumps(doc, indent=1, default=_json_default))
        return 0 if result.status in ("optimal", "feasible") else 2
    print(f"method {result.method}: {result.status} in {fmt_s(result.runtime_s)}")
    if result.evaluation is None:
        why = result.info.get("reason") or result.info.get("error") or "the solver found none"
        print(f"no plan: {why}")
        return 2
    rows = []
    for k, (stage, report) in enumerate(zip(doc["stages"], result.evaluation.stages, strict=True)):
        shown = stage["ops"] if len(stage["ops"]) <= 8 else [*stage["ops"][:8], "..."]
        rows.append(
            [
                str(k),
                str(len(report.ops)),
                " ".join(str(v) for v in shown),
                f"{report.memory_bytes:.6g}",
                f"{report.compute_s:.6g}",
                f"{report.load_s:.6g}",
            ]
        )
    print(table(["device", "nodes", "node ids", "size", "compute", "load"], rows))
    bound = result.lower_bound_s
    print(
        f"max load {result.bottleneck_s:.6g} (the file's time unit); lower bound "
        f"{'-' if bound is None else f'{bound:.6g}'}; gap "
        f"{'-' if result.gap is None else f'{100 * result.gap:.2f}%'}"
    )
    return 0 if result.status in ("optimal", "feasible") else 2


def cmd_solve(args) -> int:
    if args.workload:
        return _solve_workload(args)
    if not args.model:
        raise CliError("give MODEL.onnx, or --workload FILE.json")
    cluster = _cluster_from_args(args)
    problem = _problem_from_args(args, cluster)
    if args.time_limit is not None and not args.time_limit > 0:
        raise CliError(f"--time-limit must be positive seconds, got {args.time_limit}")
    result = solve(problem, args.method, time_limit_s=args.time_limit, seed=args.seed)
    doc = result.to_dict(problem)
    doc.update(
        {
            "model": args.model,
            "cuts": args.cuts,
            "memory": args.memory,
            "transfer": args.transfer,
            "objective": args.objective,
            "input_shape": args.input_shape or [],
            "sample_inputs": args.sample_inputs,
        }
    )
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(doc, fh, indent=1, default=_json_default)
    if args.json:
        print(json.dumps(doc, indent=1, default=_json_default))
    else:
        print_result(problem, result)
    return 0 if result.status in ("optimal", "feasible") else 2


# -- cluster --------------------------------------------------------------------------


def cmd_cluster(args) -> int:
    if args.layout == "paper":
        cluster = paper_cluster(args.nodes, args.capacity_mb, args.seed)
    elif args.layout == "ring":
        cluster = ring_cluster(args.nodes, args.capacity_mb, seed=args.seed)
    else:
        if args.rows is None:
            raise CliError("grid needs --rows R (and --nodes N, a multiple of R)")
        if args.nodes % args.rows:
            raise CliError(f"--nodes {args.nodes} is not a multiple of --rows {args.rows}")
        cluster = grid_cluster(args.rows, args.nodes // args.rows, args.capacity_mb, seed=args.seed)
    if args.output:
        cluster.save(args.output)
        print(f"wrote {args.output}: {cluster.num_nodes} nodes, {args.capacity_mb} MB each")
    else:
        print(json.dumps(cluster.to_dict(), indent=1))
    return 0


def cmd_methods(args) -> int:
    for name, info in solvers.available().items():
        kind = ("exact " if info.exact else "      ") + ("dag " if info.dag else "    ")
        print(f"{name:20s} {kind} {info.description}")
    return 0


# -- parser ---------------------------------------------------------------------------


def add_parsers(sub) -> None:
    """Add ``inspect``, ``solve``, ``cluster`` and ``methods`` to the ``partopt`` command line."""
    p = sub.add_parser("inspect", help="show a model's cut points and blocks")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--compare-cuts",
        action="store_true",
        help="also report whether dominators and singleton levels find the same cuts",
    )
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("solve", help="plan a model on a cluster")
    _add_model_args(p, model_required=False)
    p.add_argument(
        "--workload",
        metavar="FILE.json",
        help="solve a workload of Tarnawski et al. (msr-fiddle/dnn-partitioning input format; "
        "maxCPUs 0) under the star model instead of MODEL.onnx on a cluster",
    )
    p.add_argument("--cluster", metavar="FILE", help="cluster file (JSON or YAML)")
    p.add_argument(
        "--paper-cluster",
        type=int_at_least(1),
        metavar="N",
        help="generate the original work's random geometric cluster of N nodes",
    )
    p.add_argument(
        "--capacity-mb", type=float_at_least(0), metavar="C", help="node memory in MB (2**20 bytes)"
    )
    p.add_argument(
        "--seed", type=int_at_least(0), default=0, help="seed for the cluster and the method"
    )
    p.add_argument(
        "--method", default="exact", help="solver (see `partopt methods`; default exact)"
    )
    p.add_argument(
        "--transfer",
        choices=TRANSFER_MODELS,
        default="bytes",
        help="transfer model (default: bytes)",
    )
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="communication",
        help="stage load: communication only (default), max(compute, outgoing), "
        "sum (compute + incoming + outgoing) or star (Tarnawski et al.'s host-memory model)",
    )
    p.add_argument(
        "--time-limit", type=float_at_least(0), metavar="S", help="solver time limit in seconds"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-o", "--output", metavar="PLAN.json", help="also write the JSON plan here")
    p.set_defaults(func=cmd_solve)

    p = sub.add_parser("cluster", help="write a generated cluster file")
    p.add_argument("layout", choices=("paper", "grid", "ring"))
    p.add_argument("--nodes", type=int_at_least(1), required=True, metavar="N")
    p.add_argument("--capacity-mb", type=float_at_least(0), required=True, metavar="C")
    p.add_argument("--rows", type=int_at_least(1), help="grid rows")
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument("-o", "--output", metavar="FILE", help="JSON or YAML file (default: print)")
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("methods", help="list the available solvers")
    p.set_defaults(func=cmd_methods)
