"""Linear probe: multinomial logistic regression on deep features, C by stratified CV, stored as plain arrays.

The "off-the-shelf features + linear classifier" of Sabatelli et al.: a softmax layer on frozen penultimate
features. Same shape as SVMClassifier (fit / decision_function / predict_proba / params / save / load), so
every method that trains on features can use either.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy.special import softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from artannot.errors import Cancelled
from artannot.ml.arrays import load_npz, save_npz
from artannot.ml.classify.classifiers import (
    Standardised,
    cv_splits,
    one_blas_thread,
    quick_sklearn,
    score_folds,
    training_set,
)

Progress = Callable[[int, int, str], None]


def row_space(X: np.ndarray) -> np.ndarray | None:
    """An orthonormal basis (d x n) of a space holding the span of X's rows (n x d); None when n >= d (no
    smaller space holds them: fit on X as it is).

    An L2-regularised logistic regression's weights lie in that span (representer theorem), so fitting it
    on X @ basis (n <= number of images) gives exactly the same model as on the full d-dimensional
    features, several times faster when there are fewer images than feature dimensions. A QR factorisation
    of X's transpose gives the basis at a third of an SVD's cost; when X's rank is below n its extra columns
    are orthogonal to every row, so the penalty holds their weights at zero and the model is unchanged.
    """
    if X.shape[0] >= X.shape[1]:
        return None
    q, _ = np.linalg.qr(X.T)
    return q


def fold_projections(Xs: np.ndarray, split: list[tuple]) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """(train rows, test rows) of each fold in the row space of its training rows, computed once per split and
    shared by every C; None for a fold with at least as many training rows as dimensions (fitted on Xs as it
    is, so no copy of the features is kept)."""
    out: list[tuple[np.ndarray, np.ndarray] | None] = []
    for tr, te in split:
        basis = row_space(Xs[tr])
        out.append(None if basis is None else (Xs[tr] @ basis, Xs[te] @ basis))
    return out


class LinearProbe(Standardised):
    """Features -> class probabilities with an L2-regularised softmax regression; C chosen by CV accuracy."""

    def __init__(self, Cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0), folds: int = 3, max_iter: int = 1000,
                 random_state: int = 0, repeats: int | None = None):
        self.repeats = repeats
        self.Cs = tuple(Cs)
        self.folds = folds
        self.max_iter = max_iter
        self.random_state = random_state

    def _make(self, C: float) -> LogisticRegression:
        return LogisticRegression(C=C, max_iter=self.max_iter)

    def fit(self, X: np.ndarray, y: np.ndarray, *, progress: Progress | None = None,
            cancel: threading.Event | None = None) -> LinearProbe:
        """Pick C on the folds SVMClassifier uses (repeated stratified, leave-one-out when tiny), refit on all
        data, and fold the temperature fitted on the out-of-fold logits into the weights (calibrated scores)."""
        y, self.classes_, _, self.scaler_, Xs = training_set(X, y, self.folds)
        y_idx = np.searchsorted(self.classes_, y)
        splits = cv_splits(y, 5, self.repeats, seed=self.random_state)
        self.cv_results_: list[dict] = []
        self.C_, self.cv_top1_, self.cv_std_, self.cv_folds_ = 1.0, None, None, []
        self.oof_decision_, self.temperature_ = None, 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a near-separable probe stops at max_iter: fine
            if splits:
                best = None
                with one_blas_thread():  # many small fits: one BLAS thread is faster
                    projected = [fold_projections(Xs, split) for split in splits]
                    for n, C in enumerate(self.Cs):
                        if cancel is not None and cancel.is_set():
                            raise Cancelled("training cancelled")
                        oofs = [self._oof(Xs, y, C, split, folds) for split, folds in zip(splits, projected, strict=True)]
                        acc, nll, t, scores, why = score_folds(oofs, self.classes_, y, y_idx, splits)
                        self.cv_results_.append({"C": C, "cv_top1": acc, "cv_nll": nll, "cv_std": float(np.std(scores)),
                                                 "collapsed": why})
                        if why is None and (best is None or (acc, -nll) > best[0]):
                            best = ((acc, -nll), C, acc, float(np.std(scores)), scores, oofs[0], t)
                        if progress is not None:
                            progress(n + 1, len(self.Cs) + 1, "choosing the linear probe's C")
                if best is not None:
                    _, self.C_, self.cv_top1_, self.cv_std_, self.cv_folds_, self.oof_decision_, self.temperature_ = best
            if cancel is not None and cancel.is_set():
                raise Cancelled("training cancelled")
            basis = row_space(Xs)
            model = self._make(self.C_).fit(Xs if basis is None else Xs @ basis, y)
        coef = model.coef_ if basis is None else model.coef_ @ basis.T
        intercept = model.intercept_
        if len(self.classes_) == 2:  # sklearn keeps one row for two classes: the softmax of (-z/2, z/2) is the same
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        # calibrated: softmax(T * logits) is softmax of logits with T folded into the weights
        self.coef_, self.intercept_ = coef * self.temperature_, intercept * self.temperature_
        if progress is not None:
            progress(len(self.Cs) + 1, len(self.Cs) + 1, "choosing the linear probe's C")
        return self

    def _oof(self, Xs: np.ndarray, y: np.ndarray, C: float, split: list[tuple],
             projected: list[tuple[np.ndarray, np.ndarray] | None]) -> np.ndarray:
        """Out-of-fold logits (rows of y, classes_ columns) of one pass over the folds (`projected`: each fold's
        train and test rows from fold_projections)."""
        out = np.full((len(y), len(self.classes_)), -1e3)
        for (tr, te), rows in zip(split, projected, strict=True):
            present = np.unique(y[tr])
            if len(present) < 2:
                continue
            x_tr, x_te = rows if rows is not None else (Xs[tr], Xs[te])
            with quick_sklearn():
                model = self._make(C).fit(x_tr, y[tr])
                dec = model.decision_function(x_te)
            dec = np.stack([-dec / 2, dec / 2], 1) if dec.ndim == 1 else dec
            out[np.ix_(te, np.searchsorted(self.classes_, present))] = dec
        return out

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Class logits, N × classes."""
        Xs = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        return Xs @ self.coef_.T + self.intercept_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (softmax of the logits)."""
        return softmax(self.decision_function(X), axis=1)

    def params(self) -> dict:
        """The chosen C and the grid, for the models table."""
        return {"C": self.C_, "cv_top1": self.cv_top1_, "cv_std": self.cv_std_, "cv_folds": self.cv_folds_,
                "temperature": self.temperature_, "grid": self.cv_results_}

    def save(self, path: str | Path) -> None:
        """Write the probe as a plain .npz (no pickle), atomically."""
        save_npz(path, classes=self.classes_, mean=self.mean_, scale=self.scale_, coef=self.coef_,
                 intercept=self.intercept_, C=np.array(self.C_))

    @classmethod
    def load(cls, path: str | Path) -> LinearProbe:
        """Read a probe written by save(); refuses anything that would need pickle."""
        data = load_npz(path, ("classes", "mean", "scale", "coef", "intercept", "C"))
        self = cls()
        self.classes_ = data["classes"]
        self.scaler_ = StandardScaler()
        self.scaler_.mean_, self.scaler_.scale_ = data["mean"], data["scale"]
        self.coef_, self.intercept_ = data["coef"], data["intercept"]
        self.C_ = float(data["C"])
        self.cv_top1_ = self.cv_std_ = self.oof_decision_ = None
        self.temperature_ = 1.0  # already folded into the stored weights
        return self
