"""Top-k accuracy overall and per class, confusion matrix, macro-F1, and average precision for tags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def evaluate_ranked(
    truth: Mapping[int, int], ranked: Mapping[int, Sequence[int]], class_ids: Sequence[int],
    names: Mapping[int, str],
) -> dict:
    """Scores of ranked predictions against true labels: {"top1", "top5", "n", "per_class", "confusion", "macro_f1"}.

    Images without predictions count as wrong; the confusion matrix's rows are true classes and its
    columns predicted classes, both in class_ids order (the same order as "classes" in the result).
    """
    index = {c: k for k, c in enumerate(class_ids)}
    confusion = np.zeros((len(class_ids), len(class_ids)), dtype=int)
    per: dict[int, list[int]] = {c: [0, 0, 0] for c in class_ids}  # n, top1 hits, top5 hits
    top1 = top5 = 0
    for image_id, true in truth.items():
        preds = list(ranked.get(image_id, ()))
        hit1 = bool(preds) and preds[0] == true
        hit5 = true in preds[:5]
        top1 += hit1
        top5 += hit5
        if true in per:
            per[true][0] += 1
            per[true][1] += hit1
            per[true][2] += hit5
            if preds and preds[0] in index:
                confusion[index[true], index[preds[0]]] += 1
    n = len(truth)
    return {
        "top1": top1 / n if n else 0.0,
        "top5": top5 / n if n else 0.0,
        "n": n,
        "per_class": {
            names[c]: {"top1": v[1] / v[0] if v[0] else 0.0, "top5": v[2] / v[0] if v[0] else 0.0, "n": v[0]}
            for c, v in per.items()
        },
        "classes": [names[c] for c in class_ids],
        "confusion": confusion.tolist(),
        "macro_f1": macro_f1(confusion),
        "per_class_f1": dict(zip((names[c] for c in class_ids), f1_per_class(confusion).tolist(), strict=True)),
    }


def f1_per_class(confusion: np.ndarray) -> np.ndarray:
    """F1 of each class from a confusion matrix (rows true, columns predicted); 0 where undefined."""
    cm = np.asarray(confusion, dtype=float)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1)  # predicted + true = 2tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def macro_f1(confusion: np.ndarray) -> float:
    """Unweighted mean F1 over the classes that occur in the truth (rare classes count as much as common)."""
    cm = np.asarray(confusion, dtype=float)
    present = cm.sum(1) > 0
    return float(f1_per_class(cm)[present].mean()) if present.any() else 0.0


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve of one tag, as the mean precision at each true positive.

    NaN when the tag has no positive example (its AP is undefined, not zero). Tied scores are ranked
    pessimistically (negatives first), so a constant score earns no more than the tag's frequency.
    """
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if not y.any():
        return float("nan")
    order = np.lexsort((y, -s))  # by score descending; among ties, negatives before positives
    hits = y[order]
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].mean())


def mean_average_precision(Y_true: np.ndarray, scores: np.ndarray, names: Sequence[str] | None = None) -> dict:
    """Average precision per tag and their mean over tags with at least one positive: {"map", "per_tag"}."""
    Y = np.asarray(Y_true)
    S = np.asarray(scores, dtype=float)
    names = list(names) if names is not None else [str(k) for k in range(Y.shape[1])]
    per = {name: average_precision(Y[:, k], S[:, k]) for k, name in enumerate(names)}
    defined = [v for v in per.values() if not np.isnan(v)]
    return {"map": float(np.mean(defined)) if defined else 0.0,
            "per_tag": {k: (None if np.isnan(v) else v) for k, v in per.items()}}


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> dict:
    """Expected calibration error and the reliability diagram's bins of top-1 confidences.

    ECE = sum over equal-width confidence bins of (share of images in the bin) x |accuracy - mean confidence|
    (Guo et al. 2017): 0 when a "70 %" means right 70 % of the time.
    """
    conf = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    ok = np.asarray(correct, dtype=bool)
    if len(conf) == 0:
        return {"ece": None, "bins": [], "n": 0}
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.minimum(np.searchsorted(edges, conf, side="right") - 1, bins - 1)
    out, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if not m.any():
            continue
        acc, mean_conf = float(ok[m].mean()), float(conf[m].mean())
        ece += m.mean() * abs(acc - mean_conf)
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "confidence": mean_conf, "accuracy": acc,
                    "n": int(m.sum())})
    return {"ece": float(ece), "bins": out, "n": int(len(conf))}
