"""The window's menus and actions, the keys that label images, and the list the shortcuts overlay shows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeyEvent, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMenu

from artannot.project import SUFFIX

if TYPE_CHECKING:
    from artannot.gui.main_window import MainWindow

EXPORTS = (("ImageFolder…", "imagefolder"), ("CSV…", "csv"), ("COCO JSON…", "coco"), ("Pascal VOC…", "voc"),
           ("YOLO…", "yolo"), ("labelme…", "labelme"), ("Predictions CSV…", "predictions"),
           ("Predictions JSON…", "predictions-json"))
SKIP_KEY = "s"  # review mode: move on without changing the label (so no class may take this key)
RESERVED_KEYS = {SKIP_KEY: "skips an image in review mode"}

# Keys handled by the widgets themselves (not menu actions), for the overlay: (section, keys, what they do).
WIDGET_KEYS: tuple[tuple[str, str, str], ...] = (
    ("Label", "1 – 9, letters, F1 – F12", "give the selected images (or box) that class — keys in the class list"),
    ("Label", "0 · Delete", "clear the label of the selection (in the image: delete the selected box)"),
    ("Label", "Space", "accept the model's top guess for the selection"),
    ("Select", "← → ↑ ↓ · Page Up/Down · Home/End", "move through the grid"),
    ("Select", "Shift+click · Ctrl+click · drag · Ctrl+A", "select several images, then one key labels all"),
    ("Review", "Space · class key · S", "accept the guess · set a class · skip; the next image follows"),
    ("Review", "← →  ·  Esc", "previous / next image · back to the grid"),
    ("Boxes", "drag on the image", "draw a box (it takes the current class; a key changes it)"),
    ("Boxes", "drag a box · its handles", "move · resize"),
    ("Boxes", "Delete · Esc · Tab", "delete the selected box · deselect · next box"),
    ("Boxes", "wheel · + − · right-drag · double-click", "zoom · zoom · pan · fit the image"),
    ("Proposals", "Tab · Enter · class key", "select a proposed box · accept it · accept it with that class"),
    ("Proposals", "Delete · Shift+Enter", "reject the selected proposal · accept every proposal shown"),
    ("Tags", "Enter · , ;", "in the tag field: add the typed tag to the selection · separate several tags"),
    ("Tags", "× · Delete on a tag", "remove the tag from every selected image (+ gives a grey one to all)"),
    ("Tags", "click a suggestion", "add the tag model's suggestion to the selection"),
    ("Tags", "right-click a tag", "rename it on every image (another tag's name merges them) · remove it everywhere"),
    ("Tags", "Esc", "leave the tag field, back to the grid"),
)


def key_name(event: QKeyEvent) -> str | None:
    """'0'-'9', 'a'-'z' or 'F1'-'F12' for a key pressed without modifiers (the keys classes can own)."""
    if event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier:
        return None
    key = event.key()
    if Qt.Key.Key_0 <= key <= Qt.Key.Key_9:
        return str(key - Qt.Key.Key_0)
    if Qt.Key.Key_A <= key <= Qt.Key.Key_Z:
        return chr(ord("a") + key - Qt.Key.Key_A)
    if Qt.Key.Key_F1 <= key <= Qt.Key.Key_F12:
        return f"F{key - Qt.Key.Key_F1 + 1}"
    return None


def _action(w: MainWindow, menu: QMenu, text: str, slot: Callable, keys=(), tip: str = "",
            checkable: bool = False) -> QAction:
    action = QAction(text, w)
    action.setShortcuts([QKeySequence(k) for k in keys])
    action.setStatusTip(tip)
    action.setToolTip(tip or text.replace("&", "").rstrip("…"))
    action.setCheckable(checkable)
    (action.toggled if checkable else action.triggered).connect(slot)
    menu.addAction(action)
    return action


def build_menus(w: MainWindow) -> None:
    """Create the menu bar; the actions become attributes of the window (w.undo_action, ...)."""
    bar = w.menuBar()
    file = bar.addMenu("&File")
    _action(w, file, "&New project…", lambda: ask_new_project(w), ["Ctrl+N"])
    _action(w, file, "&Open project…", lambda: ask_open_project(w), ["Ctrl+O"])
    w.recent_menu = file.addMenu("&Recent projects")
    w.recent_menu.aboutToShow.connect(w.fill_recent_menu)
    w.import_action = _action(w, file, "&Import…", w.ask_import, ["Ctrl+I"],
                              "Add a folder of images with labels from sub-folders, file names or label files")
    w.export_dialog_action = _action(w, file, "&Export…", w.ask_export, ["Ctrl+Shift+E"],
                                     "Write the curated set or the predictions in any format the CLI writes")
    export = file.addMenu("Export &as")
    w.export_actions = [_action(w, export, text, lambda _=False, f=fmt: ask_export(w, f)) for text, fmt in EXPORTS]
    w.export_model_action = _action(w, file, "Export &model…", lambda: ask_export_model(w),
                                    tip="Write the newest model as model.onnx + model.json into a folder")
    w.export_actions.append(w.export_model_action)  # enabled like the other exports
    file.addSeparator()
    _action(w, file, "&Quit", w.close, ["Ctrl+Q"])

    edit = bar.addMenu("&Edit")
    w.undo_action = _action(w, edit, "&Undo", w.undo, ["Ctrl+Z"], "Undo the last label, box, tag or class edit")
    w.redo_action = _action(w, edit, "&Redo", w.redo, ["Ctrl+Shift+Z", "Ctrl+Y"])
    edit.addSeparator()
    w.accept_action = _action(w, edit, "&Accept the model's guess", w.accept_predictions,
                              tip="Space: label the selection with the model's top guess")
    w.clear_action = _action(w, edit, "&Clear label of selection", w._clear_selection,
                             tip="Class keys set a class, 0 or Delete clears")
    w.advance_action = _action(w, edit, "Advance after labelling &one image", lambda _on: None, checkable=True)
    w.advance_action.setChecked(True)
    tags = edit.addMenu("&Tags")  # a submenu, so the overlay lists its keys under "Tags"
    w.focus_tags_action = _action(w, tags, "&Add tags to the selection…", w.tag_edits.focus_tags, ["#"],
                                  "Type tags for the selected images; comma separates several, Enter adds")
    w.accept_tags_action = _action(w, tags, "Accept &suggested tags", w.tag_edits.accept_tag_suggestions, ["Shift+Space"],
                                   "Each selected image takes the tag model's suggestions over their thresholds")
    w.filename_tags_action = _action(w, tags, "Tags from &file names…", lambda: w.tag_edits.tags_from_filenames(),
                                     tip="Noisy tags for every image: file-name words matched to a vocabulary file")

    classes = bar.addMenu("&Classes")
    w.add_class_action = _action(w, classes, "&Add class…", w.class_edits.ask_add_class)
    w.rename_class_action = _action(w, classes, "&Rename class…", w.class_edits.ask_rename_class, ["F2"])
    w.merge_class_action = _action(w, classes, "&Merge class into…", w.class_edits.ask_merge_class)
    w.delete_class_action = _action(w, classes, "&Delete class…", w.class_edits.ask_delete_class)
    w.hotkey_class_action = _action(w, classes, "Set class &key…", w.class_edits.ask_class_key)
    w.negative_class_action = _action(w, classes, "&Negative class (never a guess)…", w.class_edits.ask_toggle_negative)

    view = bar.addMenu("&View")
    w.view_menu = view
    w.review_action = _action(w, view, "&Review mode", w.set_review_mode, ["Ctrl+R"],
                              "One image at a time over the current filter: Space accepts, keys set, S skips",
                              checkable=True)
    w.find_action = _action(w, view, "&Find by file name", w.focus_search, ["Ctrl+F"])
    w.suspects_action = _action(w, view, "Show &suspects", w.show_suspects, ["Ctrl+U"],
                                "Images whose label the latest model finds most likely wrong")
    w.boxes_action = _action(w, view, "Show &boxes on thumbnails", w.set_show_boxes, ["Ctrl+B"], checkable=True)
    view.addSeparator()
    view.addAction(w.classes_dock.toggleViewAction())
    view.addAction(w.image_dock.toggleViewAction())
    view.addAction(w.tags_dock.toggleViewAction())
    view.addSeparator()
    w.shortcuts_action = _action(w, view, "&Keyboard shortcuts", w.show_shortcuts, ["?"])

    model = bar.addMenu("&Model")
    w.model_menu = model  # components add their entries (gui/proposals.py)
    w.train_action = _action(w, model, "&Train", w.start_training, ["Ctrl+T"])
    w.train_options_action = _action(w, model, "Train &with options…", w.train_with_options, ["Ctrl+Shift+T"],
                                     "Choose the method (SVM, fine-tuning, adaptive, auto…), backbone and budget")
    w.cancel_action = _action(w, model, "&Cancel", w.cancel_job)
    w.evaluate_action = _action(w, model, "&Evaluate…", w.show_evaluation, ["Ctrl+E"])


def shortcut_rows(w: MainWindow) -> list[tuple[str, str, str]]:
    """(section, keys, what) for every shortcut: the widgets' keys, then each menu action with one."""
    rows = list(WIDGET_KEYS)
    for menu in w.menuBar().findChildren(QMenu):
        section = menu.title().replace("&", "")
        for action in menu.actions():
            keys = [k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts()]
            if keys and action.text():
                rows.append((section, " · ".join(keys), action.text().replace("&", "").rstrip("…")))
    return rows


