"""Which class model is active (the one whose predictions, suspects and marks the grid shows), and deleting one.

The active model is the one the curator chose (kept in `meta` under 'active_model'); without a choice, the
class model with the best honest estimate (metrics["estimate"]["top1"]: nested CV or a held-out split that
chose nothing), newer first on a tie; models without an estimate come after every model with one, newest
first. So a newer model never silently replaces a better one.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from artannot.errors import ModelError
from artannot.store.db import write

ACTIVE_KEY = "active_model"


def estimate_of(metrics: dict) -> float | None:
    """A model's honest top-1 estimate, or None when it has none."""
    est = metrics.get("estimate") or {}
    value = est.get("top1")
    return float(value) if value is not None else None


def chosen_model_id(conn: sqlite3.Connection) -> int | None:
    """The model the curator made active, if it still exists."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (ACTIVE_KEY,)).fetchone()
    if row is None or row[0] is None:
        return None
    hit = conn.execute("SELECT id FROM models WHERE id = ? AND method != 'tags'", (int(row[0]),)).fetchone()
    return int(hit[0]) if hit else None


def active_model_id(conn: sqlite3.Connection) -> int | None:
    """The class model the grid shows: the curator's choice, else the best by honest estimate."""
    chosen = chosen_model_id(conn)
    if chosen is not None:
        return chosen
    best, best_key = None, None
    for model_id, metrics in conn.execute("SELECT id, metrics FROM models WHERE method != 'tags'"):
        est = estimate_of(json.loads(metrics or "{}"))
        key = (est is not None, est if est is not None else 0.0, model_id)
        if best_key is None or key > best_key:
            best, best_key = int(model_id), key
    return best


def set_active_model(conn: sqlite3.Connection, model_id: int | None) -> None:
    """Make model_id the active model (None: back to the best by estimate)."""
    with write(conn):
        if model_id is None:
            conn.execute("DELETE FROM meta WHERE key = ?", (ACTIVE_KEY,))
            return
        row = conn.execute("SELECT method FROM models WHERE id = ?", (model_id,)).fetchone()
        if row is None:
            raise ModelError(f"no model with id {model_id} in this project")
        if row[0] == "tags":
            raise ModelError(f"model {model_id} is a tag model; the active model scores classes")
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (ACTIVE_KEY, str(int(model_id))))


def delete_model(conn: sqlite3.Connection, cache_dir: Path, model_id: int) -> list[Path]:
    """Delete a model with its predictions, suspects and tag scores, then its files; returns the files removed.

    Files another model still names (an `adaptive --then-svm` network reused by a later SVM) are kept.
    """
    from artannot.store.model_files import referenced_model_files

    row = conn.execute("SELECT id FROM models WHERE id = ?", (model_id,)).fetchone()
    if row is None:
        raise ModelError(f"no model with id {model_id} in this project")
    before = referenced_model_files(conn, cache_dir)
    users = [r[0] for r in conn.execute("SELECT id, params FROM models WHERE id != ?", (model_id,))
             if model_id in (json.loads(r[1] or "{}").get("predictor", {}).get("members") or [])]
    if users:
        raise ModelError(f"model {model_id} is a member of ensemble model {users[0]}; delete that one first")
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    with write(conn):
        for table in ("predictions", "suspects", "tag_predictions"):
            if table in tables:
                conn.execute(f"DELETE FROM {table} WHERE model_id = ?", (model_id,))
        if "proposals" in tables:
            from artannot.store.proposals import forget_model

            forget_model(conn, model_id)
        conn.execute("DELETE FROM models WHERE id = ?", (model_id,))
        conn.execute("DELETE FROM meta WHERE key = ? AND value = ?", (ACTIVE_KEY, str(model_id)))
    removed = []
    for path in before - referenced_model_files(conn, cache_dir):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
