"""The Tags dock driven like a curator would: type tags, tag a selection, remove, undo, accept the tag model's
suggestions. Real window, real SQLite; the tag model is a stored fake (no training here)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from artannot.gui.tag_panel import MAX_SUGGESTIONS, Suggestion, summarize
from artannot.project import Project
from artannot.store import repo
from artannot.store import tags as tag_store
from artannot.store.db import write
from tests.conftest import DEMO_CLASSES, PER_CLASS

N_IMAGES = len(DEMO_CLASSES) * PER_CLASS
CTRL, SHIFT = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier
LEFT = Qt.MouseButton.LeftButton


def tags_of(project: Project, image_id: int) -> list[str]:
    return project.image_tags([image_id]).get(image_id, [])


def fake_tag_model(project: Project, scores: dict[tuple[int, str], float], thresholds: dict[str, float]) -> int:
    """Store a tag model with these (image id, tag) -> probability rows and per-tag thresholds."""
    conn = project.conn
    tag_ids = tag_store.ensure_tags(conn, sorted({t for _, t in scores} | set(thresholds)))
    model_id = repo.add_model(conn, backbone="fake", method="tags", classes=sorted(tag_ids.values()),
                              params={"thresholds": thresholds})
    with write(conn):
        tag_store.write_tag_predictions(conn, model_id, [(i, tag_ids[t], s) for (i, t), s in scores.items()])
    return model_id


def select(qtbot, window, rows: list[int]) -> list[int]:
    """Select grid rows and wait for the Tags dock to show them; the selected ids."""
    window.grid.select_rows(rows)
    ids = window.grid.selected_ids()
    qtbot.waitUntil(lambda: window.tag_panel.n_images == len(ids) and not window.tag_edits.timer.isActive())
    return ids


def type_tags(qtbot, window, text: str) -> None:
    """'#' from the grid, type, Enter."""
    window.grid.setFocus()
    qtbot.keyClick(window.grid, "#")
    edit = window.tag_panel.edit
    assert edit.hasFocus()
    qtbot.keyClicks(edit, text)
    qtbot.keyClick(edit, Qt.Key.Key_Return)


def chip(window, name: str):
    return next(c for c in window.tag_panel.tag_chips() if c.name == name)


def test_typing_a_tag_and_enter_tags_the_current_image(qtbot, window):
    p = window.project
    first, second = select(qtbot, window, [1]), window.thumbnails.id_at(2)
    assert window.tag_panel.shown_tags() == [] and "No tags yet" in window.tag_panel.note.text()
    type_tags(qtbot, window, "red;  long   tail ,")
    assert tags_of(p, first[0]) == ["long tail", "red"]
    assert tags_of(p, second) == []
    assert window.tag_panel.shown_tags() == ["long tail", "red"]
    assert window.tag_panel.edit.text() == "" and window.tag_panel.edit.hasFocus()  # ready for the next tag
    assert "Tagged the image with red, long tail" in window.statusBar().currentMessage()
    assert window.undo_action.isEnabled()
    qtbot.keyClick(window.tag_panel.edit, Qt.Key.Key_Escape)
    assert window.grid.hasFocus()


def test_several_selected_images_all_get_the_tag(qtbot, window):
    p = window.project
    p.add_tags([window.thumbnails.id_at(0)], ["blue"])
    ids = select(qtbot, window, [0, 1, 2])
    panel = window.tag_panel
    assert "3 images selected" in panel.note.text() and "shared by all" in panel.note.text()
    assert panel.shown_tags() == [] and panel.partial_tags() == ["blue"]
    type_tags(qtbot, window, "red")
    assert [tags_of(p, i) for i in ids] == [["blue", "red"], ["red"], ["red"]]
    assert panel.shown_tags() == ["red"] and panel.partial_tags() == ["blue"]
    assert "Tagged 3 images with red" in window.statusBar().currentMessage()
    qtbot.mouseClick(chip(window, "blue").extend_button, LEFT)  # + gives the grey tag to all
    assert [tags_of(p, i) for i in ids] == [["blue", "red"]] * 3
    assert panel.shown_tags() == ["blue", "red"] and panel.partial_tags() == []
    qtbot.mouseClick(chip(window, "red").remove_button, LEFT)
    assert [tags_of(p, i) for i in ids] == [["blue"]] * 3
    assert window.grid.selected_ids() == ids  # the selection stays for the next edit


def test_a_huge_selection_is_tagged_without_listing_its_tags(qtbot, window, monkeypatch):
    from artannot.gui import tag_panel

    monkeypatch.setattr(tag_panel, "MAX_LISTED", 2)  # as if 3 images were 100k: no per-tag listing
    p = window.project
    p.add_tags([window.thumbnails.id_at(0)], ["blue"])
    ids = select(qtbot, window, [0, 1, 2])
    assert "3 images selected" in window.tag_panel.note.text() and "not listed" in window.tag_panel.note.text()
    assert window.tag_panel.tag_chips() == []
    type_tags(qtbot, window, "red")
    assert [tags_of(p, i) for i in ids] == [["blue", "red"], ["red"], ["red"]]


def test_removing_a_tag_and_ctrl_z_brings_it_back(qtbot, window):
    p = window.project
    image_id = window.thumbnails.id_at(3)
    p.add_tags([image_id], ["red", "blue", "outline"])
    select(qtbot, window, [3])
    panel = window.tag_panel
    assert panel.shown_tags() == ["blue", "outline", "red"]
    qtbot.mouseClick(chip(window, "red").remove_button, LEFT)
    assert tags_of(p, image_id) == ["blue", "outline"] and panel.shown_tags() == ["blue", "outline"]
    assert "Removed red" in window.statusBar().currentMessage()
    window.grid.setFocus()  # the click left the keyboard with the grid
    qtbot.keyClick(window.grid, Qt.Key.Key_Z, CTRL)
    assert tags_of(p, image_id) == ["blue", "outline", "red"]
    qtbot.waitUntil(lambda: panel.shown_tags() == ["blue", "outline", "red"])
    qtbot.keyClick(window.grid, Qt.Key.Key_Z, CTRL | SHIFT)
    assert tags_of(p, image_id) == ["blue", "outline"]
    qtbot.waitUntil(lambda: panel.shown_tags() == ["blue", "outline"])
    outline = chip(window, "outline")
    outline.setFocus()  # Tab reaches the chips; Delete removes the focused one
    qtbot.keyClick(outline, Qt.Key.Key_Delete)
    assert tags_of(p, image_id) == ["blue"] and panel.shown_tags() == ["blue"]


def test_suggestions_show_and_a_click_adds_a_human_tag(qtbot, window):
    p = window.project
    a, b = window.thumbnails.id_at(0), window.thumbnails.id_at(1)
    p.add_tags([a], ["blue"])
    select(qtbot, window, [0])
    assert window.tag_panel.shown_suggestions() == []
    assert "Train a tag model" in window.tag_panel.suggest_hint.text()
    model_id = fake_tag_model(p, {(a, "red"): 0.83, (a, "blue"): 0.9, (a, "water"): 0.3, (a, "text"): 0.6,
                                  (a, "noise"): 0.01, (b, "red"): 0.2, (b, "text"): 0.9},
                              {"red": 0.5, "blue": 0.5, "water": 0.2, "text": 0.7, "noise": 0.5})
    window.reload()  # what a finished training does
    panel = window.tag_panel
    qtbot.waitUntil(lambda: panel.shown_suggestions() != [])
    # over threshold first (red, water), then the rest; blue is carried already, noise too unlikely to show
    assert panel.shown_suggestions() == ["red", "water", "text"]
    over = {c.suggestion.tag: c.property("over") for c in panel.suggestion_chips()}
    assert over == {"red": True, "water": True, "text": False}
    assert "red  0.83" in panel.suggestion_chips()[0].text()
    assert f"tag model {model_id}" in panel.suggest_heading.text()
    qtbot.mouseClick(panel.suggestion_chips()[0], LEFT)
    assert tag_store.tag_sources_for(p.conn, a) == {"blue": "human", "red": "human"}
    assert panel.shown_tags() == ["blue", "red"] and panel.shown_suggestions() == ["water", "text"]

    select(qtbot, window, [0, 1])
    window.grid.setFocus()
    qtbot.keyClick(window.grid, Qt.Key.Key_Space, SHIFT)  # each image takes its own suggestions over threshold
    assert tags_of(p, a) == ["blue", "red", "water"] and tags_of(p, b) == ["text"]
    assert tag_store.tag_sources_for(p.conn, b) == {"text": "human"}
    window.undo()  # one undo step for the whole accept
    assert tags_of(p, a) == ["blue", "red"] and tags_of(p, b) == []


def test_completer_offers_existing_tags(qtbot, window):
    p = window.project
    p.add_tags([window.thumbnails.id_at(0)], ["red", "reading", "blue", "bored"])
    p.add_tags([window.thumbnails.id_at(1)], ["reading"])
    window.reload()
    select(qtbot, window, [2])
    edit, completer = window.tag_panel.edit, window.tag_panel.completer
    edit.setFocus()
    qtbot.keyClicks(edit, "re")

    def offered() -> list[str]:
        model = completer.completionModel()
        return [model.index(k, 0).data() for k in range(model.rowCount())]

    assert offered() == ["reading", "bored", "red"]  # most used first, then by name; matches inside a name too
    edit.clear()
    qtbot.keyClicks(edit, "blue, bo")
    assert offered() == ["bored"]  # completes the tag after the last comma
    completer.popup().setCurrentIndex(completer.completionModel().index(0, 0))
    qtbot.keyClick(completer.popup(), Qt.Key.Key_Return)
    assert edit.text() == "blue, bored"
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    assert tags_of(p, window.thumbnails.id_at(2)) == ["blue", "bored"]


@pytest.mark.parametrize("text, words", [(";", "no tag name"), (" ,; ", "no tag name"),
                                         ("x" * 65, "64 characters"), ("wide|tall", "separate tags")])
def test_an_invalid_tag_shows_an_error_and_changes_nothing(qtbot, window, text, words):
    p = window.project
    image_id = select(qtbot, window, [0])[0]
    type_tags(qtbot, window, text)
    assert window.last_error is not None and words in window.last_error
    assert p.tags() == [] and tags_of(p, image_id) == []
    assert p.conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'tag'").fetchone()[0] == 0
    assert window.tag_panel.edit.text() == text  # kept, to correct


def test_review_mode_tags_the_image_under_review(qtbot, window):
    p = window.project
    select(qtbot, window, [0, 1, 2])
    window.set_review_mode(True)
    first = window.review.current_id()
    qtbot.waitUntil(lambda: window.tag_panel.n_images == 1)
    window.tag_edits.focus_tags()
    qtbot.keyClicks(window.tag_panel.edit, "cartoon")
    qtbot.keyClick(window.tag_panel.edit, Qt.Key.Key_Return)
    assert tags_of(p, first) == ["cartoon"] and tags_of(p, window.thumbnails.id_at(1)) == []


def test_shortcuts_overlay_lists_the_tag_keys(qtbot, window):
    window.show_shortcuts()
    assert "Tags" in window.overlay.sections()
    text = " ".join(window.overlay.grid.itemAt(k).widget().text() for k in range(window.overlay.grid.count()))
    assert "#" in text and "Shift+Space" in text
    window.overlay.hide()


def test_summarize_pools_suggestions_over_the_images_that_lack_the_tag():
    tags, suggestions = summarize([1, 2, 3], {1: ["red", "Blue"], 2: ["red"]},
                                  {1: [("red", 0.9, True), ("green", 0.8, True)],
                                   2: [("blue", 0.6, True), ("green", 0.2, False)],
                                   3: [("blue", 0.2, False), ("red", 0.7, True)]})
    assert tags == [("red", 2), ("Blue", 1)]
    assert suggestions == [Suggestion("red", 0.7, 1, 1), Suggestion("green", 0.5, 1, 2),
                           Suggestion("blue", 0.4, 1, 2)]
    assert MAX_SUGGESTIONS >= 3


@pytest.mark.slow
def test_training_a_tag_model_in_the_window_brings_suggestions(qtbot, window):
    """Train ▸ Tag model through the window's worker, as the Train dialog does; the dock then suggests tags."""
    p = window.project
    rows = p.images()
    fish = [r.id for r in rows if "/fish/" in r.path.replace("\\", "/")]
    others = [r.id for r in rows if r.id not in fish]
    p.add_tags(fish, ["water"])
    p.add_tags(others, ["land"])
    results: list = []
    window.training_finished.connect(results.append)
    window.job_failed.connect(results.append)
    window.start_training(options={"method": "tags"})
    qtbot.waitUntil(lambda: bool(results), timeout=180_000)
    result = results[0]
    assert not isinstance(result, str), result
    assert result.method == "tags" and "tag model" in window.statusBar().currentMessage()
    assert p.active_model_id() is None  # the grid's class predictions are untouched
    p.remove_tags([fish[0]], ["water"])  # the curator doubts one: the model still says water
    window.grid.select_ids([fish[0]], current=fish[0])
    qtbot.waitUntil(lambda: not window.tag_edits.timer.isActive())
    window.tag_edits.refresh_tags()
    offered = {c.suggestion.tag: c.suggestion for c in window.tag_panel.suggestion_chips()}
    assert "water" in offered and offered["water"].probability > offered.get("land", Suggestion("land", 0, 0, 1)).probability


