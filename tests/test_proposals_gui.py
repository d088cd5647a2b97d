"""Box proposals in the real window: dashed with class and score, a live threshold, keys that accept, reject and
reclassify (each undoable), the review queue, box suspects, and propose -> review -> retrain end to end."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import QPointF, Qt

from artannot.project import Project
from artannot.store import boxes as B
from artannot.store import proposals as P
from artannot.store.db import now
from tests.conftest import show_main_window
from tests.test_detect import build_project


def _fake_detector(conn) -> int:
    """A detector row, so the window has one to name; its proposals below are written by the store itself."""
    cur = conn.execute("INSERT INTO models(backbone, method, classes, params, metrics, created_at)"
                       " VALUES ('efficientnet_lite0', 'patches', '[]', ?, '{\"map\": 0.5}', ?)",
                       (json.dumps({"task": "detect"}), now()))
    conn.commit()
    return cur.lastrowid


@pytest.fixture
def scenes(tmp_path):
    """Generated scenes with boxes; image 0 and image 1 lose theirs and get open proposals instead."""
    path = build_project(tmp_path, n=12)
    with Project(path) as p:
        ids = [im.id for im in p.images()]
        for image_id in ids[:2]:
            B.delete_boxes(p.conn, [b.id for b in B.boxes_for(p.conn, image_id)])
        circle, square = p.class_id("circle"), p.class_id("square")
        model = _fake_detector(p.conn)
        P.replace_proposals(p.conn, model, [(ids[0], circle, 10, 10, 40, 40, 0.9), (ids[0], square, 80, 20, 40, 40, 0.6),
                                            (ids[0], circle, 20, 90, 30, 30, 0.3), (ids[1], square, 30, 30, 50, 50, 0.55)],
                            ids[:2])
    return path


@pytest.fixture
def win(qtbot, scenes):
    w = show_main_window(qtbot, scenes)
    w.show_import_reports = False
    yield w
    w.close()


def _show(qtbot, w, k: int):
    w.grid.select_rows([k])
    qtbot.waitUntil(w.viewer.image_ready, timeout=5000)
    return w.thumbnails.row_at(k).id


def _items(editor):
    return {i: it for i, it in editor._items.items()}


def _click(qtbot, editor, rect_center: QPointF):
    qtbot.mouseClick(editor.viewport(), Qt.MouseButton.LeftButton, pos=editor.mapFromScene(rect_center))


def _box_rows(conn, image_id):
    return [tuple(r) for r in conn.execute("SELECT class_id, source, x, y FROM boxes WHERE image_id = ?"
                                           " AND active = 1 ORDER BY id", (image_id,))]


def test_proposals_show_dashed_with_score_and_the_threshold_filters_them_live(qtbot, win):
    _show(qtbot, win, 0)
    editor = win.viewer.editor
    shown = [it for i, it in _items(editor).items() if i < 0]
    assert sorted(round(it.score, 2) for it in shown) == [0.6, 0.9]  # 0.3 is under the 0.50 default
    assert all(it.proposal and it.label in ("circle", "square") for it in shown)
    assert win.proposal_review.bar.isVisible() and win.proposal_review.bar.count.text() == "2 shown of 3"
    win.proposal_review.bar.slider.setValue(20)
    assert sorted(round(it.score, 2) for i, it in _items(editor).items() if i < 0) == [0.3, 0.6, 0.9]
    win.proposal_review.bar.slider.setValue(95)
    assert not [i for i in _items(editor) if i < 0]
    assert win.proposal_review.bar.count.text() == "0 shown of 3"


def test_enter_accepts_the_clicked_proposal_as_a_model_box_and_undo_brings_it_back(qtbot, win):
    image_id = _show(qtbot, win, 0)
    editor = win.viewer.editor
    _click(qtbot, editor, QPointF(30, 30))  # the 0.9 circle
    pid = editor.selected_proposal()
    assert pid is not None and P.get_proposal(win.project.conn, pid).score == pytest.approx(0.9)
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    assert _box_rows(win.project.conn, image_id) == [(win.project.class_id("circle"), "model", 10.0, 10.0)]
    assert P.get_proposal(win.project.conn, pid).state == "accepted"
    assert editor.selected_proposal() is not None and editor.selected_proposal() != pid  # the next one, for Enter
    assert "Accepted 1 proposed box" in win.statusBar().currentMessage()
    assert [i for i in _items(editor) if i >= 0], "the accepted box is drawn as a box"
    win.undo()
    assert _box_rows(win.project.conn, image_id) == []
    assert P.get_proposal(win.project.conn, pid).state == "open"
    assert -pid in _items(editor)
    win.redo()
    assert len(_box_rows(win.project.conn, image_id)) == 1


def test_class_key_accepts_as_human_delete_rejects_and_shift_enter_accepts_all_shown(qtbot, win):
    image_id = _show(qtbot, win, 0)
    editor, conn = win.viewer.editor, win.project.conn
    square = next(c for c in win.project.classes() if c.name == "square")
    win.proposal_review.bar.slider.setValue(20)  # all three shown
    _click(qtbot, editor, QPointF(30, 30))  # the circle at 0.9 ...
    qtbot.keyClick(editor, square.hotkey)  # ... is a square, says the curator
    assert _box_rows(conn, image_id) == [(square.id, "human", 10.0, 10.0)]
    _click(qtbot, editor, QPointF(100, 40))  # the 0.6 square: wrong, rejected
    rejected = editor.selected_proposal()
    qtbot.keyClick(editor, Qt.Key.Key_Delete)
    assert P.get_proposal(conn, rejected).state == "rejected"
    assert len(_box_rows(conn, image_id)) == 1, "Delete on a proposal deletes no box"
    qtbot.keyClick(editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)  # the 0.3 circle left
    assert [r[1] for r in _box_rows(conn, image_id)] == ["human", "model"]
    assert P.count_open(conn) == 1  # image 1's
    # rejected boxes are never proposed again on the image, accepted ones are boxes now
    kept = P.replace_proposals(conn, None, [(image_id, square.id, 80, 20, 40, 40, 0.7),
                                            (image_id, square.id, 10, 10, 40, 40, 0.7)], [image_id])
    assert kept == 0


def test_keys_label_after_clicking_the_threshold_slider_and_a_proposal(qtbot, win):
    _show(qtbot, win, 2)
    win.grid.setFocus()
    slider = win.proposal_review.bar.slider
    qtbot.mouseClick(slider, Qt.MouseButton.LeftButton)
    assert win.focusWidget() is not slider
    row = win.thumbnails.row_at(2)
    target = next(c for c in win.project.classes() if c.id != row.class_id)
    qtbot.keyClick(win.focusWidget() or win.grid, target.hotkey)
    assert win.project.conn.execute("SELECT class_id FROM labels WHERE image_id = ? AND active = 1",
                                    (row.id,)).fetchone()[0] == target.id


def test_review_queue_lists_images_with_proposals_least_certain_first_and_enter_accepts(qtbot, win):
    ids = [im.id for im in win.project.images()]
    win.proposal_review.review()
    assert win.filter_box.currentData() == "proposals"
    assert list(win.thumbnails.ids()) == [ids[1], ids[0]]  # 0.55 before 0.6 (the 0.3 is under the threshold)
    assert win.review_mode()
    qtbot.waitUntil(win.review.image_ready, timeout=5000)
    editor = win.review.editor
    assert editor.selected_proposal() is not None, "the queue selects a proposal: Enter accepts it"
    qtbot.keyClick(win.review, Qt.Key.Key_Return)
    assert [r[1] for r in _box_rows(win.project.conn, ids[1])] == ["model"]
    win.proposal_review.set_threshold(0.95)
    win.set_review_mode(False)
    assert win.thumbnails.rowCount() == 0  # nothing left at 0.95


def test_box_suspects_filter_and_the_check_line(qtbot, win):
    conn = win.project.conn
    model = win.detector_id()
    images = [im.id for im in win.project.images()]
    boxed = next(i for i in images[2:] if B.boxes_for(conn, i))
    P.record_box_checks(conn, model, [], [boxed])  # the detector found nothing in its boxes
    win.show_preset("box_suspects")
    assert boxed in list(win.thumbnails.ids())
    k = list(win.thumbnails.ids()).index(boxed)
    _show(qtbot, win, k)
    assert "the detector finds nothing in this box" in win.proposal_review.bar.check.text()


def test_propose_needs_a_detector_and_says_so(qtbot, tmp_path):
    path = build_project(tmp_path, n=6)
    w = show_main_window(qtbot, path)
    try:
        assert w.propose_actions[0].isEnabled()
        w.propose_actions[0].trigger()
        assert "No detector yet" in (w.last_error or "")
    finally:
        w.close()


@pytest.mark.slow
def test_propose_accept_reject_and_retrain_from_the_window(qtbot, tmp_path):
    """The loop of the issue: train on a few boxes, propose on the unboxed images, review from the keys,
    retrain with the accepted boxes."""
    path = build_project(tmp_path, n=24, test_every=6)
    with Project(path) as p:  # the curator boxed a third of the training images; the rest wait for proposals
        ids = [im.id for im in p.images()]
        train = [im.id for im in p.images() if im.split != "test"]
        unboxed = [i for i in train if B.boxes_for(p.conn, i)][8:]
        B.delete_boxes(p.conn, [b.id for i in unboxed for b in B.boxes_for(p.conn, i)])
    w = show_main_window(qtbot, path)
    w.show_import_reports = False
    try:
        with qtbot.waitSignal(w.training_finished, timeout=240_000) as done:
            w.start_training(options={"method": "patches"})
        first = done.args[0].model_id
        assert w.detector_id() == first
        with qtbot.waitSignal(w.runner.queue.idle, timeout=240_000):
            w.propose_actions[2].trigger()  # every image without boxes
        result = w.proposal_review.last_result
        assert result["images"] == len([i for i in ids if not B.boxes_for(w.project.conn, i)]) > 8
        assert result["proposals"] > 0
        assert "proposed" in w.statusBar().currentMessage()
        w.proposal_review.set_threshold(0.05)
        w.proposal_review.review()
        qtbot.waitUntil(w.review.image_ready, timeout=5000)
        image = w.review.current_id()
        qtbot.keyClick(w.review, Qt.Key.Key_Return)  # accept the selected proposal
        accepted = [r for r in _box_rows(w.project.conn, image) if r[1] == "model"]
        assert len(accepted) == 1
        if w.review.editor.selected_proposal() is not None:
            qtbot.keyClick(w.review, Qt.Key.Key_Delete)
        with qtbot.waitSignal(w.training_finished, timeout=240_000) as again:
            w.start_training(options={"method": "patches"})
        params = json.loads(w.project.conn.execute("SELECT params FROM models WHERE id = ?",
                                                   (again.args[0].model_id,)).fetchone()[0])
        with Project(path) as p:
            before = json.loads(p.conn.execute("SELECT params FROM models WHERE id = ?", (first,)).fetchone()[0])
        assert params["n_boxes"] == before["n_boxes"] + 1, "the accepted box trains the next detector"
    finally:
        w.close()
