"""The SVM head: learns, picks its kernel by CV, scores match sklearn, stores without pickle."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import SVC

from artannot.errors import Cancelled, ModelError
from artannot.ml.classify.classifiers import SVMClassifier
from artannot.ml.metrics import evaluate_ranked


def _blobs(n_per=30, d=20, k=4, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (k, d))
    X = np.concatenate([c + rng.normal(0, spread, (n_per, d)) for c in centers])
    y = np.repeat(np.arange(10, 10 + k), n_per)  # class ids need not start at 0
    return X, y


def test_svm_learns_and_scores_are_probabilities():
    X, y = _blobs()
    Xt, yt = _blobs(seed=0, n_per=10)
    clf = SVMClassifier(Cs=(1.0, 10.0)).fit(X, y)
    p = clf.predict_proba(Xt)
    assert np.allclose(p.sum(1), 1.0)
    assert (clf.classes_[p.argmax(1)] == yt).mean() > 0.9
    assert clf.cv_top1_ > 0.9
    # per scheme (one-vs-rest, one-vs-one) and C: rbf and sigmoid x 3 gammas (2 relative, 1e-4), linear
    assert len(clf.params()["grid"]) == 2 * 2 * (3 + 3 + 1)
    assert {r["scheme"] for r in clf.params()["grid"]} == {"ovr", "ovo"}


def test_decision_function_matches_sklearn(tmp_path):
    X, y = _blobs(d=8)
    clf = SVMClassifier(kernels=("rbf",), Cs=(1.0,), gamma_scales=(1.0,), gammas=(), schemes=("ovr",)).fit(X, y)
    ref = OneVsRestClassifier(SVC(kernel="rbf", C=1.0, gamma=clf.gamma_)).fit(clf.scaler_.transform(X), y)
    ours = clf.decision_function(X)
    assert np.allclose(ours, ref.decision_function(clf.scaler_.transform(X)), atol=1e-6)
    clf.save(tmp_path / "m.npz")
    again = SVMClassifier.load(tmp_path / "m.npz")
    assert np.allclose(again.decision_function(X), ours)
    assert again.kernel_ == "rbf"


def test_load_refuses_pickles_and_garbage(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "evil.npz").write_bytes((tmp_path / "obj.npy").read_bytes())
    with pytest.raises(ModelError, match="retrain"):
        SVMClassifier.load(tmp_path / "evil.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ModelError):
        SVMClassifier.load(tmp_path / "junk.npz")


def test_one_class_is_a_clear_error_and_cancel_stops():
    X, y = _blobs(k=1)
    with pytest.raises(ModelError, match="two classes"):
        SVMClassifier().fit(X, y)
    X, y = _blobs()
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        SVMClassifier().fit(X, y, cancel=stop)


def test_evaluate_ranked_top_k_per_class_confusion():
    truth = {1: 10, 2: 10, 3: 20, 4: 20}
    ranked = {1: [10, 20], 2: [20, 10], 3: [20, 10], 4: [30, 40, 50, 60, 70, 20]}
    out = evaluate_ranked(truth, ranked, [10, 20], {10: "a", 20: "b"})
    assert out["n"] == 4 and out["top1"] == 0.5 and out["top5"] == 0.75
    assert out["per_class"]["a"] == {"top1": 0.5, "top5": 1.0, "n": 2}
    assert out["per_class"]["b"] == {"top1": 0.5, "top5": 0.5, "n": 2}
    assert out["confusion"] == [[1, 1], [0, 1]]  # image 4's top guess (30) is not a model class


def test_two_classes_work_like_many(tmp_path):
    X, y = _blobs(k=2)
    clf = SVMClassifier(Cs=(1.0,), ensemble=1).fit(X, y)
    ref = OneVsRestClassifier(SVC(kernel=clf.kernel_, C=1.0, gamma=clf.gamma_)).fit(clf.scaler_.transform(X), y)
    d = clf.decision_function(X)
    assert np.allclose(d[:, 1], ref.decision_function(clf.scaler_.transform(X)), atol=1e-6)
    assert (clf.classes_[clf.predict_proba(X).argmax(1)] == y).mean() > 0.95


def test_sigmoid_stays_at_moderate_C():
    X, y = _blobs(k=3, n_per=8)
    grid = SVMClassifier(Cs=(1.0, 10.0, 100.0), kernels=("sigmoid", "rbf")).fit(X, y).params()["grid"]
    assert max(r["C"] for r in grid if r["kernel"] == "sigmoid") == 10.0  # not PSD: no C = 100
    assert max(r["C"] for r in grid if r["kernel"] == "rbf") == 100.0


def test_earlier_one_head_per_class_files_still_load(tmp_path):
    from artannot.ml.arrays import save_npz

    X, y = _blobs(d=6, k=3)
    clf = SVMClassifier(kernels=("rbf",), Cs=(1.0,), gamma_scales=(1.0,), gammas=(), schemes=("ovr",)).fit(X, y)
    old = {"classes": clf.classes_, "mean": clf.mean_, "scale": clf.scale_, "intercept": clf.intercept_,
           "meta": np.array([clf.gamma_, clf.temperature_, clf.C_]), "kernel": np.array("rbf")}
    for k in range(3):  # the earlier format: each class's own support vectors and dual coefficients
        used = clf.dual_[:, k] != 0
        old[f"sv_{k}"], old[f"dual_{k}"] = clf.sv_[used], clf.dual_[used, k]
    save_npz(tmp_path / "old.npz", **old)
    again = SVMClassifier.load(tmp_path / "old.npz")
    assert again.scheme_ == "ovr" and np.allclose(again.predict_proba(X), clf.predict_proba(X))


def test_knn_picks_k_by_cv_calibrates_and_round_trips(tmp_path):
    import torch

    from artannot.ml.classify.knn import KNNClassifier

    X, y = _blobs(k=3, n_per=6, spread=2.5)
    Xt, yt = _blobs(k=3, n_per=10, spread=2.5, seed=0)
    clf = KNNClassifier().fit(X, y)
    assert clf.k_ in (1, 3, 5, 7, 11) and clf.cv_top1_ is not None and len(clf.params()["grid"]) == 5
    p = clf.predict_proba(Xt)
    assert np.allclose(p.sum(1), 1.0) and (clf.classes_[p.argmax(1)] == yt).mean() > 0.8
    assert clf.oof_decision_.shape == (len(y), 3) and clf.temperature_ > 0
    clf.save(tmp_path / "knn.npz")
    again = KNNClassifier.load(tmp_path / "knn.npz")
    assert np.allclose(again.predict_proba(Xt), p, atol=1e-6)
    head = again.as_torch()(torch.as_tensor(Xt, dtype=torch.float32)).double().numpy()
    assert np.abs(head - again.predict_proba(Xt.astype(np.float32))).max() < 1e-6
    y1 = y.copy()
    y1[0] = 99  # a class with one image: known, never its own neighbour out of fold
    assert 99 in KNNClassifier().fit(X, y1).classes_
    with pytest.raises(ModelError, match="two classes"):
        KNNClassifier().fit(X, np.zeros(len(X)))


def test_the_best_settings_are_averaged_and_survive_save_load_and_torch(tmp_path):
    """The CV's best settings (different kernels) are averaged: the stored file, the torch head (saliency,
    ONNX) and the out-of-fold scores all give the averaged calibrated probabilities."""
    import torch

    from artannot.ml.saliency import SVMHead

    X, y = _blobs(k=3, n_per=20)
    clf = SVMClassifier(Cs=(1.0, 10.0), ensemble=4).fit(X, y)
    settings = clf.params()["ensemble"]
    assert len(settings) == 4 and len(clf.members_) == 4 and "averaged" in clf.describe()
    ranked = sorted((r for r in clf.cv_results_ if r["collapsed"] is None),
                    key=lambda r: (r["cv_top1"], -r["cv_nll"]), reverse=True)
    assert [(s["kernel"], s["C"]) for s in settings] == [(r["kernel"], r["C"]) for r in ranked[:4]]
    one = [m.temperature_ * m.decision_function(X) for m in clf.members_]
    from scipy.special import softmax
    mean_p = np.mean([softmax(o, axis=1) for o in one], axis=0)
    assert np.allclose(np.exp(clf.decision_function(X)), mean_p)
    assert clf.oof_decision_.shape == (len(y), 3) and 0.0 < clf.cv_top1_ <= 1.0
    clf.save(tmp_path / "ens.npz")
    again = SVMClassifier.load(tmp_path / "ens.npz")
    assert len(again.members_) == 4 and np.allclose(again.predict_proba(X), clf.predict_proba(X))
    head = SVMHead(again)(torch.as_tensor(X)).detach().numpy()
    assert np.allclose(head, again.decision_function(X), atol=1e-8)
    torch_p = again.as_torch()(torch.as_tensor(X, dtype=torch.float32)).double().numpy()
    assert np.abs(torch_p - again.predict_proba(X.astype(np.float32))).max() < 1e-5
    assert len(SVMClassifier(Cs=(1.0,), ensemble=1).fit(X, y).members_) == 1


@pytest.mark.parametrize("rank_deficient", [False, True])
def test_the_probe_fitted_in_the_row_space_is_the_probe_fitted_on_every_dimension(rank_deficient):
    """Fewer images than feature dimensions: the probe fits on an orthonormal basis of the rows (QR) and must
    come back to the weights scikit-learn finds on the full features, also when rows repeat (rank < n)."""
    from sklearn.linear_model import LogisticRegression

    from artannot.ml.classify.linear import fold_projections, row_space

    X, y = _blobs(n_per=15, d=200, k=3)
    if rank_deficient:
        X, y = np.concatenate([X, X[:10]]), np.concatenate([y, y[:10]])
    basis = row_space(X)
    assert basis.shape == (200, len(X)) and np.allclose(basis.T @ basis, np.eye(len(X)))
    fit = dict(C=0.5, max_iter=5000, tol=1e-10)
    full = LogisticRegression(**fit).fit(X, y)
    small = LogisticRegression(**fit).fit(X @ basis, y)
    assert np.allclose(small.coef_ @ basis.T, full.coef_, atol=1e-6)
    assert np.allclose(small.intercept_, full.intercept_, atol=1e-6)
    tall = np.concatenate([X] * 6)  # more rows than dimensions: used as they are, nothing projected or copied
    split = [(np.arange(len(tall) - 5), np.arange(len(tall) - 5, len(tall)))]
    assert fold_projections(tall, split) == [None]
