"""Cut points and the block chain: hand-computed numbers and properties."""

from __future__ import annotations

import networkx as nx
import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from onnx import TensorProto, helper, numpy_helper

from partopt.chain import (
    build_chain,
    compare_cut_methods,
    load_chain,
    multi_tensor_order,
    single_tensor_cut_points,
    singleton_level_cut_points,
)
from partopt.onnx_graph import LayerGraph, ModelError, load_graph
from tests import onnx_models as M
from tests.strategies_graphs import dag_models


def paper_bytes(consumers: int, elements: int) -> float:
    """The original's Mbit (float64, zfp 1.44, 1024**2) as bytes at 10**6 bit/Mbit."""
    return consumers * elements * 8 / 1.44 * 8 / 1024**2 * 1e6 / 8


# -- hand-computed chains ----------------------------------------------------------------


def test_chain_model_single():
    c = build_chain(load_graph(M.chain_model()))
    assert c.cut_names == ("conv", "relu", "pool", "flatten")
    assert c.block_nodes == (("conv",), ("relu",), ("pool",), ("flatten",), ("fc",))
    assert c.cut_tensors == (("c",), ("r",), ("p",), ("f",))
    assert c.transfer_bytes.tolist() == [1024, 1024, 256, 256]
    assert c.param_bytes.tolist() == [448, 0, 0, 0, 2600]
    assert c.flops.tolist() == [14080, 256, 256, 0, 1290]
    # live while running: X+c, c+r, r+p, p+f, f+Y
    assert c.activation_peak_bytes.tolist() == [768 + 1024, 2048, 1280, 512, 296]
    # float32 output bytes + number of parameters per layer
    assert c.paper_memory_bytes.tolist() == [1024 + 112, 1024, 256, 256, 40 + 650]
    np.testing.assert_allclose(
        c.paper_transfer_bytes, [paper_bytes(1, 256)] * 2 + [paper_bytes(1, 64)] * 2
    )
    assert c.meta == {
        "model": "chain_model",
        "num_nodes": 5,
        "param_bytes": 3048,
        "flops": 15882,
        "cuts": "single",
        "unknown_size_tensors": 0,
        "warnings": [],
    }


def test_residual_block_single_and_multi():
    g = load_graph(M.residual_block())
    assert single_tensor_cut_points(g) == ["add"]  # the skip edge jumps over the convs
    c = build_chain(g)
    assert c.block_nodes == (("conv1", "relu1", "conv2", "add"), ("relu2",))
    assert c.transfer_bytes.tolist() == [1024]
    assert c.param_bytes.tolist() == [1152, 0]
    # X stays live until add: X + r1 + c2 while conv2 runs
    assert c.activation_peak_bytes.tolist() == [3072, 2048]
    assert c.paper_memory_bytes.tolist() == [4 * 1024 + 288, 1024]

    m = build_chain(g, "multi")
    assert m.cut_names == ("conv1", "relu1", "conv2", "add")
    assert m.cut_tensors == (("X", "c1"), ("X", "r1"), ("X", "c2"), ("s",))
    assert m.transfer_bytes.tolist() == [2048, 2048, 2048, 1024]
    assert m.activation_peak_bytes.tolist() == [2048, 3072, 3072, 3072, 2048]
    np.testing.assert_allclose(m.paper_transfer_bytes[0], paper_bytes(1, 256) * 2)
    assert m.meta["cuts"] == "multi"


def test_two_inputs_multi_order_keeps_live_bytes_small():
    g = load_graph(M.two_inputs())
    assert single_tensor_cut_points(g) == ["add"]
    # sig_b frees B (net 0 bytes) before mm grows the live set by 32 bytes
    assert multi_tensor_order(g) == ["sig_b", "mm", "relu_a", "add", "relu_out"]
    m = build_chain(g, "multi")
    assert m.cut_tensors == (("A", "b1"), ("a1", "b1"), ("a2", "b1"), ("s",))
    assert m.transfer_bytes.tolist() == [32 + 64, 128, 128, 64]


def test_if_subgraph_chain():
    c = build_chain(load_graph(M.if_subgraph()))
    assert c.cut_names == ("relu", "if")
    assert c.block_nodes[1] == ("sum", "greater", "squeeze", "if")
    assert c.param_bytes.tolist() == [0, 4 + 32, 0]
    assert c.transfer_bytes.tolist() == [16, 16]
    # r is read by two layers after the first cut: the original counted it twice
    np.testing.assert_allclose(c.paper_transfer_bytes, [paper_bytes(2, 4), paper_bytes(1, 4)])


def test_constant_weights_chain():
    c = build_chain(load_graph(M.constant_weights()))
    assert c.cut_names == ("mm1", "mm2")
    assert c.param_bytes.tolist() == [64, 0, 24]
    assert c.meta["param_bytes"] == 88


