import json
import math

import numpy as np
import pytest

from partopt.cluster import (
    MB,
    Cluster,
    ClusterError,
    grid_cluster,
    paper_bandwidth_mbps,
    paper_cluster,
    ring_cluster,
)


def test_paper_bandwidth_matches_spec_points():
    # the original work's measured points: 18.1 Mbit/s at 1 m, 6.8 at 50 m, 3.8 at 150 m
    got = paper_bandwidth_mbps(np.array([1.0, 50.0, 150.0]))
    assert np.allclose(got, [18.1, 6.8, 3.8], atol=0.05)


def test_paper_cluster_is_seeded_and_follows_the_model():
    a = paper_cluster(20, 64, seed=3)
    b = paper_cluster(20, 64, seed=3)
    c = paper_cluster(20, 64, seed=4)
    assert np.array_equal(a.bandwidth_mbps, b.bandwidth_mbps)
    assert not np.array_equal(a.bandwidth_mbps, c.bandwidth_mbps)
    assert np.all(a.memory_bytes == 64 * MB)
    bw = a.bandwidth_mbps
    off = bw[~np.eye(20, dtype=bool)]
    assert np.allclose(bw, bw.T)
    # distances lie within the square's diagonal: sqrt(2) * 149 m
    assert off.min() >= float(paper_bandwidth_mbps(math.sqrt(2) * 149)) - 1e-9
    assert np.all(np.diag(bw) == 0)


def test_paper_cluster_mean_bandwidth_is_about_six():
    means = [
        paper_cluster(50, 64, seed=s).bandwidth_mbps[~np.eye(50, dtype=bool)].mean()
        for s in range(20)
    ]
    assert 5.0 < float(np.mean(means)) < 7.0


def test_round_trip_json_and_yaml(tmp_path):
    c = Cluster(("a", "b"), [64 * MB, 32 * MB], [[0, 5.5], [2.0, 0]], [1e9, 2e9])
    for name in ("c.json", "c.yaml"):
        c.save(tmp_path / name)
        d = Cluster.load(tmp_path / name)
        assert d.names == ("a", "b")
        assert np.array_equal(d.bandwidth_mbps, c.bandwidth_mbps)
        assert np.array_equal(d.memory_bytes, c.memory_bytes)
        assert np.array_equal(d.flops_per_s, c.flops_per_s)


def test_diagonal_ignored_and_asymmetry_kept():
    c = Cluster(("a", "b"), [1, 1], [[9, 1], [3, 7]])
    assert c.bandwidth_mbps.tolist() == [[0, 1], [3, 0]]


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"nodes": [{"name": "a", "memory_bytes": 1}], "bandwidth_mbps": [[0, 1]]}, "square"),
        (
            {
                "nodes": [{"name": "a", "memory_bytes": 1}, {"name": "b", "memory_bytes": 1}],
                "bandwidth_mbps": [[0, -1], [1, 0]],
            },
            ">= 0",
        ),
        (
            {
                "nodes": [{"name": "a", "memory_bytes": 1}, {"name": "b", "memory_bytes": 1}],
                "bandwidth_mbps": [[0, float("nan")], [1, 0]],
            },
            "finite",
        ),
        ({"nodes": [{"name": "a", "memory_bytes": 0}], "bandwidth_mbps": [[0]]}, "positive"),
        (
            {
                "nodes": [{"name": "a", "memory_bytes": 1}, {"name": "a", "memory_bytes": 1}],
                "bandwidth_mbps": [[0, 1], [1, 0]],
            },
            "unique",
        ),
        ({"nodes": [{"name": "a"}], "bandwidth_mbps": [[0]]}, "memory_bytes"),
        ({"nodes": []}, "bandwidth_mbps"),
        (
            {
                "nodes": [
                    {"name": "a", "memory_bytes": 1, "flops_per_s": 1},
                    {"name": "b", "memory_bytes": 1},
                ],
                "bandwidth_mbps": [[0, 1], [1, 0]],
            },
            "flops_per_s",
        ),
    ],
)
def test_bad_cluster_descriptions_name_the_problem(data, fragment):
    with pytest.raises(ClusterError) as err:
        Cluster.from_dict(data)
    msg = str(err.value)
    assert fragment in msg and "\n" not in msg


def test_bad_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ClusterError, match="not valid"):
        Cluster.load(p)
    with pytest.raises(ClusterError, match="cannot read"):
        Cluster.load(tmp_path / "missing.json")


def test_unknown_node_name():
    c = Cluster.uniform(3, memory_bytes=1, bandwidth_mbps=1)
    assert c.index("n2") == 2
    with pytest.raises(ClusterError, match="unknown node 'zz'"):
        c.index("zz")


def test_grid_and_ring_links_only_neighbours():
    g = grid_cluster(2, 3, 64)
    links = {(i, j) for i, j in zip(*np.nonzero(g.bandwidth_mbps), strict=True)}
    assert (0, 1) in links and (0, 3) in links and (0, 4) not in links and (0, 2) not in links
    assert len(links) == 2 * 7  # 7 undirected edges in a 2x3 grid
    r = ring_cluster(5, 64, seed=1)
    deg = (r.bandwidth_mbps > 0).sum(axis=1)
    assert np.all(deg == 2)


