"""Models you can trust: no collapsed SVM, honest estimates, calibrated scores, curated over noisy."""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from artannot.cli import main
from artannot.errors import ModelError
from artannot.ml.classify.classifiers import SVMClassifier, collapsed, cv_splits
from artannot.ml.classify.estimate import nested_estimate
from artannot.ml.classify.linear import LinearProbe
from artannot.ml.metrics import calibration
from artannot.project import Project
from artannot.store import models as model_store
from tests.shapes import draw_shape

GRID = {"svc__C": [1, 10], "svc__gamma": ["scale", 1e-4], "svc__kernel": ["rbf", "sigmoid"]}


def _baseline(X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folds = int(min(3, np.bincount(np.unique(y, return_inverse=True)[1]).min()))
        return GridSearchCV(make_pipeline(StandardScaler(), SVC()), GRID, cv=max(folds, 2)).fit(X, y)


def _top1(clf, X, y) -> float:
    return float((clf.classes_[clf.decision_function(X).argmax(1)] == y).mean())


def _shape_folder(root, counts: dict[str, int], seed: int, unsorted: int = 0):
    rng = random.Random(seed)
    kinds = {"circles": "circle", "squares": "square", "triangles": "triangle"}
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            draw_shape(kinds[name], rng).save(root / name / f"{name}_{i:03d}.png")
    if unsorted:
        (root / "unsorted").mkdir()
        for i in range(unsorted):
            draw_shape(list(kinds.values())[i % 3], rng).save(root / "unsorted" / f"u_{i}.png")
    return root


@pytest.mark.slow
def test_the_reported_small_shape_collection_is_not_confidently_wrong(tmp_path):
    """The issue's reproduction: 30 shapes (+3 unsorted), svm; 45 new shapes must not all be 'circles'."""
    root = _shape_folder(tmp_path / "imgs", {"circles": 9, "squares": 10, "triangles": 8}, seed=0, unsorted=3)
    new = _shape_folder(tmp_path / "new", {"circles": 15, "squares": 15, "triangles": 15}, seed=1)
    path = tmp_path / "p.artannot"
    with Project.create(path) as p:
        p.import_folder(root, labels_from="folder", split="auto")
        result = p.train(method="svm", device="cpu")
        est = result.metrics["estimate"]
        assert est["kind"] == "cv" and 0 <= est["std"] <= 1 and len(est["folds"]) >= 5
        files = sorted(new.rglob("*.png"))
        preds = p.predict_files(files)
    truth = [f.parent.name for f in files]
    guessed = [top[0][0] for _, top in preds]
    ours = np.mean([g == t for g, t in zip(guessed, truth, strict=True)])
    assert max(guessed.count(c) for c in set(guessed)) < 0.6 * len(guessed)  # no collapse onto one class
    # the plain scikit-learn baselines on the same features
    from artannot.ml.classify.training import gather, labelled_xy
    from artannot.ml.device import select_runtime
    from artannot.ml.features import FeatureCache, extract_features

    with Project(path) as p:
        data = gather(p.conn)
        cache = FeatureCache(p.cache_dir / "features.sqlite")
        feats, ok = extract_features(data.items, backbone="efficientnet_lite0", cache=cache,
                                     runtime=select_runtime("cpu"))
        from artannot.data.images import sha256_file

        Fn, _ = extract_features([(str(f), sha256_file(f)) for f in files], backbone="efficientnet_lite0",
                                 cache=cache, runtime=select_runtime("cpu"))
        cache.close()
        X, y = labelled_xy(data, feats, ok)
        names = data.names
    yt = np.array([{v: k for k, v in names.items()}[t] for t in truth])
    lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    baseline = max(float((lr.predict(Fn) == yt).mean()), float((_baseline(X, y).predict(Fn) == yt).mean()))
    assert ours >= baseline - 0.1, (ours, baseline)
    assert ours >= 0.75


CASES = {  # case: generated set, and how many held-out images (mean over three draws) ours may trail by
    "tiny, 3 classes of 6": (dict(n=18, k=3, weights=None), 3),
    "a class with 3 images": (dict(n=60, k=3, weights=[0.55, 0.4, 0.05]), 0),
    "a class with 1 image": (dict(n=40, k=3, weights=[0.6, 0.37, 0.03]), 1),
    "two classes": (dict(n=30, k=2, weights=None), 3),
    "8 classes, 160": (dict(n=160, k=8, weights=None), 0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_svm_matches_the_plain_sklearn_grid(case):
    """Held-out top-1 of ours against GridSearchCV(StandardScaler + SVC) on the same features, three draws.

    From 40 labelled images on, ours is at least the baseline's (less one image where a class holds a single
    image: whichever fit gets that class's test images right decides). On 18 and 30 images exact parity is
    not a property any selection can have: leave-one-out ranks ~40 settings with a resolution of one image
    and the 36-60 held-out images decide between near-equal settings by a few images either way (measured:
    ours 0.66 vs 0.71 and 0.78 vs 0.82 here, ahead on other draws; bench/svm_vs_sklearn.py --seeds 5).
    At the baseline's own setting, ours (one-vs-one) reproduces SVC's held-out top-1.
    """
    spec, slack = CASES[case]
    ours, theirs, n_test = [], [], []
    for seed in range(3):
        X, y = make_classification(n_samples=spec["n"] * 3, n_features=32, n_informative=10, n_classes=spec["k"],
                                   n_clusters_per_class=1, weights=spec["weights"], class_sep=1.3,
                                   random_state=seed)
        X, Xt, y, yt = train_test_split(X, y, train_size=spec["n"], stratify=y, random_state=seed)
        ours.append(_top1(SVMClassifier().fit(X, y), Xt, yt))
        theirs.append(float((_baseline(X, y).predict(Xt) == yt).mean()))
        n_test.append(len(yt))
    assert np.mean(ours) >= np.mean(theirs) - slack / np.mean(n_test) - 1e-9, (ours, theirs)


def test_one_vs_one_reproduces_sklearn_svc(tmp_path):
    """One-vs-one at a fixed setting is scikit-learn's SVC (same votes, same tie-breaking margins), and the
    scheme survives save/load and the torch head (saliency, ONNX)."""
    import torch

    X, y = make_classification(n_samples=400, n_features=24, n_informative=10, n_classes=6,
                               n_clusters_per_class=1, class_sep=1.0, random_state=4)
    X, Xt, y, yt = train_test_split(X, y, train_size=200, stratify=y, random_state=0)
    clf = SVMClassifier(kernels=("rbf",), Cs=(10.0,), gamma_scales=(1.0,), gammas=(), schemes=("ovo",)).fit(X, y)
    ref = SVC(kernel="rbf", C=10.0, gamma=clf.gamma_).fit(clf.scaler_.transform(X), y)
    assert np.allclose(clf.decision_function(Xt), ref.decision_function(clf.scaler_.transform(Xt)), atol=1e-6)
    assert clf.params()["scheme"] == "ovo"
    clf.save(tmp_path / "ovo.npz")
    again = SVMClassifier.load(tmp_path / "ovo.npz")
    assert again.scheme_ == "ovo" and np.allclose(again.predict_proba(Xt), clf.predict_proba(Xt))
    torch_p = again.as_torch()(torch.as_tensor(Xt, dtype=torch.float32)).double().numpy()
    assert np.abs(torch_p - again.predict_proba(Xt.astype(np.float32))).max() < 1e-6


def test_unscaled_features_with_an_absolute_gamma_are_the_published_svm(tmp_path):
    """Lagunas & Garces' RBF C=1 gamma=1e-4 on raw features: option scale=false keeps the features as they are,
    and the fit is scikit-learn's SVC(C=1, gamma=1e-4) on the raw features (not on standardised ones)."""
    X, y = make_classification(n_samples=300, n_features=24, n_informative=10, n_classes=4,
                               n_clusters_per_class=1, class_sep=1.0, random_state=7)
    X = 10.0 * X + 100.0  # raw deep features are neither centred nor unit-scaled
    X, Xt, y, yt = train_test_split(X, y, train_size=150, stratify=y, random_state=0)
    clf = SVMClassifier(kernels=("rbf",), Cs=(1.0,), gamma_scales=(), gammas=(1e-4,), schemes=("ovo",),
                        scale=False).fit(X, y)
    assert clf.gamma_ == 1e-4 and clf.params()["scaled"] is False
    ref = SVC(kernel="rbf", C=1.0, gamma=1e-4).fit(X, y)
    assert np.allclose(clf.decision_function(Xt), ref.decision_function(Xt), atol=1e-6)
    scaled = SVC(kernel="rbf", C=1.0, gamma=1e-4).fit(StandardScaler().fit_transform(X), y)
    assert not np.allclose(ref.decision_function(Xt), scaled.decision_function(StandardScaler().fit(X).transform(Xt)),
                           atol=1e-3)  # the distinction matters
    clf.save(tmp_path / "raw.npz")
    assert np.allclose(SVMClassifier.load(tmp_path / "raw.npz").decision_function(Xt), clf.decision_function(Xt))


def test_a_class_with_one_image_trains_and_is_scored_honestly():
    X, y = make_classification(n_samples=61, n_features=16, n_informative=8, n_classes=3,
                               n_clusters_per_class=1, class_sep=2.0, random_state=0)
    y[0] = 7  # one image of its own class
    clf = SVMClassifier().fit(X, y)
    assert 7 in clf.classes_ and clf.cv_top1_ > 0.8
    assert len(clf.cv_folds_) >= 3 and clf.cv_std_ is not None


def test_folds_adapt_to_tiny_classes():
    y = np.array([0] * 10 + [1] * 10 + [2] * 3)
    (loo,) = cv_splits(y)
    assert len(loo) == len(y) and all(len(te) == 1 for _, te in loo)  # leave-one-out when tiny
    y = np.array([0] * 100 + [1] * 100 + [2] * 3)
    splits = cv_splits(y)
    assert len(splits) == 3 and len(splits[0]) == 5  # repeated stratified 5-fold
    for split in splits:
        tested = np.concatenate([te for _, te in split])
        assert sorted(tested) == list(range(len(y)))


def test_small_C_collapse_is_never_chosen_and_a_hopeless_fit_is_refused():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 20))
    y = np.array([0] * 45 + [1] * 10 + [2] * 5)  # pure noise: every honest answer is the prior
    assert collapsed(np.zeros(60), y) is None  # the largest class holds 75 %: answering it is no collapse
    y2 = np.array([0] * 30 + [1] * 18 + [2] * 12)
    assert "answers one class" in collapsed(np.zeros(60), y2)
    with pytest.raises(ModelError, match="no useful SVM"):
        SVMClassifier(kernels=("rbf",), Cs=(0.001,), gammas=()).fit(X, y2)


def test_calibration_error_and_bins():
    conf = np.array([0.9] * 10 + [0.6] * 10)
    correct = np.array([True] * 9 + [False] + [True] * 3 + [False] * 7)
    cal = calibration(conf, correct)
    assert cal["ece"] == pytest.approx(0.5 * 0.0 + 0.5 * 0.3)
    assert [b["n"] for b in cal["bins"]] == [10, 10]


def test_calibrated_scores_match_their_accuracy_better_than_raw_margins():
    X, y = make_classification(n_samples=600, n_features=30, n_informative=10, n_classes=5,
                               n_clusters_per_class=1, class_sep=1.0, random_state=3)
    X, Xt, y, yt = train_test_split(X, y, train_size=300, stratify=y, random_state=0)
    clf = SVMClassifier(repeats=1).fit(X, y)  # one shuffle of 5 folds: calibrated all the same
    p = clf.predict_proba(Xt)
    ok = clf.classes_[p.argmax(1)] == yt
    from scipy.special import softmax

    raw = softmax(clf.decision_function(Xt), axis=1)
    assert calibration(p.max(1), ok)["ece"] < calibration(raw.max(1), ok)["ece"]
    assert calibration(p.max(1), ok)["ece"] < 0.1


def test_curated_labels_beat_noisy_ones_and_the_nested_estimate_sees_it():
    """Rule labels with ~30 % noise from a rule that confuses two classes, a clean human-labelled subset: the
    curated SVM wins on clean held-out images, and the nested estimate on human images ranks them so.

    (Noise spread at random over every class does not hurt an SVM fitted on 500 images as much: there the
    noisy majority wins, which is why auto chooses between the two by estimate instead of always curating.)
    """
    X, y = make_classification(n_samples=900, n_features=40, n_informative=12, n_classes=4,
                               n_clusters_per_class=1, class_sep=1.5, random_state=1)
    X, Xt, y, yt = train_test_split(X, y, train_size=500, stratify=y, random_state=0)
    rng = np.random.default_rng(0)
    noisy = y.copy()
    swap = (y < 2) & (rng.random(len(y)) < 0.6)  # the rule calls most class-0 images 1 and vice versa
    noisy[swap] = 1 - y[swap]
    assert 0.25 < (noisy != y).mean() < 0.35
    human = np.zeros(len(y), bool)
    human[rng.choice(len(y), 150, replace=False)] = True
    given = np.where(human, y, noisy)  # the curator's labels are right
    make = lambda: SVMClassifier(repeats=1, Cs=(1.0, 10.0))  # noqa: E731  (C=100 on noisy labels: slow, same answer)
    everything = _top1(make().fit(X, given), Xt, yt)
    curated = _top1(make().fit(X[human], given[human]), Xt, yt)
    assert curated > everything + 0.05, (curated, everything)
    est_all = nested_estimate(make, X, given, human=human, labels="all")
    est_cur = nested_estimate(make, X, given, human=human, labels="curated")
    assert est_all["on"] == est_cur["on"] == "human"
    assert est_cur["top1"] > est_all["top1"], (est_cur, est_all)


def test_nested_estimate_is_less_optimistic_than_the_grid_score():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(80, 30)), rng.integers(0, 4, 80)  # nothing to learn: chance is 25 %
    clf = LinearProbe(repeats=1).fit(X, y)
    est = nested_estimate(lambda: LinearProbe(repeats=1), X, y)
    assert est["kind"] == "nested cv" and len(est["folds"]) == 5
    assert est["top1"] <= clf.cv_top1_ + 1e-9 and est["top1"] < 0.45


