"""What the curation views ask the database: filtered and sorted image ids, rows by page, counts, suspects.

Every query here is driven by an index (labels by class or source, the top-1 prediction by score, suspects
by rank, the trigram index over paths), so a filter or a keystroke in the search box never walks the
whole images table in Python, and the grid only ever holds an array of ids plus the page it paints.
"""

from __future__ import annotations

import dataclasses
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
    "confidence_asc": "model confidence, low first",  # the reverse of high first
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


# ---- the filter index (schema 6) --------------------------------------------------------------------------
# model_top1 holds each model's top-1 guess per image (a copy of its rank-1 prediction) and whether it
# disagrees with the image's current label. Triggers keep it current: a prediction written or deleted (by any
# writer: training, predict, a torchrun merge), and any label change (edit, undo, redo, merge, import).
# It is derived data, so it carries no foreign keys; every row's source is a predictions row.
_DISAGREE = ("COALESCE((SELECT l.class_id IS NOT NULL AND {cls} IS NOT l.class_id FROM labels l"
             " WHERE l.image_id = {img} AND l.active = 1), 0)")
# A label is switched on only while its image has no other active one (labels_one_active): switching one on
# sets the flag from that label alone, and rows whose flag would not change are not written. Switching a
# label off writes nothing (every relabel switches one off and the next on: half the writes); an image
# left with no active label at all (an undone first label) may keep a stale flag, so the disagreement
# queries also ask that the image has a label (LABELLED, a probe of labels_now per flagged row).
_FLAG = "(NEW.class_id IS NOT NULL AND class_id IS NOT NEW.class_id)"
_LABEL_ON = f"UPDATE model_top1 SET disagree = {_FLAG} WHERE image_id = NEW.image_id AND disagree IS NOT {_FLAG};"
LABELLED = ("EXISTS (SELECT 1 FROM labels lx INDEXED BY labels_now WHERE lx.image_id = {img} AND lx.active = 1"
            " AND lx.class_id IS NOT NULL)")
FILTER_INDEX_SQL = (
    "CREATE TABLE IF NOT EXISTS model_top1 (model_id INTEGER NOT NULL, image_id INTEGER NOT NULL, class_id INTEGER,"
    " score REAL NOT NULL, disagree INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (model_id, image_id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS model_top1_image ON model_top1(image_id)",
    # every guess by confidence (high first, ties in id order), and the disagreements alone
    "CREATE INDEX IF NOT EXISTS model_top1_score ON model_top1(model_id, score DESC, image_id)",
    "CREATE INDEX IF NOT EXISTS model_top1_disagree ON model_top1(model_id, disagree, score DESC, image_id)",
    "CREATE TRIGGER IF NOT EXISTS model_top1_ai AFTER INSERT ON predictions WHEN NEW.rank = 1 BEGIN"
    " INSERT OR REPLACE INTO model_top1(model_id, image_id, class_id, score, disagree) VALUES"
    " (NEW.model_id, NEW.image_id, NEW.class_id, NEW.score, " + _DISAGREE.format(cls="NEW.class_id", img="NEW.image_id")
    + "); END",
    "CREATE TRIGGER IF NOT EXISTS model_top1_ad AFTER DELETE ON predictions WHEN OLD.rank = 1 BEGIN"
    " DELETE FROM model_top1 WHERE model_id = OLD.model_id AND image_id = OLD.image_id; END",
    "CREATE TRIGGER IF NOT EXISTS model_top1_au AFTER UPDATE ON predictions WHEN OLD.rank = 1 OR NEW.rank = 1 BEGIN"
    " DELETE FROM model_top1 WHERE OLD.rank = 1 AND model_id = OLD.model_id AND image_id = OLD.image_id;"
    " INSERT OR REPLACE INTO model_top1(model_id, image_id, class_id, score, disagree) SELECT"
    " NEW.model_id, NEW.image_id, NEW.class_id, NEW.score, " + _DISAGREE.format(cls="NEW.class_id", img="NEW.image_id")
    + " WHERE NEW.rank = 1; END",
    f"CREATE TRIGGER IF NOT EXISTS model_top1_label_ai AFTER INSERT ON labels WHEN NEW.active = 1 BEGIN {_LABEL_ON} END",
    f"CREATE TRIGGER IF NOT EXISTS model_top1_label_on AFTER UPDATE OF active, class_id ON labels WHEN NEW.active = 1"
    f" BEGIN {_LABEL_ON} END",
    "INSERT OR REPLACE INTO model_top1(model_id, image_id, class_id, score, disagree) SELECT p.model_id, p.image_id,"
    " p.class_id, p.score, " + _DISAGREE.format(cls="p.class_id", img="p.image_id") + " FROM predictions p"
    " WHERE p.rank = 1",
    # Current labels, covering: a label filter or an unlabelled check reads no label row (SQLite 3.40 does not
    # count a partial index's WHERE column as covered, hence `active` among the columns).
    "CREATE INDEX IF NOT EXISTS labels_now ON labels(image_id, class_id, source, active, detail) WHERE active = 1",
    "CREATE INDEX IF NOT EXISTS suspects_order ON suspects(model_id, rank)",  # every suspect in rank order
    "CREATE INDEX IF NOT EXISTS images_path ON images(path)",  # the file-name sort (ties by id: the rowid ends each entry)
)