# ---- File menu dialogs: pick a path, then run the window's method on it ---------------------------------------


def start_dir(w: MainWindow, name: str = "") -> str:
    """Where file dialogs open: the open project's folder (with a suggested file name), else home."""
    folder = w.project.path.parent if w.project is not None else Path.home()
    return str(folder / name) if name else str(folder)


def ask_new_project(w: MainWindow) -> None:
    path, _ = QFileDialog.getSaveFileName(w, "New project", start_dir(w), f"ArtAnnot projects (*{SUFFIX})")
    if path:
        w.new_project(path)


def ask_open_project(w: MainWindow) -> None:
    path, _ = QFileDialog.getOpenFileName(w, "Open project", start_dir(w), f"ArtAnnot projects (*{SUFFIX})")
    if path:
        w.open_project(path)


def ask_export_model(w: MainWindow) -> None:
    out = QFileDialog.getExistingDirectory(w, "Export the newest model (ONNX) into a folder", start_dir(w))
    if out:
        w.runner.export_model(out)


def ask_export(w: MainWindow, fmt: str) -> None:
    if fmt in ("imagefolder", "voc", "yolo", "labelme"):
        out = QFileDialog.getExistingDirectory(w, f"Export {fmt} into an empty folder", start_dir(w))
    else:
        suffix = "json" if fmt in ("coco", "predictions-json") else "csv"
        out, _ = QFileDialog.getSaveFileName(w, f"Export {fmt}", start_dir(w, f"{fmt}.{suffix}"), f"*.{suffix}")
    if out:
        w.export(out, fmt)
