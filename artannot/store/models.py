"""Which class model is active (the one whose predictions, suspects and marks the grid shows), and deleting one.

The active model is the one the curator chose (kept in `meta` under 'active_model'); without a choice, the
class model with the best honest estimate (metrics["estimate"]["top1"]: nested CV or a held-out split that
chose nothing), newer first on a tie; models without an estimate come after every model with one, newest
first. So a newer model never silently replaces a better one.

Detectors (task "detect": methods detector and patches; detect-auto stores its winner under the winner's
method) are chosen apart: the curator's choice under 'active_detector', else the one with the best stored box
mAP (metrics["map"]), newer first on a tie. A detector
is never the class model, and a class model never the detector; tag models are neither.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from artannot.errors import ModelError
from artannot.store.db import write
from artannot.store.staged import READY, erase_model, hide_model

ACTIVE_KEY = "active_model"
DETECTOR_KEY = "active_detector"
DETECT_METHODS = ("detector", "patches", "detect-auto")  # ml/detect's methods (the store does not import ml/)
TASKS = ("classify", "detect")


def model_task(method: str, params: str | dict | None) -> str:
    """The task of a stored model: recorded in its params, else known from its method."""
    if isinstance(params, str) or params is None:
        try:
            params = json.loads(params or "{}")
        except ValueError:
            params = {}
    task = params.get("task") if isinstance(params, dict) else None
    if task in ("classify", "tags", "detect"):
        return task
    if method == "tags":
        return "tags"
    return "detect" if method in DETECT_METHODS else "classify"


def _models_of(conn: sqlite3.Connection, task: str) -> list[tuple[int, dict]]:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    return [(int(r[0]), json.loads(r[3] or "{}"))
            for r in conn.execute(f"SELECT id, method, params, metrics FROM models WHERE {READY} ORDER BY id")
            if model_task(r[1], r[2]) == task]


def estimate_of(metrics: dict) -> float | None:
    """A model's honest top-1 estimate, or None when it has none."""
    est = metrics.get("estimate") or {}
    value = est.get("top1")
    return float(value) if value is not None else None


def chosen_model_id(conn: sqlite3.Connection, task: str = "classify") -> int | None:
    """The model of a task (classify or detect) the curator made active, if it still exists."""
    key = DETECTOR_KEY if task == "detect" else ACTIVE_KEY
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None or row[0] is None:
        return None
    hit = conn.execute(f"SELECT id, method, params FROM models WHERE id = ? AND {READY}", (int(row[0]),)).fetchone()
    return int(hit[0]) if hit and model_task(hit[1], hit[2]) == task else None


def active_model_id(conn: sqlite3.Connection, task: str = "classify") -> int | None:
    """The class model the grid shows (task "classify": the curator's choice, else the best by honest
    estimate), or the detector proposals come from (task "detect": the choice, else the best box mAP)."""
    chosen = chosen_model_id(conn, task)
    if chosen is not None:
        return chosen
    best, best_key = None, None
    for model_id, metrics in _models_of(conn, task):
        est = estimate_of(metrics) if task == "classify" else metrics.get("map")
        key = (est is not None, float(est) if est is not None else 0.0, model_id)
        if best_key is None or key > best_key:
            best, best_key = model_id, key
    return best


def set_active_model(conn: sqlite3.Connection, model_id: int | None) -> None:
    """Make model_id the active model (None: back to the best by estimate)."""
    with write(conn):
        if model_id is None:
            conn.execute("DELETE FROM meta WHERE key = ?", (ACTIVE_KEY,))
            return
        row = conn.execute(f"SELECT method, params FROM models WHERE id = ? AND {READY}", (model_id,)).fetchone()
        if row is None:
            raise ModelError(f"no model with id {model_id} in this project")
        task = model_task(row[0], row[1])
        if task == "tags":
            raise ModelError(f"model {model_id} is a tag model; the active model scores classes")
        key = DETECTOR_KEY if task == "detect" else ACTIVE_KEY  # a detector is chosen apart
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, str(int(model_id))))


def delete_model(conn: sqlite3.Connection, cache_dir: Path, model_id: int) -> list[Path]:
    """Delete a model with its predictions, suspects and tag scores, then its files; returns the files removed.

    Files another model still names (an `adaptive --then-svm` network reused by a later SVM) are kept.
    """
    from artannot.store.model_files import referenced_model_files

    row = conn.execute(f"SELECT id FROM models WHERE id = ? AND {READY}", (model_id,)).fetchone()
    if row is None:
        raise ModelError(f"no model with id {model_id} in this project")
    before = referenced_model_files(conn, cache_dir)
    users = [r[0] for r in conn.execute("SELECT id, params FROM models WHERE id != ?", (model_id,))
             if model_id in (json.loads(r[1] or "{}").get("predictor", {}).get("members") or [])]
    if users:
        raise ModelError(f"model {model_id} is a member of ensemble model {users[0]}; delete that one first")
    hide_model(conn, model_id)  # unlisted at once; its rows then go in short transactions (store/staged.py)
    erase_model(conn, model_id)
    removed = []
    for path in before - referenced_model_files(conn, cache_dir):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
