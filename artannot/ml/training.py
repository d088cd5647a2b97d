"""The train use case: features of labelled images, an SVM on them, predictions for every image."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from artannot.errors import ModelError
from artannot.ml.classifiers import SVMClassifier
from artannot.ml.device import select_runtime
from artannot.ml.features import FeatureCache, extract_features
from artannot.ml.metrics import evaluate_ranked
from artannot.store import repo
from artannot.store.db import write
from artannot.store.labels import TRAINABLE_SOURCES

Progress = Callable[[int, int, str], None]
TOP_K = 5


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    model_id: int
    metrics: dict
    params: dict
    seconds: float


def train_features_svm(
    conn: sqlite3.Connection, cache_dir: Path, *, backbone: str = "efficientnet_lite0", device: str = "auto",
    progress: Progress | None = None, cancel: threading.Event | None = None,
) -> TrainResult:
    """Deep features + SVM (Lagunas & Garces): the model is stored only once it is complete."""
    start = time.perf_counter()
    runtime = select_runtime(device)
    train = repo.labelled_images(conn, "train", TRAINABLE_SOURCES)
    if len({c for *_, c in train}) < 2:
        raise ModelError("label images of at least two classes in the train split before training")
    everything = repo.all_images(conn)
    cache = FeatureCache(cache_dir / "features.sqlite")
    try:
        feats, ok = extract_features([(p, sha) for _, p, sha in everything], backbone=backbone, cache=cache,
                                     runtime=runtime, progress=progress, cancel=cancel)
    finally:
        cache.close()
    row_of = {image_id: k for k, (image_id, _, _) in enumerate(everything)}
    idx = [row_of[i] for i, *_ in train if i in row_of and ok[row_of[i]]]
    y = np.array([c for i, _, _, c in train if i in row_of and ok[row_of[i]]])
    clf = SVMClassifier().fit(feats[idx], y, progress=progress, cancel=cancel)

    params = {**clf.params(), "runtime": runtime.describe, "n_train": len(idx)}
    class_ids = [int(c) for c in clf.classes_]
    checkpoint = cache_dir / "models" / f"svm-{backbone}-{uuid.uuid4().hex[:12]}.npz"
    clf.save(checkpoint)
    proba = clf.predict_proba(feats)
    order = np.argsort(-proba, axis=1)[:, :TOP_K]
    ranked = {int(everything[r][0]): [class_ids[k] for k in order[r]] for r in range(len(everything)) if ok[r]}
    test = {i: c for i, _, _, c in repo.labelled_images(conn, "test", TRAINABLE_SOURCES)}
    metrics = evaluate_ranked(test, ranked, class_ids, repo.class_names(conn)) if test else {}
    seconds = time.perf_counter() - start
    metrics.update(seconds=seconds, cv_top1=clf.cv_top1_)
    rows = [
        (image_id, rank + 1, class_ids[k], float(proba[r, k]))
        for r, (image_id, _, _) in enumerate(everything) if ok[r]
        for rank, k in enumerate(order[r])
    ]
    if progress is not None:
        progress(1, 1, "saving predictions")
    with write(conn):  # the model appears complete, with its predictions, or not at all
        model_id = repo.add_model(conn, backbone=backbone, method="svm", classes=class_ids, params=params)
        repo.write_predictions(conn, model_id, rows)
        repo.update_model(conn, model_id, checkpoint=str(checkpoint), metrics=metrics)
    return TrainResult(model_id, metrics, params, seconds)
