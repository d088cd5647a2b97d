"""Curation driven from the keyboard and mouse like a curator would: keys, multi-select, review, boxes,
class edits, session restore. Real widgets, real SQLite; the model is a stored fake (no training here)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, QSettings, Qt
from PySide6.QtWidgets import QApplication

from artannot.gui.box_editor import BoxEditor
from artannot.gui.class_dialogs import HotkeyDialog
from artannot.gui.main_window import MainWindow
from artannot.gui.thumbnail_grid import BOXES_ROLE
from artannot.ml.classify.training import Outcome, gather, store_outcome
from artannot.project import Project
from artannot.store import boxes as box_store
from artannot.store.labels import current_labels_for
from tests.conftest import DEMO_CLASSES, PER_CLASS, show_main_window

SHOTS = Path("/tmp/artannot_shots")
N = len(DEMO_CLASSES) * PER_CLASS
CTRL, SHIFT = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier
LEFT = Qt.MouseButton.LeftButton


def fake_model(path: Path, wrong_every: int = 5) -> dict[int, int]:
    """Store a model whose guess is the label, except for every `wrong_every`-th image; returns its guesses."""
    with Project(path) as p:
        data = gather(p.conn)
        class_ids = sorted({c for *_, c in data.train})
        labels = {r.id: r.class_id for r in p.images()}
        rng = np.random.default_rng(0)
        scores = rng.dirichlet(np.ones(len(class_ids)) * 0.3, len(data.everything)) * 0.3
        guesses = {}
        for k, (image_id, _, _) in enumerate(data.everything):
            true = class_ids.index(labels[image_id])
            guess = (true + 1) % len(class_ids) if k % wrong_every == 2 else true
            scores[k, guess] += 0.7
            guesses[image_id] = class_ids[guess]
        outcome = Outcome("svm", "fake", class_ids, scores, np.ones(len(scores), bool), {"summary": "fake"},
                          oof_scores=scores)
        store_outcome(p.conn, data, outcome, started=time.perf_counter())
    return guesses


def label_of(project: Project, image_id: int) -> tuple[int | None, str | None]:
    row = current_labels_for(project.conn, [image_id]).get(image_id)
    return (row["class_id"], row["source"]) if row is not None else (None, None)


def settle(qtbot, w: MainWindow) -> None:
    """Let thumbnails and the current image load (for screenshots)."""
    stats = w.thumbnails.load_stats
    qtbot.wait(50)
    qtbot.waitUntil(lambda: stats()["queued"] == stats()["loading"] == 0, timeout=15_000)
    qtbot.waitUntil(lambda: w.viewer.row is None or w.viewer.image_ready() or w.review_mode(), timeout=10_000)
    qtbot.wait(50)


@pytest.fixture
def guesses(demo_project):
    return fake_model(demo_project)


@pytest.fixture
def window(qtbot, demo_project, guesses):
    """The main window on the demo project, opened after the model's guesses are in."""
    w = show_main_window(qtbot, demo_project)
    yield w
    w.close()


def key(qtbot, widget, k, mods=Qt.KeyboardModifier.NoModifier) -> None:
    qtbot.keyClick(widget, k, mods)


# ---- keys, multi-select, undo ----------------------------------------------------------------------------
def test_class_keys_letters_and_undo_across_edit_kinds(qtbot, window):
    p, grid, model = window.project, window.grid, window.thumbnails
    fish = next(c for c in window._classes if c.name == "fish")
    assert window.class_edits.set_class_key(fish.id, "q")
    assert next(c for c in window._classes if c.id == fish.id).hotkey == "q"
    assert any(window.class_list.tree.topLevelItem(k).text(0) == "q"
               for k in range(window.class_list.tree.topLevelItemCount()))  # shown in the class list
    grid.setFocus()
    first = model.row_at(0)
    grid.select_rows([0])
    key(qtbot, grid, "q")
    assert label_of(p, first.id) == (fish.id, "human")
    assert grid.current_row().id == model.row_at(1).id  # one image: focus moves on
    image_id = model.row_at(1).id
    box_store.add_boxes(p.conn, [(image_id, fish.id, 1, 1, 10, 10)])
    key(qtbot, grid, Qt.Key.Key_Z, CTRL)  # the box
    assert box_store.boxes_for(p.conn, image_id) == []
    key(qtbot, grid, Qt.Key.Key_Z, CTRL)  # the label
    assert label_of(p, first.id)[1] == "rule"
    key(qtbot, grid, Qt.Key.Key_Z, CTRL)  # the key assignment
    assert next(c for c in window._classes if c.id == fish.id).hotkey != "q"
    key(qtbot, grid, Qt.Key.Key_Z, CTRL | SHIFT)
    key(qtbot, grid, Qt.Key.Key_Z, CTRL | SHIFT)
    assert label_of(p, first.id) == (fish.id, "human")
    key(qtbot, grid, Qt.Key.Key_Y, CTRL)
    assert len(box_store.boxes_for(p.conn, image_id)) == 1
    key(qtbot, grid, "x")
    assert "No class on key X — assign one in the Classes dock" in window.statusBar().currentMessage()


