"""The desktop app driven like a curator would: real widgets, real SQLite, the real bundled model."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap

from artannot.gui.app import binding_problem, run_gui
from artannot.gui.main_window import MainWindow
from artannot.gui.thumbnail_grid import THUMB_ROLE, ThumbnailGrid, ThumbnailModel
from artannot.project import Project
from artannot.store.labels import current_labels_for
from artannot.store.repo import ImageRow
from tests.conftest import DEMO_CLASSES, PER_CLASS

SHOTS = Path("/tmp/artannot_shots")
N_IMAGES = len(DEMO_CLASSES) * PER_CLASS
CTRL = Qt.KeyboardModifier.ControlModifier


def test_qt_binding_keeps_reference_counts():
    """PySide6 6.12.0 drops a reference to True on every Signal.emit: the app aborts after ~30k signals."""
    assert binding_problem() is None, binding_problem()


def label_of(project: Project, image_id: int) -> tuple[int | None, str | None]:
    """(class id, source) of an image's current label in the database."""
    row = current_labels_for(project.conn, [image_id]).get(image_id)
    return (row["class_id"], row["source"]) if row is not None else (None, None)


def test_grid_shows_every_image_and_loads_thumbnails(qtbot, window):
    model = window.thumbnails
    assert model.rowCount() == N_IMAGES
    assert window.windowTitle().startswith("demo")
    qtbot.waitUntil(lambda: model.thumbnail_state(0) == "ready", timeout=15_000)
    assert isinstance(model.data(model.index(0), THUMB_ROLE), QPixmap)
    counts = [window.class_list.count(c.id) for c in window.project.classes()]
    assert counts == [PER_CLASS] * len(DEMO_CLASSES)
    assert window.class_list.count(None) == 0
    assert window.viewer.row is not None and window.viewer.row.id == model.row_at(0).id


def test_number_keys_label_the_selection_with_undo_and_redo(qtbot, window):
    p, grid, model = window.project, window.grid, window.thumbnails
    classes = {c.hotkey: c for c in p.classes()}
    first = model.row_at(0)
    old_class = first.class_id
    target = next(c for c in classes.values() if c.id != old_class)
    grid.setFocus()
    grid.select_rows([0])
    qtbot.keyClick(grid, target.hotkey)
    assert label_of(p, first.id) == (target.id, "human")
    assert model.row_by_id(first.id).class_id == target.id
    assert window.class_list.count(target.id) == PER_CLASS + 1
    assert window.class_list.count(old_class) == PER_CLASS - 1
    assert grid.current_row().id == model.row_at(1).id  # one image labelled: focus moves on

    qtbot.keyClick(grid, Qt.Key.Key_Z, CTRL)
    assert label_of(p, first.id) == (old_class, "rule")
    assert model.row_by_id(first.id).class_id == old_class
    assert window.class_list.count(target.id) == PER_CLASS
    qtbot.keyClick(grid, Qt.Key.Key_Z, CTRL | Qt.KeyboardModifier.ShiftModifier)
    assert label_of(p, first.id) == (target.id, "human")
    qtbot.keyClick(grid, Qt.Key.Key_Y, CTRL)  # nothing left to redo
    assert label_of(p, first.id) == (target.id, "human")

    three = [model.row_at(k).id for k in (3, 4, 5)]
    grid.select_rows([3, 4, 5])
    last = classes[str(len(classes))]
    qtbot.keyClick(grid, last.hotkey)
    assert [label_of(p, i) for i in three] == [(last.id, "human")] * 3
    assert sorted(grid.selected_ids()) == sorted(three)  # several images: the selection stays

    qtbot.keyClick(grid, Qt.Key.Key_0)
    assert [label_of(p, i)[0] for i in three] == [None] * 3
    assert window.class_list.count(None) == 3


