"""Boxes: append-only history, validation, and one undo stack with labels that survives restarts."""

from __future__ import annotations

import pytest
from PIL import Image

from artannot.errors import ArtAnnotError
from artannot.project import Project
from artannot.store import boxes as B
from artannot.store import labels as L


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "c"
    (root / "cat").mkdir(parents=True)
    for n in range(2):
        Image.new("RGB", (100, 50), "white").save(root / "cat" / f"{n}.png")
    path = tmp_path / "p.artannot"
    with Project.create(path) as p:
        p.import_folder(root)
    return path


def _geometry(conn, image_id):
    return [(b.class_id, b.x, b.y, b.w, b.h) for b in B.boxes_for(conn, image_id)]


def test_add_update_delete_with_history_and_undo_redo(project):
    with Project(project) as p:
        img = p.images()[0].id
        cat, dog = p.class_id("cat"), p.class_id("dog")
        e1 = B.add_boxes(p.conn, [(img, cat, 10, 10, 20, 20), (img, dog, 50, 5, 10, 10)], "human", "draw two")
        assert e1 and _geometry(p.conn, img) == [(cat, 10, 10, 20, 20), (dog, 50, 5, 10, 10)]
        first, second = B.boxes_for(p.conn, img)
        B.update_box(p.conn, first.id, x=30, w=25, class_id=dog)
        assert _geometry(p.conn, img) == [(dog, 50, 5, 10, 10), (dog, 30, 10, 25, 20)]
        assert B.update_box(p.conn, second.id) is None  # nothing changed, no event
        B.delete_boxes(p.conn, [second.id])
        assert _geometry(p.conn, img) == [(dog, 30, 10, 25, 20)]
        history = B.box_history(p.conn, img)
        assert len(history) == 4 and history[-1]["w"] == 0 and history[-1]["replaces_id"] == second.id

        assert p.undo().description == "delete 1 box"
        assert _geometry(p.conn, img) == [(dog, 50, 5, 10, 10), (dog, 30, 10, 25, 20)]
        assert p.undo().n_changes == 1  # the move
        assert _geometry(p.conn, img) == [(cat, 10, 10, 20, 20), (dog, 50, 5, 10, 10)]
        assert p.redo() and p.redo()  # move, then delete again: the tombstone stays inactive
        assert _geometry(p.conn, img) == [(dog, 30, 10, 25, 20)]
        with pytest.raises(ArtAnnotError, match="already changed or deleted"):
            B.update_box(p.conn, second.id, x=1)


def test_one_undo_stack_for_labels_and_boxes_survives_restart(project):
    with Project(project) as p:
        img = p.images()[0].id
        cat = p.class_id("cat")
        dog = p.class_id("dog")
        p.set_label([img], dog)
        B.add_boxes(p.conn, [(img, dog, 0, 0, 10, 10)], "human", "draw")
    with Project(project) as p:  # restart
        assert p.undo().description == "draw"
        assert B.boxes_for(p.conn, img) == []
        assert L.current_labels_for(p.conn, [img])[img]["class_id"] == dog
    with Project(project) as p:
        assert p.undo() is not None  # the label edit
        assert L.current_labels_for(p.conn, [img])[img]["class_id"] == cat
        p.redo()
    with Project(project) as p:
        assert p.redo().description == "draw"
        assert _geometry(p.conn, img) == [(dog, 0, 0, 10, 10)]
        p.undo()
        B.add_boxes(p.conn, [(img, cat, 1, 1, 5, 5)], "human", "another")  # a new edit drops the redo stack
        assert not L.can_redo(p.conn)
        assert p.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_boxes_are_validated_and_clipped(project):
    with Project(project) as p:
        img = p.images()[0].id  # 100 x 50
        cat = p.class_id("cat")
        B.add_boxes(p.conn, [(img, cat, -10, 40, 30, 30)], "human", "clip")
        assert _geometry(p.conn, img) == [(cat, 0, 40, 20, 10)]
        n_rows = p.conn.execute("SELECT COUNT(*) FROM boxes").fetchone()[0]
        for bad, words in [((img, cat, 0, 0, 0, 5), "must be above 0"), ((img, cat, 0, 0, -3, 5), "above 0"),
                           ((img, cat, 200, 0, 5, 5), "outside the 100×50 image"),
                           ((img, cat, float("nan"), 0, 5, 5), "finite"), ((999, cat, 0, 0, 5, 5), "no image")]:
            with pytest.raises(ArtAnnotError, match=words) as err:
                B.add_boxes(p.conn, [(img, cat, 1, 1, 2, 2), bad], "human", "bad")
            assert "\n" not in str(err.value)
        assert p.conn.execute("SELECT COUNT(*) FROM boxes").fetchone()[0] == n_rows  # all or nothing
        box = B.boxes_for(p.conn, img)[0]
        with pytest.raises(ArtAnnotError, match="outside"):
            B.update_box(p.conn, box.id, x=500)
        with pytest.raises(ValueError, match="source"):
            B.add_boxes(p.conn, [(img, cat, 1, 1, 2, 2)], "robot", "bad")