def test_hotkey_dialog_takes_a_key_and_refuses_reserved_ones(qtbot, window):
    info = window._classes[0]
    dialog = HotkeyDialog(info, window._classes)
    qtbot.addWidget(dialog)
    key(qtbot, dialog, "s")
    assert dialog.key == info.hotkey and "skips" in dialog.note.text()
    key(qtbot, dialog, "w")
    assert dialog.key == "w"
    key(qtbot, dialog, window._classes[1].hotkey)
    assert dialog.key == window._classes[1].hotkey and "moves" in dialog.note.text()
    key(qtbot, dialog, Qt.Key.Key_Delete)
    assert dialog.key is None


def test_multi_select_by_click_rubber_band_and_select_all_then_one_key(qtbot, window):
    p, grid, model = window.project, window.grid, window.thumbnails
    target = window._classes[-1]
    vp = grid.viewport()
    grid.setFocus()
    centre = lambda k: grid.visualRect(model.index(k)).center()  # noqa: E731
    qtbot.mouseClick(vp, LEFT, pos=centre(2))
    qtbot.mouseClick(vp, LEFT, SHIFT, centre(4))
    assert grid.selected_rows().tolist() == [2, 3, 4]
    qtbot.mouseClick(vp, LEFT, CTRL, centre(0))
    assert grid.selected_rows().tolist() == [0, 2, 3, 4]
    key(qtbot, grid, target.hotkey)
    ids = [model.id_at(k) for k in (0, 2, 3, 4)]
    assert [label_of(p, i) for i in ids] == [(target.id, "human")] * 4
    assert sorted(grid.selected_ids()) == sorted(ids)  # several images: the selection stays

    top = grid.visualRect(model.index(0)).top()
    per_row = sum(grid.visualRect(model.index(k)).top() == top for k in range(model.rowCount()))
    empty = QPoint(grid.visualRect(model.index(per_row - 1)).right() + 12, 6)  # right of the first row
    end = grid.visualRect(model.index(per_row + per_row - 2)).center()  # into the second row
    qtbot.mousePress(vp, LEFT, pos=empty)
    for t in np.linspace(0.2, 1.0, 5):
        qtbot.mouseMove(vp, QPoint(int(empty.x() + (end.x() - empty.x()) * t), int(empty.y() + (end.y() - empty.y()) * t)))
    qtbot.mouseRelease(vp, LEFT, pos=end)
    banded = grid.selected_rows().tolist()
    assert banded == [per_row - 2, per_row - 1, 2 * per_row - 2, 2 * per_row - 1], (banded, per_row)

    before = {c.id: window.class_list.count(c.id) for c in window._classes}
    key(qtbot, grid, Qt.Key.Key_A, CTRL)
    assert len(grid.selected_ids()) == N
    other = window._classes[0]
    key(qtbot, grid, other.hotkey)
    assert window.class_list.count(other.id) == N
    key(qtbot, grid, Qt.Key.Key_Z, CTRL)  # one undo step for all of them
    assert {c.id: window.class_list.count(c.id) for c in window._classes} == before
    assert [label_of(p, i)[0] for i in ids] == [target.id] * 4


def test_space_accepts_the_models_guess_and_filters_find_suspects(qtbot, window, guesses):
    p, grid, model = window.project, window.grid, window.thumbnails
    wrong = [i for i in model.ids().tolist() if guesses[i] != label_of(p, i)[0]]
    assert window._summary["disagree"] == len(wrong) == window._summary["flagged"]
    window.filter_box.setCurrentIndex(window.filter_box.findData("suspects"))
    shown = model.ids().tolist()
    assert sorted(shown) == sorted(wrong)
    ranks = [model.row_at(k).suspect_rank for k in range(len(shown))]
    assert ranks == sorted(ranks)  # most likely wrong first
    SHOTS.mkdir(parents=True, exist_ok=True)
    settle(qtbot, window)
    window.grab().save(str(SHOTS / "grid_suspects_filter.png"))
    grid.setFocus()
    grid.select_rows([0, 1])
    key(qtbot, grid, Qt.Key.Key_Space)
    assert [label_of(p, i) for i in shown[:2]] == [(guesses[i], "human") for i in shown[:2]]
    assert model.row_at(0).class_id == guesses[shown[0]]  # the tile shows it at once
    key(qtbot, grid, Qt.Key.Key_Z, CTRL)
    assert [label_of(p, i)[0] for i in shown[:2]] != [guesses[i] for i in shown[:2]]


