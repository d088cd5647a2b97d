"""Maps and neighbours of a collection in a model's feature space (t-SNE, cosine and Hamming kNN, morphing).

Illustration2Vec (Saito & Matsui) gives the recipes: a 2-D t-SNE map of the collection, "more like this" by
k nearest neighbours (cosine on features, or Hamming distance on binary hash codes when the collection is
large), and semantic morphing as the shortest path between two images on the top-k neighbour graph.
t-SNE runs on the first principal components (50) of L2-normalized features and is cached per
(feature key, image set, settings) under the project's cache folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import dijkstra

from artannot.errors import ArtAnnotError, Cancelled, ModelError
from artannot.store.files import atomic_write_bytes

Progress = Callable[[int, int, str], None]

__all__ = [
    "Embedding",
    "EmbeddingCache",
    "HashCodes",
    "collection_codes",
    "cosine_knn",
    "embed_features",
    "hamming_graph",
    "hamming_knn",
    "hash_codes",
    "knn_graph",
    "l2_normalize",
    "model_features",
    "morph_path",
    "morph_path_k",
    "pca_reduce",
    "tag_probabilities",
    "tsne_2d",
]

PCA_DIMS = 50
HASH_THRESHOLD = 0.5  # Illustration2Vec: a bit is set where the sigmoid output is at least 0.5


# -- features of a stored model -----------------------------------------------------------------------------


def model_features(conn: sqlite3.Connection, cache_dir: Path, model_id: int | None,
                   items: Sequence[tuple[str, str]], *, runtime=None, backbone: str = "efficientnet_lite0",
                   progress: Progress | None = None, cancel: threading.Event | None = None):
    """Penultimate features of (path, sha256) items as a stored model sees them: (N×D, ok mask, source).

    Features+classifier models use their backbone's (or fine-tuned network's) features; fine-tuned networks
    their own; None means the ImageNet backbone. Everything goes through the project's feature cache.
    """
    from artannot.ml.device import select_runtime
    from artannot.ml.features import FeatureCache, extract_features
    from artannot.ml.saliency import model_source

    source = model_source(conn, model_id, backbone)
    runtime = runtime or select_runtime("auto")
    cache = FeatureCache(Path(cache_dir) / "features.sqlite")
    try:
        if source.fine_tuned:
            from artannot.ml.networks import network_features

            feats, ok = network_features(source.load_network(), items, runtime, backbone=source.backbone,
                                         image_size=source.image_size, cache=cache, key=source.feature_key,
                                         progress=progress, cancel=cancel)
        else:
            feats, ok = extract_features(items, backbone=source.backbone, cache=cache, runtime=runtime,
                                         progress=progress, cancel=cancel)
    finally:
        cache.close()
    return feats, ok, source


# -- t-SNE --------------------------------------------------------------------------------------------------


def l2_normalize(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


def pca_reduce(X: np.ndarray, n_components: int = PCA_DIMS, seed: int = 0) -> np.ndarray:
    """The first principal components (randomized SVD when that is faster), float32."""
    from sklearn.decomposition import PCA

    n = min(n_components, X.shape[0], X.shape[1])
    solver = "randomized" if min(X.shape) > 2 * n else "full"
    return PCA(n, svd_solver=solver, random_state=seed).fit_transform(X).astype(np.float32)


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("embedding cancelled")


def tsne_2d(X: np.ndarray, *, perplexity: float = 30.0, seed: int = 0, n_iter: int = 500,
            progress: Progress | None = None, cancel: threading.Event | None = None) -> tuple[np.ndarray, str]:
    """2-D t-SNE of rows (FFT-accelerated openTSNE when installed, else scikit-learn); (N×2, engine name)."""
    n = len(X)
    perplexity = float(min(perplexity, max(2.0, (n - 1) / 3.0)))
    exaggeration_iter = max(50, n_iter // 2)
    total = exaggeration_iter + n_iter
    try:
        from openTSNE import TSNE as OpenTSNE
    except ImportError:
        OpenTSNE = None
    if OpenTSNE is not None:
        done = [0]

        def callback(iteration, _error, _embedding) -> bool:
            done[0] += 25
            if progress is not None:
                progress(min(done[0], total), total, "t-SNE layout")
            return cancel is not None and cancel.is_set()  # True stops the optimizer

        # FFT-interpolated gradients cost a fixed grid per iteration: Barnes-Hut is far faster below ~10k
        # points, and threads only pay off on larger sets.
        tsne = OpenTSNE(perplexity=perplexity, n_iter=n_iter, early_exaggeration_iter=exaggeration_iter,
                        negative_gradient_method="fft" if n >= 10_000 else "bh",
                        n_jobs=min(8, os.cpu_count() or 1) if n >= 2000 else 1, random_state=seed,
                        callbacks=callback, callbacks_every_iters=25, verbose=False)
        emb = np.asarray(tsne.fit(np.ascontiguousarray(X, dtype=np.float64)), dtype=np.float32)
        _check(cancel)
        return emb, "openTSNE"
    from sklearn.manifold import TSNE

    if progress is not None:
        progress(0, 1, "t-SNE layout")
    emb = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max(250, total)).fit_transform(X)
    _check(cancel)
    return emb.astype(np.float32), "scikit-learn"


def embed_features(X: np.ndarray, *, perplexity: float = 30.0, seed: int = 0, n_iter: int = 500,
                   progress: Progress | None = None, cancel: threading.Event | None = None) -> tuple[np.ndarray, str]:
    """The 2-D map of feature rows: cosine geometry (L2-normalized), PCA to 50, then t-SNE (PCA alone below 5 rows)."""
    X = l2_normalize(X)
    if len(X) < 5:
        out = np.zeros((len(X), 2), np.float32)
        if len(X) >= 2:
            out[:, : min(2, X.shape[1])] = pca_reduce(X, 2, seed)
        return out, "PCA"
    if progress is not None:
        progress(0, 1, "PCA")
    reduced = pca_reduce(X, PCA_DIMS, seed)
    _check(cancel)
    return tsne_2d(reduced, perplexity=perplexity, seed=seed, n_iter=n_iter, progress=progress, cancel=cancel)


@dataclass(frozen=True)
class Embedding:
    """A 2-D map of a collection: one point per image id."""

    image_ids: np.ndarray  # int64 (N,)
    xy: np.ndarray  # float32 (N, 2)
    feature_key: str
    engine: str  # openTSNE | scikit-learn | PCA
    description: str = ""
    seconds: float = 0.0
    cached: bool = False

    def to_csv(self) -> str:
        """image_id,x,y rows with a header."""
        buf = io.StringIO()
        buf.write("image_id,x,y\n")
        for i, (x, y) in zip(self.image_ids.tolist(), self.xy.tolist(), strict=True):
            buf.write(f"{i},{x:.5f},{y:.5f}\n")
        return buf.getvalue()


class EmbeddingCache:
    """Computed maps as .npz files under <project>.artannot.d/embeddings/, keyed by what they were made of."""

    VERSION = "1"

    def __init__(self, cache_dir: str | Path):
        self.folder = Path(cache_dir) / "embeddings"

    def key(self, feature_key: str, hashes: Sequence[str], **settings) -> str:
        """A file name for features of these images under these settings (a new image means a new map)."""
        h = hashlib.sha256()
        h.update(f"{self.VERSION}|{feature_key}|{sorted(settings.items())}".encode())
        for sha in hashes:
            h.update(sha.encode())
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in feature_key)[:60]
        return f"{safe}-{h.hexdigest()[:16]}"

    def load(self, key: str) -> tuple[np.ndarray, np.ndarray, str] | None:
        """(image ids, xy, engine) of a stored map, or None."""
        path = self.folder / f"{key}.npz"
        try:
            with np.load(path, allow_pickle=False) as data:
                return data["ids"].astype(np.int64), data["xy"].astype(np.float32), str(data["engine"])
        except (OSError, ValueError, KeyError):
            return None

    def save(self, key: str, ids: np.ndarray, xy: np.ndarray, engine: str) -> None:
        buf = io.BytesIO()
        np.savez(buf, ids=ids, xy=xy, engine=np.array(engine))
        atomic_write_bytes(self.folder / f"{key}.npz", buf.getvalue())


def collection_embedding(conn: sqlite3.Connection, cache_dir: Path, model_id: int | None, *,
                         perplexity: float = 30.0, seed: int = 0, n_iter: int = 500, runtime=None,
                         progress: Progress | None = None, cancel: threading.Event | None = None) -> Embedding:
    """The t-SNE map of every readable image in a model's feature space, from the cache when it is there."""
    from artannot.store import repo

    started = time.perf_counter()
    images = repo.all_images(conn)
    if not images:
        raise ModelError("the project has no images to map: import a folder first")
    items = [(p, sha) for _, p, sha in images]
    feats, ok, source = model_features(conn, cache_dir, model_id, items, runtime=runtime, progress=progress,
                                       cancel=cancel)
    ids = np.array([i for (i, _, _), good in zip(images, ok, strict=True) if good], dtype=np.int64)
    hashes = [sha for (_, _, sha), good in zip(images, ok, strict=True) if good]
    cache = EmbeddingCache(cache_dir)
    key = cache.key(source.feature_key, hashes, perplexity=perplexity, seed=seed, n_iter=n_iter)
    hit = cache.load(key)
    if hit is not None and np.array_equal(hit[0], ids):
        return Embedding(ids, hit[1], source.feature_key, hit[2], source.description,
                         time.perf_counter() - started, cached=True)
    xy, engine = embed_features(feats[ok], perplexity=perplexity, seed=seed, n_iter=n_iter, progress=progress,
                                cancel=cancel)
    cache.save(key, ids, xy, engine)
    return Embedding(ids, xy, source.feature_key, engine, source.description, time.perf_counter() - started)


