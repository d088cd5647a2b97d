"""Boxes a detector proposes, kept apart from the curator's boxes until accepted.

A proposal row is written once per detection (model, image, class, box in image pixels, score) and then
only its `state` changes: `open` (shown dashed for review), `accepted` (it became a box, `box_id`) or
`rejected`. Accepting or rejecting is an undoable event like any other edit: `proposal_edits` records the
old and new state, and triggers on `events.state` switch it back and forth with Ctrl+Z/Ctrl+Y, while the
accepted box itself follows the box store's own undo. Proposals never duplicate a box: a new proposal that
overlaps a current box (IoU >= 0.5) is not stored, and running a model again replaces the image's open
proposals instead of adding to them.

`box_checks` records, for a detector run over images the curator already boxed, the detection that overlaps
each drawn box most (or none): what *box suspects* read (a drawn box no detection finds, a detection of
another class over a box), next to the open proposals on boxed images (a box the curator missed).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from artannot.errors import ArtAnnotError
from artannot.store import boxes as box_store
from artannot.store.db import now, write
from artannot.store.labels import new_event

DUPLICATE_IOU = 0.5  # a proposal this much over a current box is the same box
SAME_OBJECT_IOU = 0.7  # two detections this much over each other (any classes) are one object: the best is kept
STATES = ("open", "accepted", "rejected")


@dataclass(frozen=True)
class Proposal:
    """A detection waiting for review, in image pixels (x, y: top-left corner)."""

    id: int
    image_id: int
    model_id: int | None
    class_id: int | None
    x: float
    y: float
    w: float
    h: float
    score: float
    state: str
    box_id: int | None = None


def create_schema(conn: sqlite3.Connection) -> None:
    """The proposal tables and their undo/redo triggers (migration step 5)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS proposals (id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL REFERENCES images(id),"
        " model_id INTEGER REFERENCES models(id), class_id INTEGER REFERENCES classes(id),"
        " x REAL NOT NULL, y REAL NOT NULL, w REAL NOT NULL, h REAL NOT NULL, score REAL NOT NULL,"
        " state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'accepted', 'rejected')),"
        " box_id INTEGER REFERENCES boxes(id), created_at TEXT NOT NULL)")
    conn.execute("CREATE INDEX IF NOT EXISTS proposals_image ON proposals(image_id, state, score)")
    conn.execute("CREATE INDEX IF NOT EXISTS proposals_model ON proposals(model_id)")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS proposal_edits (event_id INTEGER NOT NULL REFERENCES events(id),"
        " proposal_id INTEGER NOT NULL REFERENCES proposals(id), old_state TEXT NOT NULL,"
        " new_state TEXT NOT NULL, PRIMARY KEY (event_id, proposal_id)) WITHOUT ROWID")
    for name, old, new, value in (("undo", "done", "undone", "old_state"), ("redo", "undone", "done", "new_state")):
        conn.execute(
            f"CREATE TRIGGER IF NOT EXISTS proposal_edits_{name} AFTER UPDATE OF state ON events"
            f" WHEN OLD.state = '{old}' AND NEW.state = '{new}' BEGIN"
            f" UPDATE proposals SET state = (SELECT e.{value} FROM proposal_edits e WHERE e.event_id = NEW.id"
            " AND e.proposal_id = proposals.id)"
            " WHERE id IN (SELECT proposal_id FROM proposal_edits WHERE event_id = NEW.id); END")
    _create_checks(conn)


