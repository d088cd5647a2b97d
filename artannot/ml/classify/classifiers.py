"""SVM on deep features (one-vs-rest, kernel and C/gamma by stratified CV), stored as plain arrays."""

from __future__ import annotations

import itertools
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import sklearn
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

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


LOO_MAX = 40  # up to this many labelled images, every estimate is leave-one-out


def cv_splits(y: np.ndarray, folds: int = 5, repeats: int | None = None, seed: int = 0) -> list[list[tuple]]:
    """Folds that adapt to tiny classes: per repeat, a list of (train rows, test rows).

    Leave-one-out up to LOO_MAX images; otherwise stratified k-fold with k the smaller of `folds` and the
    median class size (never below 2), repeated (3 times under 400 images) so a tie between two settings
    is decided by more than one shuffle. A class with fewer images than k appears in fewer folds: its
    left-out images are then scored by a model that never saw their class, which is the honest answer.
    """
    y = np.asarray(y)
    n = len(y)
    if n < 2:
        return []
    if n <= LOO_MAX:
        return [[(np.delete(np.arange(n), i), np.array([i])) for i in range(n)]]
    counts = np.unique(y, return_counts=True)[1]
    k = int(max(2, min(folds, np.median(counts))))
    repeats = repeats if repeats is not None else (3 if n < 400 else 1)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "the least populated class has only N members"
        for r in range(repeats):
            cv = StratifiedKFold(k, shuffle=True, random_state=seed + r)
            out.append(list(cv.split(np.zeros(n), y)))
    return out


def fold_scores(pred: np.ndarray, y: np.ndarray, splits: list[list[tuple]]) -> list[float]:
    """Top-1 of each test fold (leave-one-out: of ten consecutive chunks, so a spread means something)."""
    if len(splits) == 1 and len(splits[0]) == len(y) and all(len(te) == 1 for _, te in splits[0]):
        chunks = np.array_split(np.arange(len(y)), min(10, len(y)))
        return [float((pred[c] == y[c]).mean()) for c in chunks if len(c)]
    return [float((pred[te] == y[te]).mean()) for split in splits for _, te in split]


def score_folds(oofs: list[np.ndarray], classes: np.ndarray, y: np.ndarray, y_idx: np.ndarray,
                splits: list[list[tuple]]) -> tuple[float, float, float, list[float], str | None]:
    """(mean top-1, calibrated log-loss, temperature, per-fold top-1, why collapsed) of out-of-fold margins."""
    preds = [classes[o.argmax(1)] for o in oofs]
    acc = float(np.mean([(p == y).mean() for p in preds]))
    temperature = fit_temperature(np.concatenate(oofs), np.tile(y_idx, len(oofs)))
    nll = mean_nll(temperature * oofs[0], y_idx)
    scores = [s for p, split in zip(preds, splits, strict=True) for s in fold_scores(p, y, [split])]
    return acc, nll, temperature, scores, collapsed(preds[0], y)


def collapsed(pred: np.ndarray, y: np.ndarray) -> str | None:
    """Why predictions pred are degenerate (one class for almost everything), or None if they are not.

    A fit that answers the same class for 90 % or more of the images, when that class holds under 60 % of
    the labels, has learned the class prior, not the images.
    """
    pred, y = np.asarray(pred), np.asarray(y)
    if len(pred) < 5 or len(np.unique(y)) < 2:
        return None
    values, counts = np.unique(pred, return_counts=True)
    top = values[counts.argmax()]
    share, prior = counts.max() / len(pred), float((y == top).mean())
    if share >= 0.9 and prior < 0.6:
        return f"it answers one class for {share:.0%} of the images, which hold {prior:.0%} of the labels"
    return None


