"""Classification: one class per image, from features + SVM or linear probe to fine-tuned networks and auto.

`TASK` is what ml/tasks.py dispatches to; the heavy modules load only when a run starts.
"""

from __future__ import annotations

from artannot.ml.task import Task

METHODS = {
    "svm": "SVM on deep features (one-vs-rest or one-vs-one, kernel, C, gamma by cross-validation)",
    "linear": "logistic-regression probe on frozen deep features",
    "finetune": "fine-tune the whole network",
    "adaptive": "adapt the low layers on the (noisy) train split, then classify",
    "frozen": "train the head on a frozen backbone",
    "double": "fine-tune twice: on the noisy labels, then on the curated ones",
    "ensemble": "average the scores of stored models (--models)",
    "baseline": "ImageNet classes mapped to the project's (--mapping)",
    "auto": "the one-click default: candidates ranked by an honest estimate within a time budget",
}


def _train(*args, **kwargs):
    from artannot.ml.classify.methods import train_classify

    return train_classify(*args, **kwargs)


def _evaluate(conn, cache_dir, row, split="test"):
    from artannot.ml.classify.training import evaluate_model

    return evaluate_model(conn, cache_dir, row, split)


TASK = Task("classify", METHODS, _train, _evaluate)
