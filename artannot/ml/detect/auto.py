"""`train --method detect-auto`: detector or patches, whichever finds the boxes better on images the choice
never saw, stored as a model of the winner's method (so predict, evaluate and proposals work unchanged).

1. Held out for the choice (the validation part): the val split's boxed images when they hold at least
   VAL_MIN_BOXES boxes, a box of every class, and leave enough to fit on; else a deterministic ~20% of the
   boxed training images (train, val, unsplit), one image per class first where the rest keeps
   MIN_CLASS_BOXES boxes of it. Images without boxes (negatives) always stay in the fitting part.
2. Fewer than the detector's MIN_BOXES training boxes: patches only, nothing held out.
3. Else both candidates are fitted on the rest (patches first: it is cheap) and scored by COCOeval on the
   validation part: box mAP AP@[.5:.95], a tie broken by AP50, an exact tie going to patches (the cheaper).
4. The winner is fitted again on every training image (option refit=false keeps the candidate instead:
   half the time when the detector wins, a fifth fewer boxes learned), scored on the test split as always,
   and stored with params["auto"] = {"chosen", "candidates": {method: {"val_map", "val_map50", ...}},
   "n_val_images", "holdout", "refit"}. The test split took no part in the choice: its stored mAP is the
   honest estimate of the chosen model.

Options: every option of the two methods (min_size, max_size, lr, batch_size, negatives...) reaches both;
candidate_epochs sets the detector candidate's epochs (default: those of its final fit, --epochs or the
default); refit (default true). A cancel stops every stage and leaves no model row and no files.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from artannot.errors import Cancelled
from artannot.ml.detect import train as T
from artannot.ml.detect.data import BoxImage
from artannot.ml.detect.train import MIN_BOXES, MIN_CLASS_BOXES, Training, fit, model_path, train_detect
from artannot.ml.device import select_runtime
from artannot.ml.task import TrainResult

METHOD = "detect-auto"
CANDIDATES = ("patches", "detector")  # fitted in this order: the cheap one first
VAL_FRACTION = 0.2
VAL_MIN_BOXES = 4  # the val split is the validation part only with at least this many boxes


def _counts(images: list[BoxImage]) -> dict[int, int]:
    out: dict[int, int] = {}
    for im in images:
        for b in im.boxes:
            out[b[0]] = out.get(b[0], 0) + 1
    return out


def _leaves_enough(rest: list[BoxImage], class_ids) -> bool:
    counts = _counts(rest)
    return (sum(counts.values()) >= MIN_BOXES["detector"]
            and all(counts.get(c, 0) >= MIN_CLASS_BOXES for c in class_ids))


def _order(im: BoxImage) -> int:
    """A fixed pseudo-random order of images (Knuth's multiplicative hash of the id): no rng state, no
    dependence on the order images were listed in."""
    return (im.image_id * 2654435761) % 2**32


def holdout(images: list[BoxImage], class_ids, val_ids: set[int] | frozenset = frozenset()
            ) -> tuple[list[BoxImage], list[BoxImage], str]:
    """(fitting part, validation part, how it was chosen: "val split" or "20% of boxed images").

    The val split's boxed images (val_ids) when enough (module docstring), else a deterministic ~20% of the
    boxed images: first an image of each class (rarest class first) while the rest keeps MIN_CLASS_BOXES of
    every class, then more in the fixed order while the rest keeps them and at least the detector's minimum."""
    boxed = [im for im in images if im.boxes]
    val = [im for im in boxed if im.image_id in val_ids]
    if val:
        rest = [im for im in images if im.image_id not in val_ids or not im.boxes]
        counts = _counts(val)
        if (sum(counts.values()) >= VAL_MIN_BOXES and all(counts.get(c, 0) >= 1 for c in class_ids)
                and _leaves_enough(rest, class_ids)):
            return rest, val, "val split"
    want = max(1, round(VAL_FRACTION * len(boxed)))
    pool = sorted(boxed, key=_order)
    chosen: list[BoxImage] = []
    taken: set[int] = set()

    def rest_of(extra: BoxImage) -> list[BoxImage]:
        return [im for im in boxed if im.image_id not in taken and im.image_id != extra.image_id]

    totals = _counts(boxed)
    for c in sorted(class_ids, key=lambda c: (totals.get(c, 0), c)):  # one image per class, rarest first
        if len(chosen) >= want or any(b[0] == c for im in chosen for b in im.boxes):
            continue
        for im in pool:
            if im.image_id not in taken and any(b[0] == c for b in im.boxes) \
                    and _leaves_enough(rest_of(im), class_ids):
                chosen.append(im)
                taken.add(im.image_id)
                break
    for im in pool:
        if len(chosen) >= want:
            break
        if im.image_id not in taken and _leaves_enough(rest_of(im), class_ids):
            chosen.append(im)
            taken.add(im.image_id)
    if not chosen:  # too few boxes to keep the minimum: hold out one image all the same
        chosen, taken = pool[:1], {pool[0].image_id}
    fitting = [im for im in images if im.image_id not in taken]
    return fitting, sorted(chosen, key=lambda im: im.image_id), f"{round(100 * VAL_FRACTION)}% of boxed images"


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("training cancelled")


def _staged(progress, prefix: str):
    if progress is None:
        return None
    return lambda done, total, stage: progress(done, total, f"{prefix}, {stage}")


def _score(detector, val: list[BoxImage], data: Training, progress, cancel) -> dict:
    from artannot.ml.detect.evaluate import coco_map
    from artannot.ml.detect.predict import run_detector

    dets = run_detector(detector, [im.image_id for im in val], [im.path for im in val], threshold=0.001,
                        progress=progress, cancel=cancel)
    return coco_map(val, dets, data.class_ids, data.class_names)


def _winner(candidates: dict[str, dict]) -> str:
    """The candidate with the best val mAP, AP50 on a tie, patches on an exact tie (CANDIDATES order)."""
    def key(m: str):
        c = candidates[m]
        return (c["val_map"] or 0.0, c["val_map50"] or 0.0, -CANDIDATES.index(m))
    return max(candidates, key=key)


def _images(n: int) -> str:
    return f"{n} image{'s' if n != 1 else ''}"


def train_detect_auto(conn: sqlite3.Connection, cache_dir: Path, req, *, device: str = "auto", progress=None,
                      cancel: threading.Event | None = None) -> TrainResult:
    """Choose between detector and patches on held-out training images, store the winner (module docstring)."""
    started = time.perf_counter()
    data = T.training_data(conn, req, need=MIN_BOXES["patches"])
    n_boxed = sum(1 for im in data.images if im.boxes)
    if data.n_boxes < MIN_BOXES["detector"]:  # a cold start: the detector cannot learn from so few
        final = dataclasses.replace(req, method="patches")
        auto = {"chosen": "patches", "candidates": {"patches": {"val_map": None, "val_map50": None}},
                "n_val_images": 0, "holdout": None, "refit": False,
                "reason": f"{data.n_boxes} boxes: fewer than the detector's {MIN_BOXES['detector']}"}
        return train_detect(conn, cache_dir, final, device=device, cancel=cancel, data=data, started=started,
                            progress=_staged(progress, f"{METHOD}: patches on {_images(n_boxed)}"),
                            test_progress=_staged(progress, f"{METHOD}: patches on the test split"),
                            extra_params={"auto": auto, "summary": f"{METHOD} chose patches ({auto['reason']});"
                                                                   f" {_summary(final, data)}"})
    val_ids = {int(r[0]) for r in conn.execute("SELECT id FROM images WHERE split = 'val'")}
    fitting, val, how = holdout(data.images, data.class_ids, val_ids)
    fit_data = Training(fitting, data.class_ids, data.class_names, data.skipped)
    n_fit = sum(1 for im in fitting if im.boxes)
    refit = _flag(req.options.get("refit", True))
    runtime = select_runtime(device)
    models_dir = Path(cache_dir) / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="detect-auto-", dir=models_dir))  # the candidates' files
    try:
        candidates: dict[str, dict] = {}
        fitted: dict[str, tuple] = {}
        for method in CANDIDATES:
            _check(cancel)
            creq = dataclasses.replace(req, method=method)
            if method == "detector" and req.options.get("candidate_epochs") is not None:
                creq = dataclasses.replace(creq, epochs=int(req.options["candidate_epochs"]))
            t0 = time.perf_counter()
            path = model_path(scratch, method, req.backbone)
            detector, info = fit(method, fitting, data.class_ids, data.class_names, creq, runtime, path,
                                 _staged(progress, f"{METHOD}: {method} on {_images(n_fit)}"), cancel)
            _check(cancel)
            scores = _score(detector, val, fit_data, _staged(progress, f"{METHOD}: scoring {method} on"
                                                                       f" {_images(len(val))} held out"), cancel)
            candidates[method] = {"val_map": scores["map"], "val_map50": scores["map50"],
                                  "val_map75": scores["map75"], "seconds": round(time.perf_counter() - t0, 2),
                                  "val_per_class": {k: v["ap"] for k, v in scores["per_class"].items()}}
            if method == "detector":
                candidates[method]["epochs"] = info.get("epochs")
            fitted[method] = (detector, info, path)
            del detector
        chosen = _winner(candidates)
        for method in CANDIDATES:  # free the loser now
            if method != chosen:
                fitted.pop(method)
        _check(cancel)
        auto = {"chosen": chosen, "candidates": candidates, "n_val_images": len(val), "holdout": how,
                "val_image_ids": [im.image_id for im in val], "n_fit_images": n_fit, "refit": refit}
        final = dataclasses.replace(req, method=chosen)
        c = candidates[chosen]
        summary = (f"{METHOD} chose {chosen} (val mAP {_fmt(c['val_map'])} vs "
                   f"{_fmt(candidates[_other(chosen)]['val_map'])} on {_images(len(val))} held out);"
                   f" {_summary(final, data)}")
        kept = None
        if not refit:  # the candidate itself becomes the model: move its files out of the scratch folder
            detector, info, path = fitted.pop(chosen)
            target = model_path(models_dir, chosen, req.backbone)
            path.replace(target)
            if path.with_suffix(".json").exists():
                path.with_suffix(".json").replace(target.with_suffix(".json"))
            kept = (detector, info, target)
        fitted.clear()
        n_all = sum(1 for im in data.images if im.boxes)
        return train_detect(conn, cache_dir, final, device=device, cancel=cancel, fitted=kept,
                            data=data if kept is None else fit_data,  # what the stored model learned from
                            started=started, extra_params={"auto": auto, "summary": summary},
                            progress=_staged(progress, f"{METHOD}: {chosen} on all {_images(n_all)}"),
                            test_progress=_staged(progress, f"{METHOD}: {chosen} on the test split"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _flag(value) -> bool:
    """An option's truth: false, "false", "no", "0" and 0 are false (--option refit=false)."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "no", "0", "off", "")
    return bool(value)


def _other(method: str) -> str:
    return next(m for m in CANDIDATES if m != method)


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _summary(req, data: Training) -> str:
    return T._summary(req, data.class_names)  # noqa: SLF001 - same package