@pytest.mark.slow
def test_training_shows_predictions_in_grid_viewer_and_evaluation(qtbot, window):
    SHOTS.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: list = []
    window.training_finished.connect(results.append)
    window.job_failed.connect(results.append)  # a failure ends the wait at once, with its message
    window.train_panel.budget.setValue(1)  # the one-click budget the curator sees beside Train
    qtbot.mouseClick(window.train_panel.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(results), timeout=180_000)
    result = results[0]
    assert not isinstance(result, str), result
    assert result.method == "auto" and result.params["auto"]["budget_s"] == 60.0  # one click is `auto`
    assert result.params["auto"]["reason"] and result.params["chosen"] in ("svm", "linear", "knn", "adaptive+svm")
    print(f"training in the GUI took {time.perf_counter() - start:.1f} s")
    assert window.project.active_model_id() == result.model_id
    rows = window.thumbnails.rows()
    assert all(r.pred_class_id is not None and 0 < r.pred_score <= 1 for r in rows)
    assert "top-1" in window.train_panel.result.text()
    window.grid.select_rows([2])
    preds = window.viewer.predictions()
    assert len(preds) == 5 and preds == sorted(preds, key=lambda x: -x[1])
    qtbot.wait(100)  # let the grid paint, so the visible thumbnails are requested
    stats = window.thumbnails.load_stats
    qtbot.waitUntil(lambda: stats()["queued"] == stats()["loading"] == 0 and stats()["ready"] > 0,
                    timeout=15_000)
    qtbot.wait(100)
    window.grab().save(str(SHOTS / "main_window_trained.png"))

    window.filter_box.setCurrentIndex(window.filter_box.findData("disagree"))
    suspects = window.thumbnails.rows()
    assert len(suspects) == sum(r.disagrees for r in window.thumbnails.all_rows())
    assert [r.pred_score for r in suspects] == sorted((r.pred_score for r in suspects), reverse=True)
    window.filter_box.setCurrentIndex(0)
    assert window.thumbnails.rowCount() == N_IMAGES

    dialog = window.show_evaluation()
    assert dialog is not None, window.last_error
    qtbot.addWidget(dialog)
    qtbot.waitExposed(dialog)
    assert dialog.per_class.rowCount() == len(DEMO_CLASSES)
    assert dialog.confusion.rowCount() == dialog.confusion.columnCount() == len(DEMO_CLASSES)
    dialog.grab().save(str(SHOTS / "evaluate_dialog.png"))


@pytest.mark.slow
def test_cancel_stops_training_quickly_and_stores_nothing(qtbot, window):
    job = window.start_training()
    assert job is not None
    # cancel once features are flowing, the slowest stage: it checks between batches
    qtbot.waitUntil(lambda: window.train_panel.progress.maximum() > 0, timeout=120_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(SHOTS / "main_window_training.png"))
    start = time.perf_counter()
    with qtbot.waitSignal(window.training_cancelled, timeout=15_000):
        qtbot.mouseClick(window.train_panel.cancel_button, Qt.MouseButton.LeftButton)
    print(f"cancel took {time.perf_counter() - start:.2f} s")  # speed is bench/ work; the signal must come
    qtbot.waitUntil(lambda: not window.jobs.busy, timeout=5_000)
    assert window.project.active_model_id() is None
    assert window.train_panel.train_button.isEnabled()


@pytest.mark.slow
def test_closing_while_training_asks_cancels_and_waits(qtbot, demo_project):
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    assert w.open_project(demo_project)
    asked: list[bool] = []
    w.confirm_close = lambda: asked.append(False) or False
    job = w.start_training()
    qtbot.waitUntil(lambda: w.train_panel.progress.maximum() > 0, timeout=120_000)  # extracting features
    w.close()
    assert asked == [False] and w.isVisible() and job.isRunning()  # "no" keeps the window and the job

    w.confirm_close = lambda: asked.append(True) or True
    start = time.perf_counter()
    w.close()
    print(f"close while training took {time.perf_counter() - start:.2f} s")
    assert asked == [False, True]
    assert not w.isVisible() and job.isFinished() and w.project is None
    with Project(demo_project) as p:
        assert p.active_model_id() is None


