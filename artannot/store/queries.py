"""What the curation views ask the database: filtered and sorted image ids, rows by page, counts, suspects.

Every query here is driven by an index (labels by class or source, the top-1 prediction by score, suspects
by rank, the trigram index over paths), so a filter or a keystroke in the search box never walks the
whole images table in Python, and the grid only ever holds an array of ids plus the page it paints.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from artannot.store.db import write
from artannot.store.proposals import suspect_images_sql
from artannot.store.repo import ImageRow

SORTS = {
    "id": "import order",
    "name": "file name",
    "suspect": "most likely wrong first",
    "confidence": "model confidence, high first",
    "confidence_asc": "model confidence, low first",
    "proposal": "box proposals, least certain first",
}
SPLITS = ("train", "val", "test", "none")
PAGE = 500  # ids per IN (...) list: well under SQLite's variable limit


@dataclass(frozen=True)
class GridRow(ImageRow):
    """An image as the grid and review show it: ImageRow plus its suspect score and box count."""

    suspect: float | None = None
    suspect_rank: int | None = None
    flagged: bool = False
    suggested_id: int | None = None
    n_boxes: int = 0


@dataclass(frozen=True)
class ImageQuery:
    """Which images to show and in what order; empty fields do not filter."""

    class_ids: tuple[int, ...] = ()  # labelled with one of these classes ...
    unlabelled: bool = False  # ... or (when set) without a label
    sources: tuple[str, ...] = ()  # label source: human, folder, rule (file-name rule), import, model
    splits: tuple[str, ...] = ()  # train, val, test, none
    disagree: bool = False  # the model's top guess differs from the label
    pred_class_ids: tuple[int, ...] = ()  # the model's top guess is one of these (a confusion-matrix cell)
    flagged: bool = False  # confident learning says the label is wrong
    min_suspect: float | None = None  # suspect score at least this (0..1)
    min_confidence: float | None = None  # the model's top-1 score within [min, max]
    max_confidence: float | None = None
    tag_ids: tuple[int, ...] = ()  # carrying every one of these tags ...
    untagged: bool = False  # ... or (when set) carrying no tag at all
    proposals: bool = False  # with open box proposals scored at least min_proposal
    min_proposal: float = 0.0
    box_suspects: bool = False  # boxes to check: missing, doubtful or of another class (detector_id's checks)
    detector_id: int | None = None  # the detector whose box checks count
    text: str = ""  # part of the file path, case-insensitive
    sort: str = "id"
    model_id: int | None = None  # the model whose predictions and suspects count (None: none)

    def needs_model(self) -> bool:
        """Whether the query means nothing without a trained model."""
        return (self.disagree or self.flagged or bool(self.pred_class_ids) or self.min_suspect is not None or self.min_confidence is not None
                or self.max_confidence is not None or self.sort in ("suspect", "confidence", "confidence_asc"))


# How a label came about, as the grid marks it: folder-name labels are stored as source 'rule' with a
# detail "folder '<name>'"; every other 'rule' label came from a file-name rule.
FOLDER_DETAIL = "folder %"
GRID_SOURCE_SQL = ("CASE WHEN l.source = 'rule' AND l.detail LIKE 'folder %' THEN 'folder' ELSE l.source END")


def source_condition(sources: Sequence[str]) -> tuple[str, list]:
    """SQL over labels l (and its parameters) for labels from these sources; 'folder' and 'rule' split the
    stored 'rule' source into folder-name labels and file-name rule labels."""
    plain = [s for s in sources if s not in ("folder", "rule")]
    ors = [f"l.source IN ({','.join('?' * len(plain))})"] if plain else []
    if "folder" in sources and "rule" in sources:
        ors.append("l.source = 'rule'")
    elif "folder" in sources:
        ors.append("(l.source = 'rule' AND l.detail LIKE ?)")
        plain.append(FOLDER_DETAIL)
    elif "rule" in sources:
        ors.append("(l.source = 'rule' AND (l.detail IS NULL OR l.detail NOT LIKE ?))")
        plain.append(FOLDER_DETAIL)
    return "(" + " OR ".join(ors) + ")", list(plain)


def has_name_index(conn: sqlite3.Connection) -> bool:
    """Whether the trigram path index exists (SQLite with FTS5 trigram)."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'image_names'").fetchone() is not None


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _build(conn: sqlite3.Connection, q: ImageQuery, what: str) -> tuple[str, list]:
    """SQL and parameters selecting `what` from images i with the query's joins, filters and order."""
    if q.sort not in SORTS:
        raise ValueError(f"unknown sort {q.sort!r}")
    model = q.model_id if q.model_id is not None else -1
    joins: list[str] = []
    join_params: list = []
    where: list[str] = []
    params: list = []
    if q.class_ids or q.sources or q.disagree or q.unlabelled:
        # A label is required unless unlabelled images are asked for: then an inner join lets the planner
        # start from the labels_active_* indexes instead of the images table.
        # Without a class to look up, each image's label comes from the covering (image_id, class_id, source)
        # index: no row reads (SQLite would otherwise pick the unique index and read every label row).
        index = "" if q.class_ids else " INDEXED BY labels_active_image"
        joins.append(f"{'LEFT JOIN' if q.unlabelled else 'JOIN'} labels l{index} ON l.image_id = i.id AND l.active = 1")
        ors = []
        if q.class_ids:
            ors.append(f"l.class_id IN ({','.join('?' * len(q.class_ids))})")
            params += [int(c) for c in q.class_ids]
        if q.unlabelled:
            ors.append("l.class_id IS NULL")
        elif not q.class_ids:
            ors.append("l.class_id IS NOT NULL")
        where.append("(" + " OR ".join(ors) + ")")
        if q.sources:
            sql, args = source_condition(q.sources)
            where.append(sql)
            params += args
    confidence = q.min_confidence is not None or q.max_confidence is not None
    if q.disagree or confidence or q.pred_class_ids or q.sort in ("confidence", "confidence_asc"):
        kind = "JOIN" if q.disagree or confidence or q.pred_class_ids else "LEFT JOIN"
        joins.append(f"{kind} predictions p ON p.model_id = ? AND p.image_id = i.id AND p.rank = 1")
        join_params.append(model)
        if q.disagree:
            where.append("l.class_id IS NOT NULL AND p.class_id IS NOT l.class_id")
        if q.pred_class_ids:
            where.append(f"p.class_id IN ({','.join('?' * len(q.pred_class_ids))})")
            params += [int(c) for c in q.pred_class_ids]
        if q.min_confidence is not None:
            where.append("p.score >= ?")
            params.append(float(q.min_confidence))
        if q.max_confidence is not None:
            where.append("p.score <= ?")
            params.append(float(q.max_confidence))
    if q.flagged or q.min_suspect is not None or q.sort == "suspect":
        kind = "JOIN" if q.flagged or q.min_suspect is not None else "LEFT JOIN"
        joins.append(f"{kind} suspects s ON s.model_id = ? AND s.image_id = i.id")
        join_params.append(model)
        if q.flagged:
            where.append("s.flagged = 1")
        if q.min_suspect is not None:
            where.append("s.score >= ?")
            params.append(float(q.min_suspect))
    if q.proposals or q.sort == "proposal":
        joins.append(f"{'JOIN' if q.proposals else 'LEFT JOIN'} (SELECT image_id, MIN(score) AS score FROM proposals"
                     " WHERE state = 'open' AND score >= ? GROUP BY image_id) pr ON pr.image_id = i.id")
        join_params.append(float(q.min_proposal))
    if q.box_suspects:
        sql, args = suspect_images_sql(conn, q.detector_id if q.detector_id is not None else -1)
        where.append(f"i.id IN ({sql})")
        params += args
    if q.splits:
        named = [s for s in q.splits if s != "none"]
        ors = [f"i.split IN ({','.join('?' * len(named))})"] if named else []
        params += named
        if "none" in q.splits:
            ors.append("i.split IS NULL")
        where.append("(" + " OR ".join(ors) + ")")
    for tag_id in q.tag_ids:  # each through the (tag_id, image_id) index of present tags
        where.append("i.id IN (SELECT image_id FROM image_tags WHERE tag_id = ? AND active = 1 AND present = 1)")
        params.append(int(tag_id))
    if q.untagged:
        where.append("NOT EXISTS (SELECT 1 FROM image_tags t WHERE t.image_id = i.id AND t.active = 1"
                     " AND t.present = 1)")
    text = q.text.strip()
    if text:
        if len(text) >= 3 and has_name_index(conn):
            where.append("i.id IN (SELECT rowid FROM image_names WHERE image_names MATCH ?)")
            params.append('"' + text.replace('"', '""') + '"')
        else:  # too short for trigrams (or no FTS5): a scan, but only of the path column
            where.append("i.path LIKE ? ESCAPE '\\'")
            params.append(_like(text))
    sql = f"SELECT {what} FROM images i {' '.join(joins)}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if what == "i.id":
        # Inner joins have no NULLs to push last: a plain ORDER BY lets SQLite read the index in order.
        suspect_inner = q.flagged or q.min_suspect is not None
        pred_inner = q.disagree or confidence
        sql += " ORDER BY " + {
            "id": "i.id",
            "name": "i.path, i.id",
            "suspect": "s.rank" if suspect_inner else "s.rank IS NULL, s.rank, i.id",
            "confidence": ("" if pred_inner else "p.score IS NULL, ") + "p.score DESC, i.id",
            "confidence_asc": ("" if pred_inner else "p.score IS NULL, ") + "p.score, i.id",
            "proposal": ("" if q.proposals else "pr.score IS NULL, ") + "pr.score, i.id",
        }[q.sort]
    return sql, join_params + params


