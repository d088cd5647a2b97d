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
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.preprocessing import StandardScaler

from artannot.errors import Cancelled
from artannot.ml.arrays import load_npz, save_npz
from artannot.ml.classifiers import training_set

Progress = Callable[[int, int, str], None]


class LinearProbe:
    """Features -> class probabilities with an L2-regularised softmax regression; C chosen by CV accuracy."""

    def __init__(self, Cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0), folds: int = 3, max_iter: int = 1000,
                 random_state: int = 0):
        self.Cs = tuple(Cs)
        self.folds = folds
        self.max_iter = max_iter
        self.random_state = random_state

    def _make(self, C: float) -> LogisticRegression:
        return LogisticRegression(C=C, max_iter=self.max_iter)

    def fit(self, X: np.ndarray, y: np.ndarray, *, progress: Progress | None = None,
            cancel: threading.Event | None = None) -> LinearProbe:
        """Pick C by stratified k-fold accuracy, then refit on all data."""
        y, self.classes_, folds, self.scaler_, Xs = training_set(X, y, self.folds)
        self.cv_results_: list[dict] = []
        self.C_, self.cv_top1_ = 1.0, None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a near-separable probe stops at max_iter: fine
            if folds >= 2:
                cv = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
                for n, C in enumerate(self.Cs):
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("training cancelled")
                    pred = cross_val_predict(self._make(C), Xs, y, cv=cv)
                    self.cv_results_.append({"C": C, "cv_top1": float((pred == y).mean())})
                    if progress is not None:
                        progress(n + 1, len(self.Cs) + 1, "choosing the linear probe's C")
                best = max(self.cv_results_, key=lambda r: (r["cv_top1"], -r["C"]))
                self.C_, self.cv_top1_ = best["C"], best["cv_top1"]
            if cancel is not None and cancel.is_set():
                raise Cancelled("training cancelled")
            model = self._make(self.C_).fit(Xs, y)
        coef, intercept = model.coef_, model.intercept_
        if len(self.classes_) == 2:  # sklearn keeps one row for two classes: the softmax of (-z/2, z/2) is the same
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        self.coef_, self.intercept_ = coef, intercept
        if progress is not None:
            progress(len(self.Cs) + 1, len(self.Cs) + 1, "choosing the linear probe's C")
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Class logits, N × classes."""
        Xs = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        return Xs @ self.coef_.T + self.intercept_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (softmax of the logits)."""
        return softmax(self.decision_function(X), axis=1)

    @property
    def mean_(self) -> np.ndarray:
        return self.scaler_.mean_

    @property
    def scale_(self) -> np.ndarray:
        return self.scaler_.scale_

    def params(self) -> dict:
        """The chosen C and the grid, for the models table."""
        return {"C": self.C_, "cv_top1": self.cv_top1_, "grid": self.cv_results_}

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
        self.cv_top1_ = None
        return self
