"""A model's rows written, and erased, in short transactions while no reader lists the model (schema 8).

A model with top-5 predictions and suspect scores for 100k images is 600k rows: in one transaction that held
the project's write lock for about 5 s, so a label a curator wrote meanwhile (the window commits every edit at
once) froze the window for as long. Instead the model row is first written with `models.pending` set to the
writing process's id; every reader that lists models (the active model, `models`, the Models view, the
newest tag model, analysis) skips pending rows, and a pending model's id is never handed out. Its rows then
go in transactions of CHUNK_ROWS (a few milliseconds each: a label write waits for one chunk at most), and
one last short transaction fills in its figures and clears `pending`: the model appears whole, or not at all.

Deleting a big model is the same in reverse: hidden first, its rows erased in chunks, the row last.

A writer that dies mid-way (a crash, a kill, a power cut) leaves a pending row and some of its rows, which
nothing reads. The next writer erases them (`clear_abandoned`): pending models whose process is gone, or
that are older than a day (the process id may have been reused).
"""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from itertools import islice

from artannot.errors import Cancelled
from artannot.store.db import now, write

CHUNK_ROWS = 2000  # rows per transaction
ABANDONED_AFTER_S = 24 * 3600.0
ROW_TABLES = ("predictions", "suspects", "tag_predictions")  # a model's rows, keyed (model_id, image_id, ...)
READY = "pending IS NULL"  # the condition every reader that lists models adds


def create_pending_schema(conn: sqlite3.Connection) -> None:
    """Schema 8: models.pending (NULL: whole; otherwise the id of the process writing or erasing it)."""
    if "pending" not in {r[1] for r in conn.execute("PRAGMA table_info(models)")}:  # re-runnable
        conn.execute("ALTER TABLE models ADD COLUMN pending INTEGER")


def write_model(conn: sqlite3.Connection, *, backbone: str, method: str, classes: Iterable[int], params: str,
                parts: Sequence[tuple[str, Sequence[tuple]]], metrics: str, checkpoint: str | None,
                cancel: threading.Event | None = None, progress=None, stage: str = "saving") -> int:
    """A whole model: its row, then each (INSERT sql, rows without the model id) part in short transactions,
    then its figures; erased again if anything fails or is cancelled. Returns the model id."""
    model_id = begin_model(conn, backbone=backbone, method=method, classes=classes, params=params)
    try:
        total, done = sum(len(rows) for _, rows in parts), 0
        for sql, rows in parts:
            step = None if progress is None else (lambda k, _n, s, base=done: progress(base + k, total, s))
            done += add_rows(conn, sql, ((model_id, *r) for r in rows), cancel=cancel, progress=step,
                             total=total, stage=stage)
        finish_model(conn, model_id, metrics=metrics, checkpoint=checkpoint)
    except BaseException:
        with contextlib.suppress(Exception):  # a full disk may refuse this too: the next writer clears it
            erase_model(conn, model_id)
        raise
    return model_id


def begin_model(conn: sqlite3.Connection, *, backbone: str, method: str, classes: Iterable[int],
                params: str) -> int:
    """A new model row no reader lists yet; fill it with add_rows, show it with finish_model."""
    clear_abandoned(conn)
    with write(conn):
        cur = conn.execute(
            "INSERT INTO models(backbone, method, classes, params, created_at, pending) VALUES (?, ?, ?, ?, ?, ?)",
            (backbone, method, json.dumps([int(c) for c in classes]), params, now(), os.getpid()))
        return int(cur.lastrowid)


def add_rows(conn: sqlite3.Connection, sql: str, rows: Iterable[tuple], *, chunk: int | None = None,
             cancel: threading.Event | None = None, progress=None, total: int = 0, stage: str = "saving") -> int:
    """executemany(sql) over rows, CHUNK_ROWS per transaction; a set cancel stops between two. Returns rows."""
    it, done, chunk = iter(rows), 0, chunk or CHUNK_ROWS
    while batch := list(islice(it, chunk)):
        with write(conn):
            conn.executemany(sql, batch)
        done += len(batch)
        if progress is not None and total:
            progress(min(done, total), total, stage)
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled while saving")
    return done


def finish_model(conn: sqlite3.Connection, model_id: int, *, metrics: str, checkpoint: str | None) -> None:
    """The model's figures and file, and it is listed from now on (one short transaction)."""
    with write(conn):
        conn.execute("UPDATE models SET metrics = ?, checkpoint = COALESCE(?, checkpoint), pending = NULL"
                     " WHERE id = ?", (metrics, checkpoint, model_id))


def hide_model(conn: sqlite3.Connection, model_id: int) -> None:
    """Unlist a model before erasing it (inside or outside a transaction): not active, pending."""
    from artannot.store.models import ACTIVE_KEY, DETECTOR_KEY

    with write(conn):
        conn.execute("UPDATE models SET pending = ? WHERE id = ?", (os.getpid(), model_id))
        conn.execute("DELETE FROM meta WHERE key IN (?, ?) AND value = ?", (ACTIVE_KEY, DETECTOR_KEY, str(model_id)))


def erase_model(conn: sqlite3.Connection, model_id: int) -> None:
    """Delete a hidden (pending) model: its rows about CHUNK_ROWS per transaction (whole images), then its
    proposals and box checks and the row itself in one last one."""
    from artannot.store.proposals import forget_model

    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table in ROW_TABLES:
        if table not in tables:
            continue
        after = -1
        while True:
            row = conn.execute(f"SELECT image_id FROM {table} WHERE model_id = ? AND image_id > ?"  # noqa: S608
                               f" ORDER BY image_id LIMIT 1 OFFSET {CHUNK_ROWS - 1}", (model_id, after)).fetchone()
            with write(conn):
                if row is None:  # the last images
                    conn.execute(f"DELETE FROM {table} WHERE model_id = ? AND image_id > ?", (model_id, after))  # noqa: S608
                    break
                conn.execute(f"DELETE FROM {table} WHERE model_id = ? AND image_id > ? AND image_id <= ?",  # noqa: S608
                             (model_id, after, row[0]))
            after = int(row[0])
    with write(conn):
        if "proposals" in tables:
            forget_model(conn, model_id)
        conn.execute("DELETE FROM models WHERE id = ?", (model_id,))


def _alive(pid: int) -> bool:
    if os.name != "posix":  # no cheap, harmless probe: trust the age alone
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _age_s(created_at: str) -> float:
    try:
        then = calendar.timegm(time.strptime(created_at[:19], "%Y-%m-%dT%H:%M:%S"))  # stored in UTC
    except (ValueError, TypeError):
        return ABANDONED_AFTER_S + 1
    return time.time() - then


def clear_abandoned(conn: sqlite3.Connection) -> list[int]:
    """Erase the pending models no live writer will finish; returns their ids."""
    gone = []
    for model_id, pid, created_at in conn.execute("SELECT id, pending, created_at FROM models"
                                                  " WHERE pending IS NOT NULL").fetchall():
        if (pid != os.getpid() and not _alive(int(pid))) or _age_s(created_at) > ABANDONED_AFTER_S:
            erase_model(conn, int(model_id))
            gone.append(int(model_id))
    return gone
