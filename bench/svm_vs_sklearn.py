#!/usr/bin/env python3
"""ArtAnnot's SVM (and its suspects) beside the plain scikit-learn / cleanlab baselines, in the same run.

    python bench/svm_vs_sklearn.py                      # the bundled demo + generated sets
    python bench/svm_vs_sklearn.py --seeds 5            # each generated set drawn 5 times, with means
    python bench/svm_vs_sklearn.py --collection DIR     # also a folder of class folders (e.g. clipart21,
                                                        # built by bench/clipart_collection.py)

For each collection: the project's deterministic 80/20 split, EfficientNet-Lite0 features (ArtAnnot's
extractor, cached), then on the same features
  * ours: `SVMClassifier().fit` (what `artannot train --method svm` fits: one-vs-rest or one-vs-one,
    kernel, C, gamma by repeated stratified CV)
  * baseline: GridSearchCV(make_pipeline(StandardScaler(), SVC()), C in {1, 10}, gamma scale or 1e-4,
    rbf or sigmoid, 3-fold) — the plain scikit-learn way
and the held-out top-1 of both and their ratio (ours / baseline). Suspects: 20 % of the train labels
flipped at random; the share of flipped images in the top 20 % of ArtAnnot's ranking (out-of-fold SVM
probabilities) beside cleanlab's find_label_issues on 5-fold logistic-regression probabilities.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.special import softmax
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_predict, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from artannot.ml.classify.classifiers import SVMClassifier  # noqa: E402
from artannot.ml.classify.suspects import found_in_top, score_labels  # noqa: E402

GRID = {"svc__C": [1, 10], "svc__gamma": ["scale", 1e-4], "svc__kernel": ["rbf", "sigmoid"]}


def demo_dir() -> Path:
    root = Path(__file__).resolve().parents[1]
    for cand in (root / "artannot" / "resources" / "demo", root / "resources" / "demo"):
        if cand.is_dir():
            return cand
    raise SystemExit("the bundled demo collection is missing")


def collection_features(folder: Path, work: Path):
    """(X_train, y_train, X_test, y_test) of a folder of class folders, through a real project."""
    from artannot.ml.classify.training import gather, labelled_xy
    from artannot.ml.device import select_runtime
    from artannot.ml.features import FeatureCache, extract_features
    from artannot.project import Project

    path = work / f"{folder.name}.artannot"
    with Project.create(path) as p:
        p.import_folder(folder, labels_from="folder", split="auto")
        data = gather(p.conn)
        cache = FeatureCache(p.cache_dir / "features.sqlite")
        feats, ok = extract_features(data.items, backbone="efficientnet_lite0", cache=cache,
                                     runtime=select_runtime("cpu"))
        cache.close()
        X, y = labelled_xy(data, feats, ok)
        test = [(i, pth, s, data.test[i]) for i, pth, s in data.everything if i in data.test]
        Xt, yt = labelled_xy(data, feats, ok, test)
    return X, y, Xt, yt


def generated_sets(seed: int = 0):
    """Small generated feature sets, including tiny and imbalanced ones (seed 0: the sets of earlier runs)."""
    out = {}
    for name, n, k, weights in (("generated 4 classes, 60", 60, 4, None),
                                ("generated imbalanced (a class of 3)", 80, 4, [0.5, 0.3, 0.16, 0.04]),
                                ("generated two classes, 30", 30, 2, None),
                                ("generated 10 classes, 300", 300, 10, None)):
        X, y = make_classification(n_samples=n * 2, n_features=64, n_informative=16, n_classes=k,
                                   n_clusters_per_class=1, weights=weights, class_sep=1.2,
                                   random_state=k + n + 100 * seed)
        X, Xt, y, yt = train_test_split(X, y, test_size=0.5, stratify=y, random_state=seed)
        out[name if seed == 0 else f"{name} #{seed}"] = (X, y, Xt, yt)
    return out


def compare(name: str, X, y, Xt, yt) -> dict:
    t = time.perf_counter()
    ours = SVMClassifier().fit(X, y)
    ours_s = time.perf_counter() - t
    ours_top1 = float((ours.classes_[ours.decision_function(Xt).argmax(1)] == yt).mean())
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = GridSearchCV(make_pipeline(StandardScaler(), SVC()), GRID, cv=3).fit(X, y)
    base_s = time.perf_counter() - t
    base_top1 = float((base.predict(Xt) == yt).mean())
    return {"set": name, "train": len(y), "test": len(yt), "classes": len(np.unique(y)), "ours": ours_top1,
            "baseline": base_top1, "ratio": ours_top1 / max(base_top1, 1e-9), "ours_s": ours_s, "base_s": base_s,
            "chosen": f"{ours.scheme_} {ours.kernel_} C={ours.C_:g}", "cv": f"{ours.cv_top1_:.1%} ± {ours.cv_std_:.1%}"}


def suspects(name: str, X, y, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    yi = np.searchsorted(classes, y)
    flipped = np.zeros(len(y), bool)
    flipped[rng.choice(len(y), round(0.2 * len(y)), replace=False)] = True
    noisy = yi.copy()
    noisy[flipped] = (yi[flipped] + rng.integers(1, len(classes), flipped.sum())) % len(classes)
    clf = SVMClassifier().fit(X, noisy)
    probs = softmax(clf.temperature_ * clf.oof_decision_, axis=1)
    ours = found_in_top(score_labels(probs, noisy).order, flipped)
    from cleanlab.filter import find_label_issues

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), X, noisy, cv=5,
                               method="predict_proba")
        ranked = find_label_issues(noisy, lr, return_indices_ranked_by="self_confidence", n_jobs=1)
    rest = [i for i in np.argsort(lr[np.arange(len(noisy)), noisy]) if i not in set(ranked)]
    theirs = found_in_top(np.concatenate([ranked, np.array(rest, dtype=int)]), flipped)
    return {"set": name, "ours": ours, "cleanlab": theirs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", type=Path, action="append", default=[])
    ap.add_argument("--no-demo", action="store_true")
    ap.add_argument("--seeds", type=int, default=1,
                    help="draw each generated set this many times and also report the mean (default 1)")
    args = ap.parse_args()
    sets = {}
    with tempfile.TemporaryDirectory() as work:
        folders = ([] if args.no_demo else [demo_dir()]) + args.collection
        for folder in folders:
            print(f"extracting features of {folder} …", flush=True)
            sets[f"{folder.name} (real)"] = collection_features(folder, Path(work))
    for seed in range(args.seeds):
        sets.update(generated_sets(seed))
    rows = [compare(name, *data) for name, data in sets.items()]
    print(f"\n{'set':<38} {'train':>5} {'test':>5} {'cls':>4} {'ours':>7} {'sklearn':>8} {'ratio':>6}"
          f" {'ours s':>7} {'skl s':>6}  chosen / cv")
    for r in rows:
        print(f"{r['set']:<38} {r['train']:>5} {r['test']:>5} {r['classes']:>4} {r['ours']:>7.1%} {r['baseline']:>8.1%}"
              f" {r['ratio']:>6.2f} {r['ours_s']:>7.1f} {r['base_s']:>6.1f}  {r['chosen']} / {r['cv']}")
    if args.seeds > 1:
        print(f"\nmean over {args.seeds} draws of each generated set")
        for base in generated_sets():
            group = [r for r in rows if r["set"] == base or r["set"].startswith(base + " #")]
            ours, theirs = np.mean([r["ours"] for r in group]), np.mean([r["baseline"] for r in group])
            print(f"{base:<38} ours {ours:.1%}  sklearn {theirs:.1%}  ratio {ours / max(theirs, 1e-9):.2f}"
                  f"  (below on {sum(r['ours'] < r['baseline'] - 1e-9 for r in group)} of {len(group)})")
    print("\nsuspects: share of 20 % random flips found in the top 20 %")
    for name, (X, y, _, _) in sets.items():
        if len(y) >= 100 and "#" not in name:
            r = suspects(name, X, y)
            print(f"{name:<38} ours {r['ours']:.1%}   cleanlab (5-fold LR) {r['cleanlab']:.1%}")


if __name__ == "__main__":
    main()
