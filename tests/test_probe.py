"""Sizes static inference cannot follow: probe runs, sample inputs, index-bounded inputs.

Every pattern model inspects (single and multi cuts), plans, exports and
passes the stage check, or fails with the one-line error that names the
tensor and what would settle it.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from partopt.chain import build_chain
from partopt.cli import main
from partopt.cluster import Cluster
from partopt.errors import PartoptError
from partopt.export import check_export, load_model, split_model
from partopt.onnx_graph import ModelError, load_graph
from partopt.probe import ProbeError, index_bounds, load_sample_inputs, session
from partopt.problem import Problem
from partopt.solve import solve
from tests import onnx_models as M

RUNNABLE = [
    "shape_gather_slice",
    "reshape_from_shape",
    "expand_constant_of_shape",
    "loop_scan_output",
    "unused_input",
    "scatter_index",
    "microsoft_op",
]


def _truth(model: onnx.ModelProto, inputs: dict) -> dict[str, tuple[int, ...]]:
    """Shapes of every main-graph node output in one onnxruntime run."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = [o for n in m.graph.node for o in n.output if o]
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=t) for t in names if t not in have)
    outs = session(m, optimize=False).run(names, inputs)
    return {t: tuple(np.shape(a)) for t, a in zip(names, outs, strict=True)}


def _inputs(name: str) -> dict:
    rng = np.random.default_rng(0)
    model = getattr(M, name)()
    out = {}
    for vi in model.graph.input:
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if np.dtype(dtype).kind == "f":
            out[vi.name] = rng.standard_normal(dims).astype(dtype)
        else:
            out[vi.name] = np.zeros(dims, dtype=dtype)
    return out


def _plan(chain, stages: int = 3):
    """Plan on a 3-node cluster whose nodes each hold about half of the model."""
    total = chain.stage_memory(0, chain.num_blocks - 1, "peak")
    biggest = max(chain.stage_memory(b, b, "peak") for b in range(chain.num_blocks))
    cap = max(total / 2, biggest) + 1
    cluster = Cluster(
        names=tuple(f"n{k}" for k in range(stages)),
        memory_bytes=np.full(stages, cap),
        bandwidth_mbps=np.full((stages, stages), 10.0) - 10.0 * np.eye(stages),
    )
    problem = Problem(chain, cluster)
    result = solve(problem, "exact")
    assert result.status == "optimal" and result.plan is not None
    return result.plan.to_dict(problem)


@pytest.mark.parametrize("name", RUNNABLE)
@pytest.mark.parametrize("cuts", ["single", "multi"])
def test_pattern_inspects_plans_exports_and_checks(name, cuts):
    model = getattr(M, name)()
    graph = load_graph(model)
    truth = _truth(model, _inputs(name))
    for t, info in graph.tensors.items():
        if t in truth:  # every size the graph claims is the size onnxruntime computes
            assert info.bytes is not None, t
            assert info.shape == truth[t], t
    chain = build_chain(graph, cuts=cuts)
    plan = _plan(chain)
    export = split_model(model, chain, {"stages": plan}, layer_graph=graph)
    report = check_export(model, export, seed=1)
    assert report.ok, str(report)


@pytest.mark.parametrize(
    ("name", "probed"),
    [("shape_gather_slice", {"sl", "r", "Y"}), ("loop_scan_output", {"stacked", "r", "Y"}),
     ("microsoft_op", {"g", "Y"})],
)  # fmt: skip
def test_probe_is_the_named_source_of_what_inference_missed(name, probed):
    graph = load_graph(getattr(M, name)())
    by_probe = {t for t, ti in graph.tensors.items() if ti.source == "probe"}
    assert probed <= by_probe
    assert graph.meta["probe"]["ran"] and graph.meta["probe"]["weights"] == "model"
    assert graph.meta["shape_sources"]["probe"] == len(by_probe)
    assert "unknown" not in graph.meta["shape_sources"]


def test_models_inference_settles_are_not_probed():
    graph = load_graph(M.chain_model())
    assert graph.meta["probe"] == {"ran": False}
    assert set(graph.meta["shape_sources"]) == {"inference"}


def test_probe_draws_weights_for_an_architecture_only_model(tmp_path):
    model = M.microsoft_op()
    path = tmp_path / "arch.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="w.bin",
              size_threshold=0)  # fmt: skip
    (tmp_path / "w.bin").unlink()
    graph = load_graph(path)
    assert graph.meta["probe"]["weights"].startswith("random")
    assert graph.tensors["g"].shape == (1, 6)


