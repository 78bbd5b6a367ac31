"""Workloads of Tarnawski et al.: the reader, the star load by hand, ``solve --workload``.

``tests/data/star_workload.json`` is the six-node workload of the
:mod:`partopt.workload` docstring; every expected number below is computed
by hand there (the optima also by brute force, which enumerates every plan).
"""

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partopt import solve
from partopt.cli import main
from partopt.errors import PartoptError
from partopt.plan import InvalidPlan, OpStage, Plan, evaluate
from partopt.solvers.brute import solve_brute
from partopt.workload import WorkloadError, load_workload, node_ids, workload_problem

WORKLOAD = Path(__file__).parent / "data" / "star_workload.json"


def doc() -> dict:
    return json.loads(WORKLOAD.read_text())


def problem_of(d: dict):
    return workload_problem(d, "star_workload")


def plan(problem, *stages):
    """A plan from stages of workload node ids, on devices 0, 1, ..."""
    op = {v: k for k, v in enumerate(node_ids(problem))}
    return Plan(tuple(OpStage(tuple(op[v] for v in s), k) for k, s in enumerate(stages)))


def loads(problem, *stages) -> list[float]:
    return [s.load_s for s in evaluate(problem, plan(problem, *stages)).stages]


# -- the reader --------------------------------------------------------------------


def test_reader_builds_the_star_problem():
    p = load_workload(WORKLOAD)
    assert p.objective == "star" and p.memory == "weights"
    assert p.dag.name == "star_workload"
    assert node_ids(p) == [1, 2, 3, 4, 5, 6]
    assert p.dag.op_names == ("1", "2", "3", "4", "5", "6")
    assert p.num_nodes == 3 and set(p.cluster.memory_bytes) == {8.0}
    assert list(p.dag.compute_s) == [1.0, 4.0, 2.0, 3.0, 1.0, 1.0]
    assert list(p.dag.param_bytes) == [2.0, 3.0, 3.0, 2.0, 1.0, 1.0]
    # one tensor per source node, read by all of its edge heads, with the node's cost
    ids = node_ids(p)
    tensors = {
        ids[int(src)]: (tuple(ids[c] for c in cons), float(cost))
        for src, cons, cost in zip(
            p.dag.tensor_producer, p.dag.tensor_consumers, p.tensor_star_cost_s, strict=True
        )
    }
    assert tensors == {
        1: ((2, 3, 4), 1.0),
        2: ((5,), 2.0),
        3: ((5,), 0.5),
        4: ((6,), 3.0),
        5: ((6,), 1.0),
    }
    # only the shared colour class (nodes 2 and 3) constrains; singletons do not
    assert p.dag.colocate == ((1, 2),)
    assert (1, 2) in {tuple(sorted(u)) for u in p.dag.units}
    assert p.states.complete and p.states.num_states == 8


def test_reader_accepts_missing_optional_fields():
    d = doc()
    for n in d["nodes"]:
        n.pop("colorClass", None)
        n.pop("size", None)
    for e in d["edges"]:
        e.pop("size", None)
    p = problem_of(d)
    assert p.dag.colocate == () and float(p.dag.param_bytes.sum()) == 0.0


