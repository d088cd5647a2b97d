"""Defects of the main window: keys keep labelling after any click, docks fit the window."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox

from artannot.store.labels import current_labels_for
from tests.conftest import show_main_window


def _label(window, image_id):
    row = current_labels_for(window.project.conn, [image_id]).get(image_id)
    return row["class_id"] if row is not None else None


def _press_class_key_and_check(qtbot, window, k):
    classes = window.project.classes()
    window.grid.select_rows([k])
    row = window.thumbnails.row_at(k)
    target = next(c for c in classes if c.id != row.class_id)
    focused = window.focusWidget()
    qtbot.keyClick(focused if focused is not None else window.grid, target.hotkey)
    assert _label(window, row.id) == target.id, f"key {target.hotkey} went to {type(focused).__name__}"


def test_class_keys_label_after_clicking_any_bar_control(qtbot, window):
    """Clicking Train used to leave the keyboard in the budget box: the next class key changed the budget."""
    window.train_panel.set_enabled_for_project(True)
    window.start_training = lambda *a, **k: None  # the click is what matters, not the training
    window.train_panel.train_requested.disconnect()
    controls = [w for bar in (window.train_panel, window.filter_bar)
                for w in bar.findChildren(QAbstractButton) + bar.findChildren(QAbstractSpinBox)
                + bar.findChildren(QComboBox) if w.isVisible() and w.isEnabled()]
    assert controls
    window.grid.setFocus()
    for k, control in enumerate(controls):
        budget = window.train_panel.budget.value()
        if isinstance(control, QAbstractSpinBox):
            qtbot.mouseClick(control, Qt.MouseButton.LeftButton)
            control.editingFinished.emit()
        elif isinstance(control, QComboBox):
            control.activated.emit(control.currentIndex())
        else:
            qtbot.mouseClick(control, Qt.MouseButton.LeftButton)
        qtbot.wait(5)
        assert window.focusWidget() is window.grid, f"{type(control).__name__} kept the keyboard"
        _press_class_key_and_check(qtbot, window, k % window.thumbnails.rowCount())
        assert window.train_panel.budget.value() == budget


def test_bar_buttons_never_take_focus(window):
    for bar in (window.train_panel, window.filter_bar):
        for button in bar.findChildren(QAbstractButton):
            assert button.focusPolicy() == Qt.FocusPolicy.NoFocus, button.text()
        for box in bar.findChildren(QAbstractSpinBox):
            assert box.focusPolicy() == Qt.FocusPolicy.ClickFocus


@pytest.mark.parametrize("size", [(1400, 900), (1024, 700)])
@pytest.mark.parametrize("dock", ["saliency_dock", "map_dock", "similar_dock"])
def test_opening_a_dock_keeps_the_window_size(qtbot, demo_project, size, dock):
    """The collection map widened the window from 1400 to 1547 px; similar images made it 974 px tall."""
    w = show_main_window(qtbot, demo_project)
    w.resize(*size)
    qtbot.wait(20)
    before = w.size().toTuple()
    assert before == size
    d = getattr(w.insights, dock)
    d.show()
    d.raise_()
    for _ in range(5):
        qtbot.wait(10)
    assert d.isVisible()
    assert w.size().toTuple() == before
    w.close()


def test_missing_xcb_libraries_are_named_before_qt_starts():
    """Without libxcb-cursor0 & co `artannot gui` died with "no Qt platform plugin could be initialized"."""
    from artannot.gui.app import platform_problem

    line = platform_problem({"DISPLAY": ":0"}, find=lambda name: None if name in ("xcb-cursor", "xcb-icccm")
                            else f"lib{name}.so")
    assert line is not None and "\n" not in line
    assert "apt-get install libxcb-cursor0 libxcb-icccm4" in line
    assert platform_problem({"DISPLAY": ":0"}, find=lambda name: f"lib{name}.so") is None
    assert platform_problem({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, find=lambda n: None) is None
    assert platform_problem({}, find=lambda n: None) is None  # no display: the display check speaks instead


def test_unassigned_key_says_how_to_assign_one(qtbot, window):
    window.grid.setFocus()
    window.grid.select_rows([0])
    qtbot.keyClick(window.grid, "q")
    assert "No class on key Q — assign one in the Classes dock" in window.statusBar().currentMessage()


def test_undo_message_is_singular_for_one_change(qtbot, window):
    c = window.project.classes()
    row = window.thumbnails.row_at(0)
    window.grid.select_rows([0])
    window.set_label_of_selection(next(x.id for x in c if x.id != row.class_id))
    window.undo()
    assert window.statusBar().currentMessage().endswith("(1 change)")


def test_train_button_and_dialog_share_the_default_budget(qtbot, window):
    from artannot.gui import train_dialog, train_panel

    assert train_dialog.DEFAULT_BUDGET_MIN == train_panel.DEFAULT_BUDGET_MIN == 2
    assert window.train_panel.budget.value() == 2


def test_written_files_respect_the_umask(tmp_path):
    import os

    from artannot.store.files import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.csv", b"x")
        assert (tmp_path / "a.csv").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "b.csv", b"x")
        assert (tmp_path / "b.csv").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_a_deleted_class_leaves_the_displayed_predictions(tmp_path, small):
    from artannot.project import Project
    from artannot.store import classes as class_store
    from artannot.store.db import write
    from artannot.store.repo import top_predictions

    _, path = small
    with Project(path) as p:
        circle, square = (c.id for c in p.classes())
        image = p.images()[0].id
        with write(p.conn):
            cur = p.conn.execute("INSERT INTO models(method, backbone, classes, created_at) VALUES ('svm', 'x', '[]', '2026')")
            model = cur.lastrowid
            p.conn.executemany("INSERT INTO predictions(model_id, image_id, rank, class_id, score)"
                               " VALUES (?, ?, ?, ?, ?)", [(model, image, 0, square, 0.7), (model, image, 1, circle, 0.3)])
        assert [n for n, _ in top_predictions(p.conn, model, image)] == ["square", "circle"]
        class_store.delete_class(p.conn, square)
        assert [n for n, _ in top_predictions(p.conn, model, image)] == ["circle"]


def test_a_job_started_while_another_runs_is_queued_not_refused(qtbot, window):
    """An analysis job used to grey out Train; now Train (and every job action) stays enabled and queues."""
    import threading

    gate, order = threading.Event(), []

    def slow(progress, cancel):
        gate.wait(20)
        order.append("first")
        return 1

    first = window.runner.run_job("model analysis", slow, lambda _r: None)
    qtbot.waitUntil(lambda: window.runner.current is first, timeout=5000)
    assert window.train_panel.train_button.isEnabled() and window.train_action.isEnabled()
    assert all(a.isEnabled() for a in window.job_actions)
    second = window.runner.run_job("predicting", lambda progress, cancel: order.append("second"), lambda _r: None)
    assert second is not None
    assert "queued" in window.statusBar().currentMessage() and "model analysis" in window.statusBar().currentMessage()
    gate.set()
    qtbot.waitUntil(lambda: not window.jobs.busy, timeout=10_000)
    assert order == ["first", "second"]