def test_filters_sort_and_search_use_the_database(qtbot, window):
    bar, model, p = window.filter_bar, window.thumbnails, window.project
    fish = next(c for c in window._classes if c.name == "fish")
    window.filter_box.setCurrentIndex(window.filter_box.findData(f"class:{fish.id}"))
    assert model.rowCount() == PER_CLASS and all(model.row_at(k).class_id == fish.id for k in range(PER_CLASS))
    p.set_label([model.id_at(0)], None)
    bar.source_box.setCurrentIndex(bar.source_box.findData("folder"))  # folder-name labels
    assert model.rowCount() == PER_CLASS - 1
    bar.source_box.setCurrentIndex(0)
    window.filter_box.setCurrentIndex(window.filter_box.findData("unlabelled"))
    assert model.rowCount() == 1
    window.filter_box.setCurrentIndex(0)
    bar.split_box.setCurrentIndex(bar.split_box.findData("test"))
    assert 0 < model.rowCount() < N and {model.row_at(k).split for k in range(model.rowCount())} == {"test"}
    bar.split_box.setCurrentIndex(0)
    bar.sort_box.setCurrentIndex(bar.sort_box.findData("confidence_asc"))
    scores = [model.row_at(k).pred_score for k in range(N)]
    assert scores == sorted(scores)
    bar.sort_box.setCurrentIndex(bar.sort_box.findData("name"))
    name = Path(model.row_at(5).path).name
    qtbot.keyClicks(bar.search, name[:6])
    qtbot.waitUntil(lambda: model.rowCount() < N, timeout=2000)  # debounced
    assert all(name[:6].lower() in model.row_at(k).path.lower() for k in range(model.rowCount()))
    bar.search.setText("zz")  # too short for the trigram index: a LIKE over paths, same answer
    qtbot.waitUntil(lambda: model.rowCount() == 0, timeout=2000)
    bar.search.clear()
    qtbot.waitUntil(lambda: model.rowCount() == N, timeout=2000)
    assert "289" not in bar.count.text() and f"{N}" in bar.count.text()


# ---- review mode ----------------------------------------------------------------------------------------
def test_review_queue_accepts_sets_skips_and_prefetches(qtbot, window, guesses):
    p, model, review = window.project, window.thumbnails, window.review
    window.grid.select_rows([3])
    key(qtbot, window, Qt.Key.Key_R, CTRL)
    assert window.review_mode() and review.index() == 3 and len(review.queue()) == N
    qtbot.waitUntil(review.image_ready, timeout=10_000)
    ids = model.ids().tolist()
    assert review.current_id() == ids[3]
    qtbot.waitUntil(lambda: all(review.cache.get(model.row_by_id(i).path) is not None for i in ids[4:7]),
                    timeout=10_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(SHOTS / "review_mode.png"))
    key(qtbot, review, Qt.Key.Key_Space)  # accept
    assert label_of(p, ids[3]) == (guesses[ids[3]], "human")
    assert review.current_id() == ids[4] and review.image_ready()  # prefetched: shown at once, no wait
    target = window._classes[2]
    key(qtbot, review.editor, target.hotkey)  # keys work with the image focused too
    assert label_of(p, ids[4]) == (target.id, "human") and review.current_id() == ids[5]
    assert review.image_ready()
    before = label_of(p, ids[5])
    key(qtbot, review, "s")
    assert label_of(p, ids[5]) == before and review.skipped == [ids[5]] and review.current_id() == ids[6]
    key(qtbot, review, Qt.Key.Key_Left)
    assert review.current_id() == ids[5]
    key(qtbot, review, Qt.Key.Key_Z, CTRL)  # undo works in review too
    assert label_of(p, ids[4])[1] == "rule"
    key(qtbot, review, Qt.Key.Key_Escape)
    assert not window.review_mode() and window.grid.current_row().id == ids[5]


