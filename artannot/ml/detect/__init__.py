"""Detection: boxes of the project's classes in images (musical instruments in paintings).

`TASK` is what ml/tasks.py dispatches to; the heavy modules load only when a run starts.
"""

from __future__ import annotations

from artannot.ml.task import Task

METHODS = {
    "detector": "Faster R-CNN on a feature pyramid over the backbone, trained on the curator's boxes",
    "patches": "cold start for few boxes: box crops vs mined background, features + SVM over region proposals",
}


def _train(*args, **kwargs):
    from artannot.ml.detect.train import train_detect

    return train_detect(*args, **kwargs)


def _evaluate(conn, cache_dir, row, split="test"):
    from artannot.ml.detect.evaluate import evaluate_detector

    return evaluate_detector(conn, cache_dir, row, split)


TASK = Task("detect", METHODS, _train, _evaluate)
