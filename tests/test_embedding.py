"""Maps and neighbours: cosine and Hamming kNN agree, morphing paths connect their ends, t-SNE keeps clusters."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from artannot.ml import embedding as E
from artannot.ml.embedding import (
    EmbeddingCache,
    collection_embedding,
    cosine_knn,
    draw_map,
    embed_features,
    hamming_knn,
    hash_codes,
    knn_graph,
    morph_path,
)


def clustered(n_clusters: int = 40, per: int = 10, dim: int = 256, noise: float = 0.6, seed: int = 0):
    """Non-negative (ReLU-like) features in small clusters: each point's true neighbours are its cluster."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(n_clusters, dim))) * 2.0
    labels = np.repeat(np.arange(n_clusters), per)
    X = np.abs(centres[labels] + noise * rng.normal(size=(len(labels), dim)))
    return X.astype(np.float32), labels


def test_cosine_knn_matches_brute_force():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 32)).astype(np.float32)
    idx, sims = cosine_knn(X, [3, 17], k=5)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    for row, q in enumerate((3, 17)):
        s = Xn @ Xn[q]
        s[q] = -np.inf
        expected = np.argsort(-s, kind="stable")[:5]
        assert idx[row].tolist() == expected.tolist()
        assert np.allclose(sims[row], s[expected], atol=1e-5)
    assert 3 not in idx[0]  # the query itself is left out


def test_hash_knn_agrees_with_float_knn_on_most_neighbours():
    X, _ = clustered(noise=1.0)
    k = 9
    everyone = np.arange(len(X))
    float_nn, _ = cosine_knn(X, everyone, k)
    codes = hash_codes(X, "median")
    assert codes.shape == (len(X), 256 // 8) and codes.dtype == np.uint8
    ham_nn, dist = hamming_knn(codes, everyone, k)
    agree = np.mean([len(set(a) & set(b)) / k for a, b in zip(float_nn, ham_nn, strict=True)])
    assert agree >= 0.8, agree
    assert (np.diff(dist, axis=1) >= 0).all()  # nearest first


def test_hash_codes_follow_their_rule():
    X = np.array([[-1.0, 0.5, 2.0, -0.1, 0, 0, 0, 0, 3.0]], dtype=np.float32)
    bits = np.unpackbits(hash_codes(X, "sigmoid"), axis=1)[0, :9]
    assert bits.tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 1]  # sigmoid(x) > 0.5  <=>  x > 0
    Y = np.array([[0.0, 5.0], [1.0, 6.0], [2.0, 7.0]], dtype=np.float32)
    med = np.unpackbits(hash_codes(Y, "median"), axis=1)[:, :2]
    assert med.tolist() == [[0, 0], [0, 0], [1, 1]]  # above each dimension's median
    d = hamming_knn(hash_codes(Y, "median"), [0], 2)[1][0]
    assert d.tolist() == [0, 2]


def test_morphing_path_runs_from_start_to_end_through_neighbours():
    # points along a curve in 64-d: the path between the two ends must walk the curve in order
    t = np.linspace(0, 1, 60)
    rng = np.random.default_rng(2)
    basis = rng.normal(size=(3, 64))
    X = (np.cos(np.pi * t)[:, None] * basis[0] + np.sin(np.pi * t)[:, None] * basis[1] + 2 * basis[2])
    order = rng.permutation(60)
    Xs = X[order]
    start, end = int(np.flatnonzero(order == 0)[0]), int(np.flatnonzero(order == 59)[0])
    graph = knn_graph(Xs, k=4)
    path = morph_path(Xs, start, end, k=4, graph=graph)
    assert path[0] == start and path[-1] == end
    assert len(set(path)) == len(path)
    for a, b in zip(path, path[1:], strict=False):
        assert graph[a, b] > 0  # every step is an edge of the neighbour graph
    positions = order[path]
    assert (np.diff(positions) > 0).all(), positions  # along the curve, never back
    assert morph_path(Xs, start, start) == [start]


def test_morphing_bridges_separate_clusters_by_widening_k():
    X, labels = clustered(n_clusters=2, per=15, dim=32, noise=0.2)
    path = morph_path(X, 0, 29, k=3)
    assert path[0] == 0 and path[-1] == 29 and labels[path[0]] != labels[path[-1]]


def test_tsne_keeps_clusters_apart():
    X, labels = clustered(n_clusters=4, per=30, dim=64, noise=0.5)
    xy, engine = embed_features(X, n_iter=250)
    assert xy.shape == (120, 2) and np.isfinite(xy).all()
    assert engine in ("openTSNE", "scikit-learn")
    _, nn = cKDTree(xy).query(xy, 6)
    assert (labels[nn[:, 1:]] == labels[:, None]).mean() > 0.95


def test_tiny_collections_get_a_pca_map():
    assert embed_features(np.ones((1, 8)))[0].shape == (1, 2)
    xy, engine = embed_features(np.random.default_rng(0).normal(size=(4, 8)))
    assert engine == "PCA" and xy.shape == (4, 2)


def test_embedding_is_cached_per_model_and_image_set(tmp_path, monkeypatch, demo_project):
    from artannot.ml.saliency import ModelSource
    from artannot.project import Project

    calls = []

    def fake_features(conn, cache_dir, model_id, items, **kw):
        calls.append(len(items))
        rng = np.random.default_rng(0)
        return (rng.normal(size=(len(items), 16)).astype(np.float32), np.ones(len(items), bool),
                ModelSource(None, "efficientnet_lite0", "efficientnet_lite0", "imagenet", description="test"))

    monkeypatch.setattr(E, "model_features", fake_features)
    with Project(demo_project) as p:
        first = collection_embedding(p.conn, p.cache_dir, None, n_iter=250)
        again = collection_embedding(p.conn, p.cache_dir, None, n_iter=250)
        assert not first.cached and again.cached
        assert np.array_equal(first.xy, again.xy) and np.array_equal(first.image_ids, again.image_ids)
        other = collection_embedding(p.conn, p.cache_dir, None, n_iter=300)  # other settings: another map
        assert not other.cached
        files = list((p.cache_dir / "embeddings").glob("*.npz"))
        assert len(files) == 2
    assert len(first.to_csv().splitlines()) == len(first.image_ids) + 1
    cache = EmbeddingCache(tmp_path)
    assert cache.key("a", ["x", "y"]) != cache.key("a", ["x", "z"]) != cache.key("b", ["x", "z"])


def test_draw_map_without_qt():
    xy = np.random.default_rng(0).normal(size=(500, 2))
    img = draw_map(xy, ["#4e79a7"] * 500, [("fish", "#4e79a7")], title="map")
    assert img.size == (1400, 900)
    arr = np.asarray(img)
    assert (arr != 255).any(axis=2).mean() > 0.005  # dots were drawn


@pytest.mark.slow
def test_cli_embed_writes_png_and_csv(tmp_path, demo_project):
    png, table = tmp_path / "map.png", tmp_path / "map.csv"
    run = [sys.executable, "-m", "artannot", "embed", str(demo_project)]
    out = subprocess.run([*run, "--out", str(png)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "mapped 40 images" in out.stdout
    with Image.open(png) as im:
        assert im.size == (1400, 900)
    out = subprocess.run([*run, "--out", str(table)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "cache" in out.stdout, out.stdout + out.stderr
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    assert len(rows) == 40 and {"image_id", "x", "y", "label", "prediction", "path"} <= set(rows[0])
    assert all(Path(r["path"]).exists() for r in rows)
    bad = subprocess.run([*run, "--out", str(tmp_path / "map.jpg")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "png or .csv" in bad.stderr
