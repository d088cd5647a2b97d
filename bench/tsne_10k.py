"""Time of the collection map for 10k points: embedding compute, then the scatter offscreen (render, pan/zoom,
hover lookup, lasso and rectangle selection, recolouring).

Features are clustered random vectors shaped like EfficientNet-Lite0's (1280-d, non-negative), so no images or
model are needed; the map view runs without a main window (a stub stands in for the app). Prints one JSON
object. `--baseline` also runs scikit-learn's Barnes-Hut t-SNE (PCA initialisation, the same perplexity and number of
iterations) on the same PCA-reduced rows in the same run, with the same neighbour-agreement check.
Usage: python bench/tsne_10k.py [--points 10000] [--dim 1280] [--clusters 20] [--skip-tsne] [--baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402


def features(n: int, dim: int, clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative clustered features and their cluster labels."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(clusters, dim))) * 1.5
    labels = rng.integers(0, clusters, n)
    return np.abs(centres[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


def same_cluster(xy: np.ndarray, labels: np.ndarray) -> float:
    """Share of each point's 10 nearest map neighbours that come from its own cluster."""
    from scipy.spatial import cKDTree

    _, nn = cKDTree(xy).query(xy, 11)
    return round(float((labels[nn[:, 1:]] == labels[:, None]).mean()), 3)


def timed(fn, repeat: int = 1) -> float:
    """Median seconds of fn() over repeat runs."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--clusters", type=int, default=20)
    ap.add_argument("--skip-tsne", action="store_true", help="lay points out by cluster instead (view timings only)")
    ap.add_argument("--baseline", action="store_true", help="scikit-learn's t-SNE on the same rows, same run")
    args = ap.parse_args()

    from artannot.ml.embedding import (
        PCA_DIMS,
        Embedding,
        embed_features,
        hamming_knn,
        hash_codes,
        l2_normalize,
        pca_reduce,
    )

    X, labels = features(args.points, args.dim, args.clusters)
    out: dict = {"points": args.points, "dim": args.dim, "cpus": os.cpu_count()}
    if args.skip_tsne:
        rng = np.random.default_rng(1)
        centres = rng.normal(size=(args.clusters, 2)) * 30
        xy = (centres[labels] + rng.normal(size=(args.points, 2))).astype(np.float32)
        out["embedding_s"] = None
    else:
        t = time.perf_counter()
        reduced = pca_reduce(l2_normalize(X), PCA_DIMS, 0)
        out["pca_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        xy, engine = embed_features(X)
        out["embedding_s"] = round(time.perf_counter() - t, 2)
        out["engine"] = engine
        out["tsne_10nn_same_cluster"] = same_cluster(xy, labels)
        if args.baseline:
            from sklearn.manifold import TSNE

            t = time.perf_counter()
            base = TSNE(2, perplexity=30.0, init="pca", random_state=0, max_iter=750, n_jobs=os.cpu_count())
            base_xy = base.fit_transform(reduced)
            out["sklearn_barnes_hut_s"] = round(time.perf_counter() - t, 2)
            out["sklearn_10nn_same_cluster"] = same_cluster(base_xy, labels)
    codes = hash_codes(X)
    out["hamming_knn_query_ms"] = round(1000 * timed(lambda: hamming_knn(codes, [0], 12), 5), 2)

    try:
        from PySide6.QtCore import QObject, Signal
        from PySide6.QtWidgets import QApplication
    except ImportError:  # a headless compute box: the embedding timings alone
        out["view"] = "skipped: PySide6 is not installed"
        print(json.dumps(out))
        return

    from artannot.gui.tsne_map import TsneMap
    from artannot.store.repo import PALETTE, ClassInfo

    app = QApplication.instance() or QApplication([])
    classes = [ClassInfo(c + 1, f"class {c + 1}", PALETTE[c % len(PALETTE)], None, 0) for c in range(args.clusters)]
    rng = np.random.default_rng(2)

    class Stub(QObject):
        """What the map asks of the app, answered from memory."""

        project_changed, models_changed, labels_changed = Signal(), Signal(), Signal()
        current_changed = Signal(object)
        selected: list[int] = []

        def current_image_id(self):
            return None

        def point_attributes(self, ids, model_id):
            n = len(ids)
            return {"label": labels[:n] + 1, "prediction": (labels[:n] + (rng.random(n) < 0.1)) % args.clusters + 1,
                    "suspect": rng.random(n).astype(np.float32)}

        def classes(self):
            return classes

        def models(self):
            return []

        def select_in_grid(self, ids, current=None):
            self.selected = list(ids)
            return len(ids)

        def status(self, *_a, **_k):
            pass

        def image_files(self, ids):
            return {}

        def thumb_dir(self):
            return None

    stub = Stub()
    view = TsneMap(stub)  # type: ignore[arg-type]
    view.resize(1000, 800)
    view.show()
    app.processEvents()
    emb = Embedding(np.arange(args.points, dtype=np.int64), xy, "bench", "given")

    def render() -> None:
        view.plot.viewport().repaint()

    out["set_embedding_s"] = round(timed(lambda: view.set_embedding(emb)), 3)
    out["first_render_s"] = round(timed(render), 3)
    out["render_ms"] = round(1000 * timed(render, 5), 1)

    def pan() -> None:
        view.view.translateBy(x=0.5, y=0.3)
        render()

    def zoom() -> None:
        view.view.scaleBy((0.9, 0.9))
        render()

    out["pan_frame_ms"] = round(1000 * timed(pan, 10), 1)
    out["zoom_frame_ms"] = round(1000 * timed(zoom, 10), 1)
    view.view.autoRange()
    lo, hi = xy.min(0), xy.max(0)
    probes = rng.uniform(lo, hi, size=(1000, 2))
    out["hover_lookup_us"] = round(1e6 * timed(lambda: [view.nearest(x, y) for x, y in probes]) / 1000, 1)
    c, r = xy.mean(0), (hi - lo).mean() * 0.15
    angles = np.linspace(0, 2 * np.pi, 200)
    lasso = np.c_[c[0] + r * np.cos(angles), c[1] + r * np.sin(angles)]
    out["lasso_200_vertices_ms"] = round(1000 * timed(lambda: view.select_polygon(lasso), 3), 1)
    out["lasso_selected"] = len(stub.selected)
    rect = np.array([[lo[0], lo[1]], [c[0], lo[1]], [c[0], c[1]], [lo[0], c[1]]])
    out["rectangle_ms"] = round(1000 * timed(lambda: view.select_polygon(rect), 3), 1)
    out["recolour_suspect_ms"] = round(1000 * timed(lambda: (view.colour_box.setCurrentIndex(2), render()), 1), 1)
    out["recolour_label_ms"] = round(1000 * timed(lambda: (view.colour_box.setCurrentIndex(0), render()), 1), 1)
    print(json.dumps(out))
    view.close()


if __name__ == "__main__":
    main()
