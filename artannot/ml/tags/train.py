"""`train --method tags`: a multi-label tag model on the curated tags (Illustration2Vec), stored and evaluated.

A sigmoid head with binary cross-entropy (ml/tags/multilabel.py TagHead) on deep features: the backbone's
ImageNet features, or with option from_model=ID those of a fine-tuned network (the science notes' "fine-tune,
then a classifier on its features"). With `--finetune` (option finetune=true) the network itself is fine-tuned
on the tags with a sigmoid head and BCE (ml/tags/finetune.py; with --intermediate PROJECT first on that
project's classes: double fine-tuning), and its own head is stored as the TagHead on its features. Each tag gets the threshold that maximises its out-of-fold F1. The model
row (method 'tags') holds the thresholds and per-tag AP on the test split; every image's tag probabilities go
to `tag_predictions`, the suggestions the Tags panel offers. Training images are those someone tagged in the
train (and val) split; the tags an annotated image does not carry are its negatives.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from artannot.errors import Cancelled, ModelError
from artannot.ml.device import select_runtime
from artannot.ml.tags.multilabel import TagHead, evaluate_tags
from artannot.ml.task import Context, TrainResult, jsonable
from artannot.store import repo, staged
from artannot.store import tags as tag_store
from artannot.store.model_files import project_cache_dir, relative_model_file, relative_params

MIN_POSITIVES = 2  # a tag needs this many tagged training images (and one untagged) to be learned
STORE_MIN_SCORE = 0.01  # smaller probabilities are not stored (they rank last; mAP treats them as 0)


def tag_matrix(images: dict[int, set[int]], row_of: dict[int, int], ok: np.ndarray,
               tag_ids: list[int]) -> tuple[list[int], np.ndarray]:
    """Feature rows of annotated, readable images and their multi-hot targets over tag_ids."""
    rows, targets = [], []
    for image_id in sorted(images):
        r = row_of.get(image_id)
        if r is None or not ok[r]:
            continue
        rows.append(r)
        targets.append([1.0 if t in images[image_id] else 0.0 for t in tag_ids])
    return rows, np.asarray(targets, dtype=np.float64).reshape(len(rows), len(tag_ids))


def train_tags(conn: sqlite3.Connection, cache_dir: Path, req, *, device: str = "auto", progress=None,
               cancel: threading.Event | None = None) -> TrainResult:
    """Train, evaluate and store a tag model; progress and cancel as for every method."""
    started = time.perf_counter()
    names = tag_store.tag_names(conn)
    train = tag_store.tagged_images(conn, "train")
    train.update(tag_store.tagged_images(conn, "val"))
    test = tag_store.tagged_images(conn, "test")
    counts = {t: sum(t in tags for tags in train.values()) for t in names}
    tag_ids = [t for t in names if MIN_POSITIVES <= counts[t] < len(train)]
    if not tag_ids:
        raise ModelError(f"tag at least {MIN_POSITIVES} train-split images with a tag (and leave some without it)"
                         " before training a tag model")
    skipped = sorted(names[t] for t in names if t not in tag_ids and counts[t] > 0)
    everything = repo.all_images(conn)
    data = SimpleNamespace(items=[(p, sha) for _, p, sha in everything])  # what Context.features reads
    ctx = Context(conn, Path(cache_dir), data, select_runtime(device), progress, cancel)
    row_of = {image_id: k for k, (image_id, _, _) in enumerate(everything)}
    if wants_finetune(req.options):
        from artannot.ml.tags.finetune import finetune_tag_model

        tuned = finetune_tag_model(ctx, req, train, tag_ids, [names[t] for t in tag_ids], everything)
        head, feats, ok, features, n_train = tuned.head, tuned.features, tuned.ok, tuned.source, tuned.n_train
        files = [tuned.head_path, tuned.checkpoint, tuned.checkpoint.with_suffix(".json")]
        extra_params, extra_metrics = tuned.params, {"curves": tuned.curves}
    else:
        feats, ok, features, req = ctx.features(req)
        ctx.check()
        rows, Y = tag_matrix(train, row_of, ok, tag_ids)
        if progress is not None:
            progress(0, 1, "training the tag head")
        head = TagHead(l2=float(req.options.get("l2", 1e-3))).fit(feats[rows], Y, [names[t] for t in tag_ids],
                                                                 cancel=cancel)
        ctx.check()
        n_train, extra_params, extra_metrics = len(rows), {}, {}
        files = [ctx.models_dir / f"tags-{req.backbone}-{uuid.uuid4().hex[:12]}.npz"]
        head.save(files[0])
    scores = head.predict_proba(feats)
    scores[scores < STORE_MIN_SCORE] = 0.0  # as stored, so `evaluate` later gives the same figures
    try:
        return _store(conn, head, scores, ok, everything, row_of, test, tag_ids, names, req, features, files[0],
                      skipped, n_train, started, progress, cancel, extra_params, extra_metrics)
    except BaseException:
        for f in files:
            f.unlink(missing_ok=True)  # cancelled or failed: no model row, so no file either
        raise


def wants_finetune(options: dict) -> bool:
    """`--finetune` / `--option finetune=true` (or an --intermediate project: double fine-tuning)."""
    value = options.get("finetune")
    on = value is True or str(value).strip().lower() in ("1", "true", "yes", "on")
    return on or bool(options.get("intermediate"))


def _store(conn, head: TagHead, scores, ok, everything, row_of, test, tag_ids, names, req, features, path,
           skipped, n_train, started, progress, cancel, extra_params=None, extra_metrics=None) -> TrainResult:
    if cancel is not None and cancel.is_set():
        raise Cancelled("training cancelled")
    tags = [names[t] for t in tag_ids]
    metrics: dict = {"oof_map": head.oof_map_, **(extra_metrics or {})}
    test_rows, Y_test = tag_matrix(test, row_of, ok, tag_ids)
    if test_rows:
        metrics.update(evaluate_tags(Y_test, scores[test_rows], head.thresholds_, tags), n=len(test_rows))
    metrics["seconds"] = time.perf_counter() - started
    on = "fine-tuned" if "network" in features else "ImageNet"
    params = {"tags": tags, "thresholds": dict(zip(tags, head.thresholds_.tolist(), strict=True)),
              "tag_thresholds": {str(t): float(v) for t, v in zip(tag_ids, head.thresholds_, strict=True)},
              "n_train": n_train, "skipped_tags": skipped,
              "summary": f"{len(tags)} tags, sigmoid head (BCE) on {on} {req.backbone} features",
              "predictor": {"kind": "tags", "path": str(path), "features": features}, **(extra_params or {})}
    cache_dir = project_cache_dir(conn)  # model files are stored relative to it: the project can move
    params = json.loads(json.dumps(params, default=jsonable))
    stored = relative_params(cache_dir, params)  # the caller keeps the absolute paths in TrainResult.params
    metrics = json.loads(json.dumps(metrics, default=jsonable))
    rows = [(int(everything[r][0]), tag_ids[k], float(scores[r, k]))
            for r in np.flatnonzero(ok) for k in np.flatnonzero(scores[r])]
    # the model appears with all its predictions, or not at all: written in short transactions while it is
    # pending (store/staged.py), so that label edits meanwhile never wait long
    model_id = staged.write_model(conn, backbone=req.backbone, method="tags", classes=tag_ids,
                                  params=json.dumps(stored), parts=[(tag_store.TAG_PREDICTION_SQL, rows)],
                                  metrics=json.dumps(metrics), checkpoint=relative_model_file(cache_dir, path),
                                  cancel=cancel, progress=progress, stage="saving tag predictions")
    return TrainResult(model_id, metrics, params, metrics["seconds"], "tags")


def evaluate_tag_model(conn: sqlite3.Connection, row: sqlite3.Row, split: str | None = "test") -> dict:
    """mAP and per-tag AP/precision/recall/F1 of a stored tag model against the current tags of a split."""
    tag_ids = [int(t) for t in json.loads(row["classes"])]
    names = tag_store.tag_names(conn)
    truth = tag_store.tagged_images(conn, split)
    if not truth:
        raise ModelError(f"no tagged images in the {split} split to evaluate the tag model on")
    ids = sorted(truth)
    col = {t: k for k, t in enumerate(tag_ids)}
    scores = np.zeros((len(ids), len(tag_ids)))
    pos = {image_id: k for k, image_id in enumerate(ids)}
    marks = ",".join("?" * len(ids))
    for image_id, tag_id, score in conn.execute(
            f"SELECT image_id, tag_id, score FROM tag_predictions WHERE model_id = ? AND image_id IN ({marks})",
            (row["id"], *ids)):
        if tag_id in col:
            scores[pos[image_id], col[tag_id]] = score
    Y = np.array([[t in truth[i] for t in tag_ids] for i in ids], dtype=bool)
    tags = [names.get(t, str(t)) for t in tag_ids]
    by_id = tag_store.model_thresholds(conn, row["id"])
    thresholds = np.array([by_id.get(t, 0.5) for t in tag_ids])
    out = evaluate_tags(Y, scores, thresholds, tags)
    out.update(model=row["id"], split=split, n=len(ids), method="tags")
    return out

