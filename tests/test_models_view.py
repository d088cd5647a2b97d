"""Trustworthy models in the GUI: the Models dock (compare, make active, delete), the candidates of a
one-click run, the reliability plot, and a mark per label source on thumbnails and in the filter bar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from artannot.gui.evaluate_dialog import EvaluateDialog
from artannot.gui.thumbnail_delegate import SOURCE_MARKS
from artannot.gui.train_panel import format_estimate
from artannot.store import models as model_store
from artannot.store import queries
from artannot.store.repo import get_model

SHOTS = Path("/tmp/shots")


def _stored_top1(conn, model_id: int) -> dict[int, tuple[int, float]]:
    return {r[0]: (r[1], round(r[2], 6)) for r in conn.execute(
        "SELECT image_id, class_id, score FROM predictions WHERE model_id = ? AND rank = 1", (model_id,))}


def _grid_top1(window) -> dict[int, tuple[int, float]]:
    return {r.id: (r.pred_class_id, round(r.pred_score, 6)) for r in window.thumbnails.all_rows()}


@pytest.fixture
def two_models(window):
    """The window on the demo project with an SVM (older) and a linear model (newer) trained in it."""
    p = window.project
    first = p.train(method="svm", device="cpu").model_id
    second = p.train(method="linear", device="cpu").model_id
    window.reload()
    window.show_model_summary()
    return window, first, second


def test_models_view_makes_the_older_model_active_and_the_grid_follows(qtbot, two_models):
    window, first, second = two_models
    conn = window.project.conn
    assert _stored_top1(conn, first) != _stored_top1(conn, second)  # two models that guess differently
    window.models_action.trigger()
    view = window.models_view
    assert window.models_dock.isVisible() and view.table.rowCount() == 2
    assert [view.table.item(r, 1).text() for r in range(2)] == [str(first), str(second)]
    active = model_store.active_model_id(conn)
    r = view.row_of(active)
    assert view.table.item(r, 0).text() == "●" and view.table.item(r, 2).font().bold()
    assert "%" in view.table.item(0, 4).text()  # the SVM's honest estimate ± spread

    changes: list = []
    view.active_changed.connect(changes.append)
    view.select(first)
    window.grid.setFocus()
    qtbot.mouseClick(view.make_active_button, Qt.MouseButton.LeftButton)
    assert changes == [first]
    assert window.project.active_model_id() == first and model_store.chosen_model_id(conn) == first
    assert view.table.item(view.row_of(first), 0).text() == "●"
    assert view.table.item(view.row_of(second), 0).text() == ""
    assert _grid_top1(window) == _stored_top1(conn, first)  # the grid shows the chosen model's guesses
    assert f"model {first}" in window.train_panel.result.text()
    assert QApplication.focusWidget() is window.grid  # the buttons take no focus: class keys keep labelling

    view.select(second)
    view.make_active(second)
    assert _grid_top1(window) == _stored_top1(conn, second)
    for button in (view.make_active_button, view.delete_button, view.best_button):
        assert button.focusPolicy() == Qt.FocusPolicy.NoFocus


def test_delete_removes_the_row_its_files_and_falls_back_to_the_best(qtbot, two_models):
    window, first, second = two_models
    conn, view = window.project.conn, window.models_view
    window.models_action.trigger()
    view.make_active(second)
    files = [Path(m["checkpoint"]) for m in window.project.models() if m["id"] == second and m["checkpoint"]]
    asked: list[int] = []
    view.confirm_delete = lambda model_id: asked.append(model_id) or False
    view.select(second)
    qtbot.mouseClick(view.delete_button, Qt.MouseButton.LeftButton)
    assert asked == [second] and get_model(conn, second) is not None  # "No" keeps it

    deleted: list[int] = []
    view.deleted.connect(deleted.append)
    view.confirm_delete = lambda model_id: True
    qtbot.mouseClick(view.delete_button, Qt.MouseButton.LeftButton)
    assert deleted == [second] and get_model(conn, second) is None
    assert view.table.rowCount() == 1 and view.row_of(second) is None
    assert not any(f.exists() for f in files)
    assert conn.execute("SELECT COUNT(*) FROM predictions WHERE model_id = ?", (second,)).fetchone()[0] == 0
    assert window.project.active_model_id() == first  # the active one went: the best remaining takes over
    assert view.table.item(view.row_of(first), 0).text() == "●"
    assert _grid_top1(window) == _stored_top1(conn, first)
    assert "Deleted model" in window.statusBar().currentMessage()


def test_a_refused_delete_is_one_status_line(qtbot, two_models):
    window, first, second = two_models
    conn, view = window.project.conn, window.models_view
    with conn:  # an ensemble that names the first model as a member
        conn.execute("INSERT INTO models(backbone, method, classes, params, metrics, created_at)"
                     " SELECT backbone, 'ensemble', classes, ?, metrics, created_at FROM models WHERE id = ?",
                     (json.dumps({"predictor": {"members": [first, second]}}), first))
    view.set_project(window.project)
    view.confirm_delete = lambda model_id: True
    assert not view.delete(first)
    message = window.statusBar().currentMessage()
    assert "member of ensemble" in message and "\n" not in message
    assert get_model(conn, first) is not None and view.row_of(first) is not None


AUTO = {"budget_s": 120.0, "used_s": 41.5, "chosen": "svm", "backbone": "efficientnet_lite0", "labels": "all",
        "reason": "svm on efficientnet_lite0 with all labels: best honest estimate (91.0% ± 4.0%, nested cv)",
        "candidates": [
            {"method": "svm", "backbone": "efficientnet_lite0", "labels": "all", "estimate": 0.91, "std": 0.04,
             "seconds": 6.2, "chosen": True},
            {"method": "linear", "backbone": "efficientnet_lite0", "labels": "all", "estimate": 0.55, "std": 0.12,
             "seconds": 3.1, "chosen": False}],
        "skipped": ["svm on vgg19 (features ≈300 s, 80 s left)", "adaptive+svm (2 epochs need ≈95 s at 2.1"
                    " images/s, 30 s of the 120 s budget left)"]}


def test_auto_run_shows_its_candidates_in_the_panel_and_the_models_view(qtbot, window):
    # A real one-click run takes minutes on two shared cores: a real SVM stored with the `auto` params a
    # one-click run writes (ml/classify/auto.py), announced the way the job runner announces a finished training.
    from artannot.ml.task import TrainResult

    p = window.project
    result = p.train(method="svm", device="cpu")
    auto = json.loads(json.dumps(AUTO))
    est = result.metrics.get("estimate") or {}
    if est.get("top1") is not None:  # the chosen candidate's estimate is the stored model's
        auto["candidates"][0].update(estimate=est["top1"], std=est.get("std"))
        auto["reason"] = f"svm on efficientnet_lite0 with all labels: best honest estimate ({est['top1']:.1%})"
    params = {**result.params, "auto": auto, "chosen": "svm", "summary": "auto → svm on efficientnet_lite0"}
    with p.conn:
        p.conn.execute("UPDATE models SET method = 'auto', params = ? WHERE id = ?",
                       (json.dumps(params), result.model_id))
    window.reload()
    window.show_model_summary()
    panel, table = window.train_panel, window.train_panel.candidates
    assert panel.candidates_button.isVisibleTo(panel) and not table.isVisibleTo(panel)  # on open: folded
    window.runner.training_finished.emit(TrainResult(result.model_id, result.metrics, params, 41.5, "auto"))
    assert table.isVisibleTo(panel)  # right after a one-click run: open
    assert table.rowCount() == len(auto["candidates"]) + len(auto["skipped"])
    chosen, first = table.chosen_row(), auto["candidates"][0]
    assert chosen == 0 and table.item(chosen, 1).font().bold()
    assert table.item(chosen, 4).text() == format_estimate(first["estimate"], first["std"])
    for r, why in enumerate(auto["skipped"], start=len(auto["candidates"])):
        assert table.item(r, 4).text() == "skipped" and why in table.item(r, 4).toolTip()
    qtbot.mouseClick(panel.candidates_button, Qt.MouseButton.LeftButton)
    assert not table.isVisibleTo(panel)
    qtbot.mouseClick(panel.candidates_button, Qt.MouseButton.LeftButton)

    window.models_action.trigger()
    view = window.models_view
    view.select(result.model_id)
    assert view.candidates_box.isVisibleTo(view) and view.candidates.rowCount() == table.rowCount()
    assert view.detail.text() == auto["reason"]
    _shots(qtbot, window)


def test_candidates_table_marks_the_chosen_one_and_lists_skipped_with_their_reason(qtbot):
    from artannot.gui.train_panel import CandidatesTable

    table = CandidatesTable()
    qtbot.addWidget(table)
    table.set_auto({"reason": "svm wins", "skipped": ["adaptive+svm (2 epochs need ≈90 s, 12 s left)"],
                    "candidates": [
                        {"method": "svm", "backbone": "b0", "labels": "all", "estimate": 0.8, "std": 0.05,
                         "seconds": 3.0, "chosen": True},
                        {"method": "linear", "backbone": "b0", "labels": "curated", "estimate": None, "std": None,
                         "seconds": 1.2, "chosen": False}]})
    assert table.rowCount() == 3 and table.chosen_row() == 0 and table.item(0, 0).text() == "●"
    assert table.item(0, 4).text() == "80.0% ± 5.0%" and table.item(1, 4).text() == "–"
    assert table.item(1, 3).text() == "curated"
    assert [table.item(2, c).text() for c in (1, 4, 6)] == ["adaptive+svm", "skipped", "2 epochs need ≈90 s, 12 s left"]
    table.set_auto(None)
    assert table.rowCount() == 0


def _shots(qtbot, window) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    stats = window.thumbnails.load_stats
    for w, h in ((1400, 900), (1024, 700)):
        window.resize(w, h)
        qtbot.wait(150)  # the grid paints: its visible thumbnails are asked for
        qtbot.waitUntil(lambda: stats()["queued"] == stats()["loading"] == 0, timeout=15_000)
        qtbot.wait(100)
        window.grab().save(str(SHOTS / f"models_view_{w}x{h}.png"))
    window.models_dock.grab().save(str(SHOTS / "models_dock.png"))
    window.train_panel.grab().save(str(SHOTS / "train_panel_candidates.png"))


def test_reliability_plot_shows_the_bins_and_the_ece(qtbot, window):
    p = window.project
    model_id = p.train(method="svm", device="cpu").model_id
    window.reload()
    metrics = json.loads(get_model(p.conn, model_id)["metrics"])
    if "calibration" not in metrics:  # stores before calibration was measured
        metrics["calibration"] = {"ece": 0.083, "n": 10, "bins": [
            {"lo": 0.5, "hi": 0.6, "confidence": 0.55, "accuracy": 0.4, "n": 4},
            {"lo": 0.9, "hi": 1.0, "confidence": 0.95, "accuracy": 1.0, "n": 6}]}
        with p.conn:
            p.conn.execute("UPDATE models SET metrics = ? WHERE id = ?", (json.dumps(metrics), model_id))
    cal = metrics["calibration"]
    dialog = window.show_evaluation()
    assert dialog is not None, window.last_error
    qtbot.addWidget(dialog)
    plot = dialog.reliability
    assert len(plot.bars) == len(cal["bins"]) > 0
    assert plot.plot.isVisibleTo(dialog)
    assert f"ECE <b>{cal['ece'] * 100:.1f}%</b>" in plot.label.text()
    assert f"ECE {cal['ece'] * 100:.1f}%" in plot.plot.getPlotItem().titleLabel.text
    SHOTS.mkdir(parents=True, exist_ok=True)
    dialog.show()
    qtbot.waitExposed(dialog)
    dialog.grab().save(str(SHOTS / "reliability_dialog.png"))
    plot.grab().save(str(SHOTS / "reliability.png"))

    old = EvaluateDialog({"model": 9, "top1": 0.5, "top5": 1.0, "n": 2, "per_class": {}, "classes": []})
    qtbot.addWidget(old)
    assert old.reliability.bars == [] and "no calibration" in old.reliability.label.text()


def test_folder_labels_have_their_own_mark_and_filter_and_a_relabel_marks_human(qtbot, window):
    rows = window.thumbnails.all_rows()
    assert rows and {r.label_source for r in rows} == {"folder"}
    assert SOURCE_MARKS["folder"][:1] == ("F",) and "folder name" in SOURCE_MARKS["folder"][2]
    assert len({m[0] for m in SOURCE_MARKS.values()}) == len(SOURCE_MARKS) == 5
    tip = window.thumbnails.data(window.thumbnails.index(0, 0), Qt.ItemDataRole.ToolTipRole)
    assert "F: from the folder name" in tip
    assert "labels: 0 confirmed · 40 other" in window.train_panel.sources.text()

    box = window.filter_bar.source_box
    box.setCurrentIndex(box.findData("folder"))
    assert window.thumbnails.rowCount() == len(rows)
    box.setCurrentIndex(box.findData("rule"))  # no file-name rule labels in a folder import
    assert window.thumbnails.rowCount() == 0
    box.setCurrentIndex(box.findData(""))
    assert window.thumbnails.rowCount() == len(rows)

    window.grid.select_rows([0])
    image_id = window.grid.current_row().id
    window.grid.setFocus()
    qtbot.keyClick(window.grid, Qt.Key.Key_2)  # a human relabel
    assert window.thumbnails.row_by_id(image_id).label_source == "human"
    window.reload()
    assert window.thumbnails.row_by_id(image_id).label_source == "human"  # as the database gives it back
    window._refresh_summary()
    assert "labels: 1 confirmed · 39 other" in window.train_panel.sources.text()
    box.setCurrentIndex(box.findData("human"))
    assert [r.id for r in window.thumbnails.rows()] == [image_id]
    box.setCurrentIndex(box.findData("folder"))
    assert window.thumbnails.rowCount() == len(rows) - 1


def test_source_filter_splits_rule_labels_into_folder_and_file_name_rules(small):
    from artannot.project import Project

    _, path = small
    with Project(path) as p:
        ids = [int(i) for i in queries.image_ids(p.conn, queries.ImageQuery())]
        with p.conn:  # a file-name rule label (no folder detail) on the first image
            p.conn.execute("UPDATE labels SET detail = 'rule cat_*' WHERE image_id = ? AND active = 1", (ids[0],))
        folder = queries.image_ids(p.conn, queries.ImageQuery(sources=("folder",)))
        rule = queries.image_ids(p.conn, queries.ImageQuery(sources=("rule",)))
        both = queries.image_ids(p.conn, queries.ImageQuery(sources=("folder", "rule")))
        assert list(rule) == [ids[0]] and sorted(folder) == ids[1:] and sorted(both) == ids
        grid = queries.fetch_rows(p.conn, ids, None)
        assert grid[ids[0]].label_source == "rule" and grid[ids[1]].label_source == "folder"