def _set(path, value):
    def edit(d):
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _drop(path):
    def edit(d):
        target = d
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return edit


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (_set(["maxCPUs"], 1), "maxCPUs is 1"),
        (_set(["maxFPGAs"], 0), "maxFPGAs must be at least 1"),
        (_set(["maxFPGAs"], 1.5), "must be an integer"),
        (_drop(["nodes"]), 'no "nodes"'),
        (_set(["nodes"], []), "non-empty list"),
        (_set(["nodes", 2, "isBackwardNode"], 1), "backward node"),
        (_set(["nodes", 2, "supportedOnFpga"], 0), "not supported on the accelerator"),
        (_set(["nodes", 2, "fpgaLatency"], -1.0), ">= 0"),
        (_drop(["nodes", 2, "fpgaLatency"]), 'no "fpgaLatency"'),
        (_set(["nodes", 2, "id"], 1), "appears twice"),
        (_set(["edges", 0, "destId"], 99), "not in the workload"),
        (_set(["edges", 0, "destId"], 1), "self-loop"),
        (_set(["edges", 1, "cost"], 2.0), "two different outgoing edge costs"),
        (_drop(["edges", 1, "cost"]), 'no "cost"'),
        (lambda d: d["edges"].append({"sourceId": 6, "destId": 1, "cost": 1.0}), "cycle"),
        (lambda d: d.clear(), 'no "maxSizePerFPGA"'),
    ],
)
def test_reader_refuses_bad_workloads(edit, fragment):
    d = doc()
    edit(d)
    # a cycle is found by the DAG itself (a DagError); both are one-line PartoptErrors
    with pytest.raises(WorkloadError if fragment != "cycle" else PartoptError) as exc:
        problem_of(d)
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


def test_reader_refuses_unreadable_files(tmp_path):
    with pytest.raises(WorkloadError, match="cannot read"):
        load_workload(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(WorkloadError, match="not JSON"):
        load_workload(bad)


# -- the star load, by hand --------------------------------------------------------


def test_star_loads_by_hand():
    p = load_workload(WORKLOAD)
    # compute + outputs written once for other devices + inputs read once from others
    assert loads(p, [1], [2, 3, 5], [4, 6]) == [1 + 1, 4 + 2 + 1 + 1 + 1, 3 + 1 + 1 + 1]
    assert loads(p, [1, 4], [2, 3, 5], [6]) == [1 + 3 + 1 + 3, 9.0, 1 + 3 + 1]
    # node 1's output is read by two devices: each pays it, node 1's device once
    assert loads(p, [1], [2, 3, 5], [4, 6])[0] == 2.0
    two = problem_of({**doc(), "maxFPGAs": 2})
    assert loads(two, [1, 2, 3], [4, 5, 6]) == [7 + 1 + 2 + 0.5, 5 + 1 + 2 + 0.5]
    assert loads(two, [1, 4], [2, 3, 5, 6]) == [4 + 1 + 3, 8 + 1 + 3]


def test_star_plans_respect_colour_classes_and_memory():
    p = load_workload(WORKLOAD)
    with pytest.raises(InvalidPlan, match="colocated"):
        evaluate(p, plan(p, [1, 3], [2, 5], [4, 6]))
    with pytest.raises(InvalidPlan, match="bytes"):
        evaluate(p, plan(p, [1, 2, 3, 4], [5, 6]))  # 10 bytes on an 8-byte device


def test_star_optima_by_hand():
    out = solve_brute(load_workload(WORKLOAD))
    assert out.status == "optimal" and out.objective_s == 9.0
    out = solve_brute(problem_of({**doc(), "maxFPGAs": 2}))
    assert out.status == "optimal" and out.objective_s == 10.5
    free = copy.deepcopy(doc())
    for n in free["nodes"]:
        n.pop("colorClass", None)
    p = problem_of(free)
    assert loads(p, [1, 3], [2, 5], [4, 6]) == [4.5, 7.5, 6.0]
    out = solve_brute(p)
    assert out.status == "optimal" and out.objective_s == 7.5


# -- the command line ----------------------------------------------------------------


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("method", ["brute", "exact"])
def test_solve_workload_json(capsys, method):
    code, out, _ = run(capsys, "solve", "--workload", str(WORKLOAD), "--json", "--method", method)
    assert code == 0
    d = json.loads(out)
    assert d["status"] == "optimal" and d["bottleneck_s"] == 9.0 and d["lower_bound_s"] == 9.0
    assert d["objective"] == "star" and d["workload"] == str(WORKLOAD)
    stages = [s["ops"] for s in d["stages"]]
    assert all(isinstance(v, int) for s in stages for v in s)
    assert sorted(v for s in stages for v in s) == [1, 2, 3, 4, 5, 6]
    assert any({2, 3} <= set(s) for s in stages)
    assert max(s["load_s"] for s in d["stages"]) == d["bottleneck_s"]
    p = load_workload(WORKLOAD)
    assert max(loads(p, *stages)) == 9.0


def test_solve_workload_table(capsys, tmp_path):
    out_file = tmp_path / "plan.json"
    code, out, _ = run(
        capsys, "solve", "--workload", str(WORKLOAD), "--method", "brute", "-o", str(out_file)
    )
    assert code == 0 and "max load 9" in out
    assert json.loads(out_file.read_text())["bottleneck_s"] == 9.0


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["m.onnx"], "not both"),
        (["--paper-cluster", "3"], "brings its own devices"),
        (["--objective", "max"], "star cost model"),
    ],
)
def test_solve_workload_refuses_other_inputs(capsys, extra, fragment):
    code, _, err = run(capsys, "solve", "--workload", str(WORKLOAD), *extra)
    assert code == 1 and fragment in err
    assert err.startswith("partopt: error:") and err.count("\n") == 1


