"""Small dialogs for class edits: rename, merge into another class, delete (with confirmation), pick a key,
mark a class negative ("no instrument": learnt, never offered as a guess)."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QInputDialog,
    QLabel,
    QMessageBox,
    QVBoxLayout,
    QWidget,
)

from artannot.errors import ArtAnnotError
from artannot.gui.actions import RESERVED_KEYS, key_name
from artannot.gui.class_list import swatch
from artannot.store import classes as class_store
from artannot.store.repo import ClassInfo


def _images(n: int) -> str:
    return f"{n:,} image{'s' if n != 1 else ''}"


def ask_name(parent: QWidget, title: str, prompt: str, text: str = "") -> str | None:
    """A class name typed by the curator, or None when cancelled or empty."""
    name, ok = QInputDialog.getText(parent, title, prompt, text=text)
    name = " ".join(name.split())
    return name if ok and name else None


def ask_merge_target(parent: QWidget, source: ClassInfo, classes: Sequence[ClassInfo]) -> int | None:
    """The class to merge `source` into, after the curator saw what will happen; None when cancelled."""
    others = [c for c in classes if c.id != source.id]
    if not others:
        QMessageBox.information(parent, "Merge class", "There is no other class to merge into.")
        return None
    dialog = QDialog(parent)
    dialog.setWindowTitle(f"Merge '{source.name}'")
    combo = QComboBox()
    for c in others:
        combo.addItem(swatch(c.color), f"{c.name}  ({_images(c.count)})", c.id)
    note = QLabel(f"Every one of the {_images(source.count)} labelled '{source.name}' (and its boxes) moves to the"
                  f" class chosen here, and '{source.name}' is deleted.<br>Ctrl+Z undoes it all at once.")
    note.setWordWrap(True)
    note.setTextFormat(Qt.TextFormat.RichText)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
    buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Merge")
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    layout = QVBoxLayout(dialog)
    layout.addWidget(QLabel(f"Merge '{source.name}' into:"))
    layout.addWidget(combo)
    layout.addWidget(note)
    layout.addWidget(buttons)
    return combo.currentData() if dialog.exec() == QDialog.DialogCode.Accepted else None


def confirm_delete(parent: QWidget, info: ClassInfo) -> bool:
    """Ask before deleting a class; says what happens to its images."""
    text = (f"Delete the class '{info.name}'?\n\n"
            + (f"Its {_images(info.count)} become unlabelled (their boxes lose their class). " if info.count else "")
            + "Ctrl+Z undoes it.")
    answer = QMessageBox.question(parent, "Delete class", text,
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                                  QMessageBox.StandardButton.Cancel)
    return answer == QMessageBox.StandardButton.Yes


def confirm_negative(parent: QWidget, info: ClassInfo, negative: bool) -> bool:
    """Ask before marking a class negative (or a class to guess again); says what it changes."""
    if negative:
        text = (f"Mark '{info.name}' as the negative class (e.g. \"no instrument\")?\n\n"
                "Its images still train and test the models, but it is never shown as a guess: an image the"
                " model puts in it shows no guess, it is left out of the top-5 and of suggested labels, and the"
                " detectors learn background from its images. Ctrl+Z undoes it.")
    else:
        text = f"Make '{info.name}' an ordinary class again (shown as a guess)? Ctrl+Z undoes it."
    answer = QMessageBox.question(parent, "Negative class", text,
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                                  QMessageBox.StandardButton.Yes)
    return answer == QMessageBox.StandardButton.Yes


class HotkeyDialog(QDialog):
    """Press the key a class should own: a digit, a letter or F1–F12 (Delete removes its key)."""

    def __init__(self, info: ClassInfo, classes: Sequence[ClassInfo], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(f"Key for '{info.name}'")
        self.info = info
        self.owners = {c.hotkey: c.name for c in classes if c.hotkey and c.id != info.id}
        self.key: str | None = info.hotkey
        self.prompt = QLabel(f"Press the key that labels images '{info.name}'.<br>"
                             "A digit, a letter or F1–F12; Delete removes the key; Esc cancels.")
        self.prompt.setTextFormat(Qt.TextFormat.RichText)
        self.shown = QLabel(self._describe(self.key))
        self.shown.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.shown.setStyleSheet("font-size: 20pt; font-weight: bold; padding: 12px;")
        self.note = QLabel("")
        self.note.setStyleSheet("color: #ef6c00;")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        for b in buttons.buttons():
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # every key goes to the dialog
        layout = QVBoxLayout(self)
        layout.addWidget(self.prompt)
        layout.addWidget(self.shown)
        layout.addWidget(self.note)
        layout.addWidget(buttons)

    @staticmethod
    def _describe(key: str | None) -> str:
        return key.upper() if key else "—"

    def keyPressEvent(self, event: QKeyEvent) -> None:
        name = key_name(event)
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.key, note = None, "No key: label this class from the list (double-click)."
        elif event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.accept()
            return
        elif name is None:
            super().keyPressEvent(event)
            return
        elif name in RESERVED_KEYS or name == "0":
            note = f"{name.upper()} {RESERVED_KEYS.get(name, 'clears labels')}: pick another key."
            self.note.setText(note)
            return
        else:
            self.key = name
            owner = self.owners.get(name)
            note = f"{name.upper()} now labels '{owner}': it moves to '{self.info.name}'." if owner else ""
        self.shown.setText(self._describe(self.key))
        self.note.setText(note)


def ask_hotkey(parent: QWidget, info: ClassInfo, classes: Sequence[ClassInfo]) -> tuple[bool, str | None]:
    """(chosen, key): the key pressed in a HotkeyDialog (None: no key); chosen is False when cancelled."""
    dialog = HotkeyDialog(info, classes, parent)
    ok = dialog.exec() == QDialog.DialogCode.Accepted
    return ok, dialog.key


class ClassEdits(QObject):
    """The class edits of the window (Classes menu, the class list's buttons and menu): ask (these dialogs),
    commit (store/classes.py, each one undoable), then refresh the grid, class list and viewer."""

    def __init__(self, window):
        super().__init__(window)
        self.w = window

    def _class_info(self, class_id: int | None) -> ClassInfo | None:
        if class_id is None:
            class_id = self.w.class_list.current_class()
        info = next((c for c in self.w.classes() if c.id == class_id), None)
        if info is None:
            self.w.statusBar().showMessage("Pick a class in the class list first", 4000)
        return info

    def _class_edit(self, fn, *args) -> bool:
        if self.w.project is None:
            return False
        try:
            fn(self.w.project.conn, *args)
        except ArtAnnotError as exc:
            self.w.show_error(str(exc))
            return False
        self.w.after_class_edit()
        return True

    def rename_class(self, class_id: int, name: str) -> bool:
        """Rename a class (undoable)."""
        return self._class_edit(class_store.rename_class, class_id, name)

    def merge_class(self, source_id: int, target_id: int) -> bool:
        """Move every image of a class into another and delete it (undoable)."""
        return self._class_edit(class_store.merge_classes, source_id, target_id)

    def delete_class(self, class_id: int) -> bool:
        """Clear a class from its images and delete it (undoable)."""
        return self._class_edit(class_store.delete_class, class_id)

    def set_class_key(self, class_id: int, key: str | None) -> bool:
        """Give a class a key (taken from any class that had it)."""
        return self._class_edit(class_store.set_hotkey, class_id, key)

    def set_class_negative(self, class_id: int, negative: bool) -> bool:
        """Mark a class negative ("no instrument") or not (undoable)."""
        return self._class_edit(class_store.set_negative, class_id, negative)

    def is_negative(self, class_id: int) -> bool:
        return self.w.project is not None and class_id in class_store.negative_class_ids(self.w.project.conn)

    def ask_toggle_negative(self, _checked=False, class_id: int | None = None) -> None:
        """Mark the current class negative, or an already negative one ordinary again, after confirmation."""
        if (info := self._class_info(class_id)) and confirm_negative(self.w, info, not self.is_negative(info.id)):
            self.set_class_negative(info.id, not self.is_negative(info.id))

    def ask_add_class(self, _checked=False) -> None:
        if self.w.project is not None and (name := ask_name(self.w, "Add class", "Name of the new class:")):
            self._class_edit(class_store.add_class, name)

    def ask_rename_class(self, _checked=False, class_id: int | None = None) -> None:
        if (info := self._class_info(class_id)) and (name := ask_name(
                self.w, "Rename class", f"New name for '{info.name}':", info.name)):
            self.rename_class(info.id, name)

    def ask_merge_class(self, _checked=False, class_id: int | None = None) -> None:
        if (info := self._class_info(class_id)) and (target := ask_merge_target(
                self.w, info, self.w.classes())) is not None:
            self.merge_class(info.id, target)

    def ask_delete_class(self, _checked=False, class_id: int | None = None) -> None:
        if (info := self._class_info(class_id)) and confirm_delete(self.w, info):
            self.delete_class(info.id)

    def ask_class_key(self, _checked=False, class_id: int | None = None) -> None:
        if info := self._class_info(class_id):
            ok, key = ask_hotkey(self.w, info, self.w.classes())
            if ok:
                self.set_class_key(info.id, key)

    def on_class_edit(self, what: str, class_id: int) -> None:
        {"rename": self.ask_rename_class, "merge": self.ask_merge_class, "delete": self.ask_delete_class,
         "key": self.ask_class_key, "negative": self.ask_toggle_negative}[what](class_id=class_id)