# ---- boxes ------------------------------------------------------------------------------------------------
def drag(qtbot, editor: BoxEditor, a: QPointF, b: QPointF, steps: int = 4) -> None:
    """Press at image point a, move to b, release (positions mapped to the viewport)."""
    vp = editor.viewport()
    pa, pb = editor.mapFromScene(a), editor.mapFromScene(b)
    qtbot.mousePress(vp, LEFT, pos=pa)
    for t in np.linspace(1 / steps, 1.0, steps):
        qtbot.mouseMove(vp, QPoint(int(pa.x() + (pb.x() - pa.x()) * t), int(pa.y() + (pb.y() - pa.y()) * t)))
    qtbot.mouseRelease(vp, LEFT, pos=pb)


def test_boxes_draw_move_resize_label_delete_zoom_and_undo(qtbot, window):
    p, editor = window.project, window.viewer.editor
    window.grid.select_rows([0])
    qtbot.waitUntil(window.viewer.image_ready, timeout=10_000)
    image = window.viewer.row
    w, h = image.width, image.height
    fish = next(c for c in window._classes if c.name == "fish")
    window.class_list.set_current_class(fish.id)  # new boxes take the highlighted class
    drag(qtbot, editor, QPointF(w * 0.1, h * 0.1), QPointF(w * 0.5, h * 0.5))
    boxes = box_store.boxes_for(p.conn, image.id)
    assert len(boxes) == 1 and boxes[0].class_id == fish.id
    b = boxes[0]
    tol = 2 / editor.zoom_level() + 1  # one screen pixel, in image pixels
    assert abs(b.x - w * 0.1) < tol and abs(b.y - h * 0.1) < tol and abs(b.w - w * 0.4) < 2 * tol
    assert editor.selected_box() == b.id
    drag(qtbot, editor, QPointF(w * 0.3, h * 0.3), QPointF(w * 0.4, h * 0.35))  # move by (0.1w, 0.05h)
    moved = box_store.boxes_for(p.conn, image.id)[0]
    assert abs(moved.x - (b.x + w * 0.1)) < 2 * tol and abs(moved.w - b.w) < 0.01
    drag(qtbot, editor, QPointF(moved.x + moved.w, moved.y + moved.h), QPointF(w * 0.9, h * 0.8))  # br handle
    resized = box_store.boxes_for(p.conn, image.id)[0]
    assert abs(resized.x - moved.x) < 0.01 and abs(resized.x + resized.w - w * 0.9) < 2 * tol
    drag(qtbot, editor, QPointF(w * 0.05, h * 0.6), QPointF(w * 0.3, h * 0.95))  # a second box
    assert len(box_store.boxes_for(p.conn, image.id)) == 2
    editor.setFocus()
    stick = next(c for c in window._classes if c.name == "stickmen")
    if stick.hotkey is None:
        window.class_edits.set_class_key(stick.id, "k")
        stick = next(c for c in window._classes if c.name == "stickmen")
    key(qtbot, editor, stick.hotkey)  # labels the selected box, not the image
    assert sorted(x.class_id for x in box_store.boxes_for(p.conn, image.id)) == sorted([fish.id, stick.id])
    assert label_of(p, image.id)[1] == "rule"
    SHOTS.mkdir(parents=True, exist_ok=True)
    settle(qtbot, window)
    window.grab().save(str(SHOTS / "box_editor.png"))
    window.viewer.grab().save(str(SHOTS / "box_editor_viewer.png"))
    zoom = editor.zoom_level()
    editor.zoom(2.0)
    assert editor.zoom_level() == pytest.approx(zoom * 2.0)
    editor.fit()
    key(qtbot, editor, Qt.Key.Key_Delete)
    assert len(box_store.boxes_for(p.conn, image.id)) == 1
    for _ in range(2):
        key(qtbot, window.grid, Qt.Key.Key_Z, CTRL)  # delete, then the class change
    assert [x.class_id for x in box_store.boxes_for(p.conn, image.id)] == [fish.id, fish.id]  # as drawn
    assert len(editor.boxes()) == 2  # the editor shows the undone state
    window.boxes_action.setChecked(True)
    boxes_on_tile = window.thumbnails.data(window.thumbnails.index(0), BOXES_ROLE)
    assert len(boxes_on_tile) == 2


