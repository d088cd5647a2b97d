"""A negative class ("no instrument"): marked undoably (schema 7, store/classes.py), learnt like any class but
never shown as a guess (top-5, predictions of files, suggested labels), and background for the detectors."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from artannot.project import Project
from artannot.store import boxes as B
from artannot.store import classes as C
from artannot.store import db, repo
from artannot.store import labels as L
from artannot.store.migrations import MIGRATIONS
from tests.shapes import draw_shape

NONE = "no shape"


def make_collection(root: Path, per_class: int = 4) -> Path:
    """circle/, square/ and 'no shape'/ (plain backgrounds of random colour), real PNGs."""
    rng = random.Random(0)
    for kind in ("circle", "square"):
        (root / kind).mkdir(parents=True)
        for n in range(per_class):
            draw_shape(kind, rng).save(root / kind / f"{kind}_{n}.png")
    (root / NONE).mkdir(parents=True)
    for n in range(per_class):
        Image.new("RGB", (160, 160), tuple(rng.randint(180, 255) for _ in range(3))).save(root / NONE / f"blank_{n}.png")
    return root


def new_project(tmp_path: Path) -> Path:
    root = make_collection(tmp_path / "art")
    path = tmp_path / "p.artannot"
    with Project.create(path) as p:
        p.import_folder(root, labels_from="folder", split="train")
    return path


def class_id(conn, name: str) -> int:
    return conn.execute("SELECT id FROM classes WHERE name = ?", (name,)).fetchone()[0]


def test_a_schema_6_project_upgrades_keeping_class_history_and_undo(tmp_path):
    path = tmp_path / "old.artannot"
    conn = sqlite3.connect(path)  # a file as ArtAnnot wrote it at schema 6: SCHEMA, then steps 2..6
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA application_id = {db.APPLICATION_ID}")
    for stmt in db.SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)
    for version in range(2, 7):
        MIGRATIONS[version](conn)
    conn.execute("PRAGMA user_version = 6")
    conn.execute("INSERT INTO meta(key, value) VALUES ('created_at', ?)", (db.now(),))
    conn.commit()
    a = repo.ensure_classes(conn, ["lute"])["lute"]
    C.rename_class(conn, a, "oud")
    conn.close()
    with Project(path) as p:
        assert p.conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION >= 7
        assert C.negative_class_ids(p.conn) == set()
        assert p.conn.execute("SELECT COUNT(*) FROM class_edits WHERE field = 'name'").fetchone()[0] == 1
        L.undo(p.conn)  # the rename made before the upgrade still undoes
        assert p.conn.execute("SELECT name FROM classes WHERE id = ?", (a,)).fetchone()[0] == "lute"
        assert C.set_negative(p.conn, a, True) is not None
        assert C.negative_class_ids(p.conn) == {a}


def test_marking_negative_is_one_undoable_edit(tmp_path):
    with Project(new_project(tmp_path)) as p:
        c = class_id(p.conn, NONE)
        assert C.set_negative(p.conn, c, True) is not None
        assert C.set_negative(p.conn, c, True) is None  # unchanged: no event
        assert C.negative_class_ids(p.conn) == {c}
        L.undo(p.conn)
        assert C.negative_class_ids(p.conn) == set()
        L.redo(p.conn)
        assert C.negative_class_ids(p.conn) == {c}


def test_shown_ranking():
    assert C.shown_ranking([(3, 0.6), (1, 0.3), (2, 0.1)], {3}) == []  # the negative class on top: none
    assert C.shown_ranking([(1, 0.6), (3, 0.3), (2, 0.1)], {3}) == [(1, 0.6), (2, 0.1)]
    assert C.shown_ranking([1, 3, 2], set()) == [1, 3, 2]


@pytest.mark.slow
def test_negative_class_is_learnt_but_never_shown_or_suggested(tmp_path):
    path = new_project(tmp_path)
    with Project(path) as p:
        neg = class_id(p.conn, NONE)
        C.set_negative(p.conn, neg, True)
        result = p.train(method="svm", device="cpu")
        model = result.model_id
        # it is a class the model learnt and predicts: the blank images' stored top-1
        ranked = repo.predictions_by_image(p.conn, model)
        blanks = [r.id for r in p.images() if r.class_id == neg]
        assert sum(ranked[i][0] == neg for i in blanks) >= len(blanks) - 1
        names = {r.id: r.path for r in p.images()}
        for image_id, order in ranked.items():
            shown = repo.top_predictions(p.conn, model, image_id)
            assert NONE not in [n for n, _ in shown]
            assert (shown == []) == (order[0] == neg)  # "none" exactly where the negative class is on top
        rows = dict(p.predict_source())
        files = dict(p.predict_files([names[i] for i in blanks + [r.id for r in p.images() if r.class_id != neg]]))
        for path_, shown in files.items():
            assert NONE not in [n for n, _ in shown]
            assert shown == rows[path_]  # files and stored predictions agree
        suggested = {r[0] for r in p.conn.execute("SELECT suggested_id FROM suspects WHERE model_id = ?", (model,))}
        assert suggested and neg not in suggested


def test_images_labelled_negative_are_detector_background(tmp_path):
    from artannot.ml.detect.train import training_data
    from artannot.ml.task import TrainRequest

    path = new_project(tmp_path)
    with Project(path) as p:
        thing = repo.ensure_classes(p.conn, ["thing"])["thing"]
        neg = class_id(p.conn, NONE)
        shapes = [r.id for r in p.images() if r.class_id != neg]
        blanks = [r.id for r in p.images() if r.class_id == neg]
        B.add_boxes(p.conn, [(i, thing, 20.0, 20.0, 60.0, 60.0) for i in shapes], "import")
        B.add_boxes(p.conn, [(blanks[0], neg, 5.0, 5.0, 50.0, 50.0)], "human")  # a box of "nothing"
        req = TrainRequest("patches")
        before = training_data(p.conn, req)
        assert {im.image_id for im in before.images} == set(shapes) | {blanks[0]}  # not yet negative
        assert neg in before.class_ids or NONE in before.skipped
        C.set_negative(p.conn, neg, True)
        data = training_data(p.conn, req)
        by_id = {im.image_id: im for im in data.images}
        assert set(by_id) == set(shapes) | set(blanks)  # every image labelled negative is in, as background
        assert all(by_id[i].boxes == [] for i in blanks)
        assert all(len(by_id[i].boxes) == 1 for i in shapes)
        assert data.class_ids == [thing]  # the negative class is no object to find


def test_cli_classes_marks_a_class_negative(tmp_path, capsys):
    from artannot.cli import main

    path = new_project(tmp_path)
    assert main(["classes", str(path), "--negative", NONE, "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[NONE]["negative"] and not rows["circle"]["negative"] and rows[NONE]["images"] == 4
    assert main(["classes", str(path)]) == 0
    assert "negative" in next(line for line in capsys.readouterr().out.splitlines() if line.startswith(NONE))
    assert main(["classes", str(path), "--ordinary", NONE, "--json"]) == 0
    assert not {r["name"]: r for r in json.loads(capsys.readouterr().out)}[NONE]["negative"]
    assert main(["classes", str(path), "--negative", "nope"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def test_class_menu_toggles_negative_with_undo(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from tests.conftest import show_main_window

    w = show_main_window(qtbot, new_project(tmp_path))
    try:
        neg = class_id(w.project.conn, NONE)
        asked = []
        monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.Yes)
        w.class_edits.on_class_edit("negative", neg)
        assert "never shown as a guess" in asked[0]
        assert w.class_edits.is_negative(neg)
        w.class_edits.ask_toggle_negative(class_id=neg)
        assert not w.class_edits.is_negative(neg)
        L.undo(w.project.conn)
        assert w.class_edits.is_negative(neg)
    finally:
        w.close()


def test_grid_names_a_negative_guess_none(qtbot, tmp_path, monkeypatch):
    """A blank image relabelled 'circle' disagrees with the model's top guess, the negative class: the grid's
    strip and tooltip say "none", as the viewer does, never the negative class's name."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QMessageBox

    from tests.conftest import show_main_window

    path = new_project(tmp_path)
    with Project(path) as p:
        neg = class_id(p.conn, NONE)
        C.set_negative(p.conn, neg, True)
        model = p.train(method="svm", device="cpu").model_id
        ranked = repo.predictions_by_image(p.conn, model)
        blank = next(r.id for r in p.images() if r.class_id == neg and ranked[r.id][0] == neg)
        p.set_label([blank], class_id(p.conn, "circle"))
    w = show_main_window(qtbot, path)
    try:
        grid = w.thumbnails
        row = grid.positions([blank])[0]
        shown = grid.row_at(row)
        assert shown.disagrees and shown.pred_class_id == neg
        tip = grid.data(grid.index(row, 0), Qt.ItemDataRole.ToolTipRole)
        assert "model: none" in tip and f"model: {NONE}" not in tip
        assert grid.guess_name(neg) == "none" and grid.class_name(neg) == NONE  # a label keeps its name
        w.grid.scrollTo(grid.index(row, 0))
        assert not w.grid.grab().isNull()  # the strip paints
        monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
        w.class_edits.ask_toggle_negative(class_id=neg)  # a class to guess again: the grid names it at once
        assert grid.guess_name(neg) == NONE
        assert f"model: {NONE}" in grid.data(grid.index(row, 0), Qt.ItemDataRole.ToolTipRole)
        w.undo()  # Ctrl+Z: negative again, and the grid follows
        assert grid.guess_name(neg) == "none"
    finally:
        w.close()
