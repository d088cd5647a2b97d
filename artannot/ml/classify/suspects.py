"""Which labels are most likely wrong: confident learning on out-of-sample class probabilities.

The scores follow Northcutt et al., "Confident Learning", through cleanlab itself: an image whose given
label the model finds unlikely, measured by the normalized margin p[given] - max(p[other]), is a suspect;
it is *flagged* when cleanlab's `find_label_issues` says so (per-class thresholds, the confident joint,
pruning by noise rate, and never an image whose given label is the model's top guess).

Probabilities must be out-of-sample to mean anything: for training images, the SVM's out-of-fold
decision values (softmax(temperature * oof_decision_)); for images the model never trained on, the final
model. A training image scored by the model trained on it (no out-of-fold values: the linear probe,
fine-tuned networks) is kept but marked not `reliable`: its label looks better than it is.
"""

from __future__ import annotations

import sqlite3
import warnings
from dataclasses import dataclass

import numpy as np

# The rank of a flagged image is below every unflagged one; within each group, higher scores come first.


@dataclass(frozen=True)
class SuspectScores:
    """Per-image results of `score_labels`, aligned with its inputs."""

    score: np.ndarray  # 0..1: 1 = the model is sure it is another class, 0.5 = a tie, 0 = sure of the label
    self_confidence: np.ndarray  # probability of the given label
    suggested: np.ndarray  # column of the most likely class other than the given one
    flagged: np.ndarray  # bool: confidently another class (confident-learning off-diagonal)
    thresholds: np.ndarray  # per-class mean self-confidence (columns of probs)
    order: np.ndarray  # row indices, most suspect first

    def ranks(self) -> np.ndarray:
        """1-based rank of every row (1 = most suspect)."""
        out = np.empty(len(self.order), dtype=np.int64)
        out[self.order] = np.arange(1, len(self.order) + 1)
        return out


