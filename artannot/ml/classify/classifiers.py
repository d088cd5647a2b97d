"""SVM on deep features (one-vs-rest or one-vs-one, kernel and C/gamma by stratified CV), stored as plain arrays."""

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


def identity_scaler(n_features: int) -> StandardScaler:
    """A StandardScaler that leaves features as they are (mean 0, scale 1): raw features, as papers used them."""
    scaler = StandardScaler()
    scaler.mean_, scaler.scale_ = np.zeros(n_features), np.ones(n_features)
    scaler.var_, scaler.n_features_in_ = np.ones(n_features), n_features
    return scaler


def training_set(X: np.ndarray, y: np.ndarray, max_folds: int, scale: bool = True):
    """Checked labels, their classes, the CV folds the rarest class allows, a fitted scaler, scaled features.

    scale=False keeps the raw features (an identity scaler), so an absolute gamma means what a paper meant."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ModelError("training needs labelled images of at least two classes")
    folds = int(min(max_folds, np.bincount(np.searchsorted(classes, y)).min()))
    scaler = StandardScaler().fit(X) if scale else identity_scaler(X.shape[1])
    return y, classes, folds, scaler, scaler.transform(X)


SCHEMES = ("ovr", "ovo")  # one-vs-rest, one-vs-one
# The sigmoid kernel is not positive semi-definite: above this C libsvm's dual is no longer convex, the fit
# depends on where the solver stops, and on tiny sets a lucky leave-one-out score at C=100 chose fits that
# were 10-20 points worse on new images (tests/test_trust.py). Larger C stays in the grid for rbf and linear.
SIGMOID_MAX_C = 10.0
LOO_MAX = 40  # up to this many labelled images, every estimate is leave-one-out
ENSEMBLE = 5  # settings averaged: the CV's best five (measured: bench/svm_vs_sklearn.py, docs/methods.md)


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


class Standardised:
    """mean_ and scale_ of the fitted scaler_ (what the torch heads and saliency baselines read)."""

    @property
    def mean_(self) -> np.ndarray:
        return self.scaler_.mean_

    @property
    def scale_(self) -> np.ndarray:
        return self.scaler_.scale_


class SVMClassifier(Standardised):
    """Features -> class scores with an SVM whose multi-class scheme, kernel, C and gamma are chosen by CV.

    Two multi-class schemes compete in the grid: one-vs-rest (a binary SVM per class against the rest; its
    margins are the class scores) and one-vs-one (a binary SVM per pair of classes, as scikit-learn's SVC
    and libsvm do; a class's score is its pairwise votes plus its summed pairwise margins squashed into
    (-1/3, 1/3), scikit-learn's `decision_function_shape="ovr"`, so the top class is the vote winner and ties
    go to the more confident side). Neither wins everywhere: one-vs-one is several points ahead on sets of
    many small, overlapping classes (each pair is a balanced problem on its own images), one-vs-rest on the
    real demo collection; the same honest CV decides.

    Selection scores exactly the procedure that is then fitted (same scaler, same kernel matrix, same
    heads) on repeated stratified folds (leave-one-out for tiny sets). Ties in top-1 — common on small sets —
    go to the setting whose calibrated out-of-fold scores have the lower log-loss, never to the smallest C:
    at small C every dual coefficient sits at its bound, the heads' intercepts (the class priors) outweigh
    what the kernel says about the image, and the largest class wins everywhere. Settings whose out-of-fold
    answers collapse onto one class are never chosen.

    The fitted model is plain arrays: standardisation (mean_, scale_), the support vectors of every head
    (sv_, one row each even when several heads share it), their dual coefficients per head (dual_, n_sv ×
    heads), the heads' intercepts, and `combine_` (heads × classes: +1 where a head's positive side is the
    class, -1 where its negative side is).
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
        schemes: Sequence[str] = SCHEMES,
        scale: bool = True,
        ensemble: int = ENSEMBLE,
    ):
        if any(s not in SCHEMES for s in schemes) or not schemes:
            raise ModelError(f"SVM multi-class schemes are {', '.join(SCHEMES)}, not {', '.join(schemes)}")
        self.repeats = repeats
        self.kernels = tuple(kernels)
        self.Cs = tuple(Cs)
        self.gamma_scales = tuple(gamma_scales)
        self.gammas = tuple(gammas)
        self.folds = folds
        self.random_state = random_state
        self.schemes = tuple(schemes)
        self.scale = bool(scale)
        self.ensemble = max(1, int(ensemble))

    # ---- training -------------------------------------------------------------------------------------
    def _grid(self, base_gamma: float, n_classes: int) -> list[tuple[str, str, float, float]]:
        """(scheme, kernel, C, gamma) settings; two classes have one scheme (a single binary SVM)."""
        schemes = self.schemes if n_classes > 2 else self.schemes[:1]
        grid: list[tuple[str, str, float, float]] = []
        for scheme, kernel, C in itertools.product(schemes, self.kernels, self.Cs):
            if kernel == "sigmoid" and C > SIGMOID_MAX_C and any(c <= SIGMOID_MAX_C for c in self.Cs):
                continue
            gammas = [base_gamma] if kernel == "linear" else (
                [base_gamma * s for s in self.gamma_scales] + list(self.gammas))
            grid += [(scheme, kernel, C, g) for g in dict.fromkeys(gammas) if (scheme, kernel, C, g) not in grid]
        return grid

    def fit(
        self, X: np.ndarray, y: np.ndarray, *, progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> SVMClassifier:
        """Grid-search the SVM on repeated stratified folds, refit the chosen setting on all data, calibrate."""
        y, self.classes_, _, self.scaler_, Xs = training_set(X, y, self.folds, self.scale)
        y_idx = np.searchsorted(self.classes_, y)
        base_gamma = 1.0 / (Xs.shape[1] * max(Xs.var(), 1e-12))  # scikit-learn's gamma="scale"
        grid = self._grid(base_gamma, len(self.classes_))
        splits = cv_splits(y, self.folds, self.repeats, seed=self.random_state)
        self.cv_results_: list[dict] = []
        self.cv_top1_ = self.cv_std_ = None
        self.cv_folds_: list[float] = []
        self.oof_decision_ = None
        self.temperature_ = 1.0
        if splits:
            with one_blas_thread():
                chosen, grams = self._search(Xs, y, y_idx, grid, splits, progress, cancel)
            settings = [(row["scheme"], row["kernel"], row["C"], row["gamma"], t) for row, _, t, _ in chosen]
            row, oofs, self.temperature_, self.cv_folds_ = chosen[0]
            self.cv_top1_, self.cv_std_ = row["cv_top1"], row["cv_std"]
            if len(chosen) > 1:
                oofs = [ensemble_scores([t * o[r] for _, o, t, _ in chosen]) for r in range(len(splits))]
                acc, _, self.temperature_, self.cv_folds_, _ = score_folds(oofs, self.classes_, y, y_idx, splits)
                self.cv_top1_, self.cv_std_ = acc, float(np.std(self.cv_folds_))
            self.oof_decision_ = oofs[0]
        else:
            settings = [("ovr", "rbf", 1.0, base_gamma, 1.0)]
            grams = {("rbf", base_gamma): _kernel("rbf", Xs, Xs, base_gamma, 0.0)}
        if cancel is not None and cancel.is_set():
            raise Cancelled("training cancelled")
        self.members_ = []
        with one_blas_thread():
            for scheme, kernel, C, gamma, t in settings:
                gram = grams[(kernel, gamma if kernel != "linear" else 0.0)]
                heads, rows, combine = binary_heads(gram, y, C, scheme, self.classes_)
                self.members_.append(SVMMember(scheme, kernel, C, gamma, t, self.scaler_,
                                               *_export(heads, rows, combine, Xs)))
        self._adopt_first()
        return self

    def _adopt_first(self) -> None:
        """The best setting's arrays as the classifier's own (sv_, dual_, …: what one-setting files store)."""
        m = self.members_[0]
        self.scheme_, self.kernel_, self.C_, self.gamma_ = m.scheme_, m.kernel_, m.C_, m.gamma_
        self.sv_, self.dual_, self.intercept_, self.combine_ = m.sv_, m.dual_, m.intercept_, m.combine_

    def _search(self, Xs, y, y_idx, grid, splits, progress, cancel) -> tuple[list[tuple], dict]:
        """The `ensemble` best settings, best first, each (row, out-of-fold scores per repeat, temperature,
        fold scores), and the kernel matrices by (kernel, gamma)."""
        ranked: list[tuple] = []
        grams: dict[tuple[str, float], np.ndarray] = {}
        for n, (scheme, kernel, C, gamma) in enumerate(grid):
            if cancel is not None and cancel.is_set():
                raise Cancelled("training cancelled")
            key = (kernel, gamma if kernel != "linear" else 0.0)
            if key not in grams:
                grams[key] = _kernel(kernel, Xs, Xs, gamma, 0.0)
            oofs = [self._oof(grams[key], y, C, scheme, split) for split in splits]
            acc, nll, temperature, scores, why = score_folds(oofs, self.classes_, y, y_idx, splits)
            row = {"scheme": scheme, "kernel": kernel, "C": C, "gamma": gamma, "cv_top1": acc, "cv_nll": nll,
                   "cv_std": float(np.std(scores)), "collapsed": why}
            self.cv_results_.append(row)
            if why is None:
                ranked.append(((acc, -nll), n, (row, oofs, temperature, scores)))
                ranked.sort(key=lambda r: (r[0], -r[1]), reverse=True)
                del ranked[self.ensemble:]
            if progress is not None:
                progress(n + 1, len(grid) + 1, "choosing SVM scheme, kernel, C, gamma")
        if not ranked:
            raise ModelError(
                "no useful SVM can be fitted: every setting " + (self.cv_results_[0]["collapsed"] or "")
                + f" ({len(y)} labelled images in {len(self.classes_)} classes; the smallest has"
                f" {np.bincount(y_idx).min()}): label more images of the smaller classes")
        return [r[2] for r in ranked], grams

    def _oof(self, gram: np.ndarray, y: np.ndarray, C: float, scheme: str, split: list[tuple]) -> np.ndarray:
        """Out-of-fold class scores (rows of y, classes_ columns) of one pass over the folds."""
        out = np.full((len(y), len(self.classes_)), -1e3)  # a class absent from a training fold: never chosen
        for tr, te in split:
            present = np.unique(y[tr])
            if len(present) < 2:
                continue
            heads, rows, combine = binary_heads(gram[np.ix_(tr, tr)], y[tr], C, scheme, present)
            cross = gram[np.ix_(te, tr)]
            margins = np.stack([cross[:, r[h.support_]] @ h.dual_coef_[0] + h.intercept_[0]
                                for h, r in zip(heads, rows, strict=True)], 1)
            out[np.ix_(te, np.searchsorted(self.classes_, present))] = combine_margins(margins, combine, scheme)
        return out

    # ---- scoring --------------------------------------------------------------------------------------
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Class scores, N × classes: one setting's one-vs-rest margins or one-vs-one votes + squashed margins;
        for several settings, the log of their averaged calibrated probabilities."""
        members = self.members_
        if len(members) == 1:
            return members[0].decision_function(X)
        return ensemble_scores([m.temperature_ * m.decision_function(X) for m in members])

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class scores that sum to one (temperature-scaled decision values, fitted on out-of-fold data)."""
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

    def describe(self) -> str:
        """What was fitted, in a few words (the models table's summary)."""
        scheme = {"ovr": "one-vs-rest", "ovo": "one-vs-one"}[self.scheme_]
        more = len(getattr(self, "members_", ())) - 1
        return f"{self.kernel_} SVM C={self.C_:g} ({scheme})" + (
            f" + {more} next-best setting{'s' if more > 1 else ''}, averaged" if more > 0 else "")

    def params(self) -> dict:
        """What was chosen and the grid it was chosen from, for the models table."""
        return {"scheme": self.scheme_, "kernel": self.kernel_, "C": self.C_, "gamma": self.gamma_,
                "scaled": bool(getattr(self, "scale", True)), "cv_top1": self.cv_top1_, "cv_std": self.cv_std_, "cv_folds": self.cv_folds_,
                "temperature": self.temperature_, "n_support": int(len(self.sv_)), "grid": self.cv_results_,
                "ensemble": [m.setting() for m in getattr(self, "members_", [])]}

    # ---- storage --------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the model as a plain .npz (no pickle), atomically."""
        extra = {}
        members = self.members_
        if len(members) > 1:
            extra["member_t"] = np.array([m.temperature_ for m in members])
            for k, m in enumerate(members[1:], 1):
                extra.update({f"m{k}_sv": m.sv_, f"m{k}_dual": m.dual_, f"m{k}_intercept": m.intercept_,
                              f"m{k}_combine": m.combine_, f"m{k}_meta": np.array([m.gamma_, m.C_]),
                              f"m{k}_kernel": np.array(m.kernel_), f"m{k}_scheme": np.array(m.scheme_)})
        save_npz(path, classes=self.classes_, mean=self.mean_, scale=self.scale_, intercept=self.intercept_,
                 meta=np.array([self.gamma_, self.temperature_, self.C_]), kernel=np.array(self.kernel_),
                 scheme=np.array(self.scheme_), sv=self.sv_, dual=self.dual_, combine=self.combine_, **extra)

    @classmethod
    def load(cls, path: str | Path) -> SVMClassifier:
        """Read a model written by save() (or by an ArtAnnot that stored one head per class); no pickle."""
        data = load_npz(path, ("classes", "mean", "scale", "intercept", "meta", "kernel"))
        self = cls()
        self.classes_ = data["classes"]
        self.scaler_ = StandardScaler()
        self.scaler_.mean_ = data["mean"]
        self.scaler_.scale_ = data["scale"]
        self.intercept_ = np.asarray(data["intercept"], dtype=np.float64)
        self.gamma_, self.temperature_, self.C_ = (float(v) for v in data["meta"])
        self.kernel_ = str(data["kernel"])
        self.cv_top1_ = self.cv_std_ = self.oof_decision_ = None
        if all(name in data for name in ("sv", "dual", "combine", "scheme")):
            self.sv_, self.dual_, self.combine_ = data["sv"], data["dual"], data["combine"]
            self.scheme_ = str(data["scheme"])
            if self.scheme_ not in SCHEMES or self.dual_.shape != (len(self.sv_), len(self.intercept_)) \
                    or self.combine_.shape != (len(self.intercept_), len(self.classes_)):
                raise ModelError(f"model file {path} is inconsistent (scheme {self.scheme_}); retrain it")
            self._load_members(data, path)
            return self
        # earlier files: one-vs-rest, support vectors and dual coefficients of each class's head
        per_class = [f"{kind}_{k}" for k in range(len(self.classes_)) for kind in ("sv", "dual")]
        if any(name not in data for name in per_class):
            raise ModelError(f"model file {path} lacks support vectors; retrain it")
        svs = [data[f"sv_{k}"] for k in range(len(self.classes_))]
        self.sv_ = np.concatenate(svs)
        self.dual_ = np.zeros((len(self.sv_), len(svs)))
        start = 0
        for k, sv in enumerate(svs):
            self.dual_[start:start + len(sv), k] = data[f"dual_{k}"]
            start += len(sv)
        self.combine_ = np.eye(len(self.classes_))
        self.scheme_ = "ovr"
        self.members_ = [SVMMember(self.scheme_, self.kernel_, self.C_, self.gamma_, self.temperature_, self.scaler_,
                                   self.sv_, self.dual_, self.intercept_, self.combine_)]
        return self

    def _load_members(self, data, path) -> None:
        """The settings averaged with the best one (files of one setting: just it)."""
        first = SVMMember(self.scheme_, self.kernel_, self.C_, self.gamma_, self.temperature_, self.scaler_,
                          self.sv_, self.dual_, self.intercept_, self.combine_)
        self.members_ = [first]
        if "member_t" not in data:
            return
        temps = np.asarray(data["member_t"], dtype=np.float64)
        first.temperature_ = float(temps[0])
        for k in range(1, len(temps)):
            names = [f"m{k}_{part}" for part in ("sv", "dual", "intercept", "combine", "meta", "kernel", "scheme")]
            if any(n not in data for n in names):
                raise ModelError(f"model file {path} lacks setting {k} of its ensemble; retrain it")
            sv, dual, intercept, combine, meta, kernel, scheme = (data[n] for n in names)
            m = SVMMember(str(scheme), str(kernel), float(meta[1]), float(meta[0]), float(temps[k]), self.scaler_,
                          sv, dual, np.asarray(intercept, dtype=np.float64), combine)
            if m.scheme_ not in SCHEMES or m.dual_.shape != (len(m.sv_), len(m.intercept_)):
                raise ModelError(f"model file {path} is inconsistent (setting {k}); retrain it")
            self.members_.append(m)



def ensemble_scores(scaled: list[np.ndarray]) -> np.ndarray:
    """log of the mean of softmax(each) (each: N × classes, already temperature-scaled): an ensemble's scores."""
    p = np.mean([softmax(s, axis=1) for s in scaled], axis=0)
    return np.log(np.maximum(p, 1e-300))


class SVMMember(Standardised):
    """One fitted setting (scheme, kernel, C, gamma) of an SVM as plain arrays, and its class scores."""

    def __init__(self, scheme, kernel, C, gamma, temperature, scaler, sv, dual, intercept, combine):
        self.scheme_, self.kernel_, self.C_, self.gamma_ = scheme, kernel, float(C), float(gamma)
        self.temperature_, self.scaler_ = float(temperature), scaler
        self.sv_, self.dual_, self.intercept_, self.combine_ = sv, dual, intercept, combine

    def head_margins(self, X: np.ndarray) -> np.ndarray:
        """Every binary head's margin, N × heads."""
        Xs = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        return _kernel(self.kernel_, Xs, self.sv_, self.gamma_, 0.0) @ self.dual_ + self.intercept_

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Class scores, N × classes: one-vs-rest margins, or one-vs-one votes + squashed margins."""
        return combine_margins(self.head_margins(X), self.combine_, self.scheme_)

    def setting(self) -> dict:
        return {"scheme": self.scheme_, "kernel": self.kernel_, "C": self.C_, "gamma": self.gamma_,
                "temperature": self.temperature_, "n_support": int(len(self.sv_))}


def _export(heads: list[BinarySVM], rows: list[np.ndarray], combine: np.ndarray, Xs: np.ndarray) -> tuple:
    """(support vectors, dual coefficients per head, intercepts, combine): only the arrays needed to score,
    no pickled estimator ever touches the disk."""
    for h in heads:
        if not hasattr(h, "support_"):  # a class absent from a binary problem
            raise ModelError("every class needs at least one training image")
    used = np.unique(np.concatenate([r[h.support_] for h, r in zip(heads, rows, strict=True)]))
    dual = np.zeros((len(used), len(heads)))
    for k, (h, r) in enumerate(zip(heads, rows, strict=True)):
        dual[np.searchsorted(used, r[h.support_]), k] = h.dual_coef_[0]
    intercept = np.array([h.intercept_[0] for h in heads], dtype=np.float64)
    return Xs[used], dual, intercept, combine.astype(np.float64)


def binary_heads(gram: np.ndarray, y: np.ndarray, C: float, scheme: str,
                 classes: np.ndarray) -> tuple[list[BinarySVM], list[np.ndarray], np.ndarray]:
    """(binary SVMs on a precomputed kernel, the training rows of each, heads × classes combine matrix).

    One-vs-rest: class k against the rest, as OneVsRestClassifier fits them (one head for two classes,
    positive = the second); one-vs-one: every pair (i < j), positive = j, on the images of i and j only.
    Fitted without the meta-estimators' per-fit overhead (thousands of CV fits).
    """
    k = len(classes)
    every = np.arange(len(y))
    gram = np.ascontiguousarray(gram, dtype=np.float64)
    if k == 2 or scheme == "ovr":
        targets = classes[1:] if k == 2 else classes
        heads = [BinarySVM(C).fit(gram, y == c) for c in targets]
        combine = np.array([[-1.0, 1.0]]) if k == 2 else np.eye(k)
        return heads, [every] * len(heads), combine
    pairs = list(itertools.combinations(range(k), 2))
    heads, rows = [], []
    combine = np.zeros((len(pairs), k))
    for h, (i, j) in enumerate(pairs):
        r = np.flatnonzero((y == classes[i]) | (y == classes[j]))
        heads.append(BinarySVM(C).fit(gram[np.ix_(r, r)], y[r] == classes[j]))
        rows.append(r)
        combine[h, i], combine[h, j] = -1.0, 1.0
    return heads, rows, combine


class BinarySVM:
    """SVC(kernel="precomputed", C=C) for one binary problem, fitted by libsvm directly.

    The same solver, tolerance and sign conventions as scikit-learn's SVC (positive margin = the True side;
    support_, dual_coef_, intercept_ like SVC's), without its per-call validation, which costs more than
    the fit itself on the small problems cross-validation makes (tens of thousands of them).
    """

    def __init__(self, C: float):
        self.C = float(C)

    def fit(self, gram: np.ndarray, positive: np.ndarray) -> BinarySVM:
        """Fit on a square, C-contiguous float64 kernel matrix and a boolean target."""
        from sklearn.svm import _libsvm

        target = np.asarray(positive, dtype=np.float64)
        if target.min() == target.max():
            raise ModelError("every class needs at least one training image")
        _libsvm.set_verbosity_wrap(0)  # SVC(verbose=False) sets it before every fit: libsvm's switch is global
        support, _, _, dual, intercept, *_ = _libsvm.fit(
            gram, target, svm_type=0, kernel="precomputed", C=self.C, tol=1e-3, cache_size=200.0,
            class_weight=np.empty(0), sample_weight=np.empty(0), max_iter=-1, random_seed=0)
        self.support_, self.dual_coef_, self.intercept_ = support, -dual, -intercept
        return self


def combine_margins(margins: np.ndarray, combine: np.ndarray, scheme: str) -> np.ndarray:
    """Class scores from head margins (N × heads) and the heads × classes combine matrix.

    One-vs-rest: margins @ combine. One-vs-one (scikit-learn's decision_function_shape="ovr"): each pair's
    vote goes to the side its margin points to, plus the class's summed pairwise margins c squashed to
    c / (3 (|c| + 1)), within (-1/3, 1/3): the top class is the vote winner, a tie goes to the more confident.
    """
    if scheme == "ovr":
        return margins @ combine
    votes = (margins > 0).astype(np.float64) @ (combine > 0) + (margins <= 0).astype(np.float64) @ (combine < 0)
    conf = margins @ combine
    return votes + conf / (3.0 * (np.abs(conf) + 1.0))


def quick_sklearn():
    """scikit-learn without its per-call input checks: thousands of small CV fits on arrays we made."""
    return sklearn.config_context(assume_finite=True, skip_parameter_validation=True)


def one_blas_thread():
    """Small CV fits run faster on one BLAS thread than with threads that fight each other (enter it once per
    fit: entering costs a scan of the loaded libraries)."""
    return threadpool_limits(1)


def mean_nll(logits: np.ndarray, y_idx: np.ndarray) -> float:
    """Mean negative log-likelihood of softmax(logits) at the true columns."""
    return -float(log_softmax(logits, axis=1)[np.arange(len(y_idx)), y_idx].mean())


def fit_temperature(decision: np.ndarray, y_idx: np.ndarray) -> float:
    """The softmax temperature that makes out-of-fold scores honest (minimum negative log-likelihood)."""
    def nll(log_t: float) -> float:
        return mean_nll(np.exp(log_t) * decision, y_idx)

    res = minimize_scalar(nll, bounds=(-3.0, 5.0), method="bounded")
    return float(np.exp(res.x))
