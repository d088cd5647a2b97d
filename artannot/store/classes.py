"""Class edits a curator can undo: rename, merge, delete, hotkeys, and adding (or restoring) a class.

Each edit is one `events` row. Images move through `labels.apply_labels` and boxes through the box store,
both under that event; changes to the class row itself are recorded in `class_edits` (old and new value),
and triggers on `events.state` (store/migrations.py, version 2) put the old value back on undo and the new
one on redo. So the one undo stack covers labels, boxes and classes, from any program that uses it.

A deleted or merged-away class is soft-deleted (`deleted_at`): its row stays, because label history points
at it, and it is hidden from the class list while no image carries it.

A class can be negative (`classes.negative`, schema 7), e.g. "no instrument": a label like any other for
training and evaluation, but never offered as a guess. `shown_ranking` drops it from a model's ranked guesses
(the top-5 the app shows and exports) and, when it is the top guess, shows none at all; suspects never suggest
it; the detectors learn background from the images labelled with it (ml/detect/train.py).
"""

from __future__ import annotations

import re
import sqlite3

from artannot.errors import ArtAnnotError
from artannot.store import boxes as box_store
from artannot.store.db import now, write
from artannot.store.labels import LabelChange, apply_labels, new_event
from artannot.store.queries import class_counts
from artannot.store.repo import ClassInfo, check_class_length, ensure_classes

HOTKEY = re.compile(r"^([0-9a-z]|F([1-9]|1[0-2]))$")  # a digit, a lower-case letter or F1..F12


def visible_classes(conn: sqlite3.Connection) -> list[ClassInfo]:
    """Classes in display order with their image counts; deleted ones only while images still carry them."""
    counts = class_counts(conn)  # a few rows: kept by triggers (schema 9)
    rows = conn.execute("SELECT id, name, color, hotkey, deleted_at, negative FROM classes"
                        " ORDER BY position, id").fetchall()
    return [ClassInfo(r["id"], r["name"], r["color"], r["hotkey"], counts.get(r["id"], 0), bool(r["negative"]))
            for r in rows if r["deleted_at"] is None or counts.get(r["id"], 0) > 0]


