"""The train use case's shared ends: what to train on, and storing a finished run.

Every method (ml/classify/methods.py) gathers its data with `gather`, scores every image, and hands an `Outcome` to
`store_outcome`, the one code path that writes a model row, its top-5 predictions for every image and its
metrics (test top-1/top-5, per class, confusion, macro-F1, training curves): a model appears complete or not
at all (its rows go in short transactions while it is pending, store/staged.py), and a cancelled run leaves
nothing behind.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from artannot.errors import Cancelled, ModelError
from artannot.ml.classify.suspects import model_suspect_rows
from artannot.ml.metrics import evaluate_ranked
from artannot.ml.task import TrainResult, jsonable
from artannot.store import queries, repo, staged
from artannot.store.labels import TRAINABLE_SOURCES
from artannot.store.model_files import (
    project_cache_dir,
    relative_model_file,
    relative_params,
)

Progress = Callable[[int, int, str], None]
TOP_K = 5


@dataclass(frozen=True)
class TrainData:
    """The labelled train images, every image to predict, the test truth and the class names."""

    train: list[tuple[int, str, str, int]]  # (image id, path, sha256, class id)
    val: list[tuple[int, str, str, int]]  # images the curator put in a 'val' split (often none)
    everything: list[tuple[int, str, str]]  # (image id, path, sha256)
    test: dict[int, int]  # image id -> class id
    names: dict[int, str]
    human: frozenset[int] = frozenset()  # images whose current label a curator set or confirmed

    MIN_CURATED = 2  # human-labelled train images per class (in two classes at least) for curated training

    def curated(self) -> list[tuple[int, str, str, int]]:
        """The train images whose label is human-confirmed."""
        return [row for row in self.train if row[0] in self.human]

    def has_curated(self) -> bool:
        """Enough human-confirmed train labels to fit a classifier on them alone."""
        counts: dict[int, int] = {}
        for *_, c in self.curated():
            counts[c] = counts.get(c, 0) + 1
        return sum(n >= self.MIN_CURATED for n in counts.values()) >= 2 and len(self.curated()) < len(self.train)

    def label_rows(self, labels: str) -> list[tuple[int, str, str, int]]:
        """The train rows a stage uses: 'all' trainable labels, or only the 'curated' (human) ones."""
        if labels == "all":
            return self.train
        if labels == "curated":
            rows = self.curated()
            if len({c for *_, c in rows}) < 2:
                raise ModelError(f"--labels curated needs human-confirmed labels of two classes or more in the"
                                 f" train split; there are {len(rows)} (accept or set labels first)")
            return rows
        raise ModelError(f"--labels takes all or curated, not {labels!r}")

    @property
    def items(self) -> list[tuple[str, str]]:
        """(path, sha256) of every image, in `everything` order."""
        return [(p, sha) for _, p, sha in self.everything]

    @property
    def class_ids(self) -> list[int]:
        """The classes the training labels use, sorted."""
        return sorted({c for *_, c in self.train})

    def rows_of(self, images: list[tuple[int, str, str, int]]) -> list[int]:
        """Row numbers in `everything` of labelled images (images missing from disk are dropped)."""
        row = {image_id: k for k, (image_id, _, _) in enumerate(self.everything)}
        return [row[i] for i, *_ in images if i in row]


def gather(conn: sqlite3.Connection) -> TrainData:
    """Read the labelled splits and every image; refuse training on fewer than two classes."""
    train = repo.labelled_images(conn, "train", TRAINABLE_SOURCES)
    if len({c for *_, c in train}) < 2:
        raise ModelError("label images of at least two classes in the train split before training")
    return TrainData(
        train=train,
        val=repo.labelled_images(conn, "val", TRAINABLE_SOURCES),
        everything=repo.all_images(conn),
        test={i: c for i, _, _, c in repo.labelled_images(conn, "test", TRAINABLE_SOURCES)},
        names=repo.class_names(conn),
        human=frozenset(r[0] for r in conn.execute(
            "SELECT image_id FROM labels WHERE active = 1 AND source = 'human' AND class_id IS NOT NULL")),
    )


def labelled_xy(data: TrainData, feats: np.ndarray, ok: np.ndarray,
                images: list[tuple[int, str, str, int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows and class ids of labelled images whose features could be computed."""
    images = data.train if images is None else images
    row = {image_id: k for k, (image_id, _, _) in enumerate(data.everything)}
    pairs = [(row[i], c) for i, _, _, c in images if i in row and ok[row[i]]]
    if not pairs:
        raise ModelError("none of the labelled images could be read")
    rows, y = zip(*pairs, strict=True)
    return feats[list(rows)], np.array(y)


@dataclass
class Outcome:
    """A finished run before storing: scores of every image over class_ids, and how it was made."""

    method: str
    backbone: str
    class_ids: list[int]
    scores: np.ndarray  # len(everything) × len(class_ids), rows sum to 1 (or per-class in [0, 1])
    ok: np.ndarray  # rows whose image could be read
    params: dict
    checkpoint: str | None = None
    curves: list[dict] = field(default_factory=list)
    extra_metrics: dict = field(default_factory=dict)
    oof_scores: np.ndarray | None = None  # out-of-fold scores of training images (NaN rows elsewhere)


