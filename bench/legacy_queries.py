"""The grid's image queries as they were before the filter index (commit a635506), kept as the baseline the
benchmarks measure the current ones against, on the same database in the same run.

Each image's label and the model's top guess were joined per image (labels_active_image, predictions by
primary key), and ids were fetched one Python tuple per row.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from artannot.store.proposals import suspect_images_sql
from artannot.store.queries import SORTS, ImageQuery, has_name_index, source_condition


def like_pattern(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def build(conn: sqlite3.Connection, q: ImageQuery, what: str) -> tuple[str, list]:
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
            params.append(like_pattern(text))
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
    sql, params = build(conn, q, "i.id")
    cur = conn.cursor()
    cur.row_factory = None
    cur.execute(sql, params)
    return np.fromiter((r[0] for r in cur), dtype=np.int64)




def disagree_count(conn: sqlite3.Connection, model_id: int) -> int:
    """The status bar's disagreement count as it was: labels joined to the top guesses."""
    return conn.execute(
        "SELECT COUNT(*) FROM labels l INDEXED BY labels_active_image JOIN predictions p"
        " ON p.model_id = ? AND p.image_id = l.image_id"
        " AND p.rank = 1 WHERE l.active = 1 AND l.class_id IS NOT NULL AND p.class_id IS NOT l.class_id",
        (model_id,)).fetchone()[0]


def class_counts(conn: sqlite3.Connection) -> dict[int, int]:
    """Images per class as counted before schema 9 (7b69b69): over the labels_active_class index at each call."""
    return {r[0]: r[1] for r in conn.execute(
        "SELECT class_id, COUNT(*) FROM labels WHERE active = 1 AND class_id IS NOT NULL GROUP BY class_id")}
