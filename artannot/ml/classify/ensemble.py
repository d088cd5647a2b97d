"""Ensembles of trained models (Gonthier et al.): the average of their class scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from artannot.errors import ModelError


def average_scores(members: Sequence[tuple[np.ndarray, Sequence[int], np.ndarray]],
                   weights: Sequence[float] | None = None) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Weighted mean of members' (scores N×K_m, class ids, ok mask) over the union of their classes.

    A class a member does not know scores 0 in that member. An image counts as readable when every member
    could read it.
    """
    if len(members) < 2:
        raise ModelError("an ensemble needs at least two models")
    n = len(members[0][0])
    if any(len(s) != n for s, _, _ in members):
        raise ModelError("ensemble members scored different image lists")
    w = np.ones(len(members)) if weights is None else np.asarray(weights, dtype=float)
    if len(w) != len(members) or (w < 0).any() or w.sum() <= 0:
        raise ModelError("ensemble weights must be one non-negative number per model, not all zero")
    w = w / w.sum()
    class_ids = sorted({int(c) for _, ids, _ in members for c in ids})
    col = {c: k for k, c in enumerate(class_ids)}
    total = np.zeros((n, len(class_ids)))
    ok = np.ones(n, dtype=bool)
    for weight, (scores, ids, good) in zip(w, members, strict=True):
        total[:, [col[int(c)] for c in ids]] += weight * np.asarray(scores, dtype=float)
        ok &= np.asarray(good, dtype=bool)
    return total, class_ids, ok