def class_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean probability of class j over the images labelled j (above 1 for classes without images: never met)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    k = probs.shape[1]
    sums = np.bincount(labels, weights=probs[np.arange(len(labels)), labels], minlength=k)
    counts = np.bincount(labels, minlength=k)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def _label_issues(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """cleanlab's find_label_issues (confident learning, prune by noise rate) on the classes present."""
    from cleanlab.filter import find_label_issues

    present = np.unique(labels)
    if len(present) < 2 or len(labels) < 2 * len(present):
        return np.zeros(len(labels), bool)
    sub = probs[:, present]
    sub = sub / np.maximum(sub.sum(1, keepdims=True), 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(find_label_issues(np.searchsorted(present, labels), sub, n_jobs=1), bool)


def score_labels(probs: np.ndarray, labels: np.ndarray, *, reliable: np.ndarray | None = None,
                 thresholds: np.ndarray | None = None) -> SuspectScores:
    """Score each (probability row, given label column) pair: cleanlab flags, normalized-margin ranking.

    probs: N x K rows that sum to one; labels: N column indices into probs. Only `reliable` rows (scored
    out of sample) can be flagged; cleanlab's find_label_issues decides which, so an image whose given
    label is the model's top guess is never flagged. `thresholds` (per-class mean self-confidence) are
    reported for the record.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n, k = probs.shape if probs.ndim == 2 else (0, 0)
    if n == 0:
        empty = np.zeros(0)
        return SuspectScores(empty, empty, np.zeros(0, np.int64), np.zeros(0, bool), np.ones(k), np.zeros(0, np.int64))
    if labels.shape != (n,) or labels.min() < 0 or labels.max() >= k:
        raise ValueError("labels must be one column index of probs per row")
    rows = np.arange(n)
    use = np.ones(n, bool) if reliable is None else np.asarray(reliable, bool)
    if thresholds is None:
        thresholds = class_thresholds(probs[use], labels[use]) if use.any() else np.full(k, np.inf)
    self_conf = probs[rows, labels]
    others = probs.copy()
    others[rows, labels] = -np.inf
    suggested = others.argmax(1)
    margin = self_conf - others[rows, suggested]
    score = np.clip(0.5 * (1.0 - margin), 0.0, 1.0)  # 1 - cleanlab's normalized margin
    flagged = np.zeros(n, bool)
    if use.any():
        flagged[use] = _label_issues(probs[use], labels[use])
    flagged &= probs.argmax(1) != labels
    order = np.lexsort((rows, -score, ~flagged))  # flagged first, then by score, ties by input order
    return SuspectScores(score, self_conf, suggested, flagged, np.asarray(thresholds, float), order)


def found_in_top(order: np.ndarray, wrong: np.ndarray, fraction: float = 0.2) -> float:
    """Share of the wrong labels that rank within the top `fraction` of the ranking (recall at that depth)."""
    wrong = np.asarray(wrong, bool)
    if not wrong.any():
        return 1.0
    top = np.asarray(order)[: int(round(fraction * len(order)))]
    return float(wrong[top].sum() / wrong.sum())


# ---- training glue: numpy in, rows for the store out --------------------------------------------------


def out_of_fold_scores(data, clf, ok: np.ndarray, images=None) -> np.ndarray | None:
    """Out-of-fold class probabilities of the labelled training images, as rows of `data.everything`.

    Rows without out-of-fold values are NaN; None when the classifier kept none (only the SVM does, and
    only with at least two images per class). `images` are the labelled rows the classifier was fitted on,
    in the order `training.labelled_xy` used (default: data.train).
    """
    oof = getattr(clf, "oof_decision_", None)
    if oof is None:
        return None
    from scipy.special import softmax

    images = data.train if images is None else images
    where = {image_id: r for r, (image_id, _, _) in enumerate(data.everything)}
    rows = [where[i] for i, _, _, _ in images if i in where and ok[where[i]]]
    if len(rows) != len(oof):
        return None  # not the fit this outcome came from: stay honest and use the final model
    out = np.full((len(data.everything), oof.shape[1]), np.nan)
    out[rows] = softmax(getattr(clf, "temperature_", 1.0) * np.asarray(oof, dtype=np.float64), axis=1)
    return out


def suspect_rows(data, outcome, labels: dict[int, int], never_suggest: frozenset[int] = frozenset()
                 ) -> list[tuple[int, float, int, int, int, int, int | None]]:
    """(image id, score, rank, flagged, reliable, given class id, suggested class id) of labelled images.

    labels maps image id -> current class id (images whose class the model does not know are skipped).
    A class of never_suggest (negative classes, store/classes.py) is never the suggestion: the next most
    likely class is, or none.
    """
    col = {c: j for j, c in enumerate(outcome.class_ids)}
    oof = getattr(outcome, "oof_scores", None)
    train_ids = {i for i, *_ in data.train}
    ids, probs, given, reliable = [], [], [], []
    for r, (image_id, _, _) in enumerate(data.everything):
        c = labels.get(image_id)
        if c not in col or not outcome.ok[r]:
            continue
        if oof is not None and not np.isnan(oof[r, 0]):
            p, good = oof[r], True
        else:
            p, good = outcome.scores[r], image_id not in train_ids
        ids.append(image_id)
        probs.append(p)
        given.append(col[c])
        reliable.append(good)
    if not ids:
        return []
    probs_a = np.asarray(probs, dtype=np.float64)
    probs_a = probs_a / np.maximum(probs_a.sum(1, keepdims=True), 1e-12)  # per-class scores (sigmoid) too
    res = score_labels(probs_a, np.asarray(given), reliable=np.asarray(reliable))
    ranks = res.ranks()
    suggested: list[int | None] = [int(outcome.class_ids[j]) for j in res.suggested]
    banned = [j for j, c in enumerate(outcome.class_ids) if int(c) in never_suggest]
    if banned:
        others = probs_a.copy()
        others[:, banned] = -np.inf
        others[np.arange(len(ids)), given] = -np.inf
        best = others.argmax(1)
        suggested = [int(outcome.class_ids[best[n]]) if np.isfinite(others[n, best[n]]) else None
                     for n in range(len(ids))]
    return [(int(ids[n]), float(res.score[n]), int(ranks[n]), int(res.flagged[n]), int(reliable[n]),
             int(outcome.class_ids[given[n]]), suggested[n]) for n in range(len(ids))]


def model_suspect_rows(conn: sqlite3.Connection, data, outcome) -> list[tuple]:
    """The suspect rows of a finished run: its labelled images scored against their current labels."""
    from artannot.store import queries
    from artannot.store.classes import negative_class_ids
    from artannot.store.labels import TRAINABLE_SOURCES

    labels = queries.current_labels(conn, TRAINABLE_SOURCES)
    return suspect_rows(data, outcome, labels, frozenset(negative_class_ids(conn)))