def test_import_folder_and_export_run_as_jobs(qtbot, tmp_path, demo_subset):
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    assert w.new_project(tmp_path / "fresh")
    assert w.project.path.name == "fresh.artannot"
    with qtbot.waitSignal(w.import_finished, timeout=60_000) as blocker:
        w.import_folder(demo_subset)
    assert blocker.args[0].added == N_IMAGES
    assert w.thumbnails.rowCount() == N_IMAGES
    assert f"{N_IMAGES} added" in w.statusBar().currentMessage()
    assert [c.name for c in w.project.classes()] == sorted(DEMO_CLASSES)
    qtbot.waitUntil(lambda: not w.jobs.busy, timeout=5_000)
    with qtbot.waitSignal(w.export_finished, timeout=30_000) as blocker:
        w.export(tmp_path / "labels.csv", "csv")
    assert blocker.args[0] == N_IMAGES and (tmp_path / "labels.csv").is_file()
    qtbot.waitUntil(lambda: not w.jobs.busy, timeout=10_000)  # else closing asks whether to cancel the job
    w.close()


def test_opening_a_missing_project_shows_a_clear_error(qtbot, tmp_path):
    w = MainWindow()
    qtbot.addWidget(w)
    assert not w.open_project(tmp_path / "nope.artannot")
    assert "no project at" in w.last_error


def test_grid_stays_light_with_100k_images(qtbot, tmp_path):
    rows = [ImageRow(i, f"/nonexistent/{i}.png", f"{i:064x}", 100, 100, "train", None, None, None, None)
            for i in range(1, 100_001)]
    model = ThumbnailModel()
    grid = ThumbnailGrid(model)
    qtbot.addWidget(grid)
    grid.resize(1000, 700)
    model.set_project_data(rows, [], tmp_path / "thumbs")
    grid.show()
    qtbot.waitExposed(grid)
    qtbot.wait(50)
    grid.scrollToBottom()
    qtbot.wait(50)
    requested = sum(model.load_stats().values())
    assert 0 < requested <= 200  # only what was on screen, not 100k
    qtbot.waitUntil(lambda: model.thumbnail_state(model.rowCount() - 1) == "error", timeout=10_000)
    model.shutdown()


def shown_grid(qtbot, width: int, height: int) -> tuple[ThumbnailModel, ThumbnailGrid]:
    """An empty grid on screen, with its model."""
    model = ThumbnailModel()
    grid = ThumbnailGrid(model)
    qtbot.addWidget(grid)
    grid.resize(width, height)
    grid.show()
    qtbot.waitExposed(grid)
    return model, grid


def test_grid_tiles_are_painted_once_and_again_whenever_what_they_show_changes(qtbot, tmp_path):
    """Scrolling copies painted tiles; a new class colour, a relabel, a selection or a model's guess
    paints the tile anew (what the curator sees is never a stale copy)."""
    from artannot.store.repo import ClassInfo

    fish, bird = ClassInfo(1, "fish", "#1565c0", "1", 2), ClassInfo(2, "bird", "#2e7d32", "2", 0)
    rows = [ImageRow(i, f"/nonexistent/{i}.png", f"{i:064x}", 100, 100, "train", 1, "human", None, None)
            for i in (1, 2)]
    model, grid = shown_grid(qtbot, 400, 300)
    model.set_project_data(rows, [fish, bird], tmp_path / "thumbs")
    qtbot.waitUntil(lambda: model.thumbnail_state(0) == "error", timeout=10_000)
    tiles = grid.itemDelegate()._tiles

    def shot():
        grid.viewport().repaint()
        return grid.viewport().grab().toImage()

    before = shot()
    painted = set(tiles)
    assert shot() == before and set(tiles) == painted  # nothing changed: copies, no new tile
    model.set_classes([ClassInfo(1, "fish", "#e53935", "1", 2), bird])  # a new colour for the class
    recoloured = shot()
    assert recoloured != before
    model.set_project_data([rows[0], ImageRow(2, rows[1].path, rows[1].sha256, 100, 100, "train", 2, "human",
                                               1, 0.9)], [fish, bird], tmp_path / "thumbs")  # relabel, a guess
    qtbot.waitUntil(lambda: model.thumbnail_state(1) == "error", timeout=10_000)
    relabelled = shot()
    assert relabelled not in (before, recoloured)
    grid.select_rows([1])
    assert shot() != relabelled
    model.shutdown()


