"""Deep features of images, computed once per (image content, backbone) and cached on disk."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from artannot.data.images import load_image
from artannot.errors import ArtAnnotError, Cancelled
from artannot.ml.backbones import BackboneSpec, get_spec, load_backbone
from artannot.ml.decode_cache import DecodeCache, Normalizer, Recipe, decode_cache_for, eval_recipe
from artannot.ml.device import Runtime, loader_workers, select_runtime

Progress = Callable[[int, int, str], None]
log = logging.getLogger(__name__)


_checked: set[tuple] = set()  # file states that passed quick_check in this process
_checked_lock = threading.Lock()


def _check_once(conn: sqlite3.Connection, path: Path) -> None:
    """quick_check a cache file once per process and file state (a big cache takes a while to scan)."""
    try:
        st = path.stat()
        key: tuple | None = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    with _checked_lock:
        if key is not None and key in _checked:
            return
    problems = [r[0] for r in conn.execute("PRAGMA quick_check(1)")]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError(problems[0] if problems else "quick_check failed")
    if key is not None:
        with _checked_lock:
            _checked.add(key)


class FeatureCache:
    """Feature vectors keyed by (backbone, image sha256) in a SQLite file beside the project."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.moved_aside: Path | None = None  # where a damaged file went when this cache was opened
        self.rejected = 0  # cached vectors refused on read (damaged: not finite or the wrong size)
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as exc:  # the cache is disposable: move the damaged file aside, start over
            self.moved_aside = self._move_aside()
            log.warning("the feature cache %s was damaged (%s); moved it aside to %s and started a new one"
                        " (features are recomputed)", self.path, " ".join(str(exc).split())[:120],
                        self.moved_aside.name)
            self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            _check_once(conn, self.path)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS features (backbone TEXT NOT NULL, sha256 TEXT NOT NULL,"
                " dim INTEGER NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (backbone, sha256)) WITHOUT ROWID"
            )
        except BaseException:
            conn.close()
            raise
        return conn

    def _move_aside(self) -> Path:
        dest = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
        n = 1
        while dest.exists():
            n += 1
            dest = dest.with_name(f"{dest.name.rsplit('~', 1)[0]}~{n}")
        os.replace(self.path, dest)
        for suffix in ("-wal", "-shm"):  # the journal belongs to the damaged file
            with contextlib.suppress(OSError):
                os.replace(f"{self.path}{suffix}", f"{dest}{suffix}")
        return dest

    def get_many(self, backbone: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors for the hashes that have one; a damaged vector counts as missing (recomputed)."""
        out: dict[str, np.ndarray] = {}
        uniq = list(dict.fromkeys(hashes))
        rejected = 0
        with self._lock:
            try:
                for start in range(0, len(uniq), 500):
                    chunk = uniq[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    for sha, dim, vec in self._conn.execute(
                        f"SELECT sha256, dim, vec FROM features WHERE backbone = ? AND sha256 IN ({marks})",
                        [backbone, *chunk],
                    ):
                        if not isinstance(vec, bytes) or len(vec) != 2 * dim or dim < 1:
                            rejected += 1
                            continue
                        v = np.frombuffer(vec, dtype=np.float16).astype(np.float32)
                        if not np.isfinite(v).all():
                            rejected += 1
                            continue
                        out[sha] = v
            except sqlite3.DatabaseError as exc:  # damage quick_check missed: what was read stays valid
                log.warning("the feature cache %s could not be read (%s); the rest is recomputed", self.path,
                            " ".join(str(exc).split())[:120])
        if rejected:
            self.rejected += rejected
            log.warning("%d cached feature vectors in %s were damaged; they are recomputed", rejected, self.path)
        return out

    def put_many(self, backbone: str, items: dict[str, np.ndarray]) -> None:
        """Store vectors (as float16: half the disk, no measurable accuracy loss for linear/SVM heads)."""
        rows = [(backbone, sha, v.shape[0], v.astype(np.float16).tobytes()) for sha, v in items.items()
                if np.isfinite(v).all()]
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.executemany(
                        "INSERT OR REPLACE INTO features(backbone, sha256, dim, vec) VALUES (?, ?, ?, ?)", rows)
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:  # disposable: a cache that cannot be written is not an error
                log.warning("the feature cache %s could not be written (%s); features are not cached",
                            self.path, " ".join(str(exc).split())[:120])

    def close(self) -> None:
        """Release the file."""
        self._conn.close()


class ImageDataset(Dataset):
    """Decoded, transformed images; unreadable files yield a flag instead of failing the batch.

    With a `recipe` (decode_cache.eval_recipe) items are uint8 (3 x crop x crop) tensors, read from the
    decode cache when one is given with the images' sha256 `hashes`, else decoded; normalization then
    happens on the device (make_loader's batches). Without one, `transform` makes float tensors.
    """

    def __init__(self, paths: Sequence[str], transform, size: int, *, hashes: Sequence[str] | None = None,
                 decode_cache: DecodeCache | None = None, recipe: Recipe | None = None):
        self.paths = list(paths)
        self.transform = transform
        self.size = size
        self.hashes = list(hashes) if hashes is not None else None
        self.decode_cache = decode_cache if hashes is not None else None
        self.recipe = recipe

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx: int):
        try:
            if self.recipe is None:
                return self.transform(load_image(self.paths[idx], min_side=2 * self.size)), True
            if self.decode_cache is not None:
                arr = self.decode_cache.load(self.paths[idx], self.hashes[idx], self.recipe)
            else:
                arr = self.recipe.decode(self.paths[idx])  # a huge scan shrinks on load
            return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1), True
        except (ArtAnnotError, OSError):
            dtype = torch.float32 if self.recipe is None else torch.uint8
            return torch.zeros(3, self.size, self.size, dtype=dtype), False


def default_workers(n_items: int) -> int:
    """DataLoader workers: decoding in parallel pays off once there are enough images."""
    if n_items < 32:
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class DeviceBatches:
    """A loader of uint8 batches that yields them on the device, normalized, in the model's layout."""

    def __init__(self, loader: DataLoader, runtime: Runtime, normalize: Normalizer):
        self.loader, self.runtime, self.normalize = loader, runtime, normalize
        self.dataset = loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, good in self.loader:
            yield self.normalize(self.runtime.batch(x)), good


def make_loader(paths: Sequence[str], transform, size: int, runtime: Runtime, batch_size: int,
                shuffle: bool = False, num_workers: int | None = None, *, spec: BackboneSpec | None = None,
                hashes: Sequence[str] | None = None, decode_cache: DecodeCache | None = None):
    """A DataLoader with worker processes and pinned memory where they help.

    With `spec` the backbone's evaluation geometry is applied (and cached in `decode_cache` under the
    images' `hashes`) as uint8 and the batches come out on the device, normalized: `transform` is unused.
    """
    workers = default_workers(len(paths)) if num_workers is None else num_workers
    recipe = eval_recipe(spec) if spec is not None else None
    dataset = ImageDataset(paths, transform, size if spec is None else spec.input_size, hashes=hashes,
                           decode_cache=decode_cache, recipe=recipe)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, **loader_workers(workers),
        pin_memory=runtime.device.type == "cuda", persistent_workers=False,  # one pass: nothing to keep alive
    )
    if spec is None:
        return loader
    return DeviceBatches(loader, runtime, Normalizer(spec, runtime.device))


@torch.inference_mode()
def extract_features(
    items: Sequence[tuple[str, str]],
    *,
    backbone: str = "efficientnet_lite0",
    cache: FeatureCache | None = None,
    runtime: Runtime | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    model: torch.nn.Module | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    decode_cache: DecodeCache | None | str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features of (path, sha256) items; returns (features N×D, ok mask N).

    Images are decoded, resized and center-cropped once into `decode_cache` ("auto": the one beside the
    feature cache, i.e. in the project's cache folder; None: none), normalized on the device.
    """
    if decode_cache == "auto":
        decode_cache = decode_cache_for(cache.path.parent) if cache is not None else None
    runtime = runtime or select_runtime("auto")
    spec = get_spec(backbone)
    hashes = [sha for _, sha in items]
    cached = cache.get_many(backbone, hashes) if cache is not None else {}
    todo = [i for i, sha in enumerate(hashes) if sha not in cached]
    feats = np.zeros((len(items), spec.feature_dim), dtype=np.float32)
    ok = np.ones(len(items), dtype=bool)
    for i, sha in enumerate(hashes):
        if sha in cached:
            feats[i] = cached[sha]
    if progress is not None:
        progress(len(items) - len(todo), len(items), "features")
    if not todo:
        return feats, ok
    model = runtime.prepare(model if model is not None else load_backbone(backbone))
    loader = make_loader([items[i][0] for i in todo], None, spec.input_size, runtime, batch_size,
                         num_workers=num_workers, spec=spec, hashes=[hashes[i] for i in todo],
                         decode_cache=decode_cache)
    pos = 0
    for x, good in loader:
        if cancel is not None and cancel.is_set():
            raise Cancelled("feature extraction cancelled")
        with runtime.autocast():
            f = model.forward_features(runtime.batch(x)).float().cpu().numpy()
        idx = todo[pos : pos + len(f)]
        feats[idx] = f
        ok[idx] = good.numpy()
        if cache is not None:
            cache.put_many(backbone, {hashes[i]: feats[i] for i, g in zip(idx, good.tolist(), strict=False) if g})
        pos += len(f)
        if progress is not None:
            progress(len(items) - len(todo) + pos, len(items), "features")
    return feats, ok
