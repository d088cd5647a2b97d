"""Suspect ranking: confident learning finds injected label noise, and training stores it per model."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.datasets import make_classification

from artannot.cli import main
from artannot.ml.classify.classifiers import SVMClassifier
from artannot.ml.classify.suspects import class_thresholds, found_in_top, score_labels
from artannot.project import Project
from artannot.store import labels as L
from artannot.store import queries
from tests.shapes import make_shape_collection

NOISE = 0.2


def _flip(y: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """y with NOISE of its labels moved to a uniformly drawn other class; and which ones moved."""
    flipped = np.zeros(len(y), bool)
    flipped[rng.choice(len(y), round(NOISE * len(y)), replace=False)] = True
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, k, flipped.sum())) % k
    return noisy, flipped


def test_thresholds_are_per_class_mean_self_confidence_and_an_empty_class_is_never_met():
    probs = np.array([[0.9, 0.1, 0.0], [0.7, 0.3, 0.0], [0.4, 0.6, 0.0], [0.2, 0.8, 0.0]])
    t = class_thresholds(probs, np.array([0, 0, 1, 1]))
    assert np.allclose(t[:2], [0.8, 0.7]) and t[2] > 1.0  # a probability of exactly 1.0 cannot meet it


def _noisy_probs(seed: int, n: int = 400, k: int = 6):
    """Out-of-fold logistic probabilities of a generated set with 20 % of its labels flipped."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    X, y = make_classification(n_samples=n, n_features=20, n_informative=10, n_classes=k,
                               n_clusters_per_class=1, class_sep=1.5, random_state=seed)
    noisy, flipped = _flip(y, k, np.random.default_rng(seed))
    probs = cross_val_predict(LogisticRegression(max_iter=2000), X, noisy, cv=5, method="predict_proba")
    return probs, noisy, flipped


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flags_are_cleanlabs_on_the_same_probabilities(seed):
    from cleanlab.filter import find_label_issues

    probs, noisy, _ = _noisy_probs(seed)
    res = score_labels(probs, noisy)
    ref = find_label_issues(noisy, probs, n_jobs=1)
    assert res.flagged.sum() > 10
    assert (res.flagged == (ref & (probs.argmax(1) != noisy))).all()
    # an image whose given label is the model's top guess is never flagged (cleanlab's last step)
    assert not res.flagged[probs.argmax(1) == noisy].any()


def test_ranking_finds_as_many_flips_as_cleanlab():
    """Share of the flipped labels in the top 20 %: ours beside cleanlab's own ranking, same probabilities."""
    from cleanlab.filter import find_label_issues

    for seed in (0, 1, 2):
        probs, noisy, flipped = _noisy_probs(seed)
        ours = found_in_top(score_labels(probs, noisy).order, flipped)
        ranked = find_label_issues(noisy, probs, return_indices_ranked_by="normalized_margin", n_jobs=1)
        rest = np.setdiff1d(np.arange(len(noisy)), ranked)
        theirs = found_in_top(np.concatenate([ranked, rest]), flipped)
        assert ours >= theirs - 1e-9, (seed, ours, theirs)


def test_unreliable_rows_are_ranked_but_never_flagged():
    probs, noisy, _ = _noisy_probs(0)
    reliable = np.arange(len(noisy)) % 2 == 0
    res = score_labels(probs, noisy, reliable=reliable)
    assert res.flagged.any() and not res.flagged[~reliable].any()


def test_recovers_injected_noise_from_out_of_fold_svm_scores():
    """20 % random label noise on a clean generated set: most flips rank in the top 20 %."""
    shares = []
    for seed in (0, 1):
        X, y = make_classification(n_samples=500, n_features=24, n_informative=12, n_classes=5,
                                   n_clusters_per_class=1, class_sep=2.0, random_state=seed)
        noisy, flipped = _flip(y, 5, np.random.default_rng(seed))
        clf = SVMClassifier(kernels=("rbf",), Cs=(1.0, 10.0), gamma_scales=(1.0,), gammas=()).fit(X, noisy)
        res = score_labels(softmax(clf.temperature_ * clf.oof_decision_, axis=1), noisy)
        shares.append(found_in_top(res.order, flipped, NOISE))
        assert found_in_top(res.order, flipped, 0.05) <= 0.26  # the top 5 % can hold at most a quarter
        precision = flipped[res.flagged].mean()
        assert precision >= 0.8, precision
    print(f"flipped labels found in the top 20 % (synthetic features, SVM out-of-fold): {shares}")
    assert min(shares) >= 0.8, shares


@pytest.fixture(scope="module")
def noisy_shapes(tmp_path_factory):
    """A shapes project (3 classes x 40) whose labels are 20 % randomly flipped, trained once with the SVM."""
    root = tmp_path_factory.mktemp("noisy")
    make_shape_collection(root / "images", per_class=40, seed=3)
    path = root / "noisy.artannot"
    rng = random.Random(7)
    flipped: set[int] = set()
    with Project.create(path) as p:
        p.import_folder(root / "images", labels_from="folder", split="auto")
        classes = [c.id for c in p.classes()]
        changes = []
        for row in rng.sample(p.images(), round(NOISE * 120)):
            wrong = rng.choice([c for c in classes if c != row.class_id])
            changes.append(L.LabelChange(row.id, wrong, "import"))
            flipped.add(row.id)
        L.apply_labels(p.conn, changes, description="inject noise")
        result = p.train(device="cpu")
    return path, flipped, result


def test_training_stores_suspects_that_find_the_flipped_labels(noisy_shapes):
    path, flipped, result = noisy_shapes
    with Project(path) as p:
        found = p.suspects(top=None)
        n_labelled = len(p.images())
        assert len(found) == n_labelled and [s.rank for s in found] == list(range(1, n_labelled + 1))
        train = {r.id for r in p.images() if r.split == "train"}
        assert all(s.reliable for s in found)  # train: out-of-fold; test: never trained on
        order = np.array([s.image_id for s in found])
        share = found_in_top(np.arange(len(order)), np.isin(order, list(flipped)), NOISE)
        train_order = np.array([i for i in order if i in train])
        train_share = found_in_top(np.arange(len(train_order)), np.isin(train_order, list(flipped)), NOISE)
        print(f"shapes, {len(flipped)} of {n_labelled} labels flipped: found {share:.0%} in the top 20 %"
              f" ({train_share:.0%} of the training images' flips, out-of-fold)")
        assert share >= 0.75, share  # measured 0.96 (24 flips of 120)
        top = found[0]
        assert top.flagged and top.suggested != top.label and top.label == top.current
        ids = queries.image_ids(p.conn, queries.ImageQuery(flagged=True, sort="suspect", model_id=result.model_id))
        assert ids.tolist() == [s.image_id for s in found if s.flagged]


def test_suspects_command_prints_json_and_a_table(noisy_shapes, capsys):
    path, flipped, _ = noisy_shapes
    assert main(["suspects", str(path), "--top", "5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 5 and rows[0]["rank"] == 1 and {"path", "label", "suggested", "score"} <= set(rows[0])
    assert main(["suspects", str(path), "--top", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[0].split()[:2] == ["rank", "score"]
    assert main(["suspects", str(path), "--top", "0"]) != 0


def test_suspects_command_without_a_model_says_what_to_do(demo_project, capsys):
    assert main(["suspects", str(demo_project)]) != 0
    assert "train" in capsys.readouterr().err
