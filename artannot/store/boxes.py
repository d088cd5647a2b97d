"""Bounding boxes with the same append-only history as labels, undone and redone with them.

Every edit is an `events` row; box rows are never changed except for their `active` flag:

* adding a box inserts an active row;
* moving, resizing or reclassifying one deactivates it and inserts its successor (`replaces_id` -> it);
* deleting one deactivates it and inserts a *tombstone*: an inactive row with `w = h = 0` whose
  `replaces_id` points at the deleted box. Real boxes always have w, h > 0, so a tombstone is never
  mistaken for one, and it records which event removed the box.

Undo of an event deactivates its rows and reactivates what they replaced; redo does the reverse,
leaving tombstones inactive. `labels.undo()` / `labels.redo()` call `revert_event` / `reapply_event`,
so labels and boxes share one undo stack that survives restarts.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from artannot.errors import ArtAnnotError
from artannot.store.db import now, write
from artannot.store.labels import SOURCES, new_event

_KEEP = object()


@dataclass(frozen=True)
class StoredBox:
    """A current box on an image, in image pixels (x, y: top-left corner)."""

    id: int
    image_id: int
    class_id: int | None
    x: float
    y: float
    w: float
    h: float
    source: str


def clip_box(x: float, y: float, w: float, h: float, width: int, height: int,
             what: str = "box") -> tuple[float, float, float, float]:
    """The box clipped to a width x height image, or ArtAnnotError when it has no area inside it."""
    try:
        x, y, w, h = (float(v) for v in (x, y, w, h))
    except (TypeError, ValueError):
        raise ArtAnnotError(f"{what} has a coordinate that is not a number: {(x, y, w, h)}") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ArtAnnotError(f"{what} has a coordinate that is not a finite number: {(x, y, w, h)}")
    if w <= 0 or h <= 0:
        raise ArtAnnotError(f"{what} has width {w:g} and height {h:g}; both must be above 0")
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)
    if x1 <= x0 or y1 <= y0:
        raise ArtAnnotError(
            f"{what} (x={x:g}, y={y:g}, w={w:g}, h={h:g}) lies outside the {width}×{height} image"
        )
    return x0, y0, x1 - x0, y1 - y0


def image_sizes(conn: sqlite3.Connection, image_ids: Iterable[int]) -> dict[int, tuple[int, int, str]]:
    """(width, height, path) of each image id that is in the project."""
    out: dict[int, tuple[int, int, str]] = {}
    ids = list(dict.fromkeys(image_ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for r in conn.execute(f"SELECT id, width, height, path FROM images WHERE id IN ({marks})", chunk):
            out[r[0]] = (r[1], r[2], os.fsdecode(r[3]))
    return out


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown box source {source!r}")


def add_boxes(
    conn: sqlite3.Connection,
    boxes: Iterable[tuple[int, int | None, float, float, float, float]],
    source: str = "human",
    description: str = "add box",
    *,
    event_id: int | None = None,
) -> int | None:
    """Add (image id, class id, x, y, w, h) boxes in one undoable event; returns the event id.

    Boxes are clipped to their image; one with no area inside it refuses the whole edit. Passing
    event_id adds the boxes to an edit already recorded (an import stays one undo step).
    """
    boxes = list(boxes)
    if not boxes:
        return None
    _check_source(source)
    with write(conn):
        sizes = image_sizes(conn, [b[0] for b in boxes])
        rows = []
        for image_id, class_id, x, y, w, h in boxes:
            if image_id not in sizes:
                raise ArtAnnotError(f"no image with id {image_id} in this project")
            width, height, path = sizes[image_id]
            rows.append((image_id, class_id, *clip_box(x, y, w, h, width, height, f"box on {path}")))
        if event_id is None:
            event_id = new_event(conn, "box", source, description)
        stamp = now()
        conn.executemany(
            "INSERT INTO boxes(image_id, class_id, x, y, w, h, source, event_id, replaces_id, active,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 1, ?)",
            [(*r, source, event_id, stamp) for r in rows],
        )
    return event_id


def _active(conn: sqlite3.Connection, box_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM boxes WHERE id = ?", (box_id,)).fetchone()
    if row is None:
        raise ArtAnnotError(f"no box with id {box_id} in this project")
    if not row["active"]:
        raise ArtAnnotError(f"box {box_id} was already changed or deleted; edit its current version")
    return row


def update_box(
    conn: sqlite3.Connection,
    box_id: int,
    *,
    class_id: int | None | object = _KEEP,
    x: float | None = None,
    y: float | None = None,
    w: float | None = None,
    h: float | None = None,
    source: str = "human",
    description: str | None = None,
) -> int | None:
    """Move, resize or reclassify a box as one undoable event; returns the event id (None: no change)."""
    _check_source(source)
    with write(conn):
        old = _active(conn, box_id)
        new_class = old["class_id"] if class_id is _KEEP else class_id
        geometry = tuple(old[k] if v is None else v for k, v in zip("xywh", (x, y, w, h), strict=True))
        width, height, path = image_sizes(conn, [old["image_id"]])[old["image_id"]]
        geometry = clip_box(*geometry, width, height, f"box on {path}")
        if new_class == old["class_id"] and geometry == (old["x"], old["y"], old["w"], old["h"]) \
                and source == old["source"]:
            return None
        event_id = new_event(conn, "box", source, description or f"edit box on {os.path.basename(path)}")
        conn.execute("UPDATE boxes SET active = 0 WHERE id = ?", (box_id,))
        conn.execute(
            "INSERT INTO boxes(image_id, class_id, x, y, w, h, source, event_id, replaces_id, active,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
            (old["image_id"], new_class, *geometry, source, event_id, box_id, now()),
        )
    return event_id


def delete_boxes(
    conn: sqlite3.Connection,
    box_ids: Sequence[int],
    *,
    source: str = "human",
    description: str | None = None,
    event_id: int | None = None,
) -> int | None:
    """Remove boxes as one undoable event (a tombstone row per box); returns the event id."""
    ids = list(dict.fromkeys(box_ids))
    if not ids:
        return None
    _check_source(source)
    with write(conn):
        olds = [_active(conn, i) for i in ids]
        if event_id is None:
            n = len(ids)
            event_id = new_event(conn, "box", source, description or f"delete {n} box{'es' if n != 1 else ''}")
        stamp = now()
        conn.executemany("UPDATE boxes SET active = 0 WHERE id = ?", [(i,) for i in ids])
        conn.executemany(
            "INSERT INTO boxes(image_id, class_id, x, y, w, h, source, event_id, replaces_id, active,"
            " created_at) VALUES (?, ?, ?, ?, 0, 0, ?, ?, ?, 0, ?)",
            [(o["image_id"], o["class_id"], o["x"], o["y"], source, event_id, o["id"], stamp) for o in olds],
        )
    return event_id


def boxes_for(conn: sqlite3.Connection, image_id: int) -> list[StoredBox]:
    """The current boxes of an image, oldest first."""
    return [
        StoredBox(r["id"], r["image_id"], r["class_id"], r["x"], r["y"], r["w"], r["h"], r["source"])
        for r in conn.execute("SELECT * FROM boxes WHERE image_id = ? AND active = 1 ORDER BY id", (image_id,))
    ]


def boxes_by_image(conn: sqlite3.Connection) -> dict[int, list[StoredBox]]:
    """Every current box, grouped by image (for exports)."""
    out: dict[int, list[StoredBox]] = {}
    for r in conn.execute("SELECT * FROM boxes WHERE active = 1 ORDER BY image_id, id"):
        out.setdefault(r["image_id"], []).append(
            StoredBox(r["id"], r["image_id"], r["class_id"], r["x"], r["y"], r["w"], r["h"], r["source"]))
    return out


def box_history(conn: sqlite3.Connection, image_id: int) -> list[sqlite3.Row]:
    """Every box row of an image, oldest first, with its event (tombstones have w = h = 0)."""
    return conn.execute(
        "SELECT b.*, e.description, e.state FROM boxes b JOIN events e ON e.id = b.event_id"
        " WHERE b.image_id = ? ORDER BY b.id",
        (image_id,),
    ).fetchall()


def count_for_event(conn: sqlite3.Connection, event_id: int) -> int:
    """How many boxes an event touched."""
    return conn.execute("SELECT COUNT(*) FROM boxes WHERE event_id = ?", (event_id,)).fetchone()[0]


def revert_event(conn: sqlite3.Connection, event_id: int) -> None:
    """Undo an event's box rows (inside the caller's transaction)."""
    rows = conn.execute("SELECT id, replaces_id FROM boxes WHERE event_id = ?", (event_id,)).fetchall()
    conn.executemany("UPDATE boxes SET active = 0 WHERE id = ?", [(r[0],) for r in rows])
    conn.executemany("UPDATE boxes SET active = 1 WHERE id = ?", [(r[1],) for r in rows if r[1] is not None])


def reapply_event(conn: sqlite3.Connection, event_id: int) -> None:
    """Redo an event's box rows (inside the caller's transaction); tombstones stay inactive."""
    rows = conn.execute("SELECT id, replaces_id, w, h FROM boxes WHERE event_id = ?", (event_id,)).fetchall()
    conn.executemany("UPDATE boxes SET active = 0 WHERE id = ?", [(r[1],) for r in rows if r[1] is not None])
    conn.executemany("UPDATE boxes SET active = 1 WHERE id = ?", [(r[0],) for r in rows if r[2] > 0 and r[3] > 0])