def create_filter_index(conn: sqlite3.Connection) -> None:
    """Create the filter index (schema 6) and fill it from the predictions and labels already stored (again
    harmlessly on a file whose version number was reset: every statement tolerates a second run)."""
    for stmt in FILTER_INDEX_SQL:
        conn.execute(stmt)


def has_name_index(conn: sqlite3.Connection) -> bool:
    """Whether the trigram path index exists (SQLite with FTS5 trigram)."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'image_names'").fetchone() is not None


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


KEYED_SORTS = ("suspect", "confidence", "confidence_asc", "proposal")  # orders another table's index gives


def _selective(q: ImageQuery) -> bool:
    """Whether a filter keeps few images (an index finds them): then SQLite sorts what it found."""
    return bool(q.class_ids or q.text.strip() or q.tag_ids or q.pred_class_ids or q.proposals or q.box_suspects)


def _merge_sort(q: ImageQuery) -> bool:
    """Whether image_ids sorts a broad query by suspect rank, confidence or proposal score by a merge: the
    filter's ids in id order, the key's ids in key order (read along its index, nothing sorted); numpy keeps
    the key's order for the ids the filter selected, then appends those without a key in id order."""
    inner = (q.disagree or q.flagged or q.min_suspect is not None or q.min_confidence is not None
             or q.max_confidence is not None)
    return q.sort in KEYED_SORTS and not inner and not _selective(q)


def _open_proposals(alias: str = "pr") -> str:
    return (f"(SELECT image_id, MIN(score) AS score FROM proposals WHERE state = 'open' AND score >= ?"
            f" GROUP BY image_id) {alias}")


def _key_order(conn: sqlite3.Connection, q: ImageQuery) -> tuple[str, list]:
    """SQL for every image that has the sort's key, in the sort's order (ties as _build orders them)."""
    model = q.model_id if q.model_id is not None else -1
    return {
        "confidence": ("SELECT image_id AS id FROM model_top1 INDEXED BY model_top1_score WHERE model_id = ?"
                       " ORDER BY score DESC, image_id", [model]),
        "confidence_asc": ("SELECT image_id AS id FROM model_top1 INDEXED BY model_top1_score WHERE model_id = ?"
                           " ORDER BY score, image_id DESC", [model]),
        "suspect": ("SELECT image_id AS id FROM suspects INDEXED BY suspects_order WHERE model_id = ? ORDER BY rank",
                    [model]),
        "proposal": (f"SELECT image_id AS id FROM {_open_proposals()} ORDER BY score, image_id",
                     [float(q.min_proposal)]),
    }[q.sort]