def test_early_output_is_held_by_the_last_block():
    g = load_graph(M.early_output())
    c = build_chain(g)
    assert c.cut_names == ("relu1",)  # after relu2, r1 (an output) would also cross
    m = build_chain(g, "multi")
    assert m.cut_tensors == (("r1",), ("r1", "r2"))
    assert m.transfer_bytes.tolist() == [16, 32]
    # readers after the cut, plus one for the graph output
    np.testing.assert_allclose(m.paper_transfer_bytes, [paper_bytes(2, 4), paper_bytes(2, 4)])
    assert m.activation_peak_bytes.tolist() == [32, 32, 48]


def test_dead_end_and_random_source_split_the_methods():
    cmp = compare_cut_methods(load_graph(M.dead_end()))
    # a dominates the sink, but X must still reach "dead", which runs after a
    assert cmp["dominators"] == ["b"] and "a" in cmp["rejected_dominators"]
    assert cmp["singleton_levels"] == [] and not cmp["same"]
    assert cmp["only_dominators"] == ["b"]

    g = load_graph(M.random_source())
    assert single_tensor_cut_points(g) == ["a", "b"]
    assert singleton_level_cut_points(g) == []  # noise shares level 1 with a
    c = build_chain(g)
    assert c.block_nodes == (("a",), ("b",), ("noise", "add"))  # noise runs late
    assert c.transfer_bytes.tolist() == [16, 16]


def test_methods_agree_on_plain_models():
    for make in (M.chain_model, M.residual_block, M.two_inputs, M.if_subgraph, M.early_output):
        cmp = compare_cut_methods(load_graph(make()))
        assert cmp["same"], cmp


def test_one_layer_model_is_one_block():
    g = helper.make_graph(
        [helper.make_node("Relu", ["X"], ["Y"], name="only")],
        "one",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])],
    )
    graph = load_graph(helper.make_model(g))
    for cuts in ("single", "multi"):
        c = build_chain(graph, cuts)
        assert c.num_blocks == 1 and c.block_nodes == (("only",),)
    assert single_tensor_cut_points(graph) == [] == singleton_level_cut_points(graph)


def test_unknown_shape_where_a_cut_needs_it():
    nodes = [
        helper.make_node("Relu", ["X"], ["a"], name="relu"),
        helper.make_node("Mystery", ["a"], ["b"], name="mystery", domain="custom"),
        helper.make_node("Relu", ["b"], ["Y"], name="out"),
    ]
    g = helper.make_graph(
        nodes,
        "custom",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)]
    )
    graph = load_graph(model)
    with pytest.raises(ModelError) as e:
        build_chain(graph)
    msg = str(e.value)
    # X's shape is fixed in the file: the advice is about the op, not about input shapes
    assert "\n" not in msg and "'b'" in msg and "custom:Mystery" in msg
    assert "--input-shape" not in msg

    with pytest.raises(ModelError) as e:
        build_chain(load_graph(M.symbolic_dims()), "multi")
    assert "--input-shape ids=1xN" in str(e.value)


def test_bad_cut_family_and_load_chain(tmp_path):
    with pytest.raises(ValueError, match="single, multi"):
        build_chain(load_graph(M.chain_model()), "double")
    path = tmp_path / "sym.onnx"
    onnx.save(M.symbolic_dims(), path)
    c = load_chain(path, "multi", {"ids": (1, 8)})
    assert c.transfer_bytes.tolist() == [32, 32]


# -- properties on random DAG models -----------------------------------------------------

VSRC, VSINK = "<source>", "<sink>"

