"""What detectors learn from and are measured on: the curator's current boxes, split by image.

Training images are the train, val and unsplit images with boxes; evaluation uses the test split. An image
without boxes is a negative (nothing to find there) only when the curator reviewed it empty: rejected its
proposals and left none open. Any other image without boxes may simply not be boxed yet (the usual loop: box
some images, train, propose on the rest), and counting it as empty would teach the detector to miss what it
should propose there; both methods learn the background from the boxed images anyway. Option `negatives`
(true: every unboxed image, e.g. a COCO file whose empty images are known negatives; false: none) overrides
the rule. Boxes are clipped to their image (the store does); boxes under MIN_SIDE pixels on a side, or
without a class, are left out.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from artannot.data.images import load_image
from artannot.store import boxes as box_store

TRAIN_SPLITS = ("train", "val", None)
MIN_SIDE = 2.0  # px: smaller boxes are annotation slips, not objects


@dataclass
class BoxImage:
    """One image with its current boxes: (class id, x, y, w, h) in image pixels."""

    image_id: int
    path: str
    width: int
    height: int
    boxes: list[tuple[int, float, float, float, float]] = field(default_factory=list)


def _split_clause(splits) -> tuple[str, list]:
    named = [s for s in splits if s is not None]
    parts = []
    if named:
        parts.append(f"i.split IN ({','.join('?' * len(named))})")
    if None in splits:
        parts.append("i.split IS NULL")
    return "(" + " OR ".join(parts) + ")", named


def box_images(conn: sqlite3.Connection, splits, *, negatives: bool | None = None) -> list[BoxImage]:
    """The images of splits that count for detection (boxed ones, and unboxed ones as negatives per the rule)."""
    where, args = _split_clause(tuple(splits))
    rows = conn.execute(
        "SELECT i.id, s.path, i.path, i.width, i.height FROM images i JOIN sources s ON s.id = i.source_id"
        f" WHERE i.missing = 0 AND {where} ORDER BY i.id", args).fetchall()
    boxes = box_store.boxes_by_image(conn)
    out, empty = [], []
    for image_id, root, rel, width, height in rows:
        item = BoxImage(int(image_id), str(Path(root) / os.fsdecode(rel)), int(width or 0), int(height or 0))
        for b in boxes.get(image_id, []):
            if b.class_id is not None and b.w >= MIN_SIDE and b.h >= MIN_SIDE:
                item.boxes.append((int(b.class_id), b.x, b.y, b.w, b.h))
        (out if image_id in boxes else empty).append(item)
    if negatives is not None:
        return out + empty if negatives else out
    state = _proposal_states(conn)
    return out + [im for im in empty if state.get(im.image_id) == "reviewed"]


def _proposal_states(conn: sqlite3.Connection) -> dict[int, str]:
    """image id -> 'open' (proposals await review) or 'reviewed' (proposals rejected, none open)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'proposals'").fetchone() is None:
        return {}
    return {int(i): ("open" if n_open else "reviewed") for i, n_open, n_rejected in conn.execute(
        "SELECT image_id, SUM(state = 'open'), SUM(state = 'rejected') FROM proposals GROUP BY image_id")
        if n_open or n_rejected}


def class_counts(images: list[BoxImage]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for im in images:
        for b in im.boxes:
            counts[b[0]] = counts.get(b[0], 0) + 1
    return counts


def load_scaled(path: str | Path, min_size: int, max_size: int) -> tuple[torch.Tensor, float]:
    """An image as a 0-1 float tensor (3, H, W), resized so its shorter side is min_size (longer <= max_size),
    and the scale from image pixels to tensor pixels."""
    picture = load_image(path, min_side=min_size)  # ImageLoadError (one line); a huge scan shrinks on load
    w, h = picture.info.get("source_size", picture.size)  # image pixels, before any shrinking
    scale = min(min_size / max(min(w, h), 1), max_size / max(w, h, 1))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size != picture.size:
        from PIL import Image

        picture = picture.resize(size, Image.Resampling.BILINEAR)
    arr = np.asarray(picture, dtype=np.uint8)
    tensor = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
    return tensor, size[0] / max(w, 1)


def xyxy(boxes, scale: float = 1.0) -> torch.Tensor:
    """(class, x, y, w, h) boxes as an (N, 4) x0 y0 x1 y1 tensor, scaled."""
    t = torch.tensor([[x, y, x + w, y + h] for _, x, y, w, h in boxes], dtype=torch.float32).reshape(-1, 4)
    return t * scale