def image_ids(conn: sqlite3.Connection, q: ImageQuery = ImageQuery()) -> np.ndarray:  # noqa: B008
    """Ids of the images the query selects, in its order."""
    sql, params = _build(conn, q, "i.id")
    cur = conn.cursor()
    cur.row_factory = None
    cur.execute(sql, params)
    return np.fromiter((r[0] for r in cur), dtype=np.int64)


def count(conn: sqlite3.Connection, q: ImageQuery = ImageQuery()) -> int:  # noqa: B008
    """How many images the query selects."""
    sql, params = _build(conn, q, "COUNT(*)")
    return int(conn.execute(sql, params).fetchone()[0])


def all_ids(conn: sqlite3.Connection) -> np.ndarray:
    """Every image id in import order (the rowid b-tree, no join)."""
    return image_ids(conn, ImageQuery())


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    ids = [int(i) for i in ids]
    for start in range(0, len(ids), PAGE):
        yield ids[start : start + PAGE]


def fetch_rows(conn: sqlite3.Connection, ids: Sequence[int], model_id: int | None) -> dict[int, GridRow]:
    """The grid rows of these images (one query per page of ids, each a primary-key lookup)."""
    out: dict[int, GridRow] = {}
    model = model_id if model_id is not None else -1
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        for r in conn.execute(
            "SELECT i.id, s.path AS root, i.path, i.sha256, i.width, i.height, i.split, l.class_id,"
            f" {GRID_SOURCE_SQL} AS source,"
            " p.class_id AS pred, p.score, x.score AS suspect, x.rank AS suspect_rank, x.flagged, x.suggested_id,"
            " (SELECT COUNT(*) FROM boxes b WHERE b.image_id = i.id AND b.active = 1) AS n_boxes"
            " FROM images i JOIN sources s ON s.id = i.source_id"
            " LEFT JOIN labels l ON l.image_id = i.id AND l.active = 1"
            " LEFT JOIN predictions p ON p.model_id = ? AND p.image_id = i.id AND p.rank = 1"
            " LEFT JOIN suspects x ON x.model_id = ? AND x.image_id = i.id"
            f" WHERE i.id IN ({marks})",
            [model, model, *chunk],
        ):
            out[r["id"]] = GridRow(
                r["id"], str(Path(r["root"]) / os.fsdecode(r["path"])), r["sha256"], r["width"], r["height"],
                r["split"], r["class_id"], r["source"], r["pred"], r["score"], r["suspect"], r["suspect_rank"],
                bool(r["flagged"]), r["suggested_id"], r["n_boxes"])
    return out