def test_a_chip_menu_renames_merges_and_removes_a_tag_everywhere(qtbot, window):
    p = window.project
    first, second = (window.thumbnails.id_at(k) for k in (1, 2))
    p.add_tags([first, second], ["redd"])
    p.add_tags([second], ["red"])
    select(qtbot, window, [1])
    menu = chip(window, "redd").context_menu()
    rename, delete = (a for a in menu.actions())
    assert "Rename 'redd' everywhere" in rename.text() and "from every image" in delete.text()
    window.tag_edits.rename_tag_everywhere("redd", "red")  # what the menu's dialog returns: a merge
    assert tags_of(p, first) == ["red"] and tags_of(p, second) == ["red"]
    assert [c.name for c in window.tag_panel.tag_chips()] == ["red"] and "Renamed" in window.statusBar().currentMessage()
    window.undo()
    assert tags_of(p, first) == ["redd"]
    qtbot.waitUntil(lambda: [c.name for c in window.tag_panel.tag_chips()] == ["redd"])
    window.tag_edits.rename_tag_everywhere("redd", "a;b")  # refused, said, nothing changed
    assert "separate tags" in window.last_error and tags_of(p, first) == ["redd"]
    asked: list[str] = []
    window.tag_edits.delete_tag_everywhere("redd", confirm=lambda q: asked.append(q) or False)
    assert "all 2 images" in asked[0] and tags_of(p, first) == ["redd"]  # "No" keeps it
    window.tag_edits.delete_tag_everywhere("redd", confirm=lambda q: True)
    assert tags_of(p, first) == [] and tags_of(p, second) == ["red"] and window.tag_panel.tag_chips() == []
    window.undo()
    assert tags_of(p, first) == ["redd"]


