"""`train --method detector|patches`: fit a detector on the curator's boxes, measure it, store it.

Training images: the boxed train, val and unsplit images (and unboxed ones the curator reviewed empty, as
negatives; ml/detect/data.py). The test split's boxes give the stored box mAP (pycocotools COCOeval),
which also chooses the detector proposals come from (store/models.py). The model row (params["task"] =
"detect") names one file relative to the project's cache folder: a state dict `.pt` (detector) or a probe
`.npz` (patches), each with a `.json` sidecar; a cancelled or failed run leaves neither row nor files.

detector: Faster R-CNN + FPN (ml/detect/model.py), AdamW (heads 1e-3, backbone a fifth of it), linear warm-up
then cosine decay, horizontal flips, images drawn with repeat factors so rare classes are seen as often as
sqrt(their rarity) asks (LVIS), gradient clipping; CUDA + AMP on a GPU, fp32 on CPU.
patches: box regions vs mined background, features + probe over a window grid (ml/detect/patches.py).
detect-auto (ml/detect/auto.py) fits both on part of these images, scores them on the rest, and
stores the better through train_detect as a model of its method.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from artannot.errors import Cancelled, ImageLoadError, ModelError
from artannot.ml.detect.data import TRAIN_SPLITS, BoxImage, box_images, class_counts, load_scaled, xyxy
from artannot.ml.detect.patches import with_negative_background
from artannot.ml.device import Runtime, select_runtime
from artannot.ml.task import TrainResult, jsonable
from artannot.store import repo
from artannot.store.db import write
from artannot.store.model_files import project_cache_dir, relative_model_file, relative_params

MIN_BOXES = {"detector": 8, "patches": 2}  # training boxes a method needs at the least
MIN_CLASS_BOXES = 2  # a class with fewer training boxes is left out (named in params["skipped_classes"])


def default_epochs(n_images: int) -> int:
    """About 1,500 image steps, between 6 and 30 epochs (a few minutes for a few hundred boxes on 2 cores)."""
    return int(min(30, max(6, round(1500 / max(n_images, 1)))))


def _option(req, key: str, default):
    value = req.options.get(key, default)
    return type(default)(value) if value is not None else default


@dataclass
class Training:
    """The training images of a run (boxes of left-out classes dropped) and the classes it learns."""

    images: list[BoxImage]
    class_ids: list[int]
    class_names: list[str]
    skipped: list[str]

    @property
    def n_boxes(self) -> int:
        return sum(len(im.boxes) for im in self.images)


def training_data(conn: sqlite3.Connection, req, need: int | None = None) -> Training:
    """The boxed train, val and unsplit images (and negatives per the rule), refused with one line when there
    are fewer than `need` boxes (default: req.method's minimum) or no class has MIN_CLASS_BOXES boxes."""
    negatives = req.options.get("negatives")
    images = box_images(conn, TRAIN_SPLITS, negatives=None if negatives is None else bool(negatives))
    images = with_negative_background(conn, images, TRAIN_SPLITS)  # "no instrument" images: background
    counts = class_counts(images)
    names = repo.class_names(conn)
    n_boxes = sum(counts.values())
    if n_boxes == 0:
        raise ModelError("draw some boxes first: no boxes with a class on train, val or unsplit images")
    need = MIN_BOXES[req.method] if need is None else need
    if n_boxes < need:
        raise ModelError(f"--method {req.method} needs at least {need} boxes with a class on training images;"
                         f" there {'is' if n_boxes == 1 else 'are'} {n_boxes}"
                         + (" (try --method patches)" if req.method == "detector" else ""))
    class_ids = sorted(c for c, n in counts.items() if n >= MIN_CLASS_BOXES)
    if not class_ids:
        raise ModelError(f"every class needs at least {MIN_CLASS_BOXES} boxes to be detected; none has")
    skipped = sorted(names.get(c, str(c)) for c in counts if c not in class_ids)
    for im in images:
        im.boxes = [b for b in im.boxes if b[0] in class_ids]
    return Training(images, class_ids, [names.get(c, str(c)) for c in class_ids], skipped)


def model_path(models_dir: Path, method: str, backbone: str) -> Path:
    """A new file name for a detector of method (detector: .pt, patches: .npz)."""
    tag = uuid.uuid4().hex[:12]
    return Path(models_dir) / (f"det-{backbone}-{tag}.pt" if method == "detector" else f"patches-{backbone}-{tag}.npz")


def fit(method: str, images: list[BoxImage], class_ids, class_names, req, runtime: Runtime, path: Path, progress,
        cancel):
    """Fit a detector of method on images and save it to path: (Detector, info for the params)."""
    if req.options.get("augment_index"):  # style augmentation: stylized copies keep the size, so the boxes
        from artannot.ml.style import augmented

        images = list(images) + [BoxImage(im.image_id, copy, im.width, im.height, list(im.boxes))
                                 for copy, im in augmented([(im.path, im) for im in images],
                                                           req.options["augment_index"])]
    if method == "detector":
        return _train_detector(images, class_ids, class_names, req, runtime, path, progress, cancel)
    return _train_patches(images, class_ids, class_names, req, runtime, path, progress, cancel)


def train_detect(conn: sqlite3.Connection, cache_dir: Path, req, *, device: str = "auto", progress=None,
                 cancel: threading.Event | None = None, data: Training | None = None, fitted=None,
                 extra_params: dict | None = None, started: float | None = None,
                 test_progress=None) -> TrainResult:
    """Train, evaluate and store a detector (req.method detector or patches); progress and cancel as always.

    detect-auto (ml/detect/auto.py) passes its own training data, or a detector it already fitted as
    (Detector, info, path) in `fitted`, and params to add (extra_params); test_progress reports the test-split
    scoring (default: progress)."""
    started = time.perf_counter() if started is None else started
    data = training_data(conn, req) if data is None else data
    images, class_ids, class_names, skipped = data.images, data.class_ids, data.class_names, data.skipped
    runtime = select_runtime(device)
    path = model_path(Path(cache_dir) / "models", req.method, req.backbone) if fitted is None else Path(fitted[2])
    try:
        if fitted is None:
            detector, info = fit(req.method, images, class_ids, class_names, req, runtime, path, progress, cancel)
        else:
            detector, info = fitted[0], dict(fitted[1])
        if cancel is not None and cancel.is_set():
            raise Cancelled("training cancelled")
        metrics = _test_metrics(conn, detector, class_ids, class_names,
                                progress if test_progress is None else test_progress, cancel)
        metrics.update(info.pop("metrics", {}))
        metrics["seconds"] = time.perf_counter() - started
        params = {"task": "detect", "class_ids": class_ids, "class_names": class_names, "skipped_classes": skipped,
                  "n_train": sum(1 for im in images if im.boxes), "n_negative": sum(1 for im in images if not im.boxes),
                  "n_boxes": sum(len(im.boxes) for im in images),
                  "device": f"{runtime.device.type} {'fp16 AMP' if runtime.device.type == 'cuda' else 'fp32'}", **info,
                  "summary": _summary(req, class_names),
                  "predictor": {"kind": req.method, "path": str(path)}}
        params.update(extra_params or {})
        return _store(conn, req, class_ids, params, metrics, path, cancel)
    except BaseException:
        path.unlink(missing_ok=True)  # cancelled or failed: no model row, so no files either
        path.with_suffix(".json").unlink(missing_ok=True)
        raise


def _summary(req, class_names: list[str]) -> str:
    what = "Faster R-CNN + FPN" if req.method == "detector" else "region features + probe over a window grid"
    return f"{len(class_names)} classes, {what} on {req.backbone}"


def _store(conn, req, class_ids, params, metrics, path: Path, cancel) -> TrainResult:
    if cancel is not None and cancel.is_set():
        raise Cancelled("training cancelled")
    cache_dir = project_cache_dir(conn)  # model files are stored relative to it: the project can move
    params = json.loads(json.dumps(params, default=jsonable))
    stored = relative_params(cache_dir, params)
    metrics = json.loads(json.dumps(metrics, default=jsonable))
    with write(conn):  # the model appears with its figures, or not at all
        model_id = repo.add_model(conn, backbone=req.backbone, method=req.method, classes=class_ids, params=stored)
        repo.update_model(conn, model_id, metrics=metrics, checkpoint=relative_model_file(cache_dir, path))
    return TrainResult(model_id, metrics, params, metrics["seconds"], req.method)


def _test_metrics(conn, detector, class_ids, class_names, progress, cancel) -> dict:
    """COCOeval figures on the test split's boxes (none when the test split has no boxes)."""
    from artannot.ml.detect.evaluate import coco_map
    from artannot.ml.detect.predict import run_detector

    test = box_images(conn, ("test",))
    if not any(im.boxes for im in test):
        return {"map": None, "map50": None, "map75": None, "n": 0, "note": "no boxes in the test split"}
    dets = run_detector(detector, [im.image_id for im in test], [im.path for im in test], threshold=0.001,
                        progress=progress, cancel=cancel)
    out = coco_map(test, dets, class_ids, class_names)
    out["per_class"] = out.pop("per_class")
    return out


# ---- Faster R-CNN ----------------------------------------------------------------------------------------


def _load_all(images: list[BoxImage], min_size: int, max_size: int, class_ids: list[int], progress, cancel):
    """(image tensor, target) of every readable training image, resized once."""
    index = {c: k + 1 for k, c in enumerate(class_ids)}  # 0 is the background
    out = []
    for n, im in enumerate(images):
        if cancel is not None and cancel.is_set():
            raise Cancelled("training cancelled")
        try:
            tensor, scale = load_scaled(im.path, min_size, max_size)
        except ImageLoadError:
            continue
        boxes = xyxy(im.boxes, scale)
        h, w = tensor.shape[-2:]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)  # tiny after resizing
        labels = torch.tensor([index[b[0]] for b in im.boxes], dtype=torch.int64)
        out.append((tensor, {"boxes": boxes[keep], "labels": labels[keep]}))
        if progress is not None:
            progress(n + 1, len(images), "loading images")
    if not out:
        raise ModelError("none of the boxed images could be read")
    return out


