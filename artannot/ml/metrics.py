"""Top-k accuracy overall and per class, and the confusion matrix, in the CLI's JSON shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def evaluate_ranked(
    truth: Mapping[int, int], ranked: Mapping[int, Sequence[int]], class_ids: Sequence[int],
    names: Mapping[int, str],
) -> dict:
    """Scores of ranked predictions against true labels: {"top1", "top5", "n", "per_class", "confusion"}.

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
    }