def _build(conn: sqlite3.Connection, q: ImageQuery, what: str) -> tuple[str, list]:
    """SQL and parameters selecting `what` (i.id, or an aggregate) with the query's joins, filters and order.

    The query starts from the table whose index gives the answer in order (the lead): the images, or the
    model's disagreements by confidence, or the current labels (a source filter in id order); the images
    table itself is read only where an image column is asked for (split, name, short search).
    Unlabelled and untagged images in id order are every image minus the labelled (tagged) ones, one merge.
    """
    if q.sort not in SORTS:
        raise ValueError(f"unknown sort {q.sort!r}")
    model = q.model_id if q.model_id is not None else -1
    text = q.text.strip()
    trigram = len(text) >= 3 and has_name_index(conn)
    confidence = q.min_confidence is not None or q.max_confidence is not None
    conf_sort = q.sort in ("confidence", "confidence_asc")
    pred_inner = q.disagree or confidence or bool(q.pred_class_ids)
    suspect_inner = q.flagged or q.min_suspect is not None
    id_order = q.sort == "id"
    label_lead = bool(q.sources) and not (q.class_ids or q.unlabelled) and id_order and not _selective(q)
    unlabelled_merge = q.unlabelled and not (q.class_ids or q.sources) and id_order
    lead, lead_params = "", []  # the table the loop runs along, and its alias
    if q.disagree and not _selective(q):
        lead = "model_top1 t INDEXED BY model_top1_disagree"
        lead_params.append(model)
    elif label_lead:
        lead = "labels l INDEXED BY labels_now"
    alias = lead.split()[1] if lead else "i"
    iid = f"{alias}.image_id" if lead else "i.id"
    need_images = not lead or bool(q.splits) or bool(text and not trigram) or q.sort == "name"
    joins: list[str] = []
    join_params: list = []
    where: list[str] = []
    params: list = []
    excepts: list[str] = []  # id sets taken away by a merge (EXCEPT) in id order
    if lead:
        where.append("t.model_id = ?" if alias == "t" else "l.active = 1")
        if need_images:
            joins.append(f"CROSS JOIN images i ON i.id = {iid}")
    if unlabelled_merge:
        excepts.append("SELECT image_id FROM labels INDEXED BY labels_now WHERE active = 1 AND class_id IS NOT NULL")
    elif q.class_ids or q.sources or q.unlabelled:
        # With a class to look up, SQLite starts from the labels_active_class index. Otherwise each image's
        # label comes from the covering labels_now index, images first (CROSS JOIN keeps that order) so the
        # result comes out in id order without a sort.
        if alias != "l":
            if q.class_ids:
                kind, index = ("LEFT JOIN" if q.unlabelled else "JOIN"), ""
            else:
                kind, index = ("LEFT JOIN" if q.unlabelled else "CROSS JOIN"), " INDEXED BY labels_now"
            joins.append(f"{kind} labels l{index} ON l.image_id = {iid} AND l.active = 1")
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
    if q.disagree or confidence or q.pred_class_ids or conf_sort:
        if alias != "t":
            joins.append(f"{'JOIN' if pred_inner else 'LEFT JOIN'} model_top1 t ON t.model_id = ? AND t.image_id = {iid}")
            join_params.append(model)
        if q.disagree:  # the label is set and the model's top guess is another class (kept by triggers)
            where.append("t.disagree = 1 AND " + LABELLED.format(img="t.image_id"))
        if q.pred_class_ids:
            where.append(f"t.class_id IN ({','.join('?' * len(q.pred_class_ids))})")
            params += [int(c) for c in q.pred_class_ids]
        if q.min_confidence is not None:
            where.append("t.score >= ?")
            params.append(float(q.min_confidence))
        if q.max_confidence is not None:
            where.append("t.score <= ?")
            params.append(float(q.max_confidence))
    if q.flagged or q.min_suspect is not None or q.sort == "suspect":
        joins.append(f"{'JOIN' if suspect_inner else 'LEFT JOIN'} suspects s ON s.model_id = ? AND s.image_id = {iid}")
        join_params.append(model)
        if q.flagged:
            where.append("s.flagged = 1")
        if q.min_suspect is not None:
            where.append("s.score >= ?")
            params.append(float(q.min_suspect))
    if q.proposals or q.sort == "proposal":
        joins.append(f"{'JOIN' if q.proposals else 'LEFT JOIN'} {_open_proposals()} ON pr.image_id = {iid}")
        join_params.append(float(q.min_proposal))
    if q.box_suspects:
        sql, args = suspect_images_sql(conn, q.detector_id if q.detector_id is not None else -1)
        where.append(f"{iid} IN ({sql})")
        params += args
    if q.splits:
        named = [s for s in q.splits if s != "none"]
        ors = [f"i.split IN ({','.join('?' * len(named))})"] if named else []
        params += named
        if "none" in q.splits:
            ors.append("i.split IS NULL")
        where.append("(" + " OR ".join(ors) + ")")
    for tag_id in q.tag_ids:  # each through the (tag_id, image_id) index of present tags
        where.append(f"{iid} IN (SELECT image_id FROM image_tags WHERE tag_id = ? AND active = 1 AND present = 1)")
        params.append(int(tag_id))
    if q.untagged:
        if id_order:
            excepts.append("SELECT image_id FROM image_tags WHERE active = 1 AND present = 1")
        else:
            where.append(f"NOT EXISTS (SELECT 1 FROM image_tags it WHERE it.image_id = {iid} AND it.active = 1"
                         " AND it.present = 1)")
    if text:
        if trigram:
            where.append(f"{iid} IN (SELECT rowid FROM image_names WHERE image_names MATCH ?)")
            params.append('"' + text.replace('"', '""') + '"')
        else:  # too short for trigrams (or no FTS5): a scan, but only of the path column
            where.append("i.path LIKE ? ESCAPE '\\'")
            params.append(_like(text))
    if excepts and what != "i.id":  # a count: the same merge, counted
        inner, args = _build(conn, q, "i.id")
        return f"SELECT COUNT(*) FROM ({inner})", args
    sql = f"SELECT {f'{iid} AS id' if what == 'i.id' else what} FROM {lead or 'images i'} {' '.join(joins)}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    all_params = lead_params + join_params + params
    if excepts:
        return sql + "".join(f" EXCEPT {tail}" for tail in excepts) + " ORDER BY 1", all_params
    if what == "i.id":
        # Inner joins have no NULLs to push last: a plain ORDER BY lets SQLite read the index in order.
        sql += " ORDER BY " + {
            "id": iid,
            "name": "i.path, i.id",
            "suspect": "s.rank" if suspect_inner else f"s.rank IS NULL, s.rank, {iid}",
            "confidence": ("" if pred_inner else "t.score IS NULL, ") + f"t.score DESC, {iid}",
            # low first: the exact reverse of high first (ties too), so it reads the same index backwards
            "confidence_asc": f"t.score, {iid} DESC" if pred_inner else
            f"t.score IS NULL, t.score, CASE WHEN t.score IS NULL THEN {iid} ELSE -{iid} END",
            "proposal": ("" if q.proposals else "pr.score IS NULL, ") + f"pr.score, {iid}",
        }[q.sort]
    return sql, all_params