def test_range_from_an_input_value_needs_sample_inputs():
    model = M.range_from_input()
    graph = load_graph(model)
    assert "r" in graph.meta["unsettled"]
    for cuts in ("single", "multi"):
        with pytest.raises(ModelError) as e:
            build_chain(graph, cuts)
        msg = str(e.value)
        assert "\n" not in msg and "depends on the input values" in msg
        assert "--sample-inputs" in msg and "--input-shape" not in msg
    sample = {"n": np.array(5, dtype=np.int64)}
    graph = load_graph(model, sample_inputs=sample)
    assert graph.tensors["r"].shape == (5,) and graph.tensors["r"].source == "sample-inputs"
    chain = build_chain(graph, "multi")
    stages = _plan(chain)
    export = split_model(model, chain, {"stages": stages}, layer_graph=graph, sample_inputs=sample)
    assert check_export(model, export, sample_inputs=sample).ok


def test_sample_inputs_that_do_not_fit_are_one_line():
    model = M.range_from_input()
    with pytest.raises(ModelError, match="'nope', which is not a graph input"):
        load_graph(model, sample_inputs={"nope": np.zeros(1)})
    with pytest.raises(ModelError, match="drop one of them"):
        load_graph(model, {"X": (1, 8)}, sample_inputs={"X": np.zeros((2, 8), np.float32)})


def test_index_bounds_follow_what_the_inputs_index():
    model = M.scatter_index()
    # ids index the 50 rows of the table; slots (through a Cast) the 10 slots of h
    assert index_bounds(model) == {"ids": 50, "slots": 10}


def test_unused_input_is_fed_to_the_whole_model():
    model = M.unused_input()
    graph = load_graph(model)
    chain = build_chain(graph, "multi")
    stages = [{"node": "a", "first_block": 0, "last_block": chain.num_blocks - 1}]
    export = split_model(model, chain, {"stages": stages}, layer_graph=graph)
    assert [t.name for t in export.inputs] == ["X"]  # the stages never see Z
    assert check_export(model, export).ok


def _string_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Relu", ["X"], ["r"], name="relu"),
        helper.make_node("Identity", ["label"], ["label_out"], name="ident"),
    ]
    g = helper.make_graph(
        nodes,
        "strings",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("label", TensorProto.STRING, [1]),
        ],
        [
            helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("label_out", TensorProto.STRING, [1]),
        ],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_string_inputs_need_sample_inputs():
    model = _string_model()
    graph = load_graph(model)
    chain = build_chain(graph, "single")
    stages = [{"node": "a", "first_block": 0, "last_block": chain.num_blocks - 1}]
    export = split_model(model, chain, {"stages": stages}, layer_graph=graph)
    with pytest.raises(ProbeError) as e:
        check_export(model, export)
    assert "\n" not in str(e.value) and "'label'" in str(e.value)
    assert "--sample-inputs" in str(e.value)
    sample = {"label": np.array(["cat"])}
    assert check_export(model, export, sample_inputs=sample).ok


def test_external_data_outside_the_model_folder_is_one_line(tmp_path):
    model = M.unused_input()
    inner = tmp_path / "inner"
    inner.mkdir()
    onnx.save(model, str(inner / "m.onnx"), save_as_external_data=True, location="w.bin",
              size_threshold=0)  # fmt: skip
    loaded = onnx.load(str(inner / "m.onnx"), load_external_data=False)
    for bad in ("../../etc/passwd", "/etc/passwd"):
        for t in loaded.graph.initializer:
            for kv in t.external_data:
                if kv.key == "location":
                    kv.value = bad
        onnx.save(loaded, str(inner / "bad.onnx"))
        with pytest.raises(PartoptError) as e:
            load_model(inner / "bad.onnx")
        assert "\n" not in str(e.value) and bad in str(e.value)
    # the good copy loads its own weights
    good = load_model(inner / "m.onnx")
    assert numpy_helper.to_array(good.graph.initializer[0]).any()