# ---- classes ----------------------------------------------------------------------------------------------
def test_rename_merge_delete_classes_with_undo(qtbot, window):
    p = window.project
    names = lambda: [c.name for c in window._classes]  # noqa: E731
    fish = next(c for c in window._classes if c.name == "fish")
    smilies = next(c for c in window._classes if c.name == "smilies")
    assert window.class_edits.rename_class(fish.id, "Fish & seafood")
    assert "Fish & seafood" in names() and window.filter_box.findText("Class: Fish & seafood") >= 0
    assert not window.class_edits.rename_class(fish.id, "smilies") and "merge" in window.last_error
    window.undo()
    assert "fish" in names()
    box_store.add_boxes(p.conn, [(window.thumbnails.id_at(0), fish.id, 0, 0, 5, 5)])
    assert window.class_edits.merge_class(fish.id, smilies.id)
    assert "fish" not in names() and window.class_list.count(smilies.id) == 2 * PER_CLASS
    assert p.conn.execute("SELECT COUNT(*) FROM boxes WHERE active = 1 AND class_id = ?", (smilies.id,)).fetchone()[0] == 1
    window.undo()
    assert "fish" in names() and window.class_list.count(fish.id) == PER_CLASS
    assert window.class_list.count(smilies.id) == PER_CLASS
    window.redo()
    assert "fish" not in names()
    window.undo()
    assert window.class_edits.delete_class(fish.id)
    assert "fish" not in names() and window.class_list.count(None) == PER_CLASS
    window.undo()
    assert "fish" in names() and window.class_list.count(fish.id) == PER_CLASS
    assert next(c for c in window._classes if c.id == fish.id).hotkey is not None  # the key came back too


# ---- overlay, session -------------------------------------------------------------------------------------
def test_question_mark_shows_every_shortcut(qtbot, window):
    window.grid.setFocus()
    key(qtbot, window.grid, "?")
    assert window.overlay.isVisible()
    sections = window.overlay.sections()
    assert {"Label", "Select", "Review", "Boxes", "Edit", "View"} <= set(sections), sections
    SHOTS.mkdir(parents=True, exist_ok=True)
    settle(qtbot, window)
    window.grab().save(str(SHOTS / "shortcuts_overlay.png"))
    key(qtbot, window.overlay, Qt.Key.Key_Escape)
    assert not window.overlay.isVisible()


def test_session_restores_project_filter_selection_and_layout(qtbot, tmp_path, demo_project, guesses):
    settings = QSettings(str(tmp_path / "session.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings)
    qtbot.addWidget(w)
    w.show()
    assert w.open_project(demo_project)
    w.resize(1300, 850)
    fish = next(c for c in w._classes if c.name == "fish")
    w.filter_box.setCurrentIndex(w.filter_box.findData(f"class:{fish.id}"))
    w.grid.select_rows([3, 5])
    chosen = w.grid.selected_ids()
    w.classes_dock.hide()
    w.close()
    again = MainWindow(settings=QSettings(str(tmp_path / "session.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(again)
    assert again.restore_session()
    again.show()
    assert again.project is not None and again.project.path == Path(demo_project).resolve()
    assert again.filter_box.currentData() == f"class:{fish.id}" and again.thumbnails.rowCount() == PER_CLASS
    assert sorted(again.grid.selected_ids()) == sorted(chosen) and again.grid.current_row().id == chosen[0]
    assert again.classes_dock.isHidden() and not again.image_dock.isHidden()  # the layout came back
    again.close()


def test_grid_paints_fast_with_big_selection(qtbot, window):
    """Ctrl+A then a key on the grid stays a few milliseconds of Qt work (selection ranges, not indexes)."""
    window.grid.setFocus()
    key(qtbot, window.grid, Qt.Key.Key_A, CTRL)
    ids = window.grid.selected_ids()
    assert len(ids) == N and len(window.grid.selectionModel().selection()) <= 2  # ranges, not N indexes
    QApplication.processEvents()


def test_selecting_scattered_ids_selects_exactly_them_in_a_few_ranges(qtbot, window):
    """A lasso on the map hands the grid thousands of ids: they become one selection range per run of
    neighbours, the current image first; ids the grid's filter hides are left out."""
    from artannot.gui.thumbnail_grid import row_runs

    assert row_runs([5, 3, 4, 9, 10, 1, 4]) == [(1, 1), (3, 5), (9, 10)]
    assert row_runs([]) == []
    grid, model = window.grid, window.grid.thumbnail_model()
    ids = model.ids()
    chosen = [int(ids[k]) for k in (3, 4, 5, 10, 11, 20)] + [10**9]  # the last is no image at all
    assert grid.select_ids(chosen, current=int(ids[10])) == 6
    assert sorted(grid.selected_ids()) == sorted(chosen[:-1])
    assert grid.currentIndex().row() == 10
    assert len(grid.selectionModel().selection()) == 3  # 3-5, 10-11, 20