def test_subset_keeps_order():
    c = paper_cluster(5, 64, seed=0)
    s = c.subset([4, 1])
    assert s.names == ("n4", "n1")
    assert s.bandwidth_mbps[0, 1] == c.bandwidth_mbps[4, 1]


def test_json_file_shape_is_documented_shape(tmp_path):
    paper_cluster(3, 128, seed=0).save(tmp_path / "c.json")
    doc = json.loads((tmp_path / "c.json").read_text())
    assert set(doc) == {"nodes", "bandwidth_mbps"}
    assert doc["nodes"][0] == {"name": "n0", "memory_bytes": 128 * MB}


# -- strict files and arguments ------------------------------------------------


def _two_nodes(**node_extra) -> dict:
    return {
        "nodes": [{"name": "a", "memory_bytes": 8, **node_extra}, {"name": "b", "memory_bytes": 8}],
        "bandwidth_mbps": [[0, 1], [1, 0]],
    }


@pytest.mark.parametrize(
    "data, fragments",
    [
        ({**_two_nodes(), "latency": 1}, ['unknown key "latency"', "latency_s", "nodes"]),
        (_two_nodes(memory_byte=8), ['"memory_byte"', 'did you mean "memory_bytes"']),
        (_two_nodes(flops_per_sec=1e9), ['"flops_per_sec"', 'did you mean "flops_per_s"']),
    ],
)
def test_unknown_keys_are_refused_with_the_known_ones(data, fragments):
    with pytest.raises(ClusterError) as err:
        Cluster.from_dict(data)
    for fragment in fragments:
        assert fragment in str(err.value)


@pytest.mark.parametrize("value", ["10", True, None])
@pytest.mark.parametrize("key", ["memory_bytes", "flops_per_s"])
def test_node_numbers_must_be_numbers(key, value):
    data = _two_nodes()
    for node in data["nodes"]:
        node[key] = 8 if key == "memory_bytes" else 1e9
    data["nodes"][0][key] = value
    with pytest.raises(ClusterError, match=f"node 'a': {key} must be a number, got "):
        Cluster.from_dict(data)


@pytest.mark.parametrize("value", ["10", True, None])
def test_matrix_entries_must_be_numbers(value):
    data = _two_nodes()
    data["bandwidth_mbps"][0][1] = value
    with pytest.raises(ClusterError, match='"bandwidth_mbps" row 0, column 1 must be a number'):
        Cluster.from_dict(data)


@pytest.mark.parametrize("name", [True, None, 10])
def test_names_must_be_strings(name):
    data = _two_nodes()
    data["nodes"][0]["name"] = name
    with pytest.raises(ClusterError, match="names must be strings"):
        Cluster.from_dict(data)


def test_python_constructor_refuses_strings_and_bools():
    with pytest.raises(ClusterError, match="memory_bytes must hold numbers only"):
        Cluster(("a",), ["10"], [[0]])
    with pytest.raises(ClusterError, match="bandwidth_mbps must hold numbers only"):
        Cluster(("a", "b"), [1, 1], [[False, True], [True, False]])


def test_latency_matrix_is_validated_and_kept(tmp_path):
    data = {**_two_nodes(), "latency_s": [[5, 0.002], [0.003, 0]]}
    c = Cluster.from_dict(data)
    assert c.latency_s is not None and c.latency_s.tolist() == [[0, 0.002], [0.003, 0]]
    assert Cluster.uniform(2, memory_bytes=1, bandwidth_mbps=1).latency_s is None
    c.save(tmp_path / "c.json")
    assert Cluster.load(tmp_path / "c.json").latency_s.tolist() == c.latency_s.tolist()
    assert c.subset([1, 0]).latency_s.tolist() == [[0, 0.003], [0.002, 0]]
    for bad, fragment in (
        ([[0, -1], [0, 0]], ">= 0"),
        ([[0, float("inf")], [0, 0]], "finite"),
        ([[0, 1]], "square 2x2"),
    ):
        with pytest.raises(ClusterError, match=fragment):
            Cluster.from_dict({**_two_nodes(), "latency_s": bad})


@pytest.mark.parametrize(
    "call, error, fragment",
    [
        (lambda: Cluster.uniform(-2, memory_bytes=1, bandwidth_mbps=1), ValueError, "num_nodes"),
        (lambda: Cluster.uniform(2.5, memory_bytes=1, bandwidth_mbps=1), TypeError, "num_nodes"),
        (lambda: Cluster.uniform(2, memory_bytes="1", bandwidth_mbps=1), TypeError, "memory_bytes"),
        (lambda: Cluster.uniform(2, memory_bytes=1, bandwidth_mbps=-1), ValueError, "bandwidth"),
        (lambda: paper_cluster(2.5, 64), TypeError, "num_nodes"),
        (lambda: paper_cluster(0, 64), ValueError, "num_nodes"),
        (lambda: paper_cluster(3, float("nan")), ValueError, "capacity_mb"),
        (lambda: paper_cluster(3, 64, seed=-1), ValueError, "seed"),
        (lambda: grid_cluster(2, 0, 64), ValueError, "cols"),
        (lambda: ring_cluster(True, 64), TypeError, "num_nodes"),
    ],
)
def test_generator_arguments_are_checked_by_name(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()
