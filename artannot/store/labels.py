"""Labels with append-only history, and undo/redo that survives restarts."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from artannot.store.db import now, write

SOURCES = ("human", "rule", "import", "model")
# Labels a model may learn from: everything a person or a rule decided, never a model's own guess.
TRAINABLE_SOURCES = ("human", "rule", "import")


@dataclass(frozen=True)
class LabelChange:
    """One image's label before and after an edit."""

    image_id: int
    class_id: int | None
    source: str
    detail: str | None = None
    confidence: float | None = None


@dataclass(frozen=True)
class Event:
    """An undoable edit: what it was and how many images it touched."""

    id: int
    kind: str
    description: str
    n_changes: int


def new_event(conn: sqlite3.Connection, kind: str, source: str, description: str) -> int:
    """Record a new edit; it drops the redo stack like any editor does."""
    conn.execute("UPDATE events SET state = 'dropped' WHERE state = 'undone'")
    cur = conn.execute(
        "INSERT INTO events(kind, source, description, created_at) VALUES (?, ?, ?, ?)",
        (kind, source, description, now()),
    )
    return int(cur.lastrowid)


def apply_labels(
    conn: sqlite3.Connection,
    changes: Iterable[LabelChange],
    *,
    description: str,
    protect_human: bool = False,
    event_id: int | None = None,
) -> int | None:
    """Set labels in one committed, undoable event; returns the event id, or None if nothing changed.

    With protect_human, images whose current label was set by a person are left alone (re-imports and
    rules never overwrite a curator's decision). Passing event_id adds the changes to an edit already
    recorded, so a long import stays one undo step while committing in batches.
    """
    changes = list(changes)
    if not changes:
        return None
    for ch in changes:
        if ch.source not in SOURCES:
            raise ValueError(f"unknown label source {ch.source!r}")
    with write(conn):
        current = current_labels_for(conn, [c.image_id for c in changes])
        todo = []
        for ch in changes:
            cur = current.get(ch.image_id)
            if cur is not None:
                if protect_human and cur["source"] == "human":
                    continue
                if cur["class_id"] == ch.class_id and cur["source"] == ch.source:
                    continue
            elif ch.class_id is None:
                continue
            todo.append((ch, cur))
        if not todo:
            return None
        if event_id is None:
            event_id = new_event(conn, "label", todo[0][0].source, description)
        stamp = now()
        old_ids = [cur["id"] for _, cur in todo if cur is not None]
        conn.executemany("UPDATE labels SET active = 0 WHERE id = ?", [(i,) for i in old_ids])
        conn.executemany(
            "INSERT INTO labels(image_id, class_id, source, confidence, detail, event_id, replaces_id,"
            " active, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)",
            [
                (ch.image_id, ch.class_id, ch.source, ch.confidence, ch.detail, event_id,
                 cur["id"] if cur is not None else None, stamp)
                for ch, cur in todo
            ],
        )
    return event_id


def set_label(
    conn: sqlite3.Connection, image_ids: Sequence[int], class_id: int | None, *, source: str = "human"
) -> int | None:
    """A curator's edit: give these images one class (None clears the label)."""
    n = len(image_ids)
    what = "clear label" if class_id is None else f"set label of {n} image{'s' if n != 1 else ''}"
    return apply_labels(
        conn, [LabelChange(i, class_id, source) for i in image_ids], description=what
    )


def current_labels_for(conn: sqlite3.Connection, image_ids: Sequence[int]) -> dict[int, sqlite3.Row]:
    """The active label row of each given image that has one."""
    out: dict[int, sqlite3.Row] = {}
    ids = list(dict.fromkeys(image_ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(
            f"SELECT * FROM labels WHERE active = 1 AND image_id IN ({marks})", chunk
        ):
            out[row["image_id"]] = row
    return out


def label_history(conn: sqlite3.Connection, image_id: int) -> list[sqlite3.Row]:
    """Every label this image ever had, oldest first, with who set it and whether it is current."""
    return conn.execute(
        "SELECT l.*, c.name AS class_name, e.description, e.state FROM labels l"
        " LEFT JOIN classes c ON c.id = l.class_id JOIN events e ON e.id = l.event_id"
        " WHERE l.image_id = ? ORDER BY l.id",
        (image_id,),
    ).fetchall()


def _boxes():
    """The box store, imported late: it builds on this module, and both share one undo stack."""
    from artannot.store import boxes

    return boxes


def _event(conn: sqlite3.Connection, row: sqlite3.Row) -> Event:
    from artannot.store import tags

    n = conn.execute("SELECT COUNT(*) FROM labels WHERE event_id = ?", (row["id"],)).fetchone()[0]
    from artannot.store import proposals

    n += _boxes().count_for_event(conn, row["id"]) + tags.count_for_event(conn, row["id"])
    if not n:  # a rejection changes no box: count the proposals it reviewed
        n = proposals.count_for_event(conn, row["id"])
    return Event(row["id"], row["kind"], row["description"], n)


def _swap_labels(conn: sqlite3.Connection, event_id: int, *, undo: bool) -> None:
    """Switch an event's label rows off and the rows they replaced on (undo), or the reverse (redo)."""
    rows = conn.execute("SELECT id, replaces_id FROM labels WHERE event_id = ?", (event_id,)).fetchall()
    new = [(r["id"],) for r in rows]
    old = [(r["replaces_id"],) for r in rows if r["replaces_id"] is not None]
    off, on = (new, old) if undo else (old, new)  # off first: one active label per image at every step
    conn.executemany("UPDATE labels SET active = 0 WHERE id = ?", off)
    conn.executemany("UPDATE labels SET active = 1 WHERE id = ?", on)


def undo(conn: sqlite3.Connection) -> Event | None:
    """Undo the most recent edit still in effect; None when there is nothing to undo."""
    with write(conn):
        row = conn.execute("SELECT * FROM events WHERE state = 'done' ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        _swap_labels(conn, row["id"], undo=True)
        _boxes().revert_event(conn, row["id"])
        conn.execute("UPDATE events SET state = 'undone' WHERE id = ?", (row["id"],))
        return _event(conn, row)


def redo(conn: sqlite3.Connection) -> Event | None:
    """Redo the edit undone last; None when there is nothing to redo."""
    with write(conn):
        row = conn.execute("SELECT * FROM events WHERE state = 'undone' ORDER BY id ASC LIMIT 1").fetchone()
        if row is None:
            return None
        _swap_labels(conn, row["id"], undo=False)
        _boxes().reapply_event(conn, row["id"])
        conn.execute("UPDATE events SET state = 'done' WHERE id = ?", (row["id"],))
        return _event(conn, row)


def can_undo(conn: sqlite3.Connection) -> bool:
    """Whether an edit is there to undo."""
    return conn.execute("SELECT 1 FROM events WHERE state = 'done' LIMIT 1").fetchone() is not None


def can_redo(conn: sqlite3.Connection) -> bool:
    """Whether an undone edit is there to redo."""
    return conn.execute("SELECT 1 FROM events WHERE state = 'undone' LIMIT 1").fetchone() is not None
