"""Curation queries and class edits in the store: the same answers as a plain Python filter, by index; the
schema-2 upgrade; rename/merge/delete undone from any connection."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from artannot.errors import ArtAnnotError
from artannot.ml.classify.training import Outcome, gather, store_outcome
from artannot.project import Project
from artannot.store import boxes as box_store
from artannot.store import classes as C
from artannot.store import db, queries
from artannot.store import labels as L
from artannot.store.queries import ImageQuery
from tests.conftest import PER_CLASS


@pytest.fixture
def project(demo_project):
    """The demo project with some human edits, a cleared label and a stored fake model (predictions + suspects)."""
    with Project(demo_project) as p:
        data = gather(p.conn)
        class_ids = sorted({c for *_, c in data.train})
        rng = np.random.default_rng(1)
        scores = rng.dirichlet(np.ones(len(class_ids)), len(data.everything))
        store_outcome(p.conn, data, Outcome("svm", "fake", class_ids, scores, np.ones(len(scores), bool), {},
                                            oof_scores=scores), started=time.perf_counter())
        ids = [r.id for r in p.images()]
        p.set_label(ids[:3], class_ids[0])
        p.set_label(ids[3:4], None)
    p = Project(demo_project)
    yield p
    p.close()


def reference(p: Project, keep) -> list[int]:
    rows = queries.fetch_rows(p.conn, queries.all_ids(p.conn), p.active_model_id())
    return [i for i, r in sorted(rows.items()) if keep(r)]


def plan(p: Project, q: ImageQuery) -> str:
    sql, params = queries._build(p.conn, q, "i.id")
    return " | ".join(r[3] for r in p.conn.execute("EXPLAIN QUERY PLAN " + sql, params))


def test_filters_match_a_python_filter(project):
    p, m = project, project.active_model_id()
    c0 = p.classes()[0].id
    cases = [
        (ImageQuery(class_ids=(c0,)), lambda r: r.class_id == c0),
        (ImageQuery(unlabelled=True), lambda r: r.class_id is None),
        (ImageQuery(class_ids=(c0,), unlabelled=True), lambda r: r.class_id in (c0, None)),
        (ImageQuery(sources=("human",)), lambda r: r.label_source == "human" and r.class_id is not None),
        (ImageQuery(sources=("folder",), splits=("test",)), lambda r: r.label_source == "folder" and r.split == "test"),
        (ImageQuery(sources=("rule",)), lambda r: r.label_source == "rule"),
        (ImageQuery(disagree=True, model_id=m), lambda r: r.disagrees),
        (ImageQuery(flagged=True, model_id=m), lambda r: r.flagged),
        (ImageQuery(min_suspect=0.6, model_id=m), lambda r: r.suspect is not None and r.suspect >= 0.6),
        (ImageQuery(min_confidence=0.5, max_confidence=0.8, model_id=m),
         lambda r: r.pred_score is not None and 0.5 <= r.pred_score <= 0.8),
        (ImageQuery(splits=("none",)), lambda r: r.split is None),
    ]
    for q, keep in cases:
        assert sorted(queries.image_ids(p.conn, q).tolist()) == reference(p, keep), q
        assert queries.count(p.conn, q) == len(reference(p, keep)), q


def test_sorts(project):
    p, m = project, project.active_model_id()
    rows = queries.fetch_rows(p.conn, queries.all_ids(p.conn), m)
    by_conf = [rows[i].pred_score for i in queries.image_ids(p.conn, ImageQuery(sort="confidence", model_id=m))]
    assert by_conf == sorted(by_conf, reverse=True)
    ranks = [rows[i].suspect_rank for i in queries.image_ids(p.conn, ImageQuery(sort="suspect", model_id=m))]
    assert ranks == list(range(1, len(ranks) + 1))  # every image was labelled when the model was trained
    unscored = queries.image_ids(p.conn, ImageQuery(sort="suspect", model_id=-5))  # no such model: id order
    assert unscored.tolist() == sorted(unscored.tolist())
    names = [rows[i].path for i in queries.image_ids(p.conn, ImageQuery(sort="name"))]
    assert names == sorted(names)
    with pytest.raises(ValueError):
        queries.image_ids(p.conn, ImageQuery(sort="colour"))


def test_search_uses_the_trigram_index_and_agrees_with_like(project):
    p = project
    assert queries.has_name_index(p.conn)
    for text in ("fish", "FISH", "_0", "smil", "ose", "no such file", "50%", 'a"b'):
        found = sorted(queries.image_ids(p.conn, ImageQuery(text=text)).tolist())
        plain = [r[0] for r in p.conn.execute("SELECT id, path FROM images ORDER BY id")
                 if text.lower() in r[1].lower()]
        assert found == plain, text
    assert "image_names" in plan(p, ImageQuery(text="fish"))
    assert "SCAN i " not in plan(p, ImageQuery(text="fish")) + " "  # a keystroke never walks the images table


def test_queries_are_driven_by_indexes(project):
    p, m = project, project.active_model_id()
    c0 = p.classes()[0].id
    assert "labels_active_class" in plan(p, ImageQuery(class_ids=(c0,)))
    assert "suspects_rank" in plan(p, ImageQuery(flagged=True, sort="suspect", model_id=m))
    assert "TEMP B-TREE" not in plan(p, ImageQuery(flagged=True, sort="suspect", model_id=m))  # read in rank order
    assert "COVERING INDEX images_ids" in plan(p, ImageQuery())
    assert "COVERING INDEX labels_now" in plan(p, ImageQuery(sources=("rule",)))
    assert "COVERING INDEX model_top1_disagree" in plan(p, ImageQuery(disagree=True, sort="confidence", model_id=m))
    counts = queries.class_counts(p.conn)
    assert sum(counts.values()) == queries.summary(p.conn, m)["labelled"]


def test_rows_boxes_and_top_classes(project):
    p, m = project, project.active_model_id()
    ids = queries.all_ids(p.conn)[:5].tolist()
    box_store.add_boxes(p.conn, [(ids[0], None, 1, 2, 3, 4), (ids[0], None, 5, 5, 5, 5)])
    rows = queries.fetch_rows(p.conn, ids, m)
    assert rows[ids[0]].n_boxes == 2 and rows[ids[1]].n_boxes == 0
    assert queries.boxes_of(p.conn, ids) == {ids[0]: [(None, 1.0, 2.0, 3.0, 4.0), (None, 5.0, 5.0, 5.0, 5.0)]}
    top = queries.top_classes(p.conn, m, ids)
    assert all(top[i] == rows[i].pred_class_id for i in ids)


def test_version_1_projects_upgrade_to_the_fresh_schema(tmp_path, monkeypatch):
    fresh = tmp_path / "fresh.artannot"
    Project.create(fresh).close()
    old = tmp_path / "old.artannot"
    monkeypatch.setattr(db, "SCHEMA_VERSION", 1)
    with Project.create(old) as p:
        src = p.conn.execute("INSERT INTO sources(path, added_at) VALUES (?, ?)", (str(tmp_path), db.now())).lastrowid
        p.conn.execute("INSERT INTO images(source_id, path, sha256, width, height, added_at)"
                       " VALUES (?, 'old/fishbowl.png', 'x', 4, 4, ?)", (src, db.now()))
    monkeypatch.undo()
    with Project(old) as p:  # upgraded on open, after a backup
        assert p.conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
        assert queries.image_ids(p.conn, ImageQuery(text="shbo")).tolist() == [1]  # indexed on upgrade

    def schema(path: Path):
        conn = sqlite3.connect(path)
        try:
            return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE"
                                " 'sqlite_%' ORDER BY name").fetchall()
        finally:
            conn.close()

    assert schema(old) == schema(fresh)
    assert list(tmp_path.glob("old.artannot.backup-v1-*"))


# ---- class edits ------------------------------------------------------------------------------------------
def names(conn) -> list[str]:
    return [c.name for c in C.visible_classes(conn)]


def test_rename_merge_delete_undo_and_redo_from_another_connection(project, demo_project):
    conn = project.conn
    by_name = {c.name: c for c in C.visible_classes(conn)}
    fish, smilies = by_name["fish"], by_name["smilies"]
    C.rename_class(conn, fish.id, "  Fish   & co ")
    assert "Fish & co" in names(conn)
    with pytest.raises(ArtAnnotError, match="merge"):
        C.rename_class(conn, fish.id, "smilies")
    image = conn.execute("SELECT image_id FROM labels WHERE active = 1 AND class_id = ?", (fish.id,)).fetchone()[0]
    box_store.add_boxes(conn, [(image, fish.id, 0, 0, 3, 3)])
    _, moved = C.merge_classes(conn, fish.id, smilies.id)
    assert moved == PER_CLASS and "Fish & co" not in names(conn)
    assert queries.class_counts(conn)[smilies.id] == 2 * PER_CLASS
    assert [b.class_id for b in box_store.boxes_for(conn, image)] == [smilies.id]
    with Project(demo_project) as other:  # the CLI or a script undoing: the triggers restore the class row
        assert other.undo().kind == "class"
    assert "Fish & co" in names(conn) and queries.class_counts(conn)[fish.id] == PER_CLASS
    assert [b.class_id for b in box_store.boxes_for(conn, image)] == [fish.id]
    assert next(c for c in C.visible_classes(conn) if c.id == fish.id).hotkey == fish.hotkey
    L.redo(conn)
    assert "Fish & co" not in names(conn)
    L.undo(conn)
    L.undo(conn)  # the box
    L.undo(conn)  # the rename
    assert "fish" in names(conn)
    _, cleared = C.delete_class(conn, fish.id)
    assert cleared == PER_CLASS and "fish" not in names(conn) and fish.id not in queries.class_counts(conn)
    restored = C.add_class(conn, "fish")  # a deleted class comes back by name, empty
    assert restored == fish.id and "fish" in names(conn)
    L.undo(conn)
    L.undo(conn)
    assert queries.class_counts(conn)[fish.id] == PER_CLASS


def test_hotkeys_move_between_classes_and_are_checked(project):
    conn = project.conn
    a, b = C.visible_classes(conn)[:2]
    C.set_hotkey(conn, b.id, a.hotkey)
    keys = {c.id: c.hotkey for c in C.visible_classes(conn)}
    assert keys[b.id] == a.hotkey and keys[a.id] is None
    L.undo(conn)
    keys = {c.id: c.hotkey for c in C.visible_classes(conn)}
    assert (keys[a.id], keys[b.id]) == (a.hotkey, b.hotkey)
    C.set_hotkey(conn, a.id, "F5")
    C.set_hotkey(conn, b.id, "Q")
    assert {c.id: c.hotkey for c in C.visible_classes(conn)}[b.id] == "q"
    for bad in ("ctrl+a", "ä", "F13", "10"):
        with pytest.raises(ArtAnnotError):
            C.set_hotkey(conn, a.id, bad)
    new = C.add_class(conn, "cats")
    used = [c.hotkey for c in C.visible_classes(conn) if c.hotkey]
    assert len(used) == len(set(used)) and next(c for c in C.visible_classes(conn) if c.id == new).hotkey