def _ids(conn: sqlite3.Connection, sql: str, params: Sequence) -> np.ndarray:
    """The ids a query selects, in its order: joined into one string by SQLite and parsed by numpy, which
    costs a third of fetching 100k rows one Python tuple at a time. (An aggregate over a sub-select with
    ORDER BY reads that sub-select in its order: SQLite never flattens it.)"""
    text = conn.execute(f"SELECT group_concat(id) FROM ({sql})", params).fetchone()[0]
    return np.fromstring(text, sep=",", dtype=np.int64) if text else np.zeros(0, dtype=np.int64)


def image_ids(conn: sqlite3.Connection, q: ImageQuery = ImageQuery()) -> np.ndarray:  # noqa: B008
    """Ids of the images the query selects, in its order."""
    if _merge_sort(q):
        keyed = _ids(conn, *_key_order(conn, q))
        unfiltered = dataclasses.replace(q, sort="id") == ImageQuery(model_id=q.model_id, min_proposal=q.min_proposal)
        if unfiltered and len(keyed) == conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]:
            return keyed  # every image has the key (the model scored them all): nothing to merge
        chosen = _ids(conn, *_build(conn, dataclasses.replace(q, sort="id"), "i.id"))  # ascending
        pos = np.minimum(np.searchsorted(chosen, keyed), max(len(chosen) - 1, 0))
        keep = chosen[pos] == keyed if len(chosen) else np.zeros(len(keyed), dtype=bool)
        has_key = np.zeros(len(chosen), dtype=bool)
        has_key[pos[keep]] = True
        return np.concatenate([keyed[keep], chosen[~has_key]])
    return _ids(conn, *_build(conn, q, "i.id"))


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


