"""Deep features of images, computed once per (image content, backbone) and cached on disk."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from artannot.data.images import load_image
from artannot.errors import ArtAnnotError, Cancelled
from artannot.ml.backbones import build_transform, get_spec, load_backbone
from artannot.ml.device import Runtime, select_runtime

Progress = Callable[[int, int, str], None]


class FeatureCache:
    """Feature vectors keyed by (backbone, image sha256) in a SQLite file beside the project."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
        self._lock = threading.Lock()
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA busy_timeout = 30000")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS features (backbone TEXT NOT NULL, sha256 TEXT NOT NULL,"
            " dim INTEGER NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (backbone, sha256)) WITHOUT ROWID"
        )

    def get_many(self, backbone: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors for the hashes that have one."""
        out: dict[str, np.ndarray] = {}
        uniq = list(dict.fromkeys(hashes))
        with self._lock:
            for start in range(0, len(uniq), 500):
                chunk = uniq[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for sha, vec in self._conn.execute(
                    f"SELECT sha256, vec FROM features WHERE backbone = ? AND sha256 IN ({marks})",
                    [backbone, *chunk],
                ):
                    out[sha] = np.frombuffer(vec, dtype=np.float16).astype(np.float32)
        return out

    def put_many(self, backbone: str, items: dict[str, np.ndarray]) -> None:
        """Store vectors (as float16: half the disk, no measurable accuracy loss for linear/SVM heads)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO features(backbone, sha256, dim, vec) VALUES (?, ?, ?, ?)",
                    [(backbone, sha, v.shape[0], v.astype(np.float16).tobytes()) for sha, v in items.items()],
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        """Release the file."""
        self._conn.close()


class ImageDataset(Dataset):
    """Decoded, transformed images; unreadable files yield a flag instead of failing the batch."""

    def __init__(self, paths: Sequence[str], transform, size: int):
        self.paths = list(paths)
        self.transform = transform
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx: int):
        try:
            return self.transform(load_image(self.paths[idx])), True
        except (ArtAnnotError, OSError):
            return torch.zeros(3, self.size, self.size), False


def default_workers(n_items: int) -> int:
    """DataLoader workers: decoding in parallel pays off once there are enough images."""
    if n_items < 32:
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def make_loader(paths: Sequence[str], transform, size: int, runtime: Runtime, batch_size: int,
                shuffle: bool = False, num_workers: int | None = None) -> DataLoader:
    """A DataLoader with worker processes and pinned memory where they help."""
    workers = default_workers(len(paths)) if num_workers is None else num_workers
    return DataLoader(
        ImageDataset(paths, transform, size), batch_size=batch_size, shuffle=shuffle, num_workers=workers,
        pin_memory=runtime.device.type == "cuda", persistent_workers=False,
    )


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
) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features of (path, sha256) items; returns (features N×D, ok mask N)."""
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
    loader = make_loader([items[i][0] for i in todo], build_transform(spec), spec.input_size, runtime, batch_size,
                         num_workers=num_workers)
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
