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
    code, out, _ = run(capsys, "cluster", "paper", "--nodes", "5", "--capacity-mb", "64",
                       "--seed", "2", "-o", str(f))
    assert code == 0 and "5 nodes" in out
    c = Cluster.load(f)
    assert c.num_nodes == 5 and c.memory_bytes[0] == 64 * MB


def test_cluster_grid_and_ring(capsys):
    code, out, _ = run(capsys, "cluster", "grid", "--nodes", "6", "--rows", "2",
                       "--capacity-mb", "8")
    assert code == 0 and len(json.loads(out)["nodes"]) == 6
    code, _, err = run(capsys, "cluster", "grid", "--nodes", "5", "--rows", "2",
                       "--capacity-mb", "8")
    assert code == 1 and "not a multiple" in err and err.count("\n") == 1


def test_methods_lists_registered_solvers(capsys):
    code, out, _ = run(capsys, "methods")
    assert code == 0 and "brute" in out and "random" in out


@pytest.mark.parametrize(
    "content, fragment",
    [
        ('{"nodes": [{"name": "a", "memory_bytes": 1}], "bandwidth_mbps": [[0, 1]]}', "square"),
        ('{"nodes": [{"name": "a", "memory_bytes": 1}, {"name": "b", "memory_bytes": 1}], '
         '"bandwidth_mbps": [[0, -2], [1, 0]]}', ">= 0"),
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
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("partopt: error:")