# A third of the profile's examples per property (33 by default, more with
# HYPOTHESIS_PROFILE=thorough): the seven properties share the same models.
PROPERTY = settings(deadline=None, max_examples=max(30, settings.default.max_examples // 3))


def _with_ends(g: LayerGraph) -> nx.DiGraph:
    """The layer DAG with the virtual source and sink.

    The source feeds the readers of graph inputs (the layers without inputs
    when nothing reads one), the sink reads the graph outputs.
    """
    h = g.dag.copy()
    h.add_node(VSRC)
    for t in g.inputs:
        for c in g.consumers[t]:
            h.add_edge(VSRC, c)
        if t in g.outputs:
            h.add_edge(VSRC, VSINK)
    if h.out_degree(VSRC) == 0:
        h.add_edges_from((VSRC, n.name) for n in g.nodes if not n.inputs)
    for t in g.outputs:
        if t in g.producer:
            h.add_edge(g.producer[t], VSINK)
    return h


def _crossing(g: LayerGraph, before: set[str]) -> set[str]:
    """Tensors produced before (or graph inputs) and needed after (or outputs)."""
    out = set()
    for t in g.tensors:
        made_before = t in g.inputs or g.producer[t] in before
        needed_after = t in g.outputs or any(c not in before for c in g.consumers[t])
        if made_before and needed_after:
            out.add(t)
    return out


def _bytes(g: LayerGraph, tensors) -> int:
    return sum(g.tensors[t].bytes for t in tensors)


def _prefixes(chain):
    before: set[str] = set()
    for nodes in chain.block_nodes[:-1]:
        before |= set(nodes)
        yield set(before)


def _independent_param_bytes(model: onnx.ModelProto) -> int:
    total = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    for n in model.graph.node:
        if n.op_type == "Constant":
            total += numpy_helper.to_array(n.attribute[0].t).nbytes
    return total


@PROPERTY
@given(dag_models())
def test_single_cut_points_separate_the_graph(model):
    g = load_graph(model)
    c = build_chain(g)
    h = _with_ends(g)
    assert list(c.cut_names) == single_tensor_cut_points(g)
    for d, before, tensors in zip(c.cut_names, _prefixes(c), c.cut_tensors, strict=True):
        cut = h.copy()
        cut.remove_node(d)
        assert not nx.has_path(cut, VSRC, VSINK)
        # nothing before reaches after except through d
        assert not any(u in before and w not in before for u, w in h.edges if u not in (d, VSRC))
        crossing = _crossing(g, before)
        assert crossing == set(tensors) and crossing <= set(g.nodes[g.position[d]].outputs)


@PROPERTY
@given(dag_models())
def test_blocks_cover_nodes_and_parameters_add_up(model):
    g = load_graph(model)
    total = _independent_param_bytes(model)
    assert g.param_bytes == total
    for cuts in ("single", "multi"):
        c = build_chain(g, cuts)
        flat = [n for block in c.block_nodes for n in block]
        assert sorted(flat) == sorted(n.name for n in g.nodes)
        assert len(flat) == len(set(flat))
        where = {n: i for i, n in enumerate(flat)}
        assert all(where[u] < where[w] for u, w in g.dag.edges)  # topological
        assert c.param_bytes.sum() == total == c.meta["param_bytes"]
        assert c.flops.sum() == g.flops


@PROPERTY
@given(dag_models())
def test_transfers_are_the_tensors_that_really_cross(model):
    g = load_graph(model)
    for cuts in ("single", "multi"):
        c = build_chain(g, cuts)
        for k, before in enumerate(_prefixes(c)):
            crossing = _crossing(g, before)
            assert set(c.cut_tensors[k]) == crossing
            assert c.transfer_bytes[k] == _bytes(g, crossing)
            readers = {
                t: sum(x not in before for x in g.consumers[t]) + (t in g.outputs) for t in crossing
            }
            expected = sum(paper_bytes(readers[t], g.tensors[t].elements) for t in crossing)
            assert np.isclose(c.paper_transfer_bytes[k], expected)


def _live_bytes(g: LayerGraph, flat: list[str]) -> list[int]:
    """Bytes live at each step of running ``flat`` in order, by brute force."""
    pos = {n: i for i, n in enumerate(flat)}
    live = [0] * len(flat)
    for t, info in g.tensors.items():
        start = pos[g.producer[t]] if t in g.producer else 0
        readers = [pos[x] for x in g.consumers[t]]
        if t in g.outputs:
            end = len(flat) - 1
        elif readers:
            end = max(readers)
        elif t in g.producer:
            end = start
        else:
            continue  # an unused graph input
        for p in range(start, end + 1):
            live[p] += info.bytes
    return live


@PROPERTY
@given(dag_models())
def test_peaks_are_whole_graph_liveness(model):
    g = load_graph(model)
    for cuts in ("single", "multi"):
        c = build_chain(g, cuts)
        flat = [n for block in c.block_nodes for n in block]
        live = _live_bytes(g, flat)
        i = 0
        for b, nodes in enumerate(c.block_nodes):
            assert c.activation_peak_bytes[b] == max(live[i : i + len(nodes)])
            i += len(nodes)


@PROPERTY
@given(dag_models())
def test_single_and_multi_agree_where_they_coincide(model):
    g = load_graph(model)
    s, m = build_chain(g), build_chain(g, "multi")
    multi_prefixes = [frozenset(p) for p in _prefixes(m)]
    for i, before in enumerate(_prefixes(s)):
        j = multi_prefixes.index(frozenset(before))  # every single cut is a multi boundary
        assert s.transfer_bytes[i] == m.transfer_bytes[j]
        assert s.cut_tensors[i] == m.cut_tensors[j]
        assert s.param_bytes[: i + 1].sum() == m.param_bytes[: j + 1].sum()
        assert s.flops[: i + 1].sum() == m.flops[: j + 1].sum()


@PROPERTY
@given(dag_models())
def test_dominators_match_networkx(model):
    g = load_graph(model)
    h = _with_ends(g)
    expected = set()
    if nx.has_path(h, VSRC, VSINK):
        idom = nx.immediate_dominators(h, VSRC)
        v = VSINK
        while v in idom and idom[v] != v:
            v = idom[v]
            expected.add(v)
        expected.discard(VSRC)
    cmp = compare_cut_methods(g)
    assert set(cmp["dominators"]) | set(cmp["rejected_dominators"]) == expected


@PROPERTY
@given(dag_models(dead_ends=False, sources=False))
def test_dominators_equal_singleton_levels_without_dead_ends(model):
    cmp = compare_cut_methods(load_graph(model))
    assert cmp["same"], cmp
