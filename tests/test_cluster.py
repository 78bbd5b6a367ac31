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
    # SPEC section 1: 18.1 Mbit/s at 1 m, 6.8 at 50 m, 3.8 at 150 m
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
