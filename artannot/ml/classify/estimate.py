"""Honest estimates: top-1 measured on images that neither the fit nor the choice of its settings saw.

A classifier's own cross-validated score is the best of its grid, so it is optimistic: it chose the setting
that scored best on those very folds. `nested_estimate` wraps the whole procedure (settings chosen by the
classifier's inner CV, then fitted) in outer folds, and scores each outer fold once. When the project holds
human-confirmed labels, the outer folds are drawn from those images only: a model fitted on noisy labels is
judged by what a curator verified.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable

import numpy as np
from sklearn.model_selection import StratifiedKFold

from artannot.errors import Cancelled, ModelError


def nested_estimate(make: Callable[[], object], X: np.ndarray, y: np.ndarray, *, human: np.ndarray | None = None,
                    labels: str = "all", folds: int = 5, seed: int = 0,
                    cancel: threading.Event | None = None) -> dict | None:
    """{"top1", "std", "folds", "kind", "n", "on"} of make().fit(...) over outer folds; None if too few images.

    human: bool mask of rows whose label is human-confirmed (the outer test images when given); labels:
    which rows a fold's fit may use besides the test fold ('all' rows, or only 'curated' human ones).
    """
    y = np.asarray(y)
    on_human = human is not None and bool(np.any(human))
    pool = np.flatnonzero(human) if on_human else np.arange(len(y))
    if labels == "curated" and not on_human:
        raise ModelError("a curated estimate needs human-confirmed labels")
    counts = np.unique(y[pool], return_counts=True)[1]
    if len(pool) < 4 or len(counts) < 2:
        return None
    k = int(max(2, min(folds, np.median(counts), len(pool) // 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class with fewer images than folds: fine, it is rare
        outer = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(pool)), y[pool]))
    scores, sizes = [], []
    allowed = pool if labels == "curated" else np.arange(len(y))
    for _, te in outer:
        if cancel is not None and cancel.is_set():
            raise Cancelled("training cancelled")
        test = pool[te]
        train = np.setdiff1d(allowed, test)
        if len(np.unique(y[train])) < 2:
            continue
        try:
            clf = make().fit(X[train], y[train], cancel=cancel)
        except ModelError:  # this fold's fit is useless (e.g. collapsed): it scores nothing right
            scores.append(0.0)
            sizes.append(len(test))
            continue
        pred = clf.classes_[clf.decision_function(X[test]).argmax(1)]
        scores.append(float((pred == y[test]).mean()))
        sizes.append(len(test))
    if not scores:
        return None
    return {"top1": float(np.average(scores, weights=sizes)), "std": float(np.std(scores)),
            "folds": [round(s, 4) for s in scores], "kind": "nested cv", "n": int(len(pool)),
            "on": "human" if on_human else "all"}
