"""Detection: boxes of the project's classes in images (musical instruments in paintings).

`TASK` is what ml/tasks.py dispatches to; the heavy modules load only when a run starts.
"""

from __future__ import annotations

from artannot.ml.task import Task

METHODS = {
    "detector": "Faster R-CNN on a feature pyramid over the backbone, trained on the curator's boxes",
    "patches": "cold start for few boxes: box crops vs mined background, features + SVM over region proposals",
    "detect-auto": "detector or patches, whichever has the better box mAP on held-out training images"
                   " (patches alone below the detector's 8 boxes); stored as the winner",
}


def _train(conn, cache_dir, req, **kwargs):
    if req.method == "detect-auto":
        from artannot.ml.detect.auto import train_detect_auto

        return train_detect_auto(conn, cache_dir, req, **kwargs)
    from artannot.ml.detect.train import train_detect

    return train_detect(conn, cache_dir, req, **kwargs)


def _evaluate(conn, cache_dir, row, split="test"):
    from artannot.ml.detect.evaluate import evaluate_detector

    return evaluate_detector(conn, cache_dir, row, split)


TASK = Task("detect", METHODS, _train, _evaluate)