@pytest.fixture(scope="module")
def shapes_project(tmp_path_factory):
    root = _shape_folder(tmp_path_factory.mktemp("trust") / "imgs", {"circles": 12, "squares": 12,
                                                                      "triangles": 12}, seed=2)
    path = root.parent / "p.artannot"
    with Project.create(path) as p:
        p.import_folder(root, labels_from="folder", split="auto")
    return path


def test_auto_ranks_candidates_by_an_honest_estimate_and_says_so(shapes_project, capsys):
    assert main(["train", str(shapes_project), "--method", "auto", "--budget", "240", "--device", "cpu",
                 "--option", "search_backbones=false", "--option", "adaptive=false", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    auto = out["params"]["auto"]
    methods = [c["method"] for c in auto["candidates"]]
    assert methods == ["svm", "linear", "knn"]  # about ten images a class: k-NN is a candidate
    chosen = [c for c in auto["candidates"] if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["estimate"] == max(c["estimate"] for c in auto["candidates"])
    assert out["metrics"]["estimate"]["kind"] == "nested cv"
    assert out["metrics"]["estimate"]["top1"] == chosen[0]["estimate"]
    assert "calibration" in out["metrics"] and out["metrics"]["calibration"]["ece"] is not None
    assert "honest estimate" in auto["reason"] and "adaptive+svm (turned off)" in auto["skipped"]


def test_models_activate_and_delete_from_the_cli(shapes_project, capsys):
    assert main(["train", str(shapes_project), "--method", "linear", "--device", "cpu"]) == 0
    with Project(shapes_project) as p:
        ids = [m["id"] for m in p.models()]
        best = model_store.active_model_id(p.conn)
        newest = ids[-1]
    assert main(["models", str(shapes_project), "--activate", str(ids[0])]) == 0
    with Project(shapes_project) as p:
        assert model_store.active_model_id(p.conn) == ids[0]
        assert [m["id"] for m in p.models() if m["active"]] == [ids[0]]
        files = [m["checkpoint"] for m in p.models() if m["id"] == ids[0]]
    assert main(["models", str(shapes_project), "--delete", str(ids[0])]) == 0
    capsys.readouterr()
    with Project(shapes_project) as p:
        assert ids[0] not in [m["id"] for m in p.models()]
        assert model_store.active_model_id(p.conn) in ids[1:]  # back to the best by estimate
        assert p.conn.execute("SELECT COUNT(*) FROM predictions WHERE model_id = ?", (ids[0],)).fetchone()[0] == 0
    assert all(not f or not __import__("os").path.exists(f) for f in files)
    assert best is not None and newest in ids
    assert main(["models", str(shapes_project), "--activate", "999"]) != 0
    assert "no model with id 999" in capsys.readouterr().err


def test_labels_curated_needs_human_labels(shapes_project, capsys):
    assert main(["train", str(shapes_project), "--method", "svm", "--labels", "curated", "--device", "cpu"]) != 0
    assert "human-confirmed" in capsys.readouterr().err
