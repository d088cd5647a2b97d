"""Multi-label tags (Illustration2Vec): sigmoid outputs with binary cross-entropy, a threshold per tag, mAP.

Two ways to train, both on multi-hot targets (N × tags): `TagHead`, a sigmoid layer on frozen deep
features (what `train --method tags` stores, ml/tags/train.py), and `finetune_tags`, the shared fine-tuning
loop with a sigmoid head (global average pooling + linear, as in Illustration2Vec's conv head), which
`train --method tags --finetune` runs (ml/tags/finetune.py). Each tag's
threshold maximises its F1 on out-of-fold (head) or validation (network) scores; TagHead floors it at 0.2.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import KFold

from artannot.errors import Cancelled, ModelError
from artannot.ml.arrays import load_npz, save_npz
from artannot.ml.device import Runtime
from artannot.ml.finetune import FineTuneConfig, FitResult, fit
from artannot.ml.metrics import mean_average_precision
from artannot.ml.networks import build_network, layer_plan


def best_thresholds(Y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per tag, the score threshold with the best F1 (0.5 for a tag without positives)."""
    Y = np.asarray(Y).astype(bool)
    out = np.full(Y.shape[1], 0.5)
    for k in range(Y.shape[1]):
        y, s = Y[:, k], scores[:, k]
        if not y.any():
            continue
        order = np.argsort(-s, kind="stable")
        tp = np.cumsum(y[order])
        f1 = 2 * tp / (np.arange(1, len(y) + 1) + y.sum())
        best = int(f1.argmax())
        below = s[order[best + 1]] if best + 1 < len(s) else s[order[best]] - 1e-6
        out[k] = float((s[order[best]] + below) / 2)  # between the last kept and the first rejected score
    return out


def _train_linear(X: np.ndarray, Y: np.ndarray, l2: float, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights and biases of independent sigmoid outputs minimising BCE + l2 (full-batch L-BFGS)."""
    Xt, Yt = torch.from_numpy(X).float(), torch.from_numpy(Y).float()
    W = torch.zeros(X.shape[1], Y.shape[1], requires_grad=True)
    prior = Yt.mean(0).clamp(1e-3, 1 - 1e-3)
    b = torch.log(prior / (1 - prior)).clone().requires_grad_(True)  # start at each tag's base rate
    opt = torch.optim.LBFGS([W, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(Xt @ W + b, Yt) + l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach().numpy().astype(np.float64), b.detach().numpy().astype(np.float64)


class TagHead:
    """Deep features -> independent tag probabilities, with a decision threshold per tag."""

    def __init__(self, l2: float = 1e-3, folds: int = 3, iters: int = 200, random_state: int = 0,
                 min_threshold: float = 0.2):
        self.l2, self.folds, self.iters, self.random_state = l2, folds, iters, random_state
        # A rare tag's out-of-fold scores are all small, and its best-F1 threshold can fall to 0.001: the model
        # would then suggest it on almost every image. Below this floor a suggestion is not worth a click.
        self.min_threshold = min_threshold

    def fit(self, X: np.ndarray, Y: np.ndarray, tags: Sequence[str] | None = None,
            cancel: threading.Event | None = None) -> TagHead:
        """Train on multi-hot Y (N × tags); thresholds from out-of-fold scores."""
        X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
        if Y.ndim != 2 or len(Y) != len(X):
            raise ModelError("tags must be a multi-hot matrix with one row per image")
        self.tags_ = list(tags) if tags is not None else [str(k) for k in range(Y.shape[1])]
        self.mean_, self.scale_ = X.mean(0), X.std(0) + 1e-6
        Xs = (X - self.mean_) / self.scale_
        oof = np.zeros_like(Y)
        folds = min(self.folds, len(X))
        if folds >= 2:
            for fit_idx, val_idx in KFold(folds, shuffle=True, random_state=self.random_state).split(Xs):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("training cancelled")
                W, b = _train_linear(Xs[fit_idx], Y[fit_idx], self.l2, self.iters)
                oof[val_idx] = 1 / (1 + np.exp(-(Xs[val_idx] @ W + b)))
            self.thresholds_ = np.maximum(best_thresholds(Y, oof), self.min_threshold)
            self.oof_map_ = mean_average_precision(Y, oof, self.tags_)["map"]
        else:
            self.thresholds_, self.oof_map_ = np.full(Y.shape[1], 0.5), None
        self.coef_, self.intercept_ = _train_linear(Xs, Y, self.l2, self.iters)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Per-tag probabilities, N × tags (rows need not sum to one)."""
        Xs = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        return 1 / (1 + np.exp(-(Xs @ self.coef_ + self.intercept_)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Multi-hot decisions with each tag's own threshold."""
        return (self.predict_proba(X) >= self.thresholds_).astype(np.int8)

    def save(self, path: str | Path) -> None:
        """A plain .npz (no pickle), written atomically."""
        save_npz(path, tags=np.array(self.tags_), mean=self.mean_, scale=self.scale_, coef=self.coef_,
                 intercept=self.intercept_, thresholds=self.thresholds_)

    @classmethod
    def load(cls, path: str | Path) -> TagHead:
        """Read a head written by save()."""
        d = load_npz(path, ("tags", "mean", "scale", "coef", "intercept", "thresholds"), what="tag model")
        self = cls()
        self.tags_ = [str(t) for t in d["tags"]]
        self.mean_, self.scale_, self.coef_ = d["mean"], d["scale"], d["coef"]
        self.intercept_, self.thresholds_ = d["intercept"], d["thresholds"]
        return self


def evaluate_tags(Y: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, tags: Sequence[str]) -> dict:
    """mAP and AP per tag, plus precision/recall/F1 per tag at its threshold."""
    Y = np.asarray(Y).astype(bool)
    pred = np.asarray(scores) >= np.asarray(thresholds)
    out = mean_average_precision(Y, scores, tags)
    per = {}
    for k, tag in enumerate(tags):
        tp = int((pred[:, k] & Y[:, k]).sum())
        p, t = int(pred[:, k].sum()), int(Y[:, k].sum())
        prec, rec = (tp / p if p else 0.0), (tp / t if t else 0.0)
        per[tag] = {"ap": out["per_tag"][tag], "precision": prec, "recall": rec,
                    "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0, "n": t}
    return {"map": out["map"], "per_tag": per}


def finetune_tags(backbone: str, train: Sequence[tuple[str, np.ndarray]], val: Sequence[tuple[str, np.ndarray]],
                  cfg: FineTuneConfig, runtime: Runtime, *, recipe: str = "finetune", options: dict | None = None,
                  progress=None, cancel: threading.Event | None = None,
                  model: torch.nn.Module | None = None) -> tuple[torch.nn.Module, FitResult]:
    """Fine-tune a network with a sigmoid head and BCE on (path, multi-hot) samples.

    `model`: start from this network (its head already sized for the tags), e.g. one fine-tuned on an
    intermediate project; default: the ImageNet backbone with a new head.
    """
    n_tags = len(train[0][1])
    model = build_network(backbone, n_tags) if model is None else model
    cfg.multilabel = True
    result = fit(model, [(p, np.asarray(t, dtype=np.float32)) for p, t in train],
                 [(p, np.asarray(t, dtype=np.float32)) for p, t in val], cfg, runtime,
                 layer_plan(model, recipe, options), backbone=backbone, progress=progress, cancel=cancel)
    return model, result
