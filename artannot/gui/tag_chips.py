"""The Tags dock's chips: a tag (× removes it, + gives it to every selected image) and a model's suggestion,
laid out left to right and wrapping like words (FlowLayout)."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import QContextMenuEvent, QKeyEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLayoutItem,
    QMenu,
    QPushButton,
    QToolButton,
    QWidget,
)

STYLE = """
#tagchip { background: #e3f2fd; border: 1px solid #90caf9; border-radius: 9px; }
#tagchip:focus { border: 2px solid #1565c0; }
#tagchip QLabel { color: #0d47a1; background: transparent; border: none; }
#tagchip[partial="true"] { background: #f5f7f8; border: 1px dashed #b0bec5; }
#tagchip[partial="true"] QLabel { color: #78909c; }
#tagchip QToolButton { border: none; background: transparent; color: #546e7a; font-weight: bold;
                       padding: 0 2px; }
#tagchip QToolButton:hover { color: #c62828; }
#suggestion { border-radius: 9px; padding: 2px 9px; border: 1px dashed #b0bec5; background: white;
              color: #607d8b; }
#suggestion[over="true"] { border: 1px solid #66bb6a; background: #e8f5e9; color: #1b5e20; font-weight: bold; }
#suggestion:hover { border: 1px solid #1565c0; }
#suggestion:focus { border: 2px solid #1565c0; }
#heading { font-weight: bold; color: #37474f; margin-top: 4px; }
#note { color: #546e7a; }
#hint { color: #90a4ae; }
"""


@dataclass(frozen=True)
class Suggestion:
    """A tag the model proposes for the shown images that not all of them carry."""

    tag: str
    probability: float  # mean over the shown images that lack the tag and were scored
    over: int  # of those, how many score over the tag's threshold
    of: int  # how many shown images lack the tag and were scored


class FlowLayout(QLayout):
    """Widgets left to right, wrapping to the next line when the row is full (chips)."""

    def __init__(self, parent: QWidget | None = None, spacing: int = 5):
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self._spacing = spacing
        self.setContentsMargins(0, 0, 0, 0)

    def addItem(self, item: QLayoutItem) -> None:
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientation:
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return self._arrange(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:
        super().setGeometry(rect)
        self._arrange(rect, move=True)

    def sizeHint(self) -> QSize:
        return self.minimumSize()

    def minimumSize(self) -> QSize:
        size = QSize()
        for item in self._items:
            size = size.expandedTo(item.minimumSize())
        return size

    def widgets(self) -> list[QWidget]:
        """The laid-out widgets, in order."""
        return [item.widget() for item in self._items if item.widget() is not None]

    def clear(self) -> None:
        """Remove and delete every widget."""
        while (item := self.takeAt(0)) is not None:
            if item.widget() is not None:
                item.widget().hide()
                item.widget().deleteLater()

    def _arrange(self, rect: QRect, move: bool) -> int:
        x, y, line = rect.x(), rect.y(), 0
        for item in self._items:
            hint = item.sizeHint()
            if x + hint.width() > rect.right() + 1 and line > 0:
                x, y, line = rect.x(), y + line + self._spacing, 0
            if move:
                item.setGeometry(QRect(x, y, min(hint.width(), rect.width()), hint.height()))
            x += hint.width() + self._spacing
            line = max(line, hint.height())
        return y + line - rect.y()


class TagChip(QFrame):
    """One tag: its name, × to remove it; a tag only some of the images carry is greyed, with + to give it
    to all. Delete or Backspace removes the focused chip."""

    remove_clicked = Signal(str)
    extend_clicked = Signal(str)
    rename_clicked = Signal(str)  # context menu: rename (or merge) the tag on every image
    delete_clicked = Signal(str)  # context menu: take the tag off every image

    def __init__(self, name: str, count: int, n_images: int):
        super().__init__()
        self.name = name
        self.partial = count < n_images
        self.setObjectName("tagchip")
        self.setProperty("partial", self.partial)
        self.setFocusPolicy(Qt.FocusPolicy.TabFocus)  # clicks leave the focus where the curator works
        self.label = QLabel(f"{name}  {count}/{n_images}" if self.partial else name)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(9, 1, 3, 1)
        layout.setSpacing(1)
        layout.addWidget(self.label)
        self.extend_button = None
        where = f"all {n_images} images" if n_images > 1 else "this image"
        if self.partial:
            self.setToolTip(f"{count} of the {n_images} selected images carry '{name}'")
            self.extend_button = self._button("+", f"Add '{name}' to all {n_images} selected images")
            self.extend_button.clicked.connect(lambda: self.extend_clicked.emit(self.name))
            layout.addWidget(self.extend_button)
        self.setToolTip((self.toolTip() + "\n" if self.partial else "") + "Right-click: rename it or remove it"
                        " from every image")
        self.remove_button = self._button("×", f"Remove '{name}' from {where} (Delete)")
        self.remove_button.clicked.connect(lambda: self.remove_clicked.emit(self.name))
        layout.addWidget(self.remove_button)

    def _button(self, text: str, tip: str) -> QToolButton:
        button = QToolButton()
        button.setText(text)
        button.setToolTip(tip)
        button.setAccessibleName(tip)
        button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        button.setCursor(Qt.CursorShape.PointingHandCursor)
        return button

    def context_menu(self) -> QMenu:
        """Right-click: the tag across the whole project, beyond the selection."""
        menu = QMenu(self)
        menu.addAction(f"Rename '{self.name}' everywhere…", lambda: self.rename_clicked.emit(self.name))
        menu.addAction(f"Remove '{self.name}' from every image…", lambda: self.delete_clicked.emit(self.name))
        return menu

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:
        self.context_menu().exec(event.globalPos())

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and not event.modifiers():
            self.remove_clicked.emit(self.name)
        else:
            super().keyPressEvent(event)


class SuggestionChip(QPushButton):
    """A suggested tag with its probability; a click adds it. Ones over their threshold stand out."""

    def __init__(self, s: Suggestion, n_images: int):
        text = f"+ {s.tag}  {s.probability:.2f}"
        if n_images > 1 and s.over:
            text += f"  ({s.over} of {s.of})"
        super().__init__(text)
        self.suggestion = s
        self.setObjectName("suggestion")
        self.setProperty("over", s.over > 0)
        self.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        where = "this image" if n_images == 1 else f"all {n_images} selected images"
        lacking = f" of the {s.of} that lack it" if n_images > 1 else ""
        verdict = (f"over its threshold on {s.over}{lacking}" if n_images > 1 and s.over else
                   "over its threshold" if s.over else "below its threshold")
        self.setToolTip(f"The tag model gives '{s.tag}' {s.probability:.0%}{' on average' if n_images > 1 else ''}"
                        f" ({verdict}). Click to add it to {where}.")
