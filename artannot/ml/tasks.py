"""The task registry: every training method belongs to one task (classify, tags, detect), and runs, model
listings and evaluations are dispatched to it by name, with no special case here or in the callers.

This module sits on top of ml/: it imports the tasks (each one light until a run starts); the tasks import
only ml/task.py and the shared modules beneath it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from artannot.errors import ModelError
from artannot.ml import classify, detect, tags
from artannot.ml.task import Progress, Task, TrainRequest, TrainResult
from artannot.store.model_files import project_cache_dir, resolve_model_file
from artannot.store.models import model_task
from artannot.store.staged import READY

TASKS: dict[str, Task] = {t.name: t for t in (classify.TASK, tags.TASK, detect.TASK)}


def methods() -> dict[str, str]:
    """Every method name with its one-line description, task by task."""
    return {m: d for t in TASKS.values() for m, d in t.methods.items()}


def task_of(method: str) -> Task:
    """The task a method belongs to."""
    for t in TASKS.values():
        if method in t.methods:
            return t
    raise ModelError(f"unknown method {method!r}; choose one of: {', '.join(methods())}")


def task_of_model(row: sqlite3.Row) -> Task:
    """The task of a stored model: recorded in its params, else known from its method (store/models.py)."""
    return TASKS[model_task(row["method"], row["params"])]


def train(conn: sqlite3.Connection, cache_dir: Path, req: TrainRequest, *, device: str = "auto",
          progress: Progress | None = None, cancel: threading.Event | None = None) -> TrainResult | None:
    """Run a method of any task and store what it made (None only on the non-zero ranks of a torchrun job)."""
    if req.epochs is not None and req.epochs < 1:
        raise ModelError("--epochs must be at least 1")
    return task_of(req.method).train(conn, Path(cache_dir), req, device=device, progress=progress, cancel=cancel)


def evaluate(conn: sqlite3.Connection, cache_dir: Path, row: sqlite3.Row, split: str | None = "test") -> dict:
    """A stored model's figures on a split, as its task measures them (`evaluate --json`)."""
    result = task_of_model(row).evaluate(conn, Path(cache_dir), row, split)
    result.setdefault("model", row["id"])
    result.setdefault("split", split)
    return result


def list_models(conn: sqlite3.Connection) -> list[dict]:
    """Every stored model with its headline numbers, oldest first (the `models` command's table)."""
    from artannot.store.models import active_model_id

    active = {active_model_id(conn), active_model_id(conn, task="detect")} - {None}
    out = []
    cache_dir = project_cache_dir(conn)
    for r in conn.execute("SELECT id, backbone, method, params, metrics, checkpoint, created_at FROM models"
                          f" WHERE {READY} ORDER BY id"):
        params, metrics = json.loads(r["params"] or "{}"), json.loads(r["metrics"] or "{}")
        out.append({
            "id": r["id"], "task": task_of_model(r).name, "method": r["method"], "backbone": r["backbone"], "created_at": r["created_at"],
            "chosen": params.get("chosen"), "summary": params.get("summary", ""),
            "top1": metrics.get("top1"), "top5": metrics.get("top5"), "macro_f1": metrics.get("macro_f1"),
            "map": metrics.get("map"), "estimate": (metrics.get("estimate") or {}).get("top1"),
            "estimate_std": (metrics.get("estimate") or {}).get("std"),
            "estimate_kind": (metrics.get("estimate") or {}).get("kind"),
            "ece": (metrics.get("calibration") or {}).get("ece"),
            "n": metrics.get("n"), "seconds": metrics.get("seconds"), "epochs": len(metrics.get("curves", [])),
            "checkpoint": str(resolve_model_file(cache_dir, r["checkpoint"])) if r["checkpoint"] else None,
            "active": r["id"] in active,
        })
    return out
