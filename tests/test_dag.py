"""DAG problems: states, evaluate, and the exact engine against brute force."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partopt.chain import build_chain
from partopt.cluster import Cluster
from partopt.dag import Dag, DagError, DagProblem, build_dag
from partopt.onnx_graph import load_graph
from partopt.plan import InvalidPlan, OpStage, Plan, evaluate
from partopt.problem import Problem
from partopt.solve import solve
from tests.onnx_models import residual_block
from tests.strategies import clusters
from tests.strategies_graphs import dag_models

OBJ = ("communication", "max", "sum", "star")
MODELS = Path(__file__).resolve().parents[1] / "models"


@st.composite
def dags(draw, max_ops: int = 8, colocate: bool = False) -> Dag:
    """Random DAGs: one tensor per producer (sent once), some graph inputs and outputs."""
    n = draw(st.integers(1, max_ops))
    consumers: list[list[int]] = [[] for _ in range(n)]
    for v in range(1, n):
        for u in draw(st.sets(st.integers(0, v - 1), max_size=3)):
            consumers[u].append(v)
    tb, tp, tc, outs = [], [], [], []
    for u in range(n):
        if consumers[u] or draw(st.booleans()):
            tb.append(draw(st.integers(1, 20)) * 1e5)
            tp.append(u)
            tc.append(tuple(consumers[u]))
            outs.append(not consumers[u])
    readers = draw(st.sets(st.integers(0, n - 1), max_size=2))
    if readers:
        tb.append(draw(st.integers(1, 20)) * 1e5)
        tp.append(-1)
        tc.append(tuple(sorted(readers)))
        outs.append(False)
    classes = ()
    if colocate and n >= 2 and draw(st.booleans()):
        classes = (tuple(draw(st.sets(st.integers(0, n - 1), min_size=2, max_size=2))),)
    ints = st.lists(st.integers(0, 6), min_size=n, max_size=n)
    return Dag(
        name="random",
        op_names=tuple(f"op{i}" for i in range(n)),
        param_bytes=draw(st.lists(st.integers(1, 6), min_size=n, max_size=n)),
        activation_peak_bytes=draw(ints),
        paper_memory_bytes=np.zeros(n),
        flops=np.array(draw(ints), dtype=float) * 1e6,
        tensor_bytes=tb,
        tensor_producer=tp,
        tensor_consumers=tuple(tc),
        tensor_is_output=outs,
        colocate=classes,
    )


def _uniform_links(cluster: Cluster) -> Cluster:
    n = cluster.num_nodes
    return Cluster(cluster.names, cluster.memory_bytes, np.full((n, n), 4.0), cluster.flops_per_s)


@st.composite
def dag_problems(draw, objectives=OBJ, colocate: bool = True) -> DagProblem:
    dag = draw(dags(colocate=colocate))
    objective = draw(st.sampled_from(objectives))
    cluster = draw(clusters(max_nodes=4, speeds=True))
    if objective == "star":
        cluster = _uniform_links(cluster)
    if draw(st.booleans()):
        n = cluster.num_nodes
        lat = np.array(
            draw(st.lists(st.sampled_from([0.0, 0.1, 0.5]), min_size=n * n, max_size=n * n))
        )
        cluster = Cluster(
            cluster.names,
            cluster.memory_bytes,
            cluster.bandwidth_mbps,
            cluster.flops_per_s,
            lat.reshape(n, n),
        )
    return DagProblem(
        dag, cluster, memory=draw(st.sampled_from(["peak", "weights"])), objective=objective
    )


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


# -- states ----------------------------------------------------------------------


def test_diamond_ideals_and_crossings():
    # 0 -> {1, 2} -> 3, one tensor per edge
    d = Dag.from_edges(4, [(0, 1), (0, 2), (1, 3), (2, 3)], tensor_bytes=[1, 2, 3, 4])
    s = d.state_space()
    got = {
        tuple(int(v) for v in np.flatnonzero(r)): float(b)
        for r, b in zip(s.members, s.out_bytes, strict=True)
    }
    # {0,1}: 0->2 (2) and 1->3 (3) cross; {0,2}: 0->1 (1) and 2->3 (4)
    assert got == {(): 0, (0,): 3, (0, 1): 5, (0, 2): 5, (0, 1, 2): 7, (0, 1, 2, 3): 0}
    assert s.complete and not s.is_line


def test_chain_states_form_a_line():
    c = build_chain(load_graph(residual_block()), "multi")
    d = Dag.from_chain(c)
    s = d.state_space()
    assert s.is_line and s.num_states == c.num_blocks + 1
    assert s.out_bytes[1:-1].tolist() == c.transfer_bytes.tolist()


def test_cap_gives_feasible_not_optimal():
    # four parallel branches of two ops: 3^4 = 81 ideals of the branches (+ source, sink)
    edges = [(0, 1 + 2 * b) for b in range(4)] + [(1 + 2 * b, 2 + 2 * b) for b in range(4)]
    edges += [(2 + 2 * b, 9) for b in range(4)]
    d = Dag.from_edges(10, edges, tensor_bytes=[1e5] * len(edges), param_bytes=[1] * 10)
    assert d.count_ideals() == 83 and d.count_ideals(limit=50) is None
    cl = Cluster.uniform(3, memory_bytes=6, bandwidth_mbps=8.0)
    full = solve(DagProblem(d, cl), "exact")
    capped = solve(DagProblem(d, cl, max_states=20), "exact")
    assert full.status == "optimal"
    assert capped.status == "feasible" and capped.info["states_capped"]
    assert capped.bottleneck_s >= full.bottleneck_s


def test_colocation_hull_is_one_unit():
    # 0 -> 1 -> 2, 0 -> 2: colocating 0 and 2 forces 1 into their stage
    d = Dag.from_edges(3, [(0, 1), (1, 2), (0, 2)])
    d = Dag(**{**d.__dict__, "colocate": ((0, 2),)})
    assert d.units == ((0, 1, 2),)
    assert d.state_space().num_states == 2


def test_cycle_is_refused():
    with pytest.raises(DagError, match="cycle"):
        Dag.from_edges(2, [(0, 1), (1, 0)])


# -- evaluate --------------------------------------------------------------------


def _diamond_problem(objective="communication", **kw) -> DagProblem:
    d = Dag.from_edges(
        4,
        [(0, 1), (0, 2), (1, 3), (2, 3)],
        tensor_bytes=[1e6, 2e6, 3e6, 4e6],
        param_bytes=[1, 1, 1, 1],
        flops=[1e6, 2e6, 3e6, 4e6],
    )
    cl = Cluster.uniform(3, memory_bytes=4, bandwidth_mbps=8.0, flops_per_s=1e6)
    return DagProblem(d, cl, objective=objective, **kw)


def test_evaluate_hand_computed_costs():
    plan = Plan((OpStage((0, 2), 0), OpStage((1,), 1), OpStage((3,), 2)))
    # boundary {0,2}: 0->1 (1 MB) + 2->3 (4 MB) = 5 s at 8 Mbit/s; {0,1,2}: 1->3 + 2->3 = 7 s
    assert evaluate(_diamond_problem(), plan).bottleneck_s == 7.0
    # max: stage loads max(4, 5), max(2, 7), max(4, 0)
    assert evaluate(_diamond_problem("max"), plan).bottleneck_s == 7.0
    # sum: 4+0+5, 2+5+7, 4+7+0  (the 2->3 tensor is sent over both links it passes)
    assert evaluate(_diamond_problem("sum"), plan).bottleneck_s == 14.0
    # star, tensor cost = bytes over the 8 Mbit/s link: stage {0,2} sends 0->1 (1) and
    # 2->3 (4): 4 + 5; stage {1} reads 0->1 (1), sends 1->3 (3): 2 + 4; stage {3} reads 7: 4 + 7
    assert evaluate(_diamond_problem("star"), plan).bottleneck_s == 11.0


def test_evaluate_latency_on_every_transfer():
    p = _diamond_problem()
    n = p.num_nodes
    cl = Cluster(
        p.cluster.names,
        p.cluster.memory_bytes,
        p.cluster.bandwidth_mbps,
        p.cluster.flops_per_s,
        np.full((n, n), 0.25),
    )
    plan = Plan((OpStage((0, 2), 0), OpStage((1,), 1), OpStage((3,), 2)))
    assert evaluate(p.with_cluster(cl), plan).bottleneck_s == 7.25


def test_evaluate_rejects_non_pipelines():
    p = _diamond_problem()
    with pytest.raises(InvalidPlan, match="later stage"):
        evaluate(p, Plan((OpStage((1,), 0), OpStage((0, 2, 3), 1))))
    with pytest.raises(InvalidPlan, match="no stage"):
        evaluate(p, Plan((OpStage((0, 1), 0), OpStage((2,), 1))))
    with pytest.raises(InvalidPlan, match="distinct"):
        evaluate(p, Plan((OpStage((0, 1), 0), OpStage((2, 3), 0))))


def test_plan_dict_round_trip():
    p = _diamond_problem()
    plan = Plan((OpStage((0, 2), 0), OpStage((1, 3), 2)))
    d = plan.to_dict(p)
    assert d == [{"node": "n0", "ops": ["0", "2"]}, {"node": "n2", "ops": ["1", "3"]}]
    assert Plan.from_dict(d, p) == plan


# -- the engine ------------------------------------------------------------------


@settings(max_examples=120)
@given(dag_problems())
def test_exact_equals_brute_force(problem):
    brute = solve(problem, "brute")
    exact = solve(problem, "exact")
    assert exact.status != "error", exact.info
    assert brute.status == exact.status
    assert _same(brute.bottleneck_s, exact.bottleneck_s)


@settings(max_examples=60)
@given(dag_problems())
def test_exact_equals_brute_force_when_decisions_are_costly(problem):
    # the driver probes less when one relaxation is costly: the optimum must not change
    from unittest import mock

    from partopt.solvers import _states

    with mock.patch.object(_states, "COSTLY_ENTRIES", -1):
        exact = solve(problem, "exact")
    brute = solve(problem, "brute")
    assert brute.status == exact.status
    assert _same(brute.bottleneck_s, exact.bottleneck_s)


@settings(max_examples=60)
@given(dag_problems(), st.randoms(use_true_random=False))
def test_relabelling_nodes_keeps_the_optimum(problem, rnd):
    n = problem.num_nodes
    perm = list(range(n))
    rnd.shuffle(perm)
    cl = problem.cluster
    lat = None if cl.latency_s is None else cl.latency_s[np.ix_(perm, perm)]
    relabelled = Cluster(
        tuple(cl.names[i] for i in perm),
        cl.memory_bytes[perm],
        cl.bandwidth_mbps[np.ix_(perm, perm)],
        None if cl.flops_per_s is None else cl.flops_per_s[perm],
        lat,
    )
    a = solve(problem, "exact")
    b = solve(problem.with_cluster(relabelled), "exact")
    assert a.status == b.status and _same(a.bottleneck_s, b.bottleneck_s)


@settings(max_examples=60)
@given(
    dag_models(max_nodes=8),
    clusters(max_nodes=4, speeds=True),
    st.sampled_from(["communication", "max"]),
)
def test_dag_at_most_multi_at_most_single(model, cluster, objective):
    graph = load_graph(model)
    dag = build_dag(graph)
    # "weights": a stage's memory does not depend on the order its layers run in
    values = []
    for cuts in ("single", "multi"):
        chain = build_chain(graph, cuts)
        values.append(solve(Problem(chain, cluster, "weights", objective=objective), "exact"))
    values.append(solve(DagProblem(dag, cluster, "weights", objective), "exact"))
    single, multi, full = values
    for r in values:
        assert r.status in ("optimal", "infeasible"), r.info
    inf = math.inf
    v = [inf if r.bottleneck_s is None else r.bottleneck_s for r in values]
    assert v[2] <= v[1] * (1 + 1e-9) + 1e-12
    assert v[1] <= v[0] * (1 + 1e-9) + 1e-12


@settings(max_examples=60)
@given(st.data())
def test_chain_shaped_dag_equals_chain(data):
    from tests.strategies import chains

    chain = data.draw(chains(max_blocks=7))
    cluster = data.draw(clusters(max_nodes=4, speeds=True))
    objective = data.draw(st.sampled_from(["communication", "max"]))
    a = solve(Problem(chain, cluster, objective=objective), "exact")
    b = solve(DagProblem(Dag.from_chain(chain), cluster, objective=objective), "exact")
    assert a.status == b.status and _same(a.bottleneck_s, b.bottleneck_s)


def _bounce_problem() -> DagProblem:
    """Three one-operator stages on three nodes; only the a-b link is fast."""
    d = Dag.from_edges(
        3, [(0, 1), (1, 2)], tensor_bytes=[1e6, 1e6], param_bytes=[1, 1, 1], flops=[0, 0, 0]
    )
    bw = np.array([[0.0, 80.0, 8.0], [80.0, 0.0, 8.0], [8.0, 8.0, 0.0]])
    cl = Cluster(("a", "b", "c"), np.ones(3), bw, np.ones(3))
    return DagProblem(d, cl, memory="weights")


def test_no_return_relaxation_closes_the_bounce():
    # walks a -> b -> a use the fast link twice (0.1 s); every plan also uses c (1 s)
    from partopt.solvers._states import StateSearch

    p = _bounce_problem()
    search = StateSearch(p)
    ok, allowed = search._threshold(0.1, per_node=False)
    h1, _, _ = search.relaxation(ok, allowed)
    assert h1[0].min() > p.num_nodes
    ok, allowed = search._threshold(1.0, per_node=False)
    assert search.relaxation(ok, allowed)[0][0].min() == 3
    assert search.walk_bound_s == 1.0
    r = solve(p, "exact")
    assert r.status == "optimal" and r.bottleneck_s == 1.0 == solve(p, "brute").bottleneck_s


@settings(max_examples=80)
@given(dag_problems())
def test_walk_bound_is_a_lower_bound(problem):
    from partopt.solvers._states import StateSearch

    brute = solve(problem, "brute")
    bound = StateSearch(problem).walk_bound_s
    if brute.bottleneck_s is None:
        return
    assert bound <= brute.bottleneck_s * (1 + 1e-12) + 1e-15


def test_identical_devices_decided_by_the_relaxation():
    p = _diamond_problem("star")
    r = solve(p, "exact")
    # the relaxation's optimum is the bound and its plan the incumbent: no decision left
    assert r.status == "optimal" and r.info["search_feasible"] == 0
    assert r.info["decisions"] == 0 and r.info["bound_s"] == r.bottleneck_s
    assert _same(r.bottleneck_s, solve(p, "brute").bottleneck_s)


@settings(max_examples=60)
@given(dag_problems())
def test_dag_milp_agrees_with_the_engine(problem):
    milp = solve(problem, "dag-milp")
    exact = solve(problem, "exact")
    assert milp.status != "error", milp.info
    assert milp.status == exact.status
    assert _same(milp.bottleneck_s, exact.bottleneck_s)


def test_engine_falls_back_to_the_milp():
    # a budget of one search state forces every undecided threshold to the MILP
    p = _diamond_problem("sum")
    r = solve(p, "exact", dfs_budget=1, probe_time_s=0.0)
    assert r.status == "optimal" and r.info["milp_calls"] >= 1
    assert _same(r.bottleneck_s, solve(p, "brute").bottleneck_s)


def test_dag_plan_exports_and_checks_on_a_branchy_model():
    from partopt.export import check_export, random_weights, split_model
    from tests.onnx_models import two_inputs

    model = two_inputs()
    graph = load_graph(model)
    dag = build_dag(graph)
    chain = build_chain(graph, "multi")
    names = dag.op_names
    # branch B first, then branch A, then the join: not contiguous in the multi chain's order
    stages = [["sig_b"], ["mm", "relu_a"], ["add", "relu_out"]]
    plan = Plan(
        tuple(OpStage(tuple(names.index(o) for o in ops), k) for k, ops in enumerate(stages))
    )
    p = DagProblem(dag, Cluster.uniform(3, memory_bytes=1e9, bandwidth_mbps=8.0))
    ev = evaluate(p, plan)
    export = split_model(random_weights(model, seed=1), chain, plan, layer_graph=graph)
    # what each stage sends is what evaluate charges
    sent = [float(sum(t.nbytes for t in s.outputs)) for s in export.stages[:-1]]
    assert sent == [r.transfer_bytes for r in ev.stages[:-1]]
    assert check_export(random_weights(model, seed=1), export).ok
    # the same plan as JSON (operator names) gives the same split
    again = split_model(
        random_weights(model, seed=1), chain, {"stages": plan.to_dict(p)}, layer_graph=graph
    )
    assert [s.first_block for s in again.stages] == [s.first_block for s in export.stages]


@settings(max_examples=40)
@given(st.data())
def test_chain_latency_is_on_every_transfer_for_every_solver(data):
    from tests.strategies import chains

    chain = data.draw(chains(max_blocks=6))
    base = data.draw(clusters(max_nodes=4, speeds=True))
    n = base.num_nodes
    lat = data.draw(st.lists(st.sampled_from([0.0, 0.2, 1.0]), min_size=n * n, max_size=n * n))
    cl = Cluster(
        base.names,
        base.memory_bytes,
        base.bandwidth_mbps,
        base.flops_per_s,
        np.reshape(lat, (n, n)),
    )
    p = Problem(chain, cl, objective=data.draw(st.sampled_from(["communication", "max"])))
    as_dag = DagProblem(Dag.from_chain(chain), cl, objective=p.objective)
    brute = solve(p, "brute")
    for r in (solve(p, "exact"), solve(p, "milp"), solve(as_dag, "exact")):
        assert r.status == brute.status, r.info
        assert _same(r.bottleneck_s, brute.bottleneck_s)


def test_inspect_dag_counts_ideals(capsys, tmp_path):
    import onnx

    from partopt.cli import main
    from tests.onnx_models import two_inputs

    path = tmp_path / "m.onnx"
    onnx.save(two_inputs(), path)
    assert main(["inspect", str(path), "--cuts", "dag"]) == 0
    # mm -> relu_a and sig_b are independent: 3 x 2 ideals below the join, plus 2 above
    assert "8 ideals" in capsys.readouterr().out
    assert main(["inspect", str(path), "--cuts", "dag", "--max-states", "3"]) == 0
    assert "more than 3 ideals" in capsys.readouterr().out


def test_chain_only_methods_refuse_dag_problems_in_one_line(capsys):
    from partopt.cli.main import main
    from partopt.solvers import SolverRefused, available

    p = _diamond_problem()
    chain_only = [name for name, m in available().items() if not m.dag]
    assert "greedy" in chain_only and "exact" not in chain_only
    for name in chain_only:
        with pytest.raises(SolverRefused, match="plans chains only"):
            solve(p, name)
    code = main(
        [
            "solve",
            str(MODELS / "resnet50.onnx"),
            "--cuts",
            "dag",
            "--method",
            "greedy",
            "--paper-cluster",
            "10",
            "--capacity-mb",
            "64",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "plans chains only" in err[0]