# Images per class, kept by triggers on labels (schema 9): the class list refreshes after every keystroke, and
# a count over the labels_active_class index costs 75 ms at 1M images where this table costs a few rows.
_COUNT = ("INSERT INTO class_count(class_id, n) VALUES ({row}.class_id, {d})"
          " ON CONFLICT(class_id) DO UPDATE SET n = n + {d};")
CLASS_COUNT_SQL = (
    "CREATE TABLE IF NOT EXISTS class_count (class_id INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS class_count_ai AFTER INSERT ON labels"
    " WHEN NEW.active = 1 AND NEW.class_id IS NOT NULL BEGIN " + _COUNT.format(row="NEW", d="1") + " END",
    "CREATE TRIGGER IF NOT EXISTS class_count_off AFTER UPDATE OF active, class_id ON labels"
    " WHEN OLD.active = 1 AND OLD.class_id IS NOT NULL BEGIN " + _COUNT.format(row="OLD", d="-1") + " END",
    "CREATE TRIGGER IF NOT EXISTS class_count_on AFTER UPDATE OF active, class_id ON labels"
    " WHEN NEW.active = 1 AND NEW.class_id IS NOT NULL BEGIN " + _COUNT.format(row="NEW", d="1") + " END",
    "CREATE TRIGGER IF NOT EXISTS class_count_ad AFTER DELETE ON labels"
    " WHEN OLD.active = 1 AND OLD.class_id IS NOT NULL BEGIN " + _COUNT.format(row="OLD", d="-1") + " END",
    "DELETE FROM class_count",
    "INSERT INTO class_count(class_id, n) SELECT class_id, COUNT(*) FROM labels"
    " WHERE active = 1 AND class_id IS NOT NULL GROUP BY class_id",
)


def create_class_counts(conn: sqlite3.Connection) -> None:
    """Create the per-class counts (schema 9), filled from the labels already stored (re-runnable)."""
    for stmt in CLASS_COUNT_SQL:
        conn.execute(stmt)


def class_counts(conn: sqlite3.Connection) -> dict[int, int]:
    """Images per class that has any (class_count, kept current by triggers on labels)."""
    return {r[0]: r[1] for r in conn.execute("SELECT class_id, n FROM class_count WHERE n > 0")}


def summary(conn: sqlite3.Connection, model_id: int | None) -> dict[str, int]:
    """Totals for the status bar: images, labelled, per source, disagreements and flagged suspects."""
    out = {"images": conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]}
    by_source = {r[0]: r[1] for r in conn.execute(
        "SELECT source, COUNT(*) FROM labels WHERE active = 1 AND class_id IS NOT NULL GROUP BY source")}
    out["labelled"] = sum(by_source.values())
    out.update({f"source_{k}": v for k, v in by_source.items()})
    if model_id is not None:  # from the labels index into the predictions key: no images table
        out["disagree"] = conn.execute(  # a count over the model_top1_disagree index
            "SELECT COUNT(*) FROM model_top1 t INDEXED BY model_top1_disagree WHERE t.model_id = ? AND t.disagree = 1"
            " AND " + LABELLED.format(img="t.image_id"),
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


SUSPECT_SQL = ("INSERT INTO suspects(model_id, image_id, score, rank, flagged, reliable, class_id, suggested_id)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


def write_suspects(conn: sqlite3.Connection,
                   model_id: int, rows: Iterable[tuple[int, float, int, int, int, int, int]]) -> None:
    """Store a model's (image id, score, rank, flagged, reliable, class id, suggested id) rows."""
    with write(conn):
        conn.execute("DELETE FROM suspects WHERE model_id = ?", (model_id,))
        conn.executemany(SUSPECT_SQL, ((model_id, *r) for r in rows))


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