def _row(conn: sqlite3.Connection, class_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM classes WHERE id = ?", (class_id,)).fetchone()
    if row is None:
        raise ArtAnnotError(f"no class with id {class_id} in this project")
    return row


def _edit(conn: sqlite3.Connection, event_id: int, class_id: int, field: str, old, new) -> None:
    """Record and apply one change to a class row under an event."""
    conn.execute("INSERT INTO class_edits(event_id, class_id, field, old_value, new_value) VALUES (?, ?, ?, ?, ?)",
                 (event_id, class_id, field, old, new))
    conn.execute(f"UPDATE classes SET {field} = ? WHERE id = ?", (new, class_id))


def _clean_name(name: str) -> str:
    name = " ".join(str(name).split())
    if not name:
        raise ArtAnnotError("a class needs a name")
    return check_class_length(name)


def rename_class(conn: sqlite3.Connection, class_id: int, name: str) -> int | None:
    """Give a class a new name (undoable); None when the name is unchanged."""
    name = _clean_name(name)
    with write(conn):
        row = _row(conn, class_id)
        if row["name"] == name:
            return None
        other = conn.execute("SELECT id, deleted_at FROM classes WHERE name = ?", (name,)).fetchone()
        if other is not None and other["id"] != class_id:
            hint = "pick another name" if other["deleted_at"] else f"merge '{row['name']}' into '{name}' instead"
            raise ArtAnnotError(f"a class named '{name}' already exists: {hint}")
        event_id = new_event(conn, "class", "human", f"rename class '{row['name']}' to '{name}'")
        _edit(conn, event_id, class_id, "name", row["name"], name)
    return event_id


def set_hotkey(conn: sqlite3.Connection, class_id: int, key: str | None) -> int | None:
    """Give a class a key (a digit, a letter or F1-F12; None removes it), taking it from any other class."""
    key = None if key in (None, "") else str(key)
    if key is not None:
        key = key if key.startswith("F") and len(key) > 1 else key.lower()
        if not HOTKEY.match(key):
            raise ArtAnnotError(f"'{key}' cannot be a class key: use a digit, a letter or F1–F12")
    with write(conn):
        row = _row(conn, class_id)
        if row["hotkey"] == key:
            return None
        what = f"key {key} for '{row['name']}'" if key else f"remove the key of '{row['name']}'"
        event_id = new_event(conn, "class", "human", what)
        if key is not None:
            for other in conn.execute("SELECT id FROM classes WHERE hotkey = ? AND id != ?", (key, class_id)):
                _edit(conn, event_id, other["id"], "hotkey", key, None)
        _edit(conn, event_id, class_id, "hotkey", row["hotkey"], key)
    return event_id


def _move_images(conn: sqlite3.Connection, event_id: int, source_id: int, target_id: int | None,
                 detail: str) -> int:
    """Relabel every image and box of a class (None clears) under an event; returns how many images."""
    current = conn.execute("SELECT image_id, source FROM labels WHERE active = 1 AND class_id = ?",
                           (source_id,)).fetchall()
    # A merge keeps each label's source (a rule's label stays a rule's); a delete is the curator's clearing.
    changes = [LabelChange(r["image_id"], target_id, r["source"] if target_id is not None else "human", detail)
               for r in current]
    apply_labels(conn, changes, description=detail, event_id=event_id)
    boxes = conn.execute("SELECT * FROM boxes WHERE active = 1 AND class_id = ?", (source_id,)).fetchall()
    if boxes:  # a box's class change is its deletion plus a new box: both undo with the event
        box_store.delete_boxes(conn, [b["id"] for b in boxes], event_id=event_id)
        for source in sorted({b["source"] for b in boxes}):
            box_store.add_boxes(conn, [(b["image_id"], target_id, b["x"], b["y"], b["w"], b["h"])
                                       for b in boxes if b["source"] == source], source, event_id=event_id)
    return len(current)


def _retire(conn: sqlite3.Connection, event_id: int, row: sqlite3.Row) -> None:
    _edit(conn, event_id, row["id"], "deleted_at", None, now())
    if row["hotkey"] is not None:
        _edit(conn, event_id, row["id"], "hotkey", row["hotkey"], None)


def merge_classes(conn: sqlite3.Connection, source_id: int, target_id: int) -> tuple[int, int]:
    """Move every image and box of one class into another and delete the first (one undoable edit).

    Returns (event id, images moved).
    """
    if source_id == target_id:
        raise ArtAnnotError("pick two different classes to merge")
    with write(conn):
        source, target = _row(conn, source_id), _row(conn, target_id)
        what = f"merge class '{source['name']}' into '{target['name']}'"
        event_id = new_event(conn, "class", "human", what)
        n = _move_images(conn, event_id, source_id, target_id, what)
        _retire(conn, event_id, source)
    return event_id, n


def delete_class(conn: sqlite3.Connection, class_id: int) -> tuple[int, int]:
    """Clear the label of every image (and box) of a class and delete it (one undoable edit).

    Returns (event id, images cleared).
    """
    with write(conn):
        row = _row(conn, class_id)
        what = f"delete class '{row['name']}'"
        event_id = new_event(conn, "class", "human", what)
        n = _move_images(conn, event_id, class_id, None, what)
        _retire(conn, event_id, row)
    return event_id, n


def add_class(conn: sqlite3.Connection, name: str) -> int:
    """A new class (with the lowest free digit key), or a deleted class of that name brought back."""
    name = _clean_name(name)
    with write(conn):
        row = conn.execute("SELECT * FROM classes WHERE name = ?", (name,)).fetchone()
        if row is not None:
            if row["deleted_at"] is not None:
                event_id = new_event(conn, "class", "human", f"restore class '{name}'")
                _edit(conn, event_id, row["id"], "deleted_at", row["deleted_at"], None)
            return int(row["id"])
        class_id = ensure_classes(conn, [name])[name]
        used = {r[0] for r in conn.execute("SELECT hotkey FROM classes WHERE hotkey IS NOT NULL AND id != ?",
                                           (class_id,))}
        key = next((str(d) for d in range(1, 10) if str(d) not in used), None)
        conn.execute("UPDATE classes SET hotkey = ? WHERE id = ?", (key, class_id))
    return class_id


# -- negative classes ----------------------------------------------------------------------------------------

EDIT_FIELDS = ("name", "hotkey", "deleted_at", "negative")


def create_negative_schema(conn: sqlite3.Connection) -> None:
    """Schema 7: classes.negative, and class_edits rebuilt (its field CHECK) with undo/redo triggers that
    also put `negative` back."""
    if "negative" not in {r[1] for r in conn.execute("PRAGMA table_info(classes)")}:  # re-runnable
        conn.execute("ALTER TABLE classes ADD COLUMN negative INTEGER NOT NULL DEFAULT 0")
    conn.execute("DROP TRIGGER IF EXISTS class_edits_undo")
    conn.execute("DROP TRIGGER IF EXISTS class_edits_redo")
    fields = ", ".join(f"'{f}'" for f in EDIT_FIELDS)
    conn.execute(
        "CREATE TABLE class_edits_v7 (event_id INTEGER NOT NULL REFERENCES events(id),"
        " class_id INTEGER NOT NULL REFERENCES classes(id),"
        f" field TEXT NOT NULL CHECK (field IN ({fields})), old_value TEXT, new_value TEXT,"
        " PRIMARY KEY (event_id, class_id, field)) WITHOUT ROWID")
    conn.execute("INSERT INTO class_edits_v7 SELECT event_id, class_id, field, old_value, new_value FROM class_edits")
    conn.execute("DROP TABLE class_edits")
    conn.execute("ALTER TABLE class_edits_v7 RENAME TO class_edits")
    for name, old, new, value in (("undo", "done", "undone", "old_value"), ("redo", "undone", "done", "new_value")):
        sets = "".join(
            f" UPDATE classes SET {f} = (SELECT e.{value} FROM class_edits e WHERE e.event_id = NEW.id"
            f" AND e.class_id = classes.id AND e.field = '{f}') WHERE id IN (SELECT class_id FROM class_edits"
            f" WHERE event_id = NEW.id AND field = '{f}');" for f in EDIT_FIELDS)
        conn.execute(f"CREATE TRIGGER class_edits_{name} AFTER UPDATE OF state ON events"
                     f" WHEN OLD.state = '{old}' AND NEW.state = '{new}' BEGIN{sets} END")


def negative_class_ids(conn: sqlite3.Connection) -> set[int]:
    """Ids of the classes marked negative."""
    return {int(r[0]) for r in conn.execute("SELECT id FROM classes WHERE negative = 1")}


def set_negative(conn: sqlite3.Connection, class_id: int, negative: bool = True) -> int | None:
    """Mark a class negative ("no instrument": never offered as a guess) or not (undoable); None when
    unchanged."""
    value = 1 if negative else 0
    with write(conn):
        row = _row(conn, class_id)
        if int(row["negative"]) == value:
            return None
        what = f"mark '{row['name']}' as {'negative (never a guess)' if value else 'a class to guess'}"
        event_id = new_event(conn, "class", "human", what)
        _edit(conn, event_id, class_id, "negative", int(row["negative"]), value)
    return event_id


def shown_ranking(ranked: list, negative: set) -> list:
    """A model's ranked guesses as the app shows them: negative classes left out, and nothing at all when a
    negative class is the top guess (the image shows "none"). Items are (class, score) pairs, or classes."""
    def key(item):
        return item[0] if isinstance(item, tuple) else item

    if not negative or not ranked:
        return list(ranked)
    if key(ranked[0]) in negative:
        return []
    return [item for item in ranked if key(item) not in negative]
