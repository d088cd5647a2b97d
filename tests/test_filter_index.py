"""The filter index (schema 6) and the class counts (schema 9): every filter and sort of the grid gives what a plain Python filter over the rows
gives, in the same order, while labels change under it (edits, undo, redo, class merges, retraining, model
deletion) and after an upgrade from schema 5."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from artannot.ml.classify.training import Outcome, gather, store_outcome
from artannot.project import Project
from artannot.store import classes as C
from artannot.store import db, queries, repo
from artannot.store import labels as L
from artannot.store import models as M
from artannot.store.queries import ImageQuery


def store_fake_model(p: Project, seed: int) -> int:
    """A model with random top-5 guesses and suspect scores for every image (the real store path)."""
    data = gather(p.conn)
    class_ids = sorted({c for *_, c in data.train})
    scores = np.random.default_rng(seed).dirichlet(np.ones(len(class_ids)), len(data.everything))
    scores[:3] = 0.5  # ties: order among equal scores is by id (high first) and its reverse (low first)
    result = store_outcome(p.conn, data, Outcome("svm", "fake", class_ids, scores, np.ones(len(scores), bool), {},
                                                 oof_scores=scores), started=time.perf_counter())
    return int(result.model_id)


@pytest.fixture
def project(demo_project):
    with Project(demo_project) as p:
        store_fake_model(p, 1)
    p = Project(demo_project)
    ids = [r.id for r in p.images()]
    c = [k.id for k in p.classes()]
    p.set_label(ids[:5], c[1])  # human edits
    p.set_label(ids[5:7], None)  # cleared: unlabelled
    p.set_split(ids[7:12], "val")
    p.add_tags(ids[10:14], ["faded"])
    yield p
    p.close()


def rows_of(p: Project, m: int | None) -> dict:
    return queries.fetch_rows(p.conn, queries.all_ids(p.conn), m)


def expected(p: Project, q: ImageQuery) -> list[int]:
    """The query answered in Python from the grid rows: filter, then the documented order."""
    rows = rows_of(p, q.model_id)
    tags = {r[0] for r in p.conn.execute("SELECT image_id FROM image_tags WHERE active = 1 AND present = 1")}
    keep = []
    for i, r in sorted(rows.items()):
        if (q.class_ids or q.unlabelled) and not (r.class_id in q.class_ids or q.unlabelled and r.class_id is None):
            continue
        if q.sources and (r.class_id is None or r.label_source not in q.sources):
            continue
        if q.splits and (r.split or "none") not in q.splits:
            continue
        if q.disagree and not r.disagrees:
            continue
        if q.flagged and not r.flagged:
            continue
        if q.untagged and i in tags:
            continue
        if q.text and q.text.lower() not in r.path.lower():
            continue
        keep.append(r)
    none_last = [r for r in keep if r.pred_score is None]
    scored = [r for r in keep if r.pred_score is not None]
    if q.sort == "confidence":
        keep = sorted(scored, key=lambda r: (-r.pred_score, r.id)) + none_last
    elif q.sort == "confidence_asc":
        keep = sorted(scored, key=lambda r: (r.pred_score, -r.id)) + none_last
    elif q.sort == "suspect":
        keep = sorted([r for r in keep if r.suspect_rank is not None], key=lambda r: r.suspect_rank) + \
            [r for r in keep if r.suspect_rank is None]
    elif q.sort == "name":
        names = {r[0]: r[1] for r in p.conn.execute("SELECT id, path FROM images")}
        keep = sorted(keep, key=lambda r: (names[r.id], r.id))
    return [r.id for r in keep]


def cases(m: int | None, class_id: int) -> list[ImageQuery]:
    out = []
    for sort in queries.SORTS:
        if sort == "proposal":
            continue  # no proposals here: test_proposals covers that order
        for f in ({}, {"class_ids": (class_id,)}, {"unlabelled": True}, {"sources": ("human",)},
                  {"sources": ("folder",)}, {"splits": ("val",)}, {"splits": ("train", "none")}, {"disagree": True},
                  {"flagged": True}, {"untagged": True}, {"text": "fish"}, {"text": "_0"},
                  {"sources": ("folder",), "splits": ("test",)}, {"disagree": True, "splits": ("train",)}):
            out.append(ImageQuery(sort=sort, model_id=m, **f))
    return out


def check_all(p: Project, m: int | None) -> None:
    c0 = p.classes()[0].id
    for q in cases(m, c0):
        got = queries.image_ids(p.conn, q).tolist()
        assert got == expected(p, q), q
        assert queries.count(p.conn, q) == len(got), q


def disagree_flags_match(p: Project) -> None:
    """model_top1 holds every model's rank-1 guess and, for every image with a label row in effect, a flag
    equal to 'labelled and the guess differs' (an image with none is left out by the queries themselves)."""
    now = {r[0]: r[1] for r in p.conn.execute("SELECT image_id, class_id FROM labels WHERE active = 1")}
    top = {(r[0], r[1]): (r[2], r[3]) for r in p.conn.execute(
        "SELECT model_id, image_id, class_id, score FROM predictions WHERE rank = 1")}
    stored = {(r[0], r[1]): (r[2], r[3], r[4]) for r in p.conn.execute(
        "SELECT model_id, image_id, class_id, score, disagree FROM model_top1")}
    assert set(stored) == set(top)
    for key, (cls, score, flag) in stored.items():
        assert (cls, score) == top[key]
        if key[1] in now:
            label = now[key[1]]
            assert flag == int(label is not None and cls != label), key


def test_every_filter_and_sort_matches_python(project):
    p, m = project, project.active_model_id()
    assert m is not None
    check_all(p, m)
    check_all(p, None)  # no model: every model filter is empty, every model order falls back to id order
    assert queries.summary(p.conn, m)["disagree"] == len(expected(p, ImageQuery(disagree=True, model_id=m)))


def flags_and_counts_match(p: Project) -> None:
    """The disagreement flags, and the per-class counts the class list shows (schema 9, kept by triggers),
    equal what the label rows say."""
    disagree_flags_match(p)
    counted = {r[0]: r[1] for r in p.conn.execute(
        "SELECT class_id, COUNT(*) FROM labels WHERE active = 1 AND class_id IS NOT NULL GROUP BY class_id")}
    assert queries.class_counts(p.conn) == counted
    assert {c.id: c.count for c in repo.list_classes(p.conn) if c.count} == counted


def test_the_disagreement_flag_follows_every_label_change(project):
    p, m = project, project.active_model_id()
    flags_and_counts_match(p)
    ids = [r.id for r in p.images()]
    top = queries.top_classes(p.conn, m, ids)
    p.set_label(ids[20:23], top[ids[20]])  # now some agree
    flags_and_counts_match(p)
    L.undo(p.conn)
    flags_and_counts_match(p)
    L.redo(p.conn)
    flags_and_counts_match(p)
    a, b = p.classes()[:2]
    C.merge_classes(p.conn, a.id, b.id)  # relabels every image of a
    flags_and_counts_match(p)
    C.delete_class(p.conn, b.id)  # clears every label of b
    flags_and_counts_match(p)
    L.undo(p.conn)
    L.undo(p.conn)
    flags_and_counts_match(p)
    second = store_fake_model(p, 2)  # a second model: its own rows, the first's untouched
    flags_and_counts_match(p)
    repo.write_predictions(p.conn, second, [(ids[0], 1, a.id, 0.9), (ids[0], 2, b.id, 0.1)])  # re-predicted
    flags_and_counts_match(p)
    assert p.conn.execute("SELECT COUNT(*) FROM model_top1 WHERE model_id = ?", (second,)).fetchone()[0] == 1
    M.delete_model(p.conn, p.cache_dir, second)
    flags_and_counts_match(p)
    assert p.conn.execute("SELECT COUNT(*) FROM model_top1 WHERE model_id = ?", (second,)).fetchone()[0] == 0
    # An image left with no label row in effect (what undoing its first label does) is no disagreement
    flagged = queries.image_ids(p.conn, ImageQuery(disagree=True, model_id=m)).tolist()
    with p.conn:
        p.conn.execute("UPDATE labels SET active = 0 WHERE image_id = ? AND active = 1", (flagged[0],))
    assert flagged[0] not in queries.image_ids(p.conn, ImageQuery(disagree=True, model_id=m)).tolist()
    assert queries.summary(p.conn, m)["disagree"] == len(flagged) - 1
    check_all(p, m)


def test_the_views_read_indexes_in_order(project):
    p, m = project, project.active_model_id()

    def plans(q: ImageQuery) -> str:
        steps = [queries._build(p.conn, q, "i.id")]
        if queries._merge_sort(q):  # the key in its order, the filter in id order, merged by numpy
            steps = [queries._key_order(p.conn, q), queries._build(p.conn, dataclasses.replace(q, sort="id"), "i.id")]
        out = []
        for sql, params in steps:
            out += [r[3] for r in p.conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
        return " | ".join(out)

    for q, index in ((ImageQuery(disagree=True, sort="confidence", model_id=m), "model_top1_disagree"),
                     (ImageQuery(sort="confidence", model_id=m), "model_top1_score"),
                     (ImageQuery(sort="confidence_asc", model_id=m), "model_top1_score"),
                     (ImageQuery(sort="suspect", model_id=m), "suspects_order"),
                     (ImageQuery(sort="name"), "images_path"),
                     (ImageQuery(sources=("rule",)), "labels_now"),
                     (ImageQuery(splits=("test",), sort="suspect", model_id=m), "suspects_order"),
                     (ImageQuery(unlabelled=True), "labels_now")):
        plan = plans(q)
        assert f"COVERING INDEX {index}" in plan, (q, plan)
        assert "TEMP B-TREE" not in plan, (q, plan)  # read in order: no sort of the whole collection


def test_a_schema_5_project_gets_the_index_on_upgrade(tmp_path, demo_subset, monkeypatch):
    path = tmp_path / "old.artannot"
    monkeypatch.setattr(db, "SCHEMA_VERSION", 5)
    with Project.create(path) as p:
        p.import_folder(demo_subset, labels_from="folder", split="auto")
        assert p.conn.execute("SELECT name FROM sqlite_master WHERE name = 'model_top1'").fetchone() is None
        # a model with predictions as a schema-5 file holds them (the tables of schema 1, plain SQL)
        classes = [r[0] for r in p.conn.execute("SELECT id FROM classes ORDER BY id")]
        m = p.conn.execute("INSERT INTO models(backbone, method, classes, created_at) VALUES"
                           " ('fake', 'svm', ?, ?)", (str(classes), db.now())).lastrowid
        ids = [r[0] for r in p.conn.execute("SELECT id FROM images ORDER BY id")]
        p.conn.executemany("INSERT INTO predictions(model_id, image_id, rank, class_id, score) VALUES (?, ?, ?, ?, ?)",
                           [(m, i, r, classes[(i + r) % len(classes)], 1.0 / (r + 1)) for i in ids for r in (1, 2)])
        p.conn.commit()
        old = queries.image_ids(p.conn, ImageQuery(sort="id", model_id=m)).tolist()
    monkeypatch.undo()
    with Project(path) as p:
        assert p.conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
        flags_and_counts_match(p)  # the counts of schema 9 are filled from the labels on upgrade too
        assert sum(queries.class_counts(p.conn).values()) == len(old) > 0
        assert p.conn.execute("SELECT COUNT(*) FROM model_top1 WHERE disagree = 1").fetchone()[0] > 0
        assert queries.image_ids(p.conn, ImageQuery(sort="id", model_id=m)).tolist() == old
        check_all(p, m)
