"""SVM on deep features (one-vs-rest, kernel and C/gamma by stratified CV), stored as plain arrays."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from artannot.errors import Cancelled, ModelError
from artannot.ml.arrays import load_npz, save_npz

Progress = Callable[[int, int, str], None]


def _kernel(kind: str, a: np.ndarray, b: np.ndarray, gamma: float, coef0: float) -> np.ndarray:
    """K(a, b) for the kernels SVC uses, computed in float64 like libsvm."""
    if kind == "linear":
        return a @ b.T
    if kind == "sigmoid":
        return np.tanh(gamma * (a @ b.T) + coef0)
    if kind == "rbf":
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
        return np.exp(-gamma * np.maximum(sq, 0.0))
    raise ModelError(f"unknown SVM kernel {kind!r}")


def training_set(X: np.ndarray, y: np.ndarray, max_folds: int):
    """Checked labels, their classes, the CV folds the rarest class allows, a fitted scaler, scaled features."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ModelError("training needs labelled images of at least two classes")
    folds = int(min(max_folds, np.bincount(np.searchsorted(classes, y)).min()))
    scaler = StandardScaler().fit(X)
    return y, classes, folds, scaler, scaler.transform(X)


class SVMClassifier:
    """Features -> class scores with a one-vs-rest SVM whose kernel, C and gamma are chosen by CV."""

    def __init__(
        self,
        kernels: Sequence[str] = ("rbf", "sigmoid", "linear"),
        Cs: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
        gamma_scales: Sequence[float] = (0.25, 1.0, 4.0),
        folds: int = 3,
        random_state: int = 0,
    ):
        self.kernels = tuple(kernels)
        self.Cs = tuple(Cs)
        self.gamma_scales = tuple(gamma_scales)
        self.folds = folds
        self.random_state = random_state

    # ---- training -------------------------------------------------------------------------------------
    def fit(
        self, X: np.ndarray, y: np.ndarray, *, progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> SVMClassifier:
        """Grid-search the SVM by stratified k-fold accuracy, refit on all data, calibrate scores."""
        y, self.classes_, folds, self.scaler_, Xs = training_set(X, y, self.folds)
        base_gamma = 1.0 / (Xs.shape[1] * max(Xs.var(), 1e-12))
        grid = []
        for kernel, C in itertools.product(self.kernels, self.Cs):
            scales = (1.0,) if kernel == "linear" else self.gamma_scales
            grid += [(kernel, C, base_gamma * s) for s in scales]
        self.cv_results_: list[dict] = []
        if folds >= 2:
            cv = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
            for n, (kernel, C, gamma) in enumerate(grid):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("training cancelled")
                oof = _two_columns(cross_val_predict(self._make(kernel, C, gamma), Xs, y, cv=cv,
                                                     method="decision_function"))
                acc = float((self.classes_[oof.argmax(1)] == y).mean())
                self.cv_results_.append({"kernel": kernel, "C": C, "gamma": gamma, "cv_top1": acc})
                if progress is not None:
                    progress(n + 1, len(grid) + 1, "choosing SVM kernel, C, gamma")
            best = max(self.cv_results_, key=lambda r: (r["cv_top1"], r["kernel"] == "rbf", -r["C"]))
            self.kernel_, self.C_, self.gamma_ = best["kernel"], best["C"], best["gamma"]
            self.cv_top1_ = best["cv_top1"]
            oof = _two_columns(cross_val_predict(self._make(self.kernel_, self.C_, self.gamma_), Xs, y, cv=cv,
                                                 method="decision_function"))
            self.oof_decision_ = oof
            self.temperature_ = _fit_temperature(oof, np.searchsorted(self.classes_, y))
        else:
            self.kernel_, self.C_, self.gamma_ = "rbf", 1.0, base_gamma
            self.cv_top1_ = None
            self.oof_decision_ = None
            self.temperature_ = 1.0
        if cancel is not None and cancel.is_set():
            raise Cancelled("training cancelled")
        model = self._make(self.kernel_, self.C_, self.gamma_).fit(Xs, y)
        self._export(model)
        return self

    def _make(self, kernel: str, C: float, gamma: float) -> OneVsRestClassifier:
        return OneVsRestClassifier(SVC(kernel=kernel, C=C, gamma=gamma, coef0=0.0, cache_size=500))

    def _export(self, model: OneVsRestClassifier) -> None:
        """Keep only the arrays needed to score: no pickled estimator ever touches the disk."""
        self.support_: list[np.ndarray] = []
        self.dual_: list[np.ndarray] = []
        self.intercept_ = np.zeros(len(self.classes_))
        estimators = model.estimators_
        if len(self.classes_) == 2:  # sklearn trains one binary SVM for two classes: class 0 is its negative
            est = estimators[0]
            self.support_ = [est.support_vectors_.copy()] * 2
            self.dual_ = [-est.dual_coef_[0], est.dual_coef_[0].copy()]
            self.intercept_[:] = (-est.intercept_[0], est.intercept_[0])
            return
        for k, est in enumerate(estimators):
            if not hasattr(est, "support_vectors_"):  # a class absent from a binary problem
                raise ModelError("every class needs at least one training image")
            self.support_.append(est.support_vectors_.copy())
            self.dual_.append(est.dual_coef_[0].copy())
            self.intercept_[k] = est.intercept_[0]

    # ---- scoring --------------------------------------------------------------------------------------
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """One-vs-rest margins, N × classes."""
        Xs = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        out = np.empty((len(Xs), len(self.classes_)))
        for k in range(len(self.classes_)):
            K = _kernel(self.kernel_, Xs, self.support_[k], self.gamma_, 0.0)
            out[:, k] = K @ self.dual_[k] + self.intercept_[k]
        return out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class scores that sum to one (temperature-scaled margins, fitted on out-of-fold data)."""
        return softmax(self.temperature_ * self.decision_function(X), axis=1)

    @property
    def mean_(self) -> np.ndarray:
        return self.scaler_.mean_

    @property
    def scale_(self) -> np.ndarray:
        return self.scaler_.scale_

    def params(self) -> dict:
        """What was chosen and the grid it was chosen from, for the models table."""
        return {"kernel": self.kernel_, "C": self.C_, "gamma": self.gamma_, "cv_top1": self.cv_top1_,
                "temperature": self.temperature_, "grid": self.cv_results_}

    # ---- storage --------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the model as a plain .npz (no pickle), atomically."""
        arrays = {
            "classes": self.classes_, "mean": self.mean_, "scale": self.scale_, "intercept": self.intercept_,
            "meta": np.array([self.gamma_, self.temperature_, self.C_]),
            "kernel": np.array(self.kernel_),
        }
        for k, (sv, dual) in enumerate(zip(self.support_, self.dual_, strict=False)):
            arrays[f"sv_{k}"] = sv
            arrays[f"dual_{k}"] = dual
        save_npz(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> SVMClassifier:
        """Read a model written by save(); refuses anything that would need pickle."""
        data = load_npz(path, ("classes", "mean", "scale", "intercept", "meta", "kernel"))
        self = cls()
        self.classes_ = data["classes"]
        self.scaler_ = StandardScaler()
        self.scaler_.mean_ = data["mean"]
        self.scaler_.scale_ = data["scale"]
        self.intercept_ = data["intercept"]
        self.gamma_, self.temperature_, self.C_ = (float(v) for v in data["meta"])
        self.kernel_ = str(data["kernel"])
        per_class = [f"{kind}_{k}" for k in range(len(self.classes_)) for kind in ("sv", "dual")]
        if any(name not in data for name in per_class):
            raise ModelError(f"model file {path} lacks support vectors; retrain it")
        self.support_ = [data[f"sv_{k}"] for k in range(len(self.classes_))]
        self.dual_ = [data[f"dual_{k}"] for k in range(len(self.classes_))]
        return self


def _two_columns(decision: np.ndarray) -> np.ndarray:
    """Binary decision values as two class columns, like the multi-class case."""
    return np.stack([-decision, decision], axis=1) if decision.ndim == 1 else decision


def _fit_temperature(decision: np.ndarray, y_idx: np.ndarray) -> float:
    """The softmax temperature that makes out-of-fold scores honest (minimum negative log-likelihood)."""
    def nll(log_t: float) -> float:
        return -float(log_softmax(np.exp(log_t) * decision, axis=1)[np.arange(len(y_idx)), y_idx].mean())

    res = minimize_scalar(nll, bounds=(-3.0, 5.0), method="bounded")
    return float(np.exp(res.x))
