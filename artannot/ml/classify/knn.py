"""k-nearest neighbours on deep features: cosine similarity of L2-normalised vectors, k by stratified CV.

Where classes hold a handful of images each, the nearest labelled image is often the best guess there is
(on the issue's 30 shapes, 1-NN beat every SVM on new images). Same shape as SVMClassifier (fit /
decision_function / predict_proba / params / save / load / as_torch), so `auto` can estimate it with the same
nested CV and store it as a "classifier" predictor.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy.special import softmax

from artannot.errors import Cancelled, ModelError
from artannot.ml.arrays import load_npz, save_npz
from artannot.ml.classify.classifiers import cv_splits, score_folds

Progress = Callable[[int, int, str], None]
TIE = 1e-3  # weight of each class's best similarity in its score: breaks vote ties, ranks the other classes


def unit(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def knn_scores(sims: np.ndarray, y_idx: np.ndarray, n_classes: int, k: int) -> np.ndarray:
    """Class scores (N × classes) from similarities to the training images (N × n_train).

    A class's score is the summed similarity of its images among the k most similar ones (a similarity-
    weighted vote), plus TIE times its single most similar image, so every class is ranked and ties go to the
    class with the closest image.
    """
    k = int(min(k, sims.shape[1]))
    onehot = np.eye(n_classes)[y_idx]
    kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1:k]
    votes = np.where(sims >= kth, sims, 0.0) @ onehot
    best = np.stack([np.where(onehot[:, c][None, :] > 0, sims, -2.0).max(1) for c in range(n_classes)], 1)
    return votes + TIE * best


class KNNClassifier:
    """Features -> class probabilities by a similarity-weighted vote of the k most similar training images.

    k is chosen on the folds SVMClassifier uses (leave-one-out up to 40 images, else repeated stratified
    k-fold), top-1 first and calibrated log-loss on ties; the softmax temperature is fitted on the
    out-of-fold scores, so its percentages are calibrated like the SVM's.
    """

    def __init__(self, ks: Sequence[int] = (1, 3, 5, 7, 11), folds: int = 5, random_state: int = 0,
                 repeats: int | None = None):
        self.ks = tuple(ks)
        self.folds = folds
        self.random_state = random_state
        self.repeats = repeats

    def fit(self, X: np.ndarray, y: np.ndarray, *, progress: Progress | None = None,
            cancel: threading.Event | None = None) -> KNNClassifier:
        """Choose k by CV, keep the normalised training features, fit the temperature out of fold."""
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ModelError("training needs labelled images of at least two classes")
        self.train_ = unit(X).astype(np.float32).astype(np.float64)  # as stored
        self.y_idx_ = np.searchsorted(self.classes_, y)
        splits = cv_splits(y, self.folds, self.repeats, seed=self.random_state)
        sims = self.train_ @ self.train_.T
        ks = [k for k in self.ks if k < len(y)] or [1]
        self.cv_results_: list[dict] = []
        self.k_, self.cv_top1_, self.cv_std_, self.cv_folds_ = ks[0], None, None, []
        self.oof_decision_, self.temperature_ = None, 1.0
        best = None
        for n, k in enumerate(ks if splits else []):
            if cancel is not None and cancel.is_set():
                raise Cancelled("training cancelled")
            oofs = [self._oof(sims, k, split) for split in splits]
            acc, nll, t, scores, why = score_folds(oofs, self.classes_, y, self.y_idx_, splits)
            self.cv_results_.append({"k": k, "cv_top1": acc, "cv_nll": nll, "cv_std": float(np.std(scores)),
                                     "collapsed": why})
            if why is None and (best is None or (acc, -nll) > best[0]):
                best = ((acc, -nll), k, acc, float(np.std(scores)), scores, oofs[0], t)
            if progress is not None:
                progress(n + 1, len(ks), "choosing k for the nearest neighbours")
        if best is not None:
            _, self.k_, self.cv_top1_, self.cv_std_, self.cv_folds_, self.oof_decision_, self.temperature_ = best
        elif splits:
            raise ModelError("no useful k-NN can be fitted: " + (self.cv_results_[0]["collapsed"] or "")
                             + "; label more images of the smaller classes")
        return self

    def _oof(self, sims: np.ndarray, k: int, split: list[tuple]) -> np.ndarray:
        """Out-of-fold class scores (rows of the training set) of one pass over the folds."""
        out = np.full((len(sims), len(self.classes_)), -1e3)
        for tr, te in split:
            present = np.unique(self.y_idx_[tr])
            scores = knn_scores(sims[np.ix_(te, tr)], self.y_idx_[tr], len(self.classes_), k)
            out[np.ix_(te, present)] = scores[:, present]  # a class absent from the fold is never chosen
        return out

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Class scores, N × classes (weighted votes of the k nearest + TIE × the closest of each class)."""
        return knn_scores(unit(X) @ self.train_.T, self.y_idx_, len(self.classes_), self.k_)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities: softmax of the temperature-scaled scores."""
        return softmax(self.temperature_ * self.decision_function(X), axis=1)

    def as_torch(self):
        """A torch module: features -> the same calibrated probabilities as predict_proba (for ONNX export)."""
        import torch

        train = torch.as_tensor(self.train_, dtype=torch.float64)
        onehot = torch.as_tensor(np.eye(len(self.classes_))[self.y_idx_], dtype=torch.float64)
        k, t = int(min(self.k_, len(self.train_))), float(self.temperature_)

        class Head(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("reference", train)
                self.register_buffer("onehot", onehot)

            def forward(self, features: torch.Tensor) -> torch.Tensor:
                x = features.double()
                x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
                sims = x @ self.reference.T
                kth = torch.topk(sims, k, dim=1).values[:, k - 1:k]
                votes = torch.where(sims >= kth, sims, torch.zeros_like(sims)) @ self.onehot
                masked = sims[:, :, None] * self.onehot[None] - 2.0 * (1.0 - self.onehot[None])
                best = masked.amax(dim=1)
                return torch.softmax(t * (votes + TIE * best), dim=1)

        return Head()

    def describe(self) -> str:
        """What was fitted, in a few words (the models table's summary)."""
        return f"{self.k_}-nearest neighbours (cosine)"

    def params(self) -> dict:
        """The chosen k and the grid, for the models table."""
        return {"k": self.k_, "cv_top1": self.cv_top1_, "cv_std": self.cv_std_, "cv_folds": self.cv_folds_,
                "temperature": self.temperature_, "n_reference": int(len(self.train_)), "grid": self.cv_results_}

    def save(self, path: str | Path) -> None:
        """Write the model (its normalised training features and labels) as a plain .npz, atomically."""
        save_npz(path, classes=self.classes_, train=self.train_.astype(np.float32), y_idx=self.y_idx_,
                 meta=np.array([self.k_, self.temperature_]))

    @classmethod
    def load(cls, path: str | Path) -> KNNClassifier:
        """Read a model written by save(); refuses anything that would need pickle."""
        data = load_npz(path, ("classes", "train", "y_idx", "meta"))
        self = cls()
        self.classes_, self.y_idx_ = data["classes"], data["y_idx"].astype(int)
        self.train_ = data["train"].astype(np.float64)
        self.k_, self.temperature_ = int(data["meta"][0]), float(data["meta"][1])
        self.cv_top1_ = self.cv_std_ = self.oof_decision_ = None
        if len(self.y_idx_) != len(self.train_) or self.y_idx_.max(initial=0) >= len(self.classes_):
            raise ModelError(f"model file {path} is inconsistent; retrain it")
        return self
