"""Small explicit queries over the project database: sources, classes, images, models, predictions."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from artannot.errors import ArtAnnotError
from artannot.store.db import now, write

# A qualitative palette that stays readable on white and dark backgrounds (Tableau 10 + 10 more).
MAX_CLASS_LENGTH = 100  # characters; longer names are refused (tags: 64, store/tags.py)
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
    "#bab0ac", "#1f77b4", "#aec7e8", "#ff7f0e", "#2ca02c", "#98df8a", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#17becf",
)


@dataclass(frozen=True)
class ClassInfo:
    """A class as the class list shows it."""

    id: int
    name: str
    color: str
    hotkey: str | None
    count: int
    negative: bool = False  # "no instrument": a label, never shown as a guess (store/classes.py)


@dataclass(frozen=True)
class ImageRow:
    """One image as the grid shows it: where it is, its label, and the current model's guess."""

    id: int
    path: str
    sha256: str
    width: int
    height: int
    split: str | None
    class_id: int | None
    label_source: str | None
    pred_class_id: int | None
    pred_score: float | None

    @property
    def disagrees(self) -> bool:
        """True when the model's top guess differs from the label."""
        return self.class_id is not None and self.pred_class_id is not None and self.pred_class_id != self.class_id


def ensure_source(conn: sqlite3.Connection, root: Path) -> int:
    """The id of a collection root folder, recorded on first use."""
    with write(conn):
        conn.execute("INSERT OR IGNORE INTO sources(path, added_at) VALUES (?, ?)", (str(root), now()))
        return conn.execute("SELECT id FROM sources WHERE path = ?", (str(root),)).fetchone()[0]


def check_class_length(name: str) -> str:
    """A class name no longer than MAX_CLASS_LENGTH characters, or one line saying it is too long."""
    if len(name) > MAX_CLASS_LENGTH:
        shown = "".join(c if c.isprintable() else "?" for c in name[:20])
        raise ArtAnnotError(f"class name '{shown}…' is {len(name):,} characters long; a class name has at most"
                            f" {MAX_CLASS_LENGTH}")
    return name


def ensure_classes(conn: sqlite3.Connection, names: Iterable[str]) -> dict[str, int]:
    """Ids of these classes, creating missing ones with the next colour and hotkey."""
    out: dict[str, int] = {}
    with write(conn):
        for name in names:
            row = conn.execute("SELECT id FROM classes WHERE name = ?", (name,)).fetchone()
            if row is None:
                check_class_length(name)
                n = conn.execute("SELECT COUNT(*) FROM classes").fetchone()[0]
                hotkey = str(n + 1) if n < 9 else None
                cur = conn.execute(
                    "INSERT INTO classes(name, color, hotkey, position) VALUES (?, ?, ?, ?)",
                    (name, PALETTE[n % len(PALETTE)], hotkey, n),
                )
                out[name] = int(cur.lastrowid)
            else:
                out[name] = row[0]
    return out


def list_classes(conn: sqlite3.Connection) -> list[ClassInfo]:
    """Classes in display order with how many images currently carry each."""
    rows = conn.execute(
        "SELECT c.id, c.name, c.color, c.hotkey, c.negative, COALESCE(k.n, 0) AS n FROM classes c"
        " LEFT JOIN class_count k ON k.class_id = c.id ORDER BY c.position, c.id"
    ).fetchall()
    return [ClassInfo(r["id"], r["name"], r["color"], r["hotkey"], r["n"], bool(r["negative"])) for r in rows]


def class_names(conn: sqlite3.Connection) -> dict[int, str]:
    """Class id -> name."""
    return {r[0]: r[1] for r in conn.execute("SELECT id, name FROM classes")}


def image_path(conn: sqlite3.Connection, image_id: int) -> Path:
    """Absolute path of an image on disk."""
    row = conn.execute(
        "SELECT s.path, i.path FROM images i JOIN sources s ON s.id = i.source_id WHERE i.id = ?", (image_id,)
    ).fetchone()
    return Path(row[0]) / os.fsdecode(row[1])


def active_model_id(conn: sqlite3.Connection) -> int | None:
    """The active class model, whose predictions the grid shows (store/models.py; tag models are apart)."""
    from artannot.store.models import active_model_id as active

    return active(conn)


def list_images(conn: sqlite3.Connection, model_id: int | None = None) -> list[ImageRow]:
    """Every image with its current label and the model's top-1 prediction, in import order."""
    if model_id is None:
        model_id = active_model_id(conn)
    rows = conn.execute(
        "SELECT i.id, s.path AS root, i.path, i.sha256, i.width, i.height, i.split,"
        " l.class_id, l.source, p.class_id AS pred, p.score"
        " FROM images i JOIN sources s ON s.id = i.source_id"
        " LEFT JOIN labels l ON l.image_id = i.id AND l.active = 1"
        " LEFT JOIN predictions p ON p.image_id = i.id AND p.model_id = ? AND p.rank = 1"
        " ORDER BY i.id",
        (model_id if model_id is not None else -1,),
    ).fetchall()
    return [
        ImageRow(r["id"], str(Path(r["root"]) / os.fsdecode(r["path"])), r["sha256"], r["width"], r["height"], r["split"],
                 r["class_id"], r["source"], r["pred"], r["score"])
        for r in rows
    ]


