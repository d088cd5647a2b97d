"""Box mAP with pycocotools COCOeval (not a hand-written mAP): AP@[.5:.95], AP50, AP75 and per-class AP.

`coco_map` scores detections against ground-truth images; `evaluate_detector` runs a stored detector over a
split's boxed images (the `evaluate --boxes` figures, also stored in the model's metrics when it is trained).
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from artannot.errors import ModelError
from artannot.ml.detect.data import BoxImage, box_images

try:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
except ImportError:  # pragma: no cover - a dependency; the message says what to do
    COCO = COCOeval = None


def coco_map(images: Sequence[BoxImage], detections: Iterable[tuple], class_ids: Sequence[int],
             class_names: Sequence[str]) -> dict:
    """COCOeval figures of (image id, class id, x, y, w, h, score) detections on images' boxes, over class_ids:
    {"map", "map50", "map75", "n" (images), "per_class": {name: {"ap", "ap50", "n" (boxes)}}}. A class with
    no box in the images has ap None."""
    if COCOeval is None:
        raise ModelError("box mAP needs pycocotools: pip install 'pycocotools>=2.0.7'")
    known = {int(c) for c in class_ids}
    gt = {"images": [], "annotations": [], "categories": [{"id": int(c), "name": n}
                                                          for c, n in zip(class_ids, class_names, strict=True)]}
    counts = dict.fromkeys(known, 0)
    ids = set()
    for im in images:
        ids.add(im.image_id)
        gt["images"].append({"id": im.image_id, "width": im.width, "height": im.height})
        for class_id, x, y, w, h in im.boxes:
            if class_id in known:
                counts[class_id] += 1
                gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": im.image_id,
                                          "category_id": class_id, "bbox": [x, y, w, h], "area": w * h,
                                          "iscrowd": 0})
    dets = [{"image_id": int(d[0]), "category_id": int(d[1]), "bbox": [float(v) for v in d[2:6]],
             "score": float(d[6])} for d in detections if int(d[0]) in ids and int(d[1]) in known]
    names = dict(zip((int(c) for c in class_ids), class_names, strict=True))
    out = {"map": 0.0, "map50": 0.0, "map75": 0.0, "n": len(gt["images"]), "per_class": {
        names[c]: {"ap": 0.0 if counts[c] else None, "ap50": 0.0 if counts[c] else None, "n": counts[c]}
        for c in names}}
    if not gt["annotations"] or not dets:
        if not gt["annotations"]:
            out.update(map=None, map50=None, map75=None)
        return out
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its tables
        truth = COCO()
        truth.dataset = gt
        truth.createIndex()
        result = truth.loadRes(dets)
        ev = COCOeval(truth, result, "bbox")
        ev.params.maxDets = [1, 10, 100]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out.update(map=float(max(ev.stats[0], 0.0)), map50=float(max(ev.stats[1], 0.0)),
               map75=float(max(ev.stats[2], 0.0)))
    precision = ev.eval["precision"]  # T x R x K x A x M
    for k, cat in enumerate(ev.params.catIds):
        if not counts.get(cat):
            continue
        p = precision[:, :, k, 0, -1]
        ap = float(np.mean(p[p > -1])) if (p > -1).any() else 0.0
        p50 = precision[0, :, k, 0, -1]
        ap50 = float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else 0.0
        out["per_class"][names[cat]].update(ap=ap, ap50=ap50)
    return out


def evaluate_detector(conn: sqlite3.Connection, cache_dir: Path, row: sqlite3.Row, split: str | None = "test",
                      *, device: str = "auto") -> dict:
    """COCOeval figures of a stored detector on a split's boxes (the `evaluate --boxes --json` object)."""
    from artannot.ml.detect.predict import detect_images

    params = json.loads(row["params"] or "{}")
    class_ids = [int(c) for c in params.get("class_ids") or json.loads(row["classes"] or "[]")]
    names = {r[0]: r[1] for r in conn.execute("SELECT id, name FROM classes")}
    images = box_images(conn, (split,))
    if not any(im.boxes for im in images):
        raise ModelError(f"no boxes in the {split or 'unsplit'} images to evaluate the detector on")
    dets = detect_images(conn, cache_dir, row, [im.image_id for im in images], threshold=0.001, device=device)
    out = coco_map(images, dets, class_ids, [names.get(c, str(c)) for c in class_ids])
    out.update(model=row["id"], split=split, method=row["method"])
    return out