def test_a_huge_grid_lays_out_in_batches_and_end_still_reaches_the_last_image(qtbot, tmp_path):
    """The grid shows before every row is placed (the rest follow between events); End, pressed before
    the layout is done, still lands on the last image, and so does the layout left to run by itself."""
    from PySide6.QtTest import QTest

    rows = [ImageRow(i, f"/nonexistent/{i}.png", f"{i:064x}", 100, 100, "train", None, None, None, None)
            for i in range(1, 50_001)]
    model, grid = shown_grid(qtbot, 1000, 700)
    for press_end in (True, False):
        qtbot.wait(1)  # an event-loop turn, as between two things a curator does
        model.set_project_data(rows, [], tmp_path / "thumbs")
        last = model.index(model.rowCount() - 1, 0)
        grid.setCurrentIndex(model.index(0, 0))
        assert grid.visualRect(model.index(5, 0)).isValid()  # the first rows are placed at once ...
        assert not grid.visualRect(last).isValid()  # ... the last ones not yet
        if press_end:
            grid.setFocus()
            QTest.keyClick(grid, Qt.Key.Key_End)
            assert grid.currentIndex().row() == model.rowCount() - 1
            assert grid.viewport().rect().intersects(grid.visualRect(last))  # scrolled to it
        else:
            qtbot.waitUntil(grid.laid_out, timeout=10_000)  # the rest is placed between events
            grid.scrollToBottom()
            assert grid.viewport().rect().intersects(grid.visualRect(last))
    # A new set shown while the last one is still being laid out (a filter picked at once): a selection in
    # its first batch scrolls into view on the next turns, without every row laid out first.
    model.set_project_data(rows, [], tmp_path / "thumbs")
    assert grid.visualRect(model.index(0, 0)).isValid()  # its first batch placed: the rest are under way
    model.set_project_data(rows[::-1], [], tmp_path / "thumbs")
    grid.select_rows([2000])
    assert not grid.laid_out()
    qtbot.waitUntil(lambda: grid.viewport().rect().intersects(grid.visualRect(model.index(2000, 0))), timeout=5000)
    model.shutdown()


def test_run_gui_without_a_display_prints_a_hint(monkeypatch, capsys):
    monkeypatch.setattr("sys.platform", "linux")
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    assert run_gui(None) == 2
    assert "no display" in capsys.readouterr().err


LAUNCH = """
import sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from artannot.gui.app import run_gui
from artannot.gui.main_window import MainWindow

def report_and_quit():
    for w in QApplication.topLevelWidgets():
        if isinstance(w, MainWindow):
            print("TITLE", w.windowTitle())
            print("ERROR", w.last_error)
            print("IMAGES", 0 if w.project is None else len(w.project.images()))
            w.confirm_close = lambda: True
            w.close()
    QApplication.instance().quit()

app = QApplication(sys.argv[:1])
QTimer.singleShot(1500, report_and_quit)
sys.exit(run_gui(sys.argv[1]))
"""


def _launch(project: Path, tmp_path: Path) -> dict[str, str]:
    """Run the real app entry point in its own process (own event loop, own settings folder)."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", LAUNCH, str(project)], capture_output=True, text=True,
                          env=env, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)


def test_run_gui_opens_a_project_in_a_real_app(tmp_path, demo_project):
    seen = _launch(demo_project, tmp_path)
    assert Path(demo_project).stem in seen["TITLE"] and seen["ERROR"] == "None"
    assert int(seen["IMAGES"]) == N_IMAGES


def test_run_gui_reports_a_missing_project_and_exits(tmp_path):
    seen = _launch(tmp_path / "missing.artannot", tmp_path)
    assert "No project at" in seen["ERROR"]



def test_train_dialog_from_the_menu_trains_the_chosen_method(qtbot, window):
    dialog = window.train_with_options()
    assert dialog is not None and dialog.isVisible()
    dialog.method.setCurrentIndex(dialog.method.findData("linear"))
    dialog.device.setCurrentIndex(dialog.device.findData("cpu"))
    with qtbot.waitSignal(window.training_finished, timeout=300_000) as blocker:
        dialog.accept()
    result = blocker.args[0]
    model = next(m for m in window.project.models() if m["id"] == result.model_id)
    assert model["method"] == "linear"
    assert window.project.evaluate(result.model_id)["top1"] > 0.4  # 5 classes: chance is 0.2
