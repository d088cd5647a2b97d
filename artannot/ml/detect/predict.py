"""Run a stored detector (either method) over project images or files: (target, class id, x, y, w, h, score)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from artannot.errors import Cancelled, ImageLoadError, ModelError
from artannot.ml.detect.data import load_scaled
from artannot.ml.device import Runtime, select_runtime
from artannot.ml.task import Progress
from artannot.store import repo
from artannot.store.model_files import model_predictor

Detection = tuple[int, float, float, float, float, float]  # class id, x, y, w, h, score (image pixels)


class Detector:
    """A loaded detector of either kind, on its device."""

    def __init__(self, kind: str, model, cfg, runtime: Runtime):
        self.kind, self.model, self.cfg, self.runtime = kind, model, cfg, runtime
        if kind == "detector":
            self.model = model.to(runtime.device).eval()
        else:
            model._extractor().to(runtime.device)  # noqa: SLF001 - same package

    @classmethod
    def from_row(cls, cache_dir: Path, row: sqlite3.Row, runtime: Runtime) -> Detector:
        pred = model_predictor(cache_dir, row)[1]
        kind, path = pred.get("kind"), pred.get("path")
        if kind not in ("detector", "patches") or not path:
            raise ModelError(f"model {row['id']} ({row['method']}) is not a detector")
        if not Path(path).is_file():
            raise ModelError(f"the file of detector {row['id']} is missing: {path}; train it again")
        if kind == "detector":
            from artannot.ml.detect.model import load_detector

            model, cfg = load_detector(path)
            return cls(kind, model, cfg, runtime)
        from artannot.ml.detect.patches import PatchDetector

        det = PatchDetector.load(path)
        return cls(kind, det, det.cfg, runtime)

    def detect_tensor(self, image: torch.Tensor, scale: float, threshold: float) -> list[Detection]:
        """Detections on one 0-1 image tensor that is `scale` times the image's size."""
        if self.kind == "patches":
            return self.model.detect(image.to(self.runtime.device), scale, threshold)
        amp = self.runtime.device.type == "cuda"
        with torch.no_grad(), (self.runtime.autocast() if amp else torch.autocast("cpu", enabled=False)):
            out = self.model([image.to(self.runtime.device)])[0]
        boxes, scores, labels = out["boxes"].float().cpu(), out["scores"].float().cpu(), out["labels"].cpu()
        dets = []
        for (x0, y0, x1, y1), s, k in zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True):
            if s >= threshold and 1 <= k <= len(self.cfg.class_ids):
                dets.append((int(self.cfg.class_ids[k - 1]), x0 / scale, y0 / scale, (x1 - x0) / scale,
                             (y1 - y0) / scale, float(s)))
        return dets

    def detect_path(self, path: str | Path, threshold: float) -> list[Detection]:
        image, scale = load_scaled(path, self.cfg.min_size, self.cfg.max_size)
        return self.detect_tensor(image, scale, threshold)


def run_detector(detector: Detector, targets: Sequence, paths: Sequence[str | Path], *, threshold: float,
                 progress: Progress | None = None, cancel: threading.Event | None = None) -> list[tuple]:
    """(target, class id, x, y, w, h, score) of every detection at threshold or more; unreadable files are
    skipped."""
    out = []
    for n, (target, path) in enumerate(zip(targets, paths, strict=True)):
        if cancel is not None and cancel.is_set():
            raise Cancelled("detection cancelled")
        try:
            dets = detector.detect_path(path, threshold)
        except ImageLoadError:
            dets = []
        out += [(target, *d) for d in dets]
        if progress is not None:
            progress(n + 1, len(paths), "detecting boxes")
    return out


def detect_images(conn: sqlite3.Connection, cache_dir: Path, row: sqlite3.Row, items: Sequence, *,
                  threshold: float = 0.3, device: str = "auto", progress: Progress | None = None,
                  cancel: threading.Event | None = None) -> list[tuple]:
    """Detections of a stored detector on project images (ints: image ids) or files (str / Path), as
    (image id or path, class id, x, y, w, h, score) in image pixels, best first per image."""
    if not 0.0 <= threshold <= 1.0:
        raise ModelError(f"--threshold must be between 0 and 1, not {threshold:g}")
    runtime = select_runtime(device)
    detector = Detector.from_row(Path(cache_dir), row, runtime)
    targets, paths = [], []
    for item in items:
        if isinstance(item, (str, Path)):
            targets.append(str(item))
            paths.append(Path(item))
        else:
            image_id = int(item)
            if conn.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
                raise ModelError(f"no image with id {image_id} in this project")
            targets.append(image_id)
            paths.append(repo.image_path(conn, image_id))
    return run_detector(detector, targets, paths, threshold=threshold, progress=progress, cancel=cancel)