def boxes_of(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, list[tuple[int | None, float, float, float, float]]]:
    """Current (class id, x, y, w, h) boxes of these images, for drawing them on thumbnails."""
    out: dict[int, list] = {}
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        for r in conn.execute(f"SELECT image_id, class_id, x, y, w, h FROM boxes WHERE active = 1"
                              f" AND image_id IN ({marks}) ORDER BY id", chunk):
            out.setdefault(r[0], []).append((r[1], r[2], r[3], r[4], r[5]))
    return out


def class_counts(conn: sqlite3.Connection) -> dict[int, int]:
    """Images per class (a count over the labels_active_class index, not the labels table)."""
    return {r[0]: r[1] for r in conn.execute(
        "SELECT class_id, COUNT(*) FROM labels WHERE active = 1 AND class_id IS NOT NULL GROUP BY class_id")}


def summary(conn: sqlite3.Connection, model_id: int | None) -> dict[str, int]:
    """Totals for the status bar: images, labelled, per source, disagreements and flagged suspects."""
    out = {"images": conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]}
    by_source = {r[0]: r[1] for r in conn.execute(
        "SELECT source, COUNT(*) FROM labels WHERE active = 1 AND class_id IS NOT NULL GROUP BY source")}
    out["labelled"] = sum(by_source.values())
    out.update({f"source_{k}": v for k, v in by_source.items()})
    if model_id is not None:  # from the labels index into the predictions key: no images table
        out["disagree"] = conn.execute(
            "SELECT COUNT(*) FROM labels l INDEXED BY labels_active_image JOIN predictions p"
            " ON p.model_id = ? AND p.image_id = l.image_id"
            " AND p.rank = 1 WHERE l.active = 1 AND l.class_id IS NOT NULL AND p.class_id IS NOT l.class_id",
            (model_id,)).fetchone()[0]
        out["flagged"] = conn.execute("SELECT COUNT(*) FROM suspects WHERE model_id = ? AND flagged = 1",
                                      (model_id,)).fetchone()[0]
    return out