class SVMClassifier:
    """Features -> class scores with a one-vs-rest SVM whose kernel, C and gamma are chosen by CV.

    Selection scores exactly the procedure that is then fitted (same scaler, same kernel matrix, same
    one-vs-rest heads) on repeated stratified folds (leave-one-out for tiny sets). Ties in top-1 — common on
    small sets — go to the setting whose calibrated out-of-fold scores have the lower log-loss, never to the
    smallest C: at small C every dual coefficient sits at its bound, the heads' intercepts (the class
    priors) outweigh what the kernel says about the image, and the largest class wins everywhere. Settings
    whose out-of-fold answers collapse onto one class are never chosen.
    """

    def __init__(
        self,
        kernels: Sequence[str] = ("rbf", "sigmoid", "linear"),
        Cs: Sequence[float] = (1.0, 10.0, 100.0),
        gamma_scales: Sequence[float] = (0.25, 1.0),
        gammas: Sequence[float] = (1e-4,),
        folds: int = 5,
        random_state: int = 0,
        repeats: int | None = None,
    ):
        self.repeats = repeats
        self.kernels = tuple(kernels)
        self.Cs = tuple(Cs)
        self.gamma_scales = tuple(gamma_scales)
        self.gammas = tuple(gammas)
        self.folds = folds
        self.random_state = random_state

    # ---- training -------------------------------------------------------------------------------------
    def _grid(self, base_gamma: float) -> list[tuple[str, float, float]]:
        grid: list[tuple[str, float, float]] = []
        for kernel, C in itertools.product(self.kernels, self.Cs):
            gammas = [base_gamma] if kernel == "linear" else (
                [base_gamma * s for s in self.gamma_scales] + list(self.gammas))
            grid += [(kernel, C, g) for g in dict.fromkeys(gammas) if (kernel, C, g) not in grid]
        return grid

    def fit(
        self, X: np.ndarray, y: np.ndarray, *, progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> SVMClassifier:
        """Grid-search the SVM on repeated stratified folds, refit the chosen setting on all data, calibrate."""
        y, self.classes_, _, self.scaler_, Xs = training_set(X, y, self.folds)
        y_idx = np.searchsorted(self.classes_, y)
        base_gamma = 1.0 / (Xs.shape[1] * max(Xs.var(), 1e-12))  # scikit-learn's gamma="scale"
        grid = self._grid(base_gamma)
        splits = cv_splits(y, self.folds, self.repeats, seed=self.random_state)
        self.cv_results_: list[dict] = []
        self.cv_top1_ = self.cv_std_ = None
        self.cv_folds_: list[float] = []
        self.oof_decision_ = None
        self.temperature_ = 1.0
        if splits:
            with one_blas_thread():
                chosen = self._search(Xs, y, y_idx, grid, splits, progress, cancel)
            row, oofs, self.temperature_, self.cv_folds_, gram = chosen
            self.kernel_, self.C_, self.gamma_ = row["kernel"], row["C"], row["gamma"]
            self.cv_top1_, self.cv_std_ = row["cv_top1"], row["cv_std"]
            self.oof_decision_ = oofs[0]
        else:
            self.kernel_, self.C_, self.gamma_ = "rbf", 1.0, base_gamma
            gram = _kernel("rbf", Xs, Xs, base_gamma, 0.0)
        if cancel is not None and cancel.is_set():
            raise Cancelled("training cancelled")
        self._export(one_vs_rest(gram, y, self.C_), Xs)
        return self

    def _search(self, Xs, y, y_idx, grid, splits, progress, cancel) -> tuple:
        """(best row, its out-of-fold margins per repeat, temperature, fold scores, kernel matrix)."""
        chosen, best_key = None, None
        grams: dict[tuple[str, float], np.ndarray] = {}
        for n, (kernel, C, gamma) in enumerate(grid):
            if cancel is not None and cancel.is_set():
                raise Cancelled("training cancelled")
            key = (kernel, gamma if kernel != "linear" else 0.0)
            if key not in grams:
                grams[key] = _kernel(kernel, Xs, Xs, gamma, 0.0)
            oofs = [self._oof(grams[key], y, C, split) for split in splits]
            acc, nll, temperature, scores, why = score_folds(oofs, self.classes_, y, y_idx, splits)
            row = {"kernel": kernel, "C": C, "gamma": gamma, "cv_top1": acc, "cv_nll": nll,
                   "cv_std": float(np.std(scores)), "collapsed": why}
            self.cv_results_.append(row)
            if why is None and (best_key is None or (acc, -nll) > best_key):
                best_key, chosen = (acc, -nll), (row, oofs, temperature, scores, grams[key])
            if progress is not None:
                progress(n + 1, len(grid) + 1, "choosing SVM kernel, C, gamma")
        if chosen is None:
            raise ModelError(
                "no useful SVM can be fitted: every setting " + (self.cv_results_[0]["collapsed"] or "")
                + f" ({len(y)} labelled images in {len(self.classes_)} classes; the smallest has"
                f" {np.bincount(y_idx).min()}): label more images of the smaller classes")
        return chosen

    def _oof(self, gram: np.ndarray, y: np.ndarray, C: float, split: list[tuple]) -> np.ndarray:
        """Out-of-fold one-vs-rest margins (rows of y) of one pass over the folds, classes_ columns."""
        out = np.full((len(y), len(self.classes_)), -1e3)  # a class absent from a training fold: never chosen
        for tr, te in split:
            present = np.unique(y[tr])
            if len(present) < 2:
                continue
            heads = one_vs_rest(gram[np.ix_(tr, tr)], y[tr], C)
            cross = gram[np.ix_(te, tr)]
            dec = np.stack([cross[:, h.support_] @ h.dual_coef_[0] + h.intercept_[0] for h in heads], 1)
            out[np.ix_(te, np.searchsorted(self.classes_, present))] = _two_columns(dec[:, 0]) if len(
                present) == 2 else dec
        return out

    def _export(self, estimators: list[SVC], Xs: np.ndarray) -> None:
        """Keep only the arrays needed to score: no pickled estimator ever touches the disk."""
        self.support_: list[np.ndarray] = []
        self.dual_: list[np.ndarray] = []
        self.intercept_ = np.zeros(len(self.classes_))
        if len(self.classes_) == 2:  # sklearn trains one binary SVM for two classes: class 0 is its negative
            est = estimators[0]
            self.support_ = [Xs[est.support_]] * 2
            self.dual_ = [-est.dual_coef_[0], est.dual_coef_[0].copy()]
            self.intercept_[:] = (-est.intercept_[0], est.intercept_[0])
            return
        for k, est in enumerate(estimators):
            if not hasattr(est, "support_"):  # a class absent from a binary problem
                raise ModelError("every class needs at least one training image")
            self.support_.append(Xs[est.support_])
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

    def as_torch(self):
        """A torch module: features -> the same calibrated probabilities as predict_proba (for ONNX export)."""
        import torch

        from artannot.ml.saliency import SVMHead

        head, t = SVMHead(self), float(self.temperature_)

        class Calibrated(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.head = head

            def forward(self, features: torch.Tensor) -> torch.Tensor:
                return torch.softmax(t * self.head(features), dim=1)

        return Calibrated()

    @property
    def mean_(self) -> np.ndarray:
        return self.scaler_.mean_

    @property
    def scale_(self) -> np.ndarray:
        return self.scaler_.scale_

    def params(self) -> dict:
        """What was chosen and the grid it was chosen from, for the models table."""
        return {"kernel": self.kernel_, "C": self.C_, "gamma": self.gamma_, "cv_top1": self.cv_top1_,
                "cv_std": self.cv_std_, "cv_folds": self.cv_folds_, "temperature": self.temperature_,
                "grid": self.cv_results_}

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
        self.cv_top1_ = self.cv_std_ = self.oof_decision_ = None
        per_class = [f"{kind}_{k}" for k in range(len(self.classes_)) for kind in ("sv", "dual")]
        if any(name not in data for name in per_class):
            raise ModelError(f"model file {path} lacks support vectors; retrain it")
        self.support_ = [data[f"sv_{k}"] for k in range(len(self.classes_))]
        self.dual_ = [data[f"dual_{k}"] for k in range(len(self.classes_))]
        return self


def one_vs_rest(gram: np.ndarray, y: np.ndarray, C: float) -> list[SVC]:
    """Binary SVMs on a precomputed kernel, class k against the rest, as OneVsRestClassifier fits them
    (one for two classes, positive = the second), without its per-fit overhead (thousands of CV fits)."""
    classes = np.unique(y)
    targets = classes[1:] if len(classes) == 2 else classes
    with quick_sklearn():
        return [SVC(kernel="precomputed", C=C).fit(gram, (y == c).astype(int)) for c in targets]


def quick_sklearn():
    """scikit-learn without its per-call input checks: thousands of small CV fits on arrays we made."""
    return sklearn.config_context(assume_finite=True, skip_parameter_validation=True)


def one_blas_thread():
    """Small CV fits run faster on one BLAS thread than with threads that fight each other (enter it once per
    fit: entering costs a scan of the loaded libraries)."""
    return threadpool_limits(1)


def _two_columns(decision: np.ndarray) -> np.ndarray:
    """Binary decision values as two class columns, like the multi-class case."""
    return np.stack([-decision, decision], axis=1) if decision.ndim == 1 else decision


def mean_nll(logits: np.ndarray, y_idx: np.ndarray) -> float:
    """Mean negative log-likelihood of softmax(logits) at the true columns."""
    return -float(log_softmax(logits, axis=1)[np.arange(len(y_idx)), y_idx].mean())


def fit_temperature(decision: np.ndarray, y_idx: np.ndarray) -> float:
    """The softmax temperature that makes out-of-fold scores honest (minimum negative log-likelihood)."""
    def nll(log_t: float) -> float:
        return mean_nll(np.exp(log_t) * decision, y_idx)

    res = minimize_scalar(nll, bounds=(-3.0, 5.0), method="bounded")
    return float(np.exp(res.x))