def test_cli_sample_inputs_through_inspect_solve_export(tmp_path, capsys):
    model_path = tmp_path / "range.onnx"
    onnx.save(M.range_from_input(), str(model_path))
    sample = tmp_path / "sample.npz"
    np.savez(sample, n=np.array(6, dtype=np.int64))
    assert main(["inspect", str(model_path), "--cuts", "multi"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("partopt: error: ") and "--sample-inputs" in err and "\n" not in err
    assert main(["inspect", str(model_path), "--cuts", "multi", "--sample-inputs",
                 str(sample), "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["meta"]["shape_sources"]["sample-inputs"] == 4
    assert doc["meta"]["probe"]["inputs"] == "sample-inputs"
    assert (
        main(["inspect", str(model_path), "--cuts", "multi", "--sample-inputs", str(sample)]) == 0
    )
    assert "from a run on the sample inputs" in capsys.readouterr().out
    plan = tmp_path / "plan.json"
    code = main(["solve", str(model_path), "--cuts", "multi", "--sample-inputs", str(sample),
                 "--paper-cluster", "3", "--capacity-mb", "64", "--output", str(plan)])  # fmt: skip
    assert code == 0
    capsys.readouterr()
    assert main(["export", str(model_path), str(plan), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "outputs match" in out


def test_sample_inputs_file_errors_are_one_line(tmp_path):
    with pytest.raises(ProbeError, match="not found"):
        load_sample_inputs(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(ProbeError, match="numpy.savez") as e:
        load_sample_inputs(bad)
    assert "\n" not in str(e.value)


def test_if_on_an_input_value_needs_sample_inputs():
    model = M.if_on_sample_rate()
    graph = load_graph(model)
    # both random runs take the else-branch: the same shapes, yet not to be trusted
    assert set(graph.meta["unsettled"]) == {"branch", "Y"}
    assert "'sr'" in graph.meta["unsettled"]["branch"]
    with pytest.raises(ModelError) as e:
        build_chain(graph, "multi")
    msg = str(e.value)
    assert "\n" not in msg and "by_rate" in msg and "--sample-inputs" in msg
    sample = {"sr": np.array(16000, dtype=np.int64)}
    graph = load_graph(model, sample_inputs=sample)
    assert graph.meta["unsettled"] == {} and graph.tensors["branch"].shape == (1, 8)
    chain = build_chain(graph, "multi")
    export = split_model(model, chain, {"stages": _plan(chain)}, layer_graph=graph,
                         sample_inputs=sample)  # fmt: skip
    assert check_export(model, export, sample_inputs=sample).ok


def test_branch_failure_on_made_up_values_names_node_branch_and_input(tmp_path, capsys):
    model = M.if_breaks_on_made_up_rate()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert main(["inspect", str(path), "--cuts", "multi"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("partopt: error:") and "\n" not in err
    # the failing node, the branch, the input and the way out; not onnxruntime's raw text
    assert "MatMul node 'project'" in err and "If node 'by_rate'" in err
    assert "input 'sr'" in err and "--sample-inputs" in err
    assert "ONNXRuntimeError" not in err and "..." not in err
    sample = {"sr": np.array(16000, dtype=np.int64)}
    graph = load_graph(model, sample_inputs=sample)
    assert graph.tensors["Y"].shape == (1, 4)
    chain = build_chain(graph, "multi")
    export = split_model(model, chain, {"stages": _plan(chain)}, layer_graph=graph,
                         sample_inputs=sample)  # fmt: skip
    assert check_export(model, export, sample_inputs=sample).ok


def test_advice_names_what_is_still_missing_not_what_was_given():
    # B is read after the first cut, so its size is a transfer the chain needs
    nodes = [helper.make_node("Relu", ["A"], ["a"], name="relu"),
             helper.make_node("Add", ["a", "B"], ["Y"], name="add")]  # fmt: skip
    g = helper.make_graph(
        nodes,
        "two_symbolic",
        [
            helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, "n"]),
            helper.make_tensor_value_info("B", TensorProto.FLOAT, [1, "m"]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError) as e:
        build_chain(load_graph(model, {"A": (1, 4)}), "multi")
    msg = str(e.value)
    assert "'B'" in msg and "--input-shape B=1xN" in msg and "A=" not in msg
    graph = load_graph(model, {"A": (1, 4), "B": (1, 4)})
    assert build_chain(graph, "multi").num_blocks == 2


@pytest.mark.parametrize("name", ["loop_scan_output", "range_from_input", "if_on_sample_rate"])
def test_profiled_shapes_equal_those_of_exposed_outputs(name):
    from partopt.probe import _exposed_runs, _profiled_runs, make_inputs

    model = getattr(M, name)()
    names = [o for n in model.graph.node for o in n.output if o]
    feeds = [make_inputs(model, {}, seed=0)]
    profiled = _profiled_runs(model, names, feeds)
    assert set(profiled[0]) == set(names)  # every main-graph tensor found in the profile
    assert profiled == _exposed_runs(model, names, feeds)