def test_solve_workload_refuses_cpus_in_one_line(capsys, tmp_path):
    f = tmp_path / "cpus.json"
    f.write_text(json.dumps({**doc(), "maxCPUs": 2}))
    code, _, err = run(capsys, "solve", "--workload", str(f), "--json")
    assert code == 1 and "maxCPUs is 2" in err
    assert err.startswith("partopt: error:") and err.count("\n") == 1


def test_solve_needs_a_model_or_a_workload(capsys):
    code, _, err = run(capsys, "solve")
    assert code == 1 and "--workload" in err


# -- free leaves: the reduction keeps the optimum ---------------------------------------


@st.composite
def workloads(draw, max_nodes: int = 8) -> dict:
    """Small random workloads, many of whose nodes are zero-latency leaves."""
    n = draw(st.integers(2, max_nodes))
    edges = []
    for v in range(1, n):
        preds = draw(st.sets(st.integers(0, v - 1), min_size=0, max_size=2))
        edges += [(u, v) for u in sorted(preds)]
    cost = [draw(st.sampled_from([0.0, 0.5, 1.0, 2.0])) for _ in range(n)]
    nodes = []
    for v in range(n):
        node = {
            "id": 10 * v + 3,
            "supportedOnFpga": 1,
            "cpuLatency": 1.0,
            "fpgaLatency": draw(st.sampled_from([0.0, 0.0, 1.0, 3.0])),
            "isBackwardNode": 0,
            "size": draw(st.sampled_from([0.0, 1.0, 2.0])),
        }
        if draw(st.booleans()):
            node["colorClass"] = draw(st.integers(0, 2))
        nodes.append(node)
    return {
        "maxSizePerFPGA": draw(st.sampled_from([3.0, 5.0, 100.0])),
        "maxFPGAs": draw(st.integers(1, 3)),
        "maxCPUs": 0,
        "nodes": nodes,
        "edges": [
            {"sourceId": 10 * u + 3, "destId": 10 * v + 3, "cost": cost[u]} for u, v in edges
        ],
    }


@settings(max_examples=60, deadline=None)
@given(workloads())
def test_merging_free_leaves_keeps_the_optimum(d):
    try:
        plain = workload_problem(d, merge_free_leaves=False)
    except PartoptError:
        return  # colour classes that make the graph cyclic: refused either way
    merged = workload_problem(d)
    assert len(merged.dag.units) <= len(plain.dag.units)
    a, b = solve_brute(plain), solve_brute(merged)
    assert a.status == b.status
    engine = solve(merged, "exact")
    if a.status == "optimal":
        assert b.objective_s == pytest.approx(a.objective_s, rel=1e-9)
        assert evaluate(plain, b.plan).bottleneck_s == pytest.approx(b.objective_s, rel=1e-9)
        assert engine.status == "optimal"
        assert engine.bottleneck_s == pytest.approx(a.objective_s, rel=1e-9)
    else:
        assert engine.status == "infeasible"
