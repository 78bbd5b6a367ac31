"""The original's chain computed on a hand-written Keras-free layer list."""

from __future__ import annotations

import json

import numpy as np
import pytest

from partopt.chain import load_chain
from partopt.keras_chain import (
    KerasChainError,
    KerasLayer,
    chain_file_for,
    load_keras_chain,
    original_chain_data,
    original_cut_points,
    original_levels,
)

L = KerasLayer


def two_branches() -> list[KerasLayer]:
    """in -> c1 -> {a1 -> a2, b1} -> add -> out: a2 is alone on its level but not a cut point."""
    return [
        L("in", ("c1",), 12, 0),
        L("c1", ("a1", "b1"), 8, 5),
        L("a1", ("a2",), 8, 3),
        L("b1", ("add",), 8, 4),
        L("a2", ("add",), 8, 2),
        L("add", ("out",), 8, 0),
        L("out", (), 2, 18),
    ]


def _mbit(consumers: int, elements: int) -> float:
    return consumers * elements * 8 / 1.44 * 8 / 1024**2


def test_levels_and_points():
    layers = two_branches()
    assert original_levels(layers) == [0, 1, 2, 2, 3, 4, 5]
    assert [layers[i].name for i in original_cut_points(layers)] == ["in", "c1", "add", "out"]


def test_memories_and_transfers():
    d = original_chain_data(two_branches(), "toy")
    assert d["num_cut_points"] == 4
    assert [b["layers"] for b in d["blocks"]] == [
        ["in"],
        ["c1"],
        ["a1", "b1", "a2", "add"],
        ["out"],
    ]
    # 4 x output elements + parameter count, per layer
    assert [b["memory"] for b in d["blocks"]] == [48, 37, 35 + 36 + 34 + 32, 26]
    assert d["memory_total"] == 37 + 137 + 26 and d["input_memory"] == 48
    assert [c["point"] for c in d["cuts"]] == ["in", "c1", "add"]
    assert [c["transfer_mbit"] for c in d["cuts"]] == pytest.approx(
        [_mbit(1, 12), _mbit(2, 8), _mbit(1, 8)]
    )


def test_chain_file_round_trip(tmp_path):
    path = tmp_path / "toy.keras-chain.json"
    path.write_text(json.dumps(original_chain_data(two_branches(), "toy")))
    chain = load_keras_chain(path)
    assert chain.num_blocks == 4 and chain.cut_names == ("in", "c1", "add")
    assert chain.paper_memory_bytes.tolist() == [48, 37, 137, 26]
    # the original's Mbit over a link of b Mbit/s takes Mbit / b seconds: bytes = Mbit * 1e6 / 8
    assert chain.paper_transfer_bytes.tolist() == pytest.approx(
        [m * 1e6 / 8 for m in (_mbit(1, 12), _mbit(2, 8), _mbit(1, 8))]
    )
    assert chain.transfer_bytes.tolist() == [48, 32, 32]  # float32, sent once


def test_bad_layer_lists():
    with pytest.raises(KerasChainError, match="exactly one input"):
        original_cut_points([L("a", (), 1, 0), L("b", (), 1, 0)])
    with pytest.raises(KerasChainError, match="unknown layer"):
        original_cut_points([L("a", ("zz",), 1, 0)])
    with pytest.raises(KerasChainError, match="no Keras chain file"):
        load_keras_chain("/nonexistent/x.keras-chain.json")


@pytest.mark.parametrize(
    ("model", "points", "mib"),
    [
        ("resnet50", 41, 165.5),
        ("mobilenetv2", 76, 86.0),
        ("efficientnetb1", 93, 160.0),
        ("inceptionresnetv2", 105, 362.0),
    ],
)
def test_committed_chain_files(model, points, mib):
    chain = load_chain(f"models/{model}.onnx", cuts="keras")
    assert chain.num_blocks == points
    assert chain.paper_memory_bytes[1:].sum() / 2**20 == pytest.approx(mib, abs=0.05)
    assert chain_file_for(f"models/{model}.onnx").name == f"{model}.keras-chain.json"
    assert np.all(chain.paper_transfer_bytes > 0)


def test_cli_solve_paper_models_plan_the_keras_chain(capsys):
    from partopt.cli import main

    argv = ["solve", "models/resnet50.onnx", "--memory", "paper", "--transfer", "paper"]
    argv += ["--paper-cluster", "5", "--capacity-mb", "128", "--json"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["cuts"] == "keras" and "Keras-layer-graph chain" in out.err
    assert main([*argv, "--cuts", "single"]) == 0
    assert json.loads(capsys.readouterr().out)["cuts"] == "single"