def labelled_images(
    conn: sqlite3.Connection, split: str | None, sources: Sequence[str]
) -> list[tuple[int, str, str, int]]:
    """(image id, absolute path, sha256, class id) of images labelled by one of these sources."""
    marks = ",".join("?" * len(sources))
    sql = (
        "SELECT i.id, s.path, i.path, i.sha256, l.class_id FROM images i JOIN sources s ON s.id = i.source_id"
        f" JOIN labels l ON l.image_id = i.id AND l.active = 1 AND l.class_id IS NOT NULL AND l.source IN ({marks})"
        " WHERE i.missing = 0"
    )
    params: list = list(sources)
    if split is not None:
        sql += " AND i.split = ?"
        params.append(split)
    return [(r[0], str(Path(r[1]) / os.fsdecode(r[2])), r[3], r[4]) for r in conn.execute(sql + " ORDER BY i.id", params)]


def all_images(conn: sqlite3.Connection) -> list[tuple[int, str, str]]:
    """(image id, absolute path, sha256) of every image present on disk."""
    return [
        (r[0], str(Path(r[1]) / os.fsdecode(r[2])), r[3])
        for r in conn.execute(
            "SELECT i.id, s.path, i.path, i.sha256 FROM images i JOIN sources s ON s.id = i.source_id"
            " WHERE i.missing = 0 ORDER BY i.id"
        )
    ]


def add_model(
    conn: sqlite3.Connection, *, backbone: str, method: str, classes: Sequence[int], params: dict
) -> int:
    """Record a trained model; its checkpoint and metrics are filled in once written."""
    with write(conn):
        cur = conn.execute(
            "INSERT INTO models(backbone, method, classes, params, created_at) VALUES (?, ?, ?, ?, ?)",
            (backbone, method, json.dumps(list(classes)), json.dumps(params), now()),
        )
        return int(cur.lastrowid)


def update_model(conn: sqlite3.Connection, model_id: int, **fields) -> None:
    """Set checkpoint path, metrics or params of a stored model."""
    with write(conn):
        for key, value in fields.items():
            if key not in ("checkpoint", "metrics", "params"):
                raise ValueError(key)
            if not isinstance(value, str):
                value = json.dumps(value)
            conn.execute(f"UPDATE models SET {key} = ? WHERE id = ?", (value, model_id))


def get_model(conn: sqlite3.Connection, model_id: int) -> sqlite3.Row | None:
    """A stored model's row."""
    return conn.execute("SELECT * FROM models WHERE id = ?", (model_id,)).fetchone()


PREDICTION_SQL = "INSERT INTO predictions(model_id, image_id, rank, class_id, score) VALUES (?, ?, ?, ?, ?)"


def write_predictions(
    conn: sqlite3.Connection, model_id: int, rows: Iterable[tuple[int, int, int, float]], *, chunk: int = 2000
) -> int:
    """Replace a stored model's predictions with (image id, rank, class id, score) rows, grouped by image.

    The rows go in transactions of about `chunk` rows that each replace whole images, so a curator's edit never
    waits behind a million-image rewrite and a reader between two sees every image ranked by the old or the
    new scores, never a mix; images left without rows lose their old ones at the end. Returns rows written."""
    written, kept, batch = 0, set(), []

    def flush() -> None:
        nonlocal written
        ids = {row[0] for row in batch}
        with write(conn):
            conn.executemany("DELETE FROM predictions WHERE model_id = ? AND image_id = ?",
                             ((model_id, i) for i in ids))
            conn.executemany(PREDICTION_SQL, ((model_id, i, r, c, s) for i, r, c, s in batch))
        kept.update(ids)
        written += len(batch)
        batch.clear()

    for row in rows:
        if len(batch) >= chunk and row[0] != batch[-1][0]:
            flush()
        batch.append(row)
    if batch:
        flush()
    stale = [(model_id, i) for (i,) in conn.execute(
        "SELECT DISTINCT image_id FROM predictions WHERE model_id = ?", (model_id,)) if i not in kept]
    for start in range(0, len(stale), chunk):
        with write(conn):
            conn.executemany("DELETE FROM predictions WHERE model_id = ? AND image_id = ?",
                             stale[start : start + chunk])
    return written


def top_predictions(conn: sqlite3.Connection, model_id: int, image_id: int) -> list[tuple[str, float]]:
    """The model's ranked (class name, score) for one image; classes deleted since it was trained are left out,
    and so are negative classes ("no instrument", store/classes.py): none at all when one is the top guess."""
    rows = conn.execute(
        "SELECT c.name, p.score, c.negative FROM predictions p JOIN classes c ON c.id = p.class_id"
        " WHERE p.model_id = ? AND p.image_id = ? AND c.deleted_at IS NULL ORDER BY p.rank",
        (model_id, image_id),
    ).fetchall()
    if rows and rows[0][2]:
        return []
    return [(r[0], r[1]) for r in rows if not r[2]]


def predictions_by_image(conn: sqlite3.Connection, model_id: int) -> dict[int, list[int]]:
    """Each image's ranked predicted class ids."""
    out: dict[int, list[int]] = {}
    for image_id, class_id in conn.execute(
        "SELECT image_id, class_id FROM predictions WHERE model_id = ? ORDER BY image_id, rank", (model_id,)
    ):
        out.setdefault(image_id, []).append(class_id)
    return out