# ---- suspects ---------------------------------------------------------------------------------------------


def current_labels(conn: sqlite3.Connection, sources: Sequence[str]) -> dict[int, int]:
    """image id -> class id of every current label from one of these sources."""
    marks = ",".join("?" * len(sources))
    return {r[0]: r[1] for r in conn.execute(
        f"SELECT image_id, class_id FROM labels WHERE active = 1 AND class_id IS NOT NULL AND source IN ({marks})",
        list(sources))}


def write_suspects(conn: sqlite3.Connection,
                   model_id: int, rows: Iterable[tuple[int, float, int, int, int, int, int]]) -> None:
    """Store a model's (image id, score, rank, flagged, reliable, class id, suggested id) rows."""
    with write(conn):
        conn.execute("DELETE FROM suspects WHERE model_id = ?", (model_id,))
        conn.executemany(
            "INSERT INTO suspects(model_id, image_id, score, rank, flagged, reliable, class_id, suggested_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", ((model_id, *r) for r in rows))


@dataclass(frozen=True)
class Suspect:
    """An image whose label a model finds unlikely."""

    rank: int
    image_id: int
    path: str
    label: str | None  # the label it was scored against
    current: str | None  # its label now (a curator may have fixed it since)
    suggested: str | None
    score: float
    flagged: bool
    reliable: bool

    def as_dict(self) -> dict:
        """For --json output."""
        return dict(self.__dict__)


def top_suspects(conn: sqlite3.Connection, model_id: int, top: int | None = None, *,
                 flagged_only: bool = False) -> list[Suspect]:
    """A model's suspects, most likely wrong first (read along the suspects_rank index)."""
    sql = ("SELECT x.rank, x.image_id, s.path AS root, i.path, g.name AS given, c.name AS now, n.name AS suggested,"
           " x.score, x.flagged, x.reliable FROM suspects x JOIN images i ON i.id = x.image_id"
           " JOIN sources s ON s.id = i.source_id LEFT JOIN classes g ON g.id = x.class_id"
           " LEFT JOIN classes n ON n.id = x.suggested_id"
           " LEFT JOIN labels l ON l.image_id = x.image_id AND l.active = 1 LEFT JOIN classes c ON c.id = l.class_id"
           " WHERE x.model_id = ?" + (" AND x.flagged = 1" if flagged_only else "") + " ORDER BY x.rank")
    params: list = [model_id]
    if top is not None:
        sql += " LIMIT ?"
        params.append(int(top))
    return [Suspect(r["rank"], r["image_id"], str(Path(r["root"]) / os.fsdecode(r["path"])), r["given"], r["now"],
                    r["suggested"], r["score"], bool(r["flagged"]), bool(r["reliable"]))
            for r in conn.execute(sql, params)]


def top_classes(conn: sqlite3.Connection, model_id: int, ids: Sequence[int]) -> dict[int, int]:
    """image id -> the model's top-1 class, for these images (Space accepts them)."""
    out: dict[int, int] = {}
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        out.update((r[0], r[1]) for r in conn.execute(
            f"SELECT image_id, class_id FROM predictions WHERE model_id = ? AND rank = 1 AND image_id IN ({marks})"
            " AND class_id IS NOT NULL", [model_id, *chunk]))
    return out


def box_ids_of_event(conn: sqlite3.Connection, event_id: int) -> list[int]:
    """The boxes an edit created that are in effect (to keep the edited box selected)."""
    return [r[0] for r in conn.execute("SELECT id FROM boxes WHERE event_id = ? AND active = 1 ORDER BY id",
                                       (event_id,))]