def test_tags_from_file_names_from_the_menu(qtbot, window, tmp_path):
    p = window.project
    (tmp_path / "vocab.txt").write_text("sign: roadsign\nfish\n")
    assert window.filename_tags_action.isEnabled()
    window.tag_edits.tags_from_filenames(str(tmp_path / "vocab.txt"))
    counts = dict(p.tags())
    assert counts.get("fish", 0) > 0 and "Ctrl+Z undoes" in window.statusBar().currentMessage()
    window.undo()
    assert dict(p.tags()).get("fish", 0) == 0
    (tmp_path / "bad.txt").write_text("x|y\n")
    window.tag_edits.tags_from_filenames(str(tmp_path / "bad.txt"))
    assert "bad.txt" in window.last_error and "separate tags" in window.last_error


def test_the_filter_bar_shows_the_images_carrying_a_tag(qtbot, window):
    p = window.project
    ids = [window.thumbnails.id_at(k) for k in (0, 3, 5)]
    select(qtbot, window, [0])
    p.add_tags(ids, ["gold"])
    window.tag_edits.refresh_known_tags()
    box = window.filter_bar.tag_box
    assert [box.itemText(k) for k in range(box.count())] == ["any tags", "no tags", "gold"]
    box.setCurrentIndex(box.findText("gold"))
    qtbot.waitUntil(lambda: window.thumbnails.rowCount() == 3)
    assert sorted(window.thumbnails.id_at(k) for k in range(3)) == sorted(ids)
    assert "tag gold" in window.filter_bar.describe()
    saved = window.filter_bar.state()
    box.setCurrentIndex(box.findData("none"))
    qtbot.waitUntil(lambda: window.thumbnails.rowCount() == N_IMAGES - 3)
    window.filter_bar.set_state(saved)
    qtbot.waitUntil(lambda: window.thumbnails.rowCount() == 3)
