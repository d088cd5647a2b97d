"""Tags: several labels per image (multi-label), a sigmoid head on deep features (Illustration2Vec).

`TASK` is what ml/tasks.py dispatches to; the heavy modules load only when a run starts.
"""

from __future__ import annotations

from artannot.ml.task import Task

METHODS = {"tags": "multi-label tag model: a sigmoid head (BCE) on deep features, one threshold per tag"
                   " (--finetune: the network itself fine-tuned on the tags)"}


def _train(*args, **kwargs):
    from artannot.ml.tags.train import train_tags

    return train_tags(*args, **kwargs)


def _evaluate(conn, cache_dir, row, split="test"):
    from artannot.ml.tags.train import evaluate_tag_model

    return evaluate_tag_model(conn, row, split)


TASK = Task("tags", METHODS, _train, _evaluate)
