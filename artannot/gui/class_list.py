"""The list of classes: colour, key, name and how many images carry each; right-click to edit a class."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QIcon, QKeyEvent, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QMenu,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from artannot.gui.actions import key_name
from artannot.store.repo import ClassInfo

UNLABELLED = -1  # item data of the "Unlabelled" row


def swatch(color: str, size: int = 12) -> QIcon:
    """A small square of a class colour."""
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(color))
    return QIcon(pixmap)


class ClassList(QWidget):
    """Classes with hotkeys and counts; double-click (or Enter) gives the selected images that class."""

    class_activated = Signal(object)  # class id, or None for "clear label"
    hotkey_pressed = Signal(str)  # class keys typed while the list has focus label images too
    add_class_requested = Signal()
    edit_requested = Signal(str, int)  # "rename" | "merge" | "delete" | "key" | "negative", class id

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.tree = _ClassTree(self)
        self.tree.setColumnCount(3)
        self.tree.setHeaderLabels(["Key", "Class", "Images"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setToolTip("Press a class's key, or double-click it, to label the selected images (or box);"
                             " right-click to rename, merge, delete or give it a key")
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._menu)
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemActivated.connect(self._on_activated)
        self.tree.hotkey_pressed.connect(self.hotkey_pressed)
        self.legend = QLabel(
            "<b>Keys</b>: a class's key labels the selected images, 0 or Delete clears, Space accepts the"
            " model's guess, Ctrl+Z undoes, <b>?</b> lists every key.<br>"
            "<b>Marks</b>: <span style='background:#2e7d32;color:white'>&nbsp;H&nbsp;</span> set by you, "
            "<span style='background:#1565c0;color:white'>&nbsp;F&nbsp;</span> from the folder name, "
            "<span style='background:#546e7a;color:white'>&nbsp;R&nbsp;</span> from a file-name rule, "
            "<span style='background:#6d4c41;color:white'>&nbsp;I&nbsp;</span> imported, "
            "<span style='background:#6a1b9a;color:white'>&nbsp;M&nbsp;</span> the model's guess; "
            "a <span style='color:#d32f2f'><b>red frame</b></span> means the model disagrees with the label,"
            " an <span style='background:#ef6c00;color:white'>&nbsp;suspect&nbsp;</span> tag that the label is"
            " probably wrong.")
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setStyleSheet("color: #455a64; padding: 4px;")
        self.add_button = QPushButton("Add class…")
        self.add_button.setEnabled(False)
        self.add_button.clicked.connect(self.add_class_requested)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.add_button)
        layout.addWidget(self.legend)
        self._counts: dict[int, int] = {}

    def set_classes(self, classes: Sequence[ClassInfo], n_images: int) -> None:
        """Show these classes and the unlabelled remainder of n_images."""
        current = self.tree.currentItem()
        keep = current.data(1, Qt.ItemDataRole.UserRole) if current is not None else None
        self.tree.clear()
        self._counts = {}
        for c in classes:
            item = QTreeWidgetItem([c.hotkey or "", c.name, f"{c.count:,}"])
            item.setIcon(1, swatch(c.color))
            item.setData(1, Qt.ItemDataRole.UserRole, c.id)
            item.setTextAlignment(0, Qt.AlignmentFlag.AlignCenter)
            item.setTextAlignment(2, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            item.setToolTip(1, f"{c.name}: {c.count} image{'s' if c.count != 1 else ''}"
                               + (f" — press {c.hotkey} to label the selection" if c.hotkey else ""))
            self.tree.addTopLevelItem(item)
            self._counts[c.id] = c.count
        unlabelled = max(0, n_images - sum(c.count for c in classes))
        item = QTreeWidgetItem(["0", "Unlabelled", f"{unlabelled:,}"])
        item.setData(1, Qt.ItemDataRole.UserRole, UNLABELLED)
        font = QFont(self.tree.font())
        font.setItalic(True)
        for col in range(3):
            item.setFont(col, font)
            item.setForeground(col, QBrush(QColor("#607d8b")))
        item.setTextAlignment(0, Qt.AlignmentFlag.AlignCenter)
        item.setTextAlignment(2, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        item.setToolTip(1, "Images without a label — press 0 (or Delete) to clear the selection's label")
        self.tree.addTopLevelItem(item)
        self._counts[UNLABELLED] = unlabelled
        if keep is not None:
            for k in range(self.tree.topLevelItemCount()):
                if self.tree.topLevelItem(k).data(1, Qt.ItemDataRole.UserRole) == keep:
                    self.tree.setCurrentItem(self.tree.topLevelItem(k))
        self.add_button.setEnabled(True)

    def clear_project(self) -> None:
        """No project open."""
        self.tree.clear()
        self._counts = {}
        self.add_button.setEnabled(False)

    def count(self, class_id: int | None) -> int:
        """The number shown for a class (None: the unlabelled row)."""
        return self._counts.get(UNLABELLED if class_id is None else class_id, 0)

    def current_class(self) -> int | None:
        """The class highlighted in the list (new boxes take it), None for none or 'Unlabelled'."""
        item = self.tree.currentItem()
        class_id = item.data(1, Qt.ItemDataRole.UserRole) if item is not None else None
        return None if class_id in (None, UNLABELLED) else int(class_id)

    def set_current_class(self, class_id: int | None) -> None:
        """Highlight a class."""
        for k in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(k)
            if item.data(1, Qt.ItemDataRole.UserRole) == class_id:
                self.tree.setCurrentItem(item)

    def _on_activated(self, item: QTreeWidgetItem, _column: int) -> None:
        class_id = item.data(1, Qt.ItemDataRole.UserRole)
        self.class_activated.emit(None if class_id == UNLABELLED else class_id)

    def _menu(self, pos: QPoint) -> None:
        item = self.tree.itemAt(pos)
        class_id = item.data(1, Qt.ItemDataRole.UserRole) if item is not None else None
        menu = QMenu(self)
        if class_id not in (None, UNLABELLED):
            name = item.text(1)
            for what, text in (("rename", f"Rename '{name}'…"), ("key", f"Set the key of '{name}'…"),
                               ("merge", f"Merge '{name}' into…"), ("delete", f"Delete '{name}'…"),
                               ("negative", f"Negative class (never a guess): '{name}'…")):
                menu.addAction(text, lambda w=what, c=class_id: self.edit_requested.emit(w, c))
            menu.addSeparator()
        menu.addAction("Add class…", self.add_class_requested.emit)
        menu.popup(self.tree.viewport().mapToGlobal(pos))


class _ClassTree(QTreeWidget):
    """The tree inside ClassList; class keys label the grid's selection rather than searching names."""

    hotkey_pressed = Signal(str)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        name = key_name(event)
        if name is not None:
            self.hotkey_pressed.emit(name)
        else:
            super().keyPressEvent(event)

    def keyboardSearch(self, search: str) -> None:
        """Letters may be class keys: they label, never jump to a class name."""