def _create_checks(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS box_checks (model_id INTEGER NOT NULL REFERENCES models(id),"
        " box_id INTEGER NOT NULL REFERENCES boxes(id), det_class_id INTEGER, det_score REAL NOT NULL,"
        " iou REAL NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (model_id, box_id)) WITHOUT ROWID")


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def replace_proposals(
    conn: sqlite3.Connection,
    model_id: int | None,
    detections: Iterable[tuple[int, int | None, float, float, float, float, float]],
    image_ids: Iterable[int] | None = None,
) -> int:
    """Store (image id, class id, x, y, w, h, score) detections as open proposals; returns how many were kept.

    The open proposals of every image named (image_ids, else the images the detections are on) are dropped
    first, so proposing again replaces instead of piling up; accepted and rejected ones stay as history.
    Detections over a current box (IoU >= 0.5, any class) or over a proposal the curator rejected are not
    stored, nor one over a better detection kept on the image (IoU >= 0.7, any class: the same object, which
    a class key relabels). Boxes are clipped to their image; one with no area inside it is dropped.
    """
    detections = list(detections)
    images = list(dict.fromkeys(image_ids if image_ids is not None else (d[0] for d in detections)))
    with write(conn):
        sizes = box_store.image_sizes(conn, images)
        for start in range(0, len(images), 500):
            chunk = images[start : start + 500]
            marks = ",".join("?" * len(chunk))
            conn.execute(
                f"DELETE FROM proposals WHERE state = 'open' AND image_id IN ({marks})"
                " AND id NOT IN (SELECT proposal_id FROM proposal_edits)", chunk)
        taken: dict[int, list[tuple[float, float, float, float]]] = {}
        for image_id in images:
            taken[image_id] = [(b.x, b.y, b.w, b.h) for b in box_store.boxes_for(conn, image_id)]
            taken[image_id] += [tuple(r) for r in conn.execute(
                "SELECT x, y, w, h FROM proposals WHERE image_id = ? AND state = 'rejected'", (image_id,))]
        rows = []
        stamp = now()
        kept: dict[int, list[tuple[float, float, float, float]]] = {}
        for image_id, class_id, x, y, w, h, score in sorted(detections, key=lambda d: -d[6]):
            if image_id not in sizes:
                raise ArtAnnotError(f"no image with id {image_id} in this project")
            width, height, _ = sizes[image_id]
            try:
                box = box_store.clip_box(x, y, w, h, width, height)
            except ArtAnnotError:
                continue
            if any(iou(box, other) >= DUPLICATE_IOU for other in taken.setdefault(image_id, [])):
                continue
            if any(iou(box, other) >= SAME_OBJECT_IOU for other in kept.setdefault(image_id, [])):
                continue  # the same object under another class, less sure: a class key fixes the best one
            kept[image_id].append(box)
            rows.append((image_id, model_id, class_id, *box, float(score), stamp))
        conn.executemany(
            "INSERT INTO proposals(image_id, model_id, class_id, x, y, w, h, score, state, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', ?)", rows)
    return len(rows)


def _row(r: sqlite3.Row) -> Proposal:
    return Proposal(r["id"], r["image_id"], r["model_id"], r["class_id"], r["x"], r["y"], r["w"], r["h"],
                    r["score"], r["state"], r["box_id"])


def proposals_for(conn: sqlite3.Connection, image_id: int, *, min_score: float = 0.0,
                  state: str | None = "open") -> list[Proposal]:
    """An image's proposals at or above min_score, best first (state None: every state)."""
    sql = "SELECT * FROM proposals WHERE image_id = ? AND score >= ?"
    args: list = [image_id, float(min_score)]
    if state is not None:
        sql += " AND state = ?"
        args.append(state)
    return [_row(r) for r in conn.execute(sql + " ORDER BY score DESC, id", args)]


def get_proposal(conn: sqlite3.Connection, proposal_id: int) -> Proposal:
    row = conn.execute("SELECT * FROM proposals WHERE id = ?", (proposal_id,)).fetchone()
    if row is None:
        raise ArtAnnotError(f"no proposal with id {proposal_id} in this project")
    return _row(row)


def review_queue(conn: sqlite3.Connection, *, min_score: float = 0.0) -> list[tuple[int, float, int]]:
    """(image id, lowest open score, open proposals) for every image with open proposals, lowest score first:
    the least certain proposals are reviewed first."""
    return [(r[0], r[1], r[2]) for r in conn.execute(
        "SELECT image_id, MIN(score), COUNT(*) FROM proposals WHERE state = 'open' AND score >= ?"
        " GROUP BY image_id ORDER BY MIN(score), image_id", (float(min_score),))]


def count_open(conn: sqlite3.Connection, *, min_score: float = 0.0) -> int:
    return conn.execute("SELECT COUNT(*) FROM proposals WHERE state = 'open' AND score >= ?",
                        (float(min_score),)).fetchone()[0]


def _open(conn: sqlite3.Connection, ids: Sequence[int]) -> list[Proposal]:
    out = []
    for i in dict.fromkeys(ids):
        p = get_proposal(conn, i)
        if p.state != "open":
            raise ArtAnnotError(f"proposal {i} was already {p.state}")
        out.append(p)
    return out


def _record(conn: sqlite3.Connection, event_id: int, ids: Sequence[int], new_state: str) -> None:
    conn.executemany("INSERT INTO proposal_edits(event_id, proposal_id, old_state, new_state)"
                     " VALUES (?, ?, 'open', ?)", [(event_id, i, new_state) for i in ids])
    conn.executemany("UPDATE proposals SET state = ? WHERE id = ?", [(new_state, i) for i in ids])


def accept(conn: sqlite3.Connection, proposal_ids: Sequence[int], *, class_id: int | None = None) -> int | None:
    """Turn open proposals into boxes in one undoable event; returns the event id (None: nothing to accept).

    The boxes keep the proposal's class with source `model`; passing class_id gives them that class instead,
    and since the curator chose it, source `human`.
    """
    if not proposal_ids:
        return None
    with write(conn):
        props = _open(conn, proposal_ids)
        source = "model" if class_id is None else "human"
        n = len(props)
        event_id = new_event(conn, "box", source, f"accept {n} proposed box{'es' if n != 1 else ''}")
        for p in props:
            box_store.add_boxes(conn, [(p.image_id, p.class_id if class_id is None else class_id,
                                        p.x, p.y, p.w, p.h)], source, event_id=event_id)
            box_id = conn.execute("SELECT MAX(id) FROM boxes WHERE event_id = ?", (event_id,)).fetchone()[0]
            conn.execute("UPDATE proposals SET box_id = ? WHERE id = ?", (box_id, p.id))
        _record(conn, event_id, [p.id for p in props], "accepted")
    return event_id


def reject(conn: sqlite3.Connection, proposal_ids: Sequence[int]) -> int | None:
    """Reject open proposals in one undoable event; a rejected box is never proposed again on its image."""
    if not proposal_ids:
        return None
    with write(conn):
        props = _open(conn, proposal_ids)
        n = len(props)
        event_id = new_event(conn, "box", "human", f"reject {n} proposed box{'es' if n != 1 else ''}")
        _record(conn, event_id, [p.id for p in props], "rejected")
    return event_id


def count_for_event(conn: sqlite3.Connection, event_id: int) -> int:
    """How many proposals an event accepted or rejected."""
    return conn.execute("SELECT COUNT(*) FROM proposal_edits WHERE event_id = ?", (event_id,)).fetchone()[0]


CHECK_IOU = 0.3  # a detection overlapping a drawn box less than this does not find it


def record_box_checks(conn: sqlite3.Connection, model_id: int,
                      detections: Iterable[tuple[int, int | None, float, float, float, float, float]],
                      image_ids: Iterable[int]) -> int:
    """For every current box of image_ids, the detection (image id, class id, x, y, w, h, score) overlapping
    it most (IoU, or none: score 0), replacing the model's earlier checks of those boxes; returns boxes checked."""
    by_image: dict[int, list] = {}
    for d in detections:
        by_image.setdefault(int(d[0]), []).append(d)
    rows = []
    stamp = now()
    with write(conn):
        _create_checks(conn)
        for image_id in dict.fromkeys(int(i) for i in image_ids):
            for b in box_store.boxes_for(conn, image_id):
                best = (None, 0.0, 0.0)
                for _, class_id, x, y, w, h, score in by_image.get(image_id, []):
                    overlap = iou((b.x, b.y, b.w, b.h), (x, y, w, h))
                    if overlap >= CHECK_IOU and (overlap, score) > (best[2], best[1]):
                        best = (class_id, float(score), overlap)
                rows.append((model_id, b.id, best[0], best[1], best[2], stamp))
        conn.executemany("INSERT OR REPLACE INTO box_checks(model_id, box_id, det_class_id, det_score, iou,"
                         " created_at) VALUES (?, ?, ?, ?, ?, ?)", rows)
    return len(rows)


def has_box_checks(conn: sqlite3.Connection, model_id: int) -> bool:
    """Whether the model was ever run over boxed images."""
    _ensure_checks_table(conn)
    return conn.execute("SELECT 1 FROM box_checks WHERE model_id = ? LIMIT 1", (model_id,)).fetchone() is not None


def _ensure_checks_table(conn: sqlite3.Connection) -> None:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'box_checks'").fetchone() is None:
        with write(conn):
            _create_checks(conn)


def box_suspects(conn: sqlite3.Connection, model_id: int, *, min_score: float = 0.5,
                 image_id: int | None = None) -> list[dict]:
    """What to check about the boxes, most confident first (see Project.box_suspects): open proposals of the
    model at min_score or more on images with boxes ("missing"), checked boxes no detection overlaps
    ("doubtful"), and boxes a detection of min_score or more overlaps with another class ("class").
    image_id: only that image's."""
    _ensure_checks_table(conn)
    out = []
    one_p, one_b = ("", "") if image_id is None else (" AND p.image_id = ?", " AND b.image_id = ?")
    extra = () if image_id is None else (int(image_id),)
    for r in conn.execute(
            "SELECT p.* FROM proposals p WHERE p.model_id = ? AND p.state = 'open' AND p.score >= ?"
            f" AND p.image_id IN (SELECT image_id FROM boxes WHERE active = 1){one_p} ORDER BY p.score DESC, p.id",
            (model_id, float(min_score), *extra)):
        out.append({"kind": "missing", "image_id": r["image_id"], "box_id": None, "proposal_id": r["id"],
                    "class_id": None, "det_class_id": r["class_id"], "score": r["score"],
                    "bbox": [r["x"], r["y"], r["w"], r["h"]]})
    for r in conn.execute(
            "SELECT c.*, b.image_id, b.class_id, b.x, b.y, b.w, b.h FROM box_checks c JOIN boxes b ON b.id = c.box_id"
            f" WHERE c.model_id = ? AND b.active = 1{one_b} ORDER BY c.det_score, b.id", (model_id, *extra)):
        base = {"image_id": r["image_id"], "box_id": r["box_id"], "proposal_id": None, "class_id": r["class_id"],
                "det_class_id": r["det_class_id"], "bbox": [r["x"], r["y"], r["w"], r["h"]]}
        if r["iou"] < CHECK_IOU:
            out.append({"kind": "doubtful", **base, "score": 1.0})  # certain: nothing was found there
        elif r["det_class_id"] != r["class_id"] and r["det_score"] >= min_score:
            out.append({"kind": "class", **base, "score": r["det_score"]})
    out.sort(key=lambda d: -d["score"])
    return out


def suspect_images_sql(conn: sqlite3.Connection, model_id: int, *, min_score: float = 0.5) -> tuple[str, list]:
    """SQL selecting the image ids box_suspects would name for a model (and its parameters): a filter the grid
    runs by index instead of listing every suspect."""
    sql = ("SELECT p.image_id FROM proposals p WHERE p.model_id = ? AND p.state = 'open' AND p.score >= ?"
           " AND p.image_id IN (SELECT image_id FROM boxes WHERE active = 1)")
    args: list = [model_id, float(min_score)]
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'box_checks'").fetchone() is not None:
        sql += (" UNION SELECT b.image_id FROM box_checks c JOIN boxes b ON b.id = c.box_id WHERE c.model_id = ?"
                " AND b.active = 1 AND (c.iou < ? OR (c.det_class_id IS NOT b.class_id AND c.det_score >= ?))")
        args += [model_id, CHECK_IOU, float(min_score)]
    return sql, args


def forget_model(conn: sqlite3.Connection, model_id: int) -> None:
    """A model is being deleted (inside the caller's transaction): its open proposals go; reviewed ones stay as
    history, no longer tied to it."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'box_checks'").fetchone() is not None:
        conn.execute("DELETE FROM box_checks WHERE model_id = ?", (model_id,))
    conn.execute("DELETE FROM proposals WHERE model_id = ? AND id NOT IN (SELECT proposal_id FROM proposal_edits)",
                 (model_id,))
    conn.execute("UPDATE proposals SET model_id = NULL WHERE model_id = ?", (model_id,))