# -- neighbours ---------------------------------------------------------------------------------------------


def _chunk_rows(n: int, width: int, budget: int = 1 << 24) -> int:
    """Rows per block so a block × width similarity matrix stays near `budget` floats."""
    return max(1, min(n, budget // max(width, 1)))


def cosine_knn(X: np.ndarray, queries: Sequence[int] | np.ndarray, k: int = 10, exclude_self: bool = True,
               normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """k nearest rows of X by cosine similarity for each query row index: (indices Q×k, similarities Q×k).

    normalized=True skips the L2 normalization when the rows already have unit length.
    """
    Xn = np.asarray(X, dtype=np.float32) if normalized else l2_normalize(X)
    q = np.asarray(queries, dtype=np.int64).reshape(-1)
    k = int(min(k, len(Xn) - (1 if exclude_self else 0)))
    if k <= 0:
        return np.zeros((len(q), 0), np.int64), np.zeros((len(q), 0), np.float32)
    sims = np.empty((len(q), len(Xn)), np.float32)
    step = _chunk_rows(len(Xn), len(q))
    for a in range(0, len(Xn), step):
        sims[:, a:a + step] = Xn[q] @ Xn[a:a + step].T
    if exclude_self:
        sims[np.arange(len(q)), q] = -np.inf
    return _top_k(sims, k, largest=True)


def _top_k(scores: np.ndarray, k: int, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k best entries of each row, best first (ties: lower index first)."""
    s = -scores if largest else scores
    part = np.argpartition(s, k - 1, axis=1)[:, :k] if k < s.shape[1] else np.tile(np.arange(s.shape[1]),
                                                                                   (len(s), 1))
    vals = np.take_along_axis(s, part, 1)
    order = np.lexsort((part, vals), axis=1)
    idx = np.take_along_axis(part, order, 1)
    return idx.astype(np.int64), np.take_along_axis(scores, idx, 1)


def hash_codes(X: np.ndarray, method: str = "median", thresholds: np.ndarray | None = None) -> np.ndarray:
    """Binary codes of rows, bit-packed (N × ceil(D/8) uint8).

    "probability": Illustration2Vec's bit = a sigmoid output >= 0.5, for rows of probabilities (a tag model's
    outputs, see tag_hash_codes); "sigmoid": the same rule on logits (x > 0); "median": bit = x above that
    dimension's median over the collection, the fallback for plain (ReLU) features, where the sigmoid rule
    would set nearly every bit. `thresholds` reuses given medians.
    """
    X = np.asarray(X, dtype=np.float32)
    if method == "probability":
        bits = X >= HASH_THRESHOLD
    elif method == "sigmoid":
        bits = X > 0.0
    elif method == "median":
        t = np.median(X, axis=0) if thresholds is None else np.asarray(thresholds, dtype=np.float32)
        bits = np.greater(X, t[None, :])
    else:
        raise ModelError(f"hash method must be 'probability', 'median' or 'sigmoid', not {method!r}")
    return np.packbits(bits, axis=1)


@dataclass(frozen=True)
class HashCodes:
    """Bit-packed codes of image rows and how they were made: "tags" (a tag model's sigmoid outputs >= 0.5,
    as Illustration2Vec) or "median" (features above their median: the fallback without a tag model)."""

    codes: np.ndarray  # uint8 (N, ceil(bits / 8))
    bits: int
    method: str  # tags | median
    tag_model: int | None = None

    @property
    def description(self) -> str:
        if self.method == "tags":
            return f"{self.bits}-bit codes: tag model {self.tag_model}'s sigmoid outputs >= 0.5"
        return (f"{self.bits}-bit codes: features above their median (no tag model; train --method tags for"
                " Illustration2Vec's codes)")


def tag_probabilities(conn: sqlite3.Connection, image_ids: Sequence[int],
                      model_id: int | None = None) -> tuple[np.ndarray, int] | None:
    """A tag model's stored sigmoid outputs for image ids (N × its tags; 0 where none is stored) and its id;
    None when the project has no tag model. model_id None: the newest tag model."""
    from artannot.store import tags as tag_store

    if model_id is None:
        model_id = tag_store.latest_tag_model_id(conn)
    if model_id is None:
        return None
    row = conn.execute("SELECT classes, method FROM models WHERE id = ?", (int(model_id),)).fetchone()
    if row is None or row[1] != "tags":
        raise ModelError(f"model {model_id} is not a tag model")
    tag_ids = [int(t) for t in json.loads(row[0] or "[]")]
    col = {t: k for k, t in enumerate(tag_ids)}
    pos = {int(i): k for k, i in enumerate(np.asarray(image_ids).tolist())}
    P = np.zeros((len(pos), len(tag_ids)), np.float32)
    for image_id, tag_id, score in conn.execute(
            "SELECT image_id, tag_id, score FROM tag_predictions WHERE model_id = ?", (int(model_id),)):
        r, c = pos.get(int(image_id)), col.get(int(tag_id))
        if r is not None and c is not None:
            P[r, c] = score
    return P, int(model_id)


def collection_codes(conn: sqlite3.Connection, image_ids: Sequence[int], features: np.ndarray | None = None,
                     tag_model: int | None = None) -> HashCodes:
    """Hash codes of image ids: from the tag model (given, else the newest) when there is one, else (features
    given) the median rule on the features."""
    hit = tag_probabilities(conn, image_ids, tag_model)
    if hit is not None:
        P, model_id = hit
        return HashCodes(hash_codes(P, "probability"), P.shape[1], "tags", model_id)
    if features is None:
        raise ModelError("no tag model to make hash codes from: train --method tags first")
    return HashCodes(hash_codes(features, "median"), int(np.asarray(features).shape[1]), "median")


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount_rows(x: np.ndarray) -> np.ndarray:
    """Set bits per row of a uint8 array."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).sum(axis=1, dtype=np.int32)
    return _POPCOUNT[x].sum(axis=1, dtype=np.int32)


def hamming_knn(codes: np.ndarray, queries: Sequence[int] | np.ndarray, k: int = 10,
                exclude_self: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """k nearest codes by Hamming distance for each query row index: (indices Q×k, distances Q×k)."""
    q = np.asarray(queries, dtype=np.int64).reshape(-1)
    k = int(min(k, len(codes) - (1 if exclude_self else 0)))
    if k <= 0:
        return np.zeros((len(q), 0), np.int64), np.zeros((len(q), 0), np.int32)
    dist = np.empty((len(q), len(codes)), np.int32)
    step = _chunk_rows(len(codes), codes.shape[1])
    for j, row in enumerate(q):
        for a in range(0, len(codes), step):
            dist[j, a:a + step] = _popcount_rows(np.bitwise_xor(codes[a:a + step], codes[row][None, :]))
    if exclude_self:
        dist[np.arange(len(q)), q] = np.iinfo(np.int32).max
    return _top_k(dist, k, largest=False)


# -- morphing -----------------------------------------------------------------------------------------------


def knn_graph(X: np.ndarray, k: int = 10, max_dims: int = 128, power: float = 2.0,
              progress: Progress | None = None, cancel: threading.Event | None = None) -> sparse.csr_matrix:
    """The symmetric top-k cosine neighbour graph; edge weight = cosine distance (1 - similarity) ** power.

    power 2 makes a shortest path prefer several small steps to one long jump, so morphing strips change
    gradually (power 1: plain distances).

    Large collections are first projected on their top `max_dims` principal components (then renormalized),
    which keeps neighbours and makes the all-pairs pass affordable.
    """
    Xn = l2_normalize(X)
    n = len(Xn)
    if n > 2000 and Xn.shape[1] > max_dims:
        Xn = l2_normalize(pca_reduce(Xn, max_dims))
    k = int(min(k, n - 1))
    if k <= 0:
        return sparse.csr_matrix((n, n), dtype=np.float32)
    rows, cols, vals = [], [], []
    step = _chunk_rows(n, n)
    for a in range(0, n, step):
        _check(cancel)
        block = Xn[a:a + step] @ Xn.T
        block[np.arange(len(block)), np.arange(a, a + len(block))] = -np.inf
        idx, sim = _top_k(block, k, largest=True)
        rows.append(np.repeat(np.arange(a, a + len(block)), k))
        cols.append(idx.ravel())
        vals.append(np.maximum(1.0 - sim.ravel(), 1e-6) ** power)  # zero weights would read as "no edge"
        if progress is not None:
            progress(min(a + step, n), n, "neighbour graph")
    g = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return g.maximum(g.T).tocsr()


def hamming_graph(codes: np.ndarray, k: int = 10, bits: int | None = None, power: float = 2.0,
                  progress: Progress | None = None, cancel: threading.Event | None = None) -> sparse.csr_matrix:
    """The symmetric top-k Hamming neighbour graph of bit-packed codes; edge weight = (distance / bits) ** power.

    Equal codes get a tiny positive weight (zero would read as "no edge"); ties go to the lower row index.
    """
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    n = len(codes)
    bits = bits or codes.shape[1] * 8
    k = int(min(k, n - 1))
    if k <= 0:
        return sparse.csr_matrix((n, n), dtype=np.float32)
    rows, cols, vals = [], [], []
    step = _chunk_rows(n, n * max(codes.shape[1], 1))
    for a in range(0, n, step):
        _check(cancel)
        block = codes[a:a + step]
        dist = _popcount_rows(np.bitwise_xor(block[:, None, :], codes[None, :, :]).reshape(-1, codes.shape[1]))
        dist = dist.reshape(len(block), n)
        dist[np.arange(len(block)), np.arange(a, a + len(block))] = np.iinfo(np.int32).max
        idx, d = _top_k(dist, k, largest=False)
        rows.append(np.repeat(np.arange(a, a + len(block)), k))
        cols.append(idx.ravel())
        vals.append(np.maximum((d.ravel() / bits) ** power, 1e-9))
        if progress is not None:
            progress(min(a + step, n), n, "neighbour graph")
    g = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return g.maximum(g.T).tocsr()


def morph_path(X: np.ndarray | None, start: int, end: int, k: int = 10,
               graph: sparse.csr_matrix | None = None, metric: str = "cosine") -> list[int]:
    """Semantic morphing: row indices of the shortest path from start to end on the top-k neighbour graph.

    metric "cosine": X holds features (knn_graph); "hamming": X holds bit-packed hash codes (hamming_graph).
    When the two images lie in parts of the graph that do not connect, k is doubled until they do.
    """
    return morph_path_k(X, start, end, k, graph, metric)[0]


def morph_path_k(X: np.ndarray | None, start: int, end: int, k: int = 10,
                 graph: sparse.csr_matrix | None = None, metric: str = "cosine") -> tuple[list[int], int]:
    """morph_path, and the k of the graph the path was found on (larger than asked when k had to grow)."""
    if metric not in ("cosine", "hamming"):
        raise ModelError(f"morphing metric must be cosine or hamming, not {metric!r}")
    if graph is None:
        if X is None:
            raise ValueError("morph_path needs features or a graph")
        graph = knn_graph(X, k) if metric == "cosine" else hamming_graph(X, k)
    n = graph.shape[0]
    if not (0 <= start < n and 0 <= end < n):
        raise ModelError("morphing needs two images of the collection")
    if start == end:
        return [start], k
    _, pred = dijkstra(graph, directed=False, indices=start, return_predecessors=True)
    if pred[end] < 0:
        if X is None or k >= n - 1:
            raise ModelError("these two images are not connected through similar images")
        return morph_path_k(X, start, end, min(2 * k, n - 1), metric=metric)
    path = [end]
    while path[-1] != start:
        path.append(int(pred[path[-1]]))
    return path[::-1], k


def draw_map(xy: np.ndarray, colours: Sequence[str], legend: Sequence[tuple[str, str]] = (),
             size: tuple[int, int] = (1400, 900), title: str = "", radius: float | None = None):
    """A PNG-ready picture of a 2-D map (PIL RGB): one dot per row in its colour, a legend and a title.

    Drawn without Qt so the CLI works on a headless server; the app draws the same map with pyqtgraph.
    """
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=15)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    margin, top = 30, 44 if title else 20
    legend_w = 220 if legend else 0
    xy = np.asarray(xy, dtype=np.float64)
    if len(xy):
        lo, hi = xy.min(0), xy.max(0)
        span = np.maximum(hi - lo, 1e-9)
        avail_w, avail_h = w - 2 * margin - legend_w, h - margin - top
        scale = min(avail_w / span[0], avail_h / span[1])
        px = margin + (avail_w - span[0] * scale) / 2 + (xy[:, 0] - lo[0]) * scale
        py = top + (avail_h - span[1] * scale) / 2 + (hi[1] - xy[:, 1]) * scale  # y up, as in the app
        r = radius if radius is not None else float(np.clip(600 / np.sqrt(len(xy)), 1.5, 6))
        for x, y, c in zip(px.tolist(), py.tolist(), colours, strict=True):
            d.ellipse([x - r, y - r, x + r, y + r], fill=c)
    if title:
        d.text((margin, 12), title, fill="#263238", font=font)
    for j, (name, colour) in enumerate(legend):
        y = top + 22 * j
        d.rectangle([w - legend_w + 10, y + 3, w - legend_w + 24, y + 17], fill=colour)
        d.text((w - legend_w + 30, y), name, fill="#263238", font=font)
    return img


def point_attributes(conn: sqlite3.Connection, image_ids: np.ndarray, model_id: int | None) -> dict[str, np.ndarray]:
    """What a map colours points by, aligned with image_ids: current label class id and the model's top
    prediction (-1 for none), and its suspect score (0..1, NaN for none). model_id None: the active model."""
    ids = np.asarray(image_ids, dtype=np.int64)
    pos = {int(i): k for k, i in enumerate(ids.tolist())}
    out = {"label": np.full(len(ids), -1, np.int64), "prediction": np.full(len(ids), -1, np.int64),
           "suspect": np.full(len(ids), np.nan, np.float32)}
    for image_id, class_id in conn.execute("SELECT image_id, class_id FROM labels WHERE active = 1"):
        k = pos.get(image_id)
        if k is not None and class_id is not None:
            out["label"][k] = class_id
    if model_id is None:
        from artannot.store import repo

        model_id = repo.active_model_id(conn)
    if model_id is None:
        return out
    for image_id, class_id in conn.execute(
            "SELECT image_id, class_id FROM predictions WHERE model_id = ? AND rank = 1", (model_id,)):
        k = pos.get(image_id)
        if k is not None:
            out["prediction"][k] = class_id
    try:
        rows = conn.execute("SELECT image_id, score FROM suspects WHERE model_id = ?", (model_id,)).fetchall()
    except sqlite3.OperationalError:  # a project from before suspects were stored
        rows = []
    for image_id, score in rows:
        k = pos.get(image_id)
        if k is not None and score is not None:
            out["suspect"][k] = score
    return out


# -- "more like this" and morphing over a whole project (the CLI's similar / morph; the GUI's strip) -----------


@dataclass
class Neighbourhood:
    """What neighbour queries over a project need: image ids, unit features or hash codes, how made."""

    ids: np.ndarray  # int64 (N,): the rows
    paths: dict[int, str]
    metric: str  # cosine | hamming
    unit: np.ndarray | None = None  # L2-normalized features (cosine)
    codes: HashCodes | None = None  # hash codes (hamming)
    description: str = ""

    def row(self, image_id: int) -> int:
        hit = np.flatnonzero(self.ids == int(image_id))
        if not len(hit):
            raise ModelError(f"image {image_id} could not be read, so it has no features to compare")
        return int(hit[0])

    @property
    def data(self) -> np.ndarray:
        return self.codes.codes if self.metric == "hamming" else self.unit


def neighbourhood(conn: sqlite3.Connection, cache_dir: Path, *, hamming: bool = False, model_id: int | None = None,
                  runtime=None, progress: Progress | None = None,
                  cancel: threading.Event | None = None) -> Neighbourhood:
    """Every image of a project in one model's feature space (cosine), or as hash codes (hamming): a tag model's
    (the chosen model when it is one, else the newest) without any network pass, else the median rule on the
    model's features."""
    from artannot.store import repo
    from artannot.store import tags as tag_store

    images = repo.all_images(conn)
    if not images:
        raise ModelError("the project has no images: import a folder first")
    paths = {int(i): p for i, p, _ in images}
    all_ids = np.array([i for i, _, _ in images], dtype=np.int64)
    if hamming:
        tag_model = model_id if model_id is not None and _is_tag_model(conn, model_id) else None
        if tag_model is not None or tag_store.latest_tag_model_id(conn) is not None:
            codes = collection_codes(conn, all_ids, tag_model=tag_model)
            return Neighbourhood(all_ids, paths, "hamming", codes=codes, description=codes.description)
    feats, ok, source = model_features(conn, cache_dir, model_id, [(p, sha) for _, p, sha in images],
                                       runtime=runtime, progress=progress, cancel=cancel)
    ids = all_ids[ok]
    if hamming:
        codes = HashCodes(hash_codes(feats[ok], "median"), int(feats.shape[1]), "median")
        return Neighbourhood(ids, paths, "hamming", codes=codes, description=f"{codes.description} · {source.description}")
    return Neighbourhood(ids, paths, "cosine", unit=l2_normalize(feats[ok]), description=source.description)


def _is_tag_model(conn: sqlite3.Connection, model_id: int) -> bool:
    row = conn.execute("SELECT method FROM models WHERE id = ?", (int(model_id),)).fetchone()
    return row is not None and row[0] == "tags"


def nearest(hood: Neighbourhood, image_id: int, k: int = 10) -> list[dict]:
    """The k nearest images to one: [{image, path, distance (Hamming bits) or similarity (cosine)}], nearest first."""
    if k < 1:
        raise ModelError("--k must be at least 1")
    row = hood.row(image_id)
    if hood.metric == "hamming":
        idx, dist = hamming_knn(hood.codes.codes, [row], k)
        return [{"image": int(hood.ids[j]), "path": hood.paths[int(hood.ids[j])], "distance": int(d)}
                for j, d in zip(idx[0].tolist(), dist[0].tolist(), strict=True)]
    idx, sims = cosine_knn(hood.unit, [row], k, normalized=True)
    return [{"image": int(hood.ids[j]), "path": hood.paths[int(hood.ids[j])], "similarity": float(s)}
            for j, s in zip(idx[0].tolist(), sims[0].tolist(), strict=True)]


def morph(hood: Neighbourhood, start_id: int, end_id: int, k: int = 6,
          steps: int | None = None) -> tuple[list[int], int]:
    """(image ids of the morphing path between two images on the top-k graph of the hood's metric, start and
    end included; the k the path was found on). At most `steps` images between them, evenly spaced on the path.

    Few-bit codes (a tag model with a few tags) tie often, and ties split the Hamming graph into groups of
    equal codes: k then grows until the two images connect."""
    if k < 1:
        raise ModelError("--k must be at least 1")
    if steps is not None and steps < 0:
        raise ModelError("--steps must be 0 or more")
    path, used = morph_path_k(hood.data, hood.row(start_id), hood.row(end_id), k, metric=hood.metric)
    if steps is not None and len(path) - 2 > steps:
        inner = path[1:-1]
        keep = np.linspace(0, len(inner) - 1, steps).round().astype(int) if steps else []
        path = [path[0], *[inner[i] for i in keep], path[-1]]
    return [int(hood.ids[j]) for j in path], used


def draw_strip(paths: Sequence[str], captions: Sequence[str], *, side: int = 160, title: str = ""):
    """A PNG-ready strip (PIL RGB) of images side by side, each fitted in a square, its caption under it."""
    from PIL import Image, ImageDraw, ImageFont

    from artannot.data.images import load_image

    try:
        font = ImageFont.load_default(size=13)
    except (TypeError, OSError):
        font = ImageFont.load_default()
    pad, cap, top = 10, 36, 30 if title else 10
    w = pad + len(paths) * (side + pad)
    img = Image.new("RGB", (max(w, 200), top + side + cap + pad), "white")
    d = ImageDraw.Draw(img)
    for n, (path, caption) in enumerate(zip(paths, captions, strict=True)):
        x = pad + n * (side + pad)
        try:
            thumb = load_image(path, max_side=2 * side).convert("RGB")
            thumb.thumbnail((side, side))
            img.paste(thumb, (x + (side - thumb.width) // 2, top + (side - thumb.height) // 2))
        except (OSError, ValueError, ArtAnnotError):  # an unreadable image leaves its square grey
            d.rectangle([x, top, x + side, top + side], fill="#cfd8dc")
        for j, line in enumerate(str(caption).split("\n")[:2]):
            d.text((x, top + side + 4 + 15 * j), line[:24], fill="#263238", font=font)
    if title:
        d.text((pad, 8), title, fill="#263238", font=font)
    return img
