"""The command line: output shapes and one-line errors with non-zero exit codes."""

import json
import subprocess
import sys

import pytest

from partopt.cli import main
from partopt.cluster import MB, Cluster


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cluster_paper_writes_the_documented_format(tmp_path, capsys):
    f = tmp_path / "c.json"
    code, out, _ = run(
        capsys,
        "cluster",
        "paper",
        "--nodes",
        "5",
        "--capacity-mb",
        "64",
        "--seed",
        "2",
        "-o",
        str(f),
    )
    assert code == 0 and "5 nodes" in out
    c = Cluster.load(f)
    assert c.num_nodes == 5 and c.memory_bytes[0] == 64 * MB


def test_cluster_grid_and_ring(capsys):
    code, out, _ = run(
        capsys, "cluster", "grid", "--nodes", "6", "--rows", "2", "--capacity-mb", "8"
    )
    assert code == 0 and len(json.loads(out)["nodes"]) == 6
    code, _, err = run(
        capsys, "cluster", "grid", "--nodes", "5", "--rows", "2", "--capacity-mb", "8"
    )
    assert code == 1 and "not a multiple" in err and err.count("\n") == 1


def test_methods_lists_registered_solvers(capsys):
    code, out, _ = run(capsys, "methods")
    assert code == 0 and "brute" in out and "random" in out


@pytest.mark.parametrize(
    "content, fragment",
    [
        ('{"nodes": [{"name": "a", "memory_bytes": 1}], "bandwidth_mbps": [[0, 1]]}', "square"),
        (
            '{"nodes": [{"name": "a", "memory_bytes": 1}, {"name": "b", "memory_bytes": 1}], '
            '"bandwidth_mbps": [[0, -2], [1, 0]]}',
            ">= 0",
        ),
        ('{"nodes": [{"name": "a", "memory_bytes": 0}], "bandwidth_mbps": [[0]]}', "positive"),
        ("not json at all", "not valid"),
    ],
)
def test_bad_cluster_file_is_one_line_error(tmp_path, capsys, content, fragment):
    f = tmp_path / "bad.json"
    f.write_text(content)
    code, _, err = run(capsys, "solve", "whatever.onnx", "--cluster", str(f))
    assert code == 1
    assert fragment in err and err.startswith("partopt: error:") and err.count("\n") == 1


def test_missing_cluster_arguments(capsys):
    code, _, err = run(capsys, "solve", "m.onnx")
    assert code == 1 and "no cluster" in err
    code, _, err = run(capsys, "solve", "m.onnx", "--paper-cluster", "3")
    assert code == 1 and "--capacity-mb" in err


def test_console_script_has_no_traceback(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text("[1, 2")
    proc = subprocess.run(
        [sys.executable, "-m", "partopt.cli", "solve", "x.onnx", "--cluster", str(f)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("partopt: error:")


# -- inspect and solve on real ONNX files ---------------------------------------------


@pytest.fixture
def chain_onnx(tmp_path):
    import onnx

    from tests.onnx_models import chain_model

    path = tmp_path / "chain.onnx"
    onnx.save(chain_model(), path)
    return path


def test_inspect_json_shape(chain_onnx, capsys):
    code, out, _ = run(capsys, "inspect", str(chain_onnx), "--json")
    doc = json.loads(out)
    assert code == 0
    assert {"model", "num_nodes", "param_bytes", "cut_points", "blocks"} <= set(doc)
    assert doc["num_nodes"] == 5
    # conv 4*3*3*3+4 and fc 10*64+10 float32 parameters
    assert doc["param_bytes"] == 4 * (112 + 650)
    assert [c["node"] for c in doc["cut_points"]] == ["conv", "relu", "pool", "flatten"]
    # conv output [1,4,8,8] float32 crosses the first cut
    assert doc["cut_points"][0] == {"index": 0, "node": "conv", "transfer_bytes": 4 * 256}
    assert len(doc["blocks"]) == 5
    assert sum(b["param_bytes"] for b in doc["blocks"]) == doc["param_bytes"]


def test_inspect_table(chain_onnx, capsys):
    code, out, _ = run(capsys, "inspect", str(chain_onnx))
    assert code == 0 and "4 single-tensor cut points" in out and "flatten" in out


def test_solve_json_shape_and_plan(chain_onnx, tmp_path, capsys):
    cluster = tmp_path / "c.json"
    Cluster(("a", "b", "c"), [3000, 3000, 3000], [[0, 1, 8], [1, 0, 1], [8, 1, 0]]).save(cluster)
    code, out, _ = run(
        capsys,
        "solve",
        str(chain_onnx),
        "--cluster",
        str(cluster),
        "--method",
        "brute",
        "--memory",
        "weights",
        "--json",
    )
    doc = json.loads(out)
    assert code == 0 and doc["status"] == "optimal"
    assert {
        "method",
        "status",
        "bottleneck_s",
        "lower_bound_s",
        "gap",
        "runtime_s",
        "stages",
    } <= set(doc)
    stages = doc["stages"]
    # 3048 bytes of parameters need two stages of 3000 bytes; a cheapest cut (after pool or
    # flatten, 64 floats = 256 B) goes over the 8 Mbit/s link a<->c
    assert [s["node"] for s in stages] in (["a", "c"], ["c", "a"])
    assert stages[0]["last_block"] in (2, 3) and len(stages) == 2
    assert doc["bottleneck_s"] == pytest.approx(256 * 8 / 8e6)
    assert all({"node", "first_block", "last_block", "memory_bytes"} <= set(s) for s in stages)


def test_solve_infeasible_says_what_capacity_is_needed(chain_onnx, capsys):
    code, out, _ = run(
        capsys,
        "solve",
        str(chain_onnx),
        "--paper-cluster",
        "1",
        "--capacity-mb",
        "0.001",
        "--method",
        "brute",
        "--memory",
        "weights",
    )
    assert code == 2
    assert "infeasible" in out and "at least" in out


def test_bad_model_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    code, _, err = run(capsys, "inspect", str(bad))
    assert code == 1 and err.startswith("partopt: error:") and err.count("\n") == 1
    code, _, err = run(capsys, "inspect", str(tmp_path / "missing.onnx"))
    assert code == 1 and "not found" in err


def test_bundled_model_solves_with_default_method(capsys):
    code, out, _ = run(
        capsys,
        "solve",
        "models/resnet50.onnx",
        "--paper-cluster",
        "10",
        "--capacity-mb",
        "64",
        "--json",
    )
    doc = json.loads(out)
    assert code == 0 and doc["method"] == "exact" and doc["status"] == "optimal"
    assert doc["gap"] == 0 and len(doc["stages"]) >= 2


def test_only_user_errors_become_one_line_messages(monkeypatch, capsys):
    """A PartoptError is the user's (one line, exit 1); a bare ValueError is a bug and propagates."""
    import partopt.cli.plan as plan_cli
    from partopt.errors import PartoptError

    def user_error(args):
        raise PartoptError("the cluster file names no nodes\nsecond line")

    monkeypatch.setattr(plan_cli, "cmd_methods", user_error)
    assert main(["methods"]) == 1
    assert capsys.readouterr().err == "partopt: error: the cluster file names no nodes\n"

    def bug(args):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(plan_cli, "cmd_methods", bug)
    with pytest.raises(ValueError, match="internal invariant"):
        main(["methods"])


def test_usage_errors_are_one_line_with_exit_1(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["solve", "m.onnx", "--seed", "x"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --seed" in err and "--help" in err
