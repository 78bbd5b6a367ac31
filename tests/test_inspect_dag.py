"""``partopt inspect --cuts dag --json``: the ideal count (or that it exceeds the limit) and
where the activation sizes came from, as the chain inspect reports it."""

from __future__ import annotations

import json

import onnx

from partopt.cli import main
from partopt.dag import build_dag
from partopt.onnx_graph import load_graph
from tests.onnx_models import residual_block, two_inputs


def _inspect(capsys, *args) -> dict:
    assert main(["inspect", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_dag_inspect_json_counts_ideals_and_keeps_the_shape_meta(capsys, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(two_inputs(), path)
    doc = _inspect(capsys, path, "--cuts", "dag")
    dag = build_dag(load_graph(path))
    assert doc["ideals"] == dag.count_ideals() == 8
    assert doc["ideals_exceed_limit"] is False
    assert (doc["operators"], doc["tensors"]) == (dag.num_ops, dag.num_tensors)
    chain = _inspect(capsys, path, "--cuts", "multi")
    assert doc["meta"] == chain["meta"]
    assert set(doc["meta"]) == {"shape_sources", "probe", "unsettled"}
    assert sum(doc["meta"]["shape_sources"].values()) > 0

    few = _inspect(capsys, path, "--cuts", "dag", "--max-states", 3)
    assert few["ideals"] is None and few["ideals_exceed_limit"] is True
    assert few["ideals_limit"] == 3


def test_a_chain_shaped_residual_block_counts_its_ideals(capsys, tmp_path):
    path = tmp_path / "r.onnx"
    onnx.save(residual_block(), path)
    doc = _inspect(capsys, path, "--cuts", "dag")
    # the skip edge joins conv1's output to add: the operators still form one line
    assert doc["ideals"] == doc["operators"] + 1 == 6


def test_dag_inspect_says_which_sizes_came_from_the_probe_run(capsys, tmp_path):
    from tests.onnx_models import shape_gather_slice

    path = tmp_path / "s.onnx"
    onnx.save(shape_gather_slice(), path)
    doc = _inspect(capsys, path, "--cuts", "dag")
    chain = _inspect(capsys, path, "--cuts", "multi")
    assert doc["meta"]["probe"]["ran"] is True
    assert doc["meta"]["shape_sources"] == chain["meta"]["shape_sources"]
    assert doc["meta"]["shape_sources"].get("probe", 0) > 0
    assert main(["inspect", str(path), "--cuts", "dag"]) == 0
    assert "from a probe run" in capsys.readouterr().out