def repeat_factors(labels: list[torch.Tensor], n_classes: int, t: float = 0.3) -> np.ndarray:
    """LVIS repeat factors: an image is drawn max(1, sqrt(t / f_c)) times as often for its rarest class c,
    f_c the fraction of images with class c (negatives: 1)."""
    freq = np.zeros(n_classes + 1)
    for lab in labels:
        for c in set(lab.tolist()):
            freq[c] += 1
    freq /= max(len(labels), 1)
    out = np.ones(len(labels))
    for i, lab in enumerate(labels):
        if len(lab):
            out[i] = max(max(1.0, math.sqrt(t / freq[c])) for c in set(lab.tolist()))
    return out


def _train_detector(images, class_ids, class_names, req, runtime: Runtime, path: Path, progress, cancel):
    from artannot.ml.detect.model import DetectorConfig, build_detector, save_detector

    cuda = runtime.device.type == "cuda"
    cfg = DetectorConfig(backbone=req.backbone, class_ids=class_ids, class_names=class_names,
                         min_size=_option(req, "min_size", 640 if cuda else 448),
                         max_size=_option(req, "max_size", 1024 if cuda else 768))
    data = _load_all(images, cfg.min_size, cfg.max_size, class_ids, progress, cancel)
    model = build_detector(cfg).to(runtime.device)
    model.train()
    epochs = req.epochs or default_epochs(len(data))
    batch = _option(req, "batch_size", 4 if cuda else 2)
    lr = _option(req, "lr", 1e-3)
    backbone = [p for p in model.backbone.stages.parameters() if p.requires_grad]
    ids = {id(p) for p in backbone}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    optimizer = torch.optim.AdamW([{"params": backbone, "lr": lr / 5}, {"params": rest, "lr": lr}],
                                  weight_decay=1e-4)
    base = [g["lr"] for g in optimizer.param_groups]
    weights = repeat_factors([t["labels"] for _, t in data], len(class_ids))
    steps_per_epoch = math.ceil(len(data) / batch)
    total, warmup = epochs * steps_per_epoch, min(100, max(1, epochs * steps_per_epoch // 10))
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    rng = np.random.default_rng(0)
    curves, step, seen = [], 0, 0
    train_started = time.perf_counter()
    for epoch in range(epochs):
        order = rng.choice(len(data), len(data), replace=True, p=weights / weights.sum())
        epoch_loss, epoch_started = 0.0, time.perf_counter()
        for start in range(0, len(order), batch):
            if cancel is not None and cancel.is_set():
                raise Cancelled("training cancelled")
            xs, ts = [], []
            for i in order[start : start + batch]:
                x, t = data[i]
                t = {"boxes": t["boxes"].clone(), "labels": t["labels"]}
                if rng.random() < 0.5:  # horizontal flip
                    w = x.shape[-1]
                    x = x.flip(-1)
                    t["boxes"][:, [0, 2]] = w - t["boxes"][:, [2, 0]]
                xs.append(x.to(runtime.device, non_blocking=True))
                ts.append({k: v.to(runtime.device) for k, v in t.items()})
            factor = (step + 1) / warmup if step < warmup else \
                0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))
            for g, b in zip(optimizer.param_groups, base, strict=True):
                g["lr"] = b * factor
            with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
                losses = model(xs, ts)
                loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 10.0)
            scaler.step(optimizer)
            scaler.update()
            if not math.isfinite(loss.item()):
                raise ModelError("detector training diverged (loss is not finite); try a lower --lr option")
            epoch_loss += loss.item() * len(xs)
            step += 1
            seen += len(xs)
            if progress is not None:
                progress(step, total, f"training detector, epoch {epoch + 1}/{epochs}")
        curves.append({"epoch": epoch + 1, "train_loss": epoch_loss / len(order), "lr": optimizer.param_groups[1]["lr"],
                       "seconds": round(time.perf_counter() - epoch_started, 2)})
    train_seconds = time.perf_counter() - train_started
    model.eval()
    save_detector(model, cfg, path, {"epochs": epochs})
    from artannot.ml.detect.predict import Detector

    info = {"epochs": epochs, "batch_size": batch, "lr": lr, "config": asdict(cfg),
            "metrics": {"curves": curves, "train_images_per_s": seen / max(train_seconds, 1e-9)}}
    return Detector("detector", model, cfg, runtime), info


# ---- patches ---------------------------------------------------------------------------------------------


def _train_patches(images, class_ids, class_names, req, runtime: Runtime, path: Path, progress, cancel):
    from artannot.ml.detect.patches import PatchConfig, train_patches
    from artannot.ml.detect.predict import Detector

    cfg = PatchConfig(backbone=req.backbone, class_ids=class_ids, class_names=class_names,
                      min_size=_option(req, "min_size", 384), max_size=_option(req, "max_size", 640))
    with torch.no_grad():
        detector, info = train_patches(images, cfg, progress=progress, cancel=cancel, device=runtime.device)
    detector.save(path)
    return Detector("patches", detector, cfg, runtime), {"config": asdict(cfg), "probe": info}