def ranked_rows(everything: list[tuple[int, str, str]], scores: np.ndarray, ok: np.ndarray,
                class_ids: list[int], k: int = TOP_K) -> tuple[dict[int, list[int]], list[tuple]]:
    """Top-k class ids per image, and the (image id, rank, class id, score) rows to store."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    ranked: dict[int, list[int]] = {}
    rows: list[tuple] = []
    for r, (image_id, _, _) in enumerate(everything):
        if not ok[r]:
            continue
        ranked[int(image_id)] = [class_ids[j] for j in order[r]]
        rows += [(int(image_id), rank + 1, class_ids[j], float(scores[r, j])) for rank, j in enumerate(order[r])]
    return ranked, rows


def store_outcome(conn: sqlite3.Connection, data: TrainData, outcome: Outcome, *, started: float,
                  progress: Progress | None = None, cancel: threading.Event | None = None) -> TrainResult:
    """Evaluate on the test split and write model + predictions + metrics in one transaction."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("training cancelled")
    check_not_collapsed(data, outcome)
    ranked, rows = ranked_rows(data.everything, outcome.scores, outcome.ok, outcome.class_ids)
    truth = evaluation_truth(data)
    metrics = evaluate_ranked(truth, ranked, outcome.class_ids, data.names) if truth else {}
    if truth:
        metrics["calibration"] = calibration_on_test(data, outcome, truth)
        metrics["test_labels"] = "human" if len(truth) < len(data.test) else "all"
    seconds = time.perf_counter() - started
    metrics.update(outcome.extra_metrics, seconds=seconds)
    if outcome.curves:
        metrics["curves"] = outcome.curves
    params = json.loads(json.dumps(outcome.params, default=jsonable))  # fail here, not inside the transaction
    cache_dir = project_cache_dir(conn)  # model files are stored relative to it: the project can move
    stored = relative_params(cache_dir, params)  # the caller keeps the absolute paths in TrainResult.params
    checkpoint = relative_model_file(cache_dir, outcome.checkpoint)
    suspects = model_suspect_rows(conn, data, outcome)  # labels most likely wrong, by this model
    # the model appears complete, with its predictions and suspects, or not at all; written in short
    # transactions while it is pending, so that a curator's label edit never waits seconds (store/staged.py)
    model_id = staged.write_model(conn, backbone=outcome.backbone, method=outcome.method,
                                  classes=outcome.class_ids, params=json.dumps(stored),
                                  parts=[(repo.PREDICTION_SQL, rows), (queries.SUSPECT_SQL, suspects)],
                                  metrics=json.dumps(metrics, default=jsonable), checkpoint=checkpoint,
                                  cancel=cancel, progress=progress, stage="saving predictions")
    return TrainResult(model_id, metrics, params, seconds, outcome.method)


def check_not_collapsed(data: TrainData, outcome: Outcome) -> None:
    """Refuse to store a model that answers one class for (almost) every image: it learned the prior."""
    from artannot.ml.classify.classifiers import collapsed

    if outcome.method == "tags" or outcome.scores.ndim != 2 or len(outcome.class_ids) < 2:
        return
    given = np.array([c for *_, c in data.train])
    pred = np.asarray(outcome.class_ids)[outcome.scores[outcome.ok].argmax(1)]
    why = collapsed(pred, given)
    if why is not None:
        raise ModelError(f"the {outcome.method} model was not stored: {why}; label more images of the other"
                         " classes, or try another method")


MIN_HUMAN_TEST = 20


def evaluation_truth(data: TrainData) -> dict[int, int]:
    """The test labels a model is judged on: the human-confirmed ones when there are MIN_HUMAN_TEST of them."""
    human = {i: c for i, c in data.test.items() if i in data.human}
    return human if len(human) >= MIN_HUMAN_TEST else data.test


def calibration_on_test(data: TrainData, outcome: Outcome, truth: dict[int, int]) -> dict:
    """ECE and reliability bins of the top-1 scores on the labelled test images."""
    from artannot.ml.metrics import calibration

    col = {c: j for j, c in enumerate(outcome.class_ids)}
    conf, correct = [], []
    for r, (image_id, _, _) in enumerate(data.everything):
        given = truth.get(image_id)
        if given is None or not outcome.ok[r]:
            continue
        j = int(np.argmax(outcome.scores[r]))
        conf.append(float(outcome.scores[r, j]))
        correct.append(col.get(given) == j)
    return calibration(np.array(conf), np.array(correct))


def evaluate_model(conn: sqlite3.Connection, cache_dir: Path, row: sqlite3.Row, split: str | None = "test") -> dict:
    """Top-1/top-5, per class, confusion and calibration of a model's stored predictions on a split (the
    classify task's `evaluate`)."""
    from artannot.ml.metrics import calibration

    class_ids = json.loads(row["classes"])
    truth = {i: c for i, _, _, c in repo.labelled_images(conn, split, TRAINABLE_SOURCES)}
    if not truth:
        raise ModelError(f"no labelled images in the {split} split to evaluate on")
    ranked = repo.predictions_by_image(conn, row["id"])
    result = evaluate_ranked(truth, ranked, class_ids, repo.class_names(conn))
    from artannot.ml.classify.methods import baseline_evaluation  # methods imports this module

    paper = baseline_evaluation(row, truth, repo.class_names(conn))
    if paper:  # an ImageNet baseline as published: a hit when a top ImageNet class maps to the image's class
        result.update(top1=paper["top1"], top5=paper["top5"], per_class=paper["per_class"], topk_rule=paper["rule"])
    top = dict(conn.execute("SELECT image_id, score FROM predictions WHERE model_id = ? AND rank = 1",
                            (row["id"],)).fetchall())
    seen = [i for i in truth if i in top and ranked.get(i)]
    cal = calibration(np.array([top[i] for i in seen]), np.array([ranked[i][0] == truth[i] for i in seen]))
    result["ece"], result["calibration"] = cal["ece"], cal
    result["estimate"] = json.loads(row["metrics"] or "{}").get("estimate")
    return result
