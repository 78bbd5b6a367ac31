"""Stage export: every stage is a valid ONNX model and the stages compose to the model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from partopt.chain import Chain
from partopt.export import (
    ExportError,
    check_export,
    load_model,
    missing_weights,
    random_weights,
    split_model,
    stage_ranges,
    write_export,
)
from partopt.plan import InvalidPlan, Plan

OPSET = [helper.make_opsetid("", 17)]


# -- tiny models ---------------------------------------------------------------------


def _init(name, shape, seed, scale=None):
    rng = np.random.default_rng(seed)
    fan_in = shape[0] if len(shape) == 2 else int(np.prod(shape[1:]) or 1)
    arr = rng.normal(0, scale or 1 / np.sqrt(fan_in), size=shape).astype(np.float32)
    return numpy_helper.from_array(arr, name)


def _model(nodes, inputs, outputs, inits, name):
    g = helper.make_graph(nodes, name, inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=OPSET)
    onnx.checker.check_model(m)
    return m


def mlp(width: int = 256, layers: int = 4) -> onnx.ModelProto:
    """``x -> (MatMul, Relu) * layers -> y``: a plain chain with one tensor per cut."""
    nodes, inits, prev = [], [], "x"
    for k in range(layers):
        inits.append(_init(f"W{k}", [width, width], k))
        nodes.append(helper.make_node("MatMul", [prev, f"W{k}"], [f"h{k}"], name=f"mm{k}"))
        nodes.append(helper.make_node("Relu", [f"h{k}"], [f"r{k}"], name=f"relu{k}"))
        prev = f"r{k}"
    nodes[-1].output[0] = "y"
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", T.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", T.FLOAT, ["batch", width])],
        inits,
        "mlp",
    )


def residual_block() -> onnx.ModelProto:
    """Conv -> Relu -> Conv -> Add(skip) -> Relu: the skip tensor passes through a stage."""
    c = 8
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"], name="relu0"),
        helper.make_node("Conv", ["b", "w1"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["d"], name="relu1"),
        helper.make_node("Conv", ["d", "w2"], ["e"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["e", "b"], ["f"], name="add"),
        helper.make_node("Relu", ["f"], ["y"], name="relu2"),
    ]
    inits = [_init(f"w{k}", [c, c if k else 3, 3, 3], k) for k in range(3)]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", T.FLOAT, [1, c, 16, 16])],
        inits,
        "residual_block",
    )


def two_inputs() -> onnx.ModelProto:
    """The second graph input is read only by the last node, and there are two outputs."""
    nodes = [
        helper.make_node("MatMul", ["x", "W0"], ["h0"], name="mm0"),
        helper.make_node("Tanh", ["h0"], ["h1"], name="tanh"),
        helper.make_node("MatMul", ["h1", "W1"], ["h2"], name="mm1"),
        helper.make_node("Add", ["h2", "z"], ["y"], name="add_z"),
        helper.make_node("Sigmoid", ["h2"], ["y2"], name="sig"),
    ]
    inits = [_init("W0", [16, 32], 0), _init("W1", [32, 8], 1)]
    return _model(
        nodes,
        [
            helper.make_tensor_value_info("x", T.FLOAT, [1, 16]),
            helper.make_tensor_value_info("z", T.FLOAT, [1, 8]),
        ],
        [
            helper.make_tensor_value_info("y", T.FLOAT, [1, 8]),
            helper.make_tensor_value_info("y2", T.FLOAT, [1, 8]),
        ],
        inits,
        "two_inputs",
    )


def constant_weights() -> onnx.ModelProto:
    """Weights held by Constant nodes (one folded through a Cast) and read by two stages.

    The nodes are unnamed, so the chain builder names them itself.
    """
    w = np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32) / 3
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w")),
        helper.make_node(
            "Constant", [], ["s64"], value=numpy_helper.from_array(np.array([0.5]), "s64")
        ),
        helper.make_node("Cast", ["s64"], ["s"], to=T.FLOAT),
        helper.make_node("MatMul", ["x", "w"], ["a"]),
        helper.make_node("Mul", ["a", "s"], ["b"]),
        helper.make_node("Relu", ["b"], ["c"]),
        helper.make_node("MatMul", ["c", "w"], ["d"]),
        helper.make_node("Mul", ["d", "s"], ["y"]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", T.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", T.FLOAT, [1, 8])],
        [],
        "constant_weights",
    )


def if_subgraph() -> onnx.ModelProto:
    """An ``If`` whose branches read an outer tensor and an initializer of their own."""
    then_w = numpy_helper.from_array(np.full((4,), 2.0, np.float32), "tw")
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["h", "tw"], ["t_out"])],
        "then",
        [],
        [helper.make_tensor_value_info("t_out", T.FLOAT, [1, 4])],
        [then_w],
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["h"], ["e_out"])],
        "else",
        [],
        [helper.make_tensor_value_info("e_out", T.FLOAT, [1, 4])],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["h"], name="relu"),
        helper.make_node("ReduceSum", ["h"], ["sum"], name="sum", keepdims=0),
        helper.make_node("Greater", ["sum", "zero"], ["cond"], name="gt"),
        helper.make_node("If", ["cond"], ["o"], name="if", then_branch=then_g, else_branch=else_g),
        helper.make_node("Add", ["o", "h"], ["y"], name="add"),
    ]
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", T.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", T.FLOAT, [1, 4])],
        [zero],
        "if_subgraph",
    )


TINY_MODELS = {
    "mlp": mlp,
    "residual_block": residual_block,
    "two_inputs": two_inputs,
    "constant_weights": constant_weights,
    "if_subgraph": if_subgraph,
}


# -- chains ----------------------------------------------------------------------------


def chain_of(model: onnx.ModelProto, cuts: str | None = None):
    """``(layer_graph, chain)`` of an in-memory model.

    ``cuts=None``: one block per layer (:func:`layer_chain`), the finest split, so
    that every boundary gets exported; else the package's chain builder.
    """
    from partopt.onnx_graph import graph_from_model

    graph = graph_from_model(model)
    if cuts is None:
        return graph, layer_chain(graph)
    from partopt.chain import build_chain

    return graph, build_chain(graph, cuts=cuts)


def layer_chain(graph) -> Chain:
    """One block per layer (a multi-tensor cut at every layer boundary)."""
    names = [n.name for n in graph.nodes]
    pos = {t: -1 for t in graph.inputs}
    for i, n in enumerate(graph.nodes):
        pos.update({t: i for t in n.outputs})
    last = {t: len(names) for t in graph.outputs}
    for i, n in enumerate(graph.nodes):
        for t in n.inputs:
            last[t] = max(last.get(t, -1), i)
    cut_tensors = tuple(
        tuple(t for t in pos if pos[t] <= c < last.get(t, -1)) for c in range(len(names) - 1)
    )
    transfer = [sum(graph.tensors[t].bytes for t in ts) for ts in cut_tensors]
    params = [n.param_bytes for n in graph.nodes]
    return Chain(
        name=graph.name,
        param_bytes=params,
        activation_peak_bytes=np.zeros(len(names)),
        paper_memory_bytes=params,
        flops=[n.flops for n in graph.nodes],
        transfer_bytes=transfer,
        paper_transfer_bytes=transfer,
        block_nodes=tuple((n,) for n in names),
        cut_tensors=cut_tensors,
    )


def even_plan(num_blocks: int, stages: int) -> dict:
    """A plan dict cutting ``num_blocks`` into ``stages`` runs of nearly equal length."""
    bounds = np.linspace(0, num_blocks, stages + 1).round().astype(int)
    return {
        "stages": [
            {"node": f"n{k}", "first_block": int(bounds[k]), "last_block": int(bounds[k + 1]) - 1}
            for k in range(stages)
        ]
    }


# -- tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_every_split_of_a_tiny_model_round_trips(name):
    model = TINY_MODELS[name]()
    graph, chain = chain_of(model)
    for stages in range(1, chain.num_blocks + 1):
        export = split_model(model, chain, even_plan(chain.num_blocks, stages), layer_graph=graph)
        assert len(export.stages) == stages
        for s in export.stages:
            onnx.checker.check_model(s.model, full_check=True)
        report = check_export(model, export, seed=stages)
        assert report.ok, (stages, str(report))
        assert report.max_rel_error < 1e-5


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
@pytest.mark.parametrize("cuts", ["single", "multi"])
def test_chain_builder_blocks_export(name, cuts):
    model = TINY_MODELS[name]()
    graph, chain = chain_of(model, cuts)
    for stages in sorted({1, min(2, chain.num_blocks), chain.num_blocks}):
        export = split_model(model, chain, even_plan(chain.num_blocks, stages), layer_graph=graph)
        assert check_export(model, export).ok
        for c, s in enumerate(export.stages[:-1]):
            cut = export.stages[c].last_block
            if chain.cut_tensors:
                assert {t.name for t in s.outputs} == set(chain.cut_tensors[cut])
            assert s.output_bytes == pytest.approx(chain.transfer_bytes[cut])


def test_boundaries_match_the_chain_cut_tensors():
    model = residual_block()
    graph, chain = chain_of(model)
    export = split_model(
        model, chain, even_plan(chain.num_blocks, chain.num_blocks), layer_graph=graph
    )
    for c, s in enumerate(export.stages[:-1]):
        assert {t.name for t in s.outputs} == set(chain.cut_tensors[c])
        assert s.output_bytes == pytest.approx(chain.transfer_bytes[c])


def test_skip_tensor_passes_through_the_middle_stage():
    model = residual_block()
    graph, chain = chain_of(model)
    # stage 1 = conv1 + relu1 (+ conv2): the skip tensor "b" crosses it untouched
    names = [list(b) for b in chain.block_nodes]
    first = next(i for i, b in enumerate(names) if "conv1" in b)
    last = next(i for i, b in enumerate(names) if "add" in b) - 1
    plan = {
        "stages": [
            {"node": "a", "first_block": 0, "last_block": first - 1},
            {"node": "b", "first_block": first, "last_block": last},
            {"node": "c", "first_block": last + 1, "last_block": chain.num_blocks - 1},
        ]
    }
    export = split_model(model, chain, plan, layer_graph=graph)
    middle = export.stages[1]
    assert "b" in {t.name for t in middle.inputs} and "b" in {t.name for t in middle.outputs}
    assert check_export(model, export).ok


def test_constants_are_copied_not_sent():
    model = constant_weights()
    graph, chain = chain_of(model)
    export = split_model(model, chain, even_plan(chain.num_blocks, 2), layer_graph=graph)
    for s in export.stages:
        crossing = {t.name for t in s.inputs} | {t.name for t in s.outputs}
        assert not crossing & {"w", "s", "s64"}
        assert any(n.op_type == "Constant" for n in s.model.graph.node)
    assert check_export(model, export).ok


def test_write_export_and_manifest(tmp_path):
    model = two_inputs()
    graph, chain = chain_of(model)
    export = split_model(model, chain, even_plan(chain.num_blocks, 3), layer_graph=graph)
    path = write_export(export, tmp_path / "out")
    manifest = json.loads(path.read_text())
    assert [s["node"] for s in manifest["stages"]] == ["n0", "n1", "n2"]
    assert [t["name"] for t in manifest["inputs"]] == ["x", "z"]
    assert [t["name"] for t in manifest["stages"][-1]["outputs"]] == ["y", "y2"]
    for s in manifest["stages"]:
        loaded = onnx.load(str(tmp_path / "out" / s["file"]))
        assert [i.name for i in loaded.graph.input] == [t["name"] for t in s["inputs"]]
        assert s["output_bytes"] == sum(t["bytes"] for t in s["outputs"])
    # z is read only by the last stage: it rides along from the first
    assert "z" in {t["name"] for t in manifest["stages"][1]["inputs"]}


def test_random_weights_for_architecture_only_models(tmp_path):
    model = mlp(width=32, layers=3)
    path = tmp_path / "arch.onnx"
    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="arch.weights",
        size_threshold=0,
    )
    (tmp_path / "arch.weights").unlink()
    arch = load_model(path)
    assert sorted(missing_weights(arch)) == ["W0", "W1", "W2"]
    graph, chain = chain_of(arch)
    export = split_model(arch, chain, even_plan(chain.num_blocks, 3), layer_graph=graph)
    with pytest.raises(ExportError, match="random-weights"):
        check_export(arch, export)
    filled = random_weights(arch, seed=3)
    assert missing_weights(filled) == []
    again = random_weights(arch, seed=3)
    for a, b in zip(filled.graph.initializer, again.graph.initializer, strict=True):
        assert a.dims == b.dims and a.data_type == b.data_type
        np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))
    export = split_model(filled, chain, even_plan(chain.num_blocks, 3), layer_graph=graph)
    assert check_export(filled, export, seed=1).ok


def test_random_weights_keep_normalisation_finite():
    x = helper.make_tensor_value_info("x", T.FLOAT, [1, 4, 2, 2])
    y = helper.make_tensor_value_info("y", T.FLOAT, [1, 4, 2, 2])
    inits = [
        numpy_helper.from_array(np.zeros(4, np.float32) - 1, n)
        for n in ("scale", "bias", "mean", "var")
    ]
    node = helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"])
    m = _model([node], [x], [y], inits, "bn")
    filled = random_weights(m, seed=0, only_missing=False)
    var = numpy_helper.to_array(next(t for t in filled.graph.initializer if t.name == "var"))
    assert (var > 0).all()


def test_plan_that_does_not_match_the_chain_is_refused():
    model = mlp()
    graph, chain = chain_of(model)
    b = chain.num_blocks
    with pytest.raises(InvalidPlan, match="chain has"):
        stage_ranges({"stages": [{"node": "a", "first_block": 0, "last_block": b}]}, b)
    with pytest.raises(InvalidPlan, match="contiguously"):
        stage_ranges(
            {
                "stages": [
                    {"node": "a", "first_block": 0, "last_block": 0},
                    {"node": "b", "first_block": 2, "last_block": b - 1},
                ]
            },
            b,
        )
    with pytest.raises(InvalidPlan, match="distinct"):
        stage_ranges(
            {
                "stages": [
                    {"node": "a", "first_block": 0, "last_block": 0},
                    {"node": "a", "first_block": 1, "last_block": b - 1},
                ]
            },
            b,
        )
    with pytest.raises(InvalidPlan, match="stages"):
        stage_ranges({"status": "infeasible", "stages": []}, b)
    with pytest.raises(ExportError, match="block_nodes"):
        split_model(model, Chain.from_arrays([1, 1], [1]), Plan.from_cuts([], [0], 2))


@pytest.mark.parametrize("cuts", ["single", "multi"])
def test_bundled_model_round_trip_with_random_weights(cuts, tmp_path):
    from pathlib import Path

    from partopt.chain import build_chain
    from partopt.onnx_graph import load_graph

    path = Path(__file__).resolve().parents[1] / "models" / "mobilenetv2.onnx"
    if not path.exists():
        pytest.skip("models/mobilenetv2.onnx is not there")
    arch = load_model(path)
    assert missing_weights(arch)  # architecture only
    model = random_weights(arch, seed=7)
    graph = load_graph(path)
    chain = build_chain(graph, cuts=cuts)
    export = split_model(model, chain, even_plan(chain.num_blocks, 5), layer_graph=graph)
    for s in export.stages[:-1]:
        assert s.output_bytes == pytest.approx(chain.transfer_bytes[s.last_block])
    report = check_export(model, export, seed=1)
    assert report.ok and report.max_rel_error < 1e-4, str(report)
    write_export(export, tmp_path)
    for s in export.stages:
        onnx.checker.check_model(str(tmp_path / f"stage_{s.index}.onnx"))


def test_plans_are_evaluated_on_the_cluster_they_define():
    # Three blocks of 4 parameter bytes; the plan records each stage's memory.
    chain = Chain.from_arrays([4, 4, 4], [1, 1])

    def doc(said0, node1="b"):
        return {
            "memory": "weights",
            "stages": [
                {"node": "a", "first_block": 0, "last_block": 1, "memory_bytes": said0},
                {"node": node1, "first_block": 2, "last_block": 2},
            ],
        }

    assert stage_ranges(doc(8), chain) == [("a", 0, 1), ("b", 2, 2)]
    # a stage over the memory its plan records is refused by evaluate
    with pytest.raises(InvalidPlan, match="needs 8 bytes but node 'a' has 3, the memory the plan"):
        stage_ranges(doc(3), chain)
    # integer nodes keep their index; a Plan object is read the same way
    assert stage_ranges(doc(8, node1=0), chain) == [("a", 0, 1), (0, 2, 2)]
    assert stage_ranges(Plan.from_cuts([0], [2, 0], 3), chain) == [(2, 0, 0), (0, 1, 2)]
    with pytest.raises(InvalidPlan, match="whole number"):
        stage_ranges([{"node": "a", "first_block": 0.5, "last_block": 2}], chain)
