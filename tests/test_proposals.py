"""Proposed boxes: stored apart from boxes, never duplicating one, accepted or rejected with undo."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from artannot.errors import ArtAnnotError
from artannot.project import Project
from artannot.store import boxes as B
from artannot.store import labels as L
from artannot.store import proposals as P
from artannot.store import repo
from artannot.store.db import now


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "c"
    (root / "lute").mkdir(parents=True)
    for n in range(3):
        Image.new("RGB", (200, 100), "white").save(root / "lute" / f"{n}.png")
    path = tmp_path / "p.artannot"
    with Project.create(path) as p:
        p.import_folder(root)
    return path


def _model(conn) -> int:
    cur = conn.execute("INSERT INTO models(backbone, method, classes, params, metrics, created_at)"
                       " VALUES ('lite0', 'detector', '[]', ?, '{}', ?)", (json.dumps({"task": "detect"}), now()))
    conn.commit()
    return cur.lastrowid


def test_proposals_skip_boxes_and_replace_open_ones(project):
    with Project(project) as p:
        img = p.images()[0].id
        lute = p.class_id("lute")
        B.add_boxes(p.conn, [(img, lute, 10, 10, 50, 40)])
        model = _model(p.conn)
        kept = P.replace_proposals(p.conn, model, [
            (img, lute, 12, 11, 50, 40, 0.9),     # the curator's box again: dropped
            (img, lute, 120, 20, 60, 50, 0.8),
            (img, lute, 150, 60, 100, 100, 0.4),  # clipped to the image
            (img, lute, 500, 500, 10, 10, 0.7),   # outside the image: dropped
        ])
        assert kept == 2
        got = P.proposals_for(p.conn, img)
        assert [g.score for g in got] == [0.8, 0.4]
        assert (got[1].x + got[1].w, got[1].y + got[1].h) == (200, 100)
        assert [g.score for g in P.proposals_for(p.conn, img, min_score=0.5)] == [0.8]
        # proposing again replaces the open ones instead of piling up
        assert P.replace_proposals(p.conn, model, [(img, lute, 120, 20, 60, 50, 0.6)]) == 1
        assert [g.score for g in P.proposals_for(p.conn, img)] == [0.6]


def test_accept_and_reject_are_undoable_and_rejected_boxes_stay_away(project):
    with Project(project) as p:
        a, b = p.images()[0].id, p.images()[1].id
        lute = p.class_id("lute")
        model = _model(p.conn)
        P.replace_proposals(p.conn, model, [(a, lute, 10, 10, 40, 40, 0.9), (a, lute, 100, 10, 40, 40, 0.3),
                                            (b, lute, 10, 10, 40, 40, 0.5)])
        assert [q[0] for q in P.review_queue(p.conn)] == [a, b]  # lowest open score first
        first, second = P.proposals_for(p.conn, a)
        P.accept(p.conn, [first.id])
        boxes = B.boxes_for(p.conn, a)
        assert [(x.source, x.class_id, x.x) for x in boxes] == [("model", lute, 10)]
        assert P.get_proposal(p.conn, first.id).state == "accepted"
        P.reject(p.conn, [second.id])
        assert P.proposals_for(p.conn, a) == []
        with pytest.raises(ArtAnnotError, match="already"):
            P.accept(p.conn, [second.id])
        assert L.undo(p.conn).description.startswith("reject")
        assert P.get_proposal(p.conn, second.id).state == "open"
        assert L.undo(p.conn).description.startswith("accept")
        assert B.boxes_for(p.conn, a) == [] and P.get_proposal(p.conn, first.id).state == "open"
        L.redo(p.conn)
        assert len(B.boxes_for(p.conn, a)) == 1 and P.get_proposal(p.conn, first.id).state == "accepted"
        L.redo(p.conn)
        # a rejected box is not proposed again; a class chosen by the curator makes a human box
        assert P.replace_proposals(p.conn, model, [(a, lute, 101, 11, 40, 40, 0.7)]) == 0
        third = P.proposals_for(p.conn, b)[0]
        P.accept(p.conn, [third.id], class_id=lute)
        assert B.boxes_for(p.conn, b)[0].source == "human"


def test_deleting_the_model_keeps_reviewed_history(project, tmp_path):
    from artannot.store.models import delete_model

    with Project(project) as p:
        a = p.images()[0].id
        lute = p.class_id("lute")
        model = _model(p.conn)
        P.replace_proposals(p.conn, model, [(a, lute, 10, 10, 40, 40, 0.9), (a, lute, 100, 10, 40, 40, 0.3)])
        P.accept(p.conn, [P.proposals_for(p.conn, a)[0].id])
        delete_model(p.conn, tmp_path, model)
        assert P.proposals_for(p.conn, a) == []
        assert len(B.boxes_for(p.conn, a)) == 1
        assert p.conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_the_store_knows_the_detect_task_by_the_same_method_names_as_ml_detect():
    """store/models.py cannot import ml/: its copy of the detector methods must match ml/detect's."""
    from artannot.ml import detect
    from artannot.store.models import DETECT_METHODS, model_task

    assert set(DETECT_METHODS) == set(detect.METHODS)
    assert [model_task(m, "{}") for m in ("detector", "patches", "tags", "svm")] == [
        "detect", "detect", "tags", "classify"]


def test_an_image_reviewed_empty_is_a_negative_and_one_awaiting_review_is_not(project):
    """Rejecting every proposal on an image says nothing is there: the next detector learns it as background.
    An image whose proposals are still open may hold objects: it never counts as empty."""
    from artannot.ml.detect.data import TRAIN_SPLITS, box_images

    with Project(project) as p:
        a, b, c = (im.id for im in p.images())
        p.set_split([a, b, c], "train")
        lute = p.class_id("lute")
        B.add_boxes(p.conn, [(a, lute, 10, 10, 50, 40)])
        model = _model(p.conn)
        P.replace_proposals(p.conn, model, [(b, lute, 20, 20, 40, 40, 0.7), (c, lute, 20, 20, 40, 40, 0.7)])
        assert [im.image_id for im in box_images(p.conn, TRAIN_SPLITS)] == [a]
        P.reject(p.conn, [q.id for q in P.proposals_for(p.conn, b)])
        assert [im.image_id for im in box_images(p.conn, TRAIN_SPLITS)] == [a, b]
        P.accept(p.conn, [q.id for q in P.proposals_for(p.conn, c)])
        got = box_images(p.conn, TRAIN_SPLITS)
        assert [im.image_id for im in got] == [a, c, b] and got[2].boxes == []
        assert [im.image_id for im in box_images(p.conn, TRAIN_SPLITS, negatives=False)] == [a, c]
        B.delete_boxes(p.conn, [x.id for x in B.boxes_for(p.conn, a)])  # a: not boxed yet, never reviewed
        assert [im.image_id for im in box_images(p.conn, TRAIN_SPLITS)] == [c, b]
        assert [im.image_id for im in box_images(p.conn, TRAIN_SPLITS, negatives=True)] == [c, a, b]


def test_two_classes_on_one_object_keep_only_the_surer_proposal(project):
    with Project(project) as p:
        img = p.images()[0].id
        lute = p.class_id("lute")
        other = repo.ensure_classes(p.conn, ["harp"])["harp"]
        kept = P.replace_proposals(p.conn, None, [(img, other, 21, 11, 50, 40, 0.45), (img, lute, 20, 10, 50, 40, 0.8),
                                                  (img, other, 120, 10, 50, 40, 0.3)])
        got = P.proposals_for(p.conn, img)
        assert kept == 2 and [(q.class_id, q.score) for q in got] == [(lute, 0.8), (other, 0.3)]
