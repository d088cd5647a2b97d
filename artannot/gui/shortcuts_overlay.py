"""The `?` overlay: every key the app knows, over a dimmed window; any key or click closes it."""

from __future__ import annotations

import html
from collections.abc import Sequence

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QColor, QKeyEvent, QMouseEvent, QPainter, QPaintEvent
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QVBoxLayout, QWidget

SECTION_ORDER = ("Label", "Select", "Review", "Boxes", "Tags", "Edit", "View", "Classes", "File", "Model")


class ShortcutsOverlay(QWidget):
    """A dimmed layer over its parent window with the shortcuts in cards, one per section."""

    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, False)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.card = QFrame(self)
        self.card.setObjectName("card")
        self.card.setStyleSheet("#card { background: white; border-radius: 10px; }"
                                " QLabel { color: #263238; }")
        self.grid = QGridLayout()
        self.grid.setHorizontalSpacing(28)
        self.grid.setVerticalSpacing(14)
        title = QLabel("Keyboard shortcuts")
        title.setStyleSheet("font-size: 15pt; font-weight: bold;")
        hint = QLabel("Press any key or click to close")
        hint.setStyleSheet("color: #78909c;")
        layout = QVBoxLayout(self.card)
        layout.setContentsMargins(24, 18, 24, 18)
        layout.addWidget(title)
        layout.addLayout(self.grid)
        layout.addWidget(hint, 0, Qt.AlignmentFlag.AlignRight)
        parent.installEventFilter(self)
        self.hide()

    def set_rows(self, rows: Sequence[tuple[str, str, str]]) -> None:
        """(section, keys, what) rows; sections become cards in a fixed, task-first order."""
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        sections: dict[str, list[tuple[str, str]]] = {}
        for section, keys, what in rows:
            if (keys, what) not in sections.setdefault(section, []):
                sections[section].append((keys, what))
        names = sorted(sections, key=lambda s: (SECTION_ORDER.index(s) if s in SECTION_ORDER else 99, s))
        for k, name in enumerate(names):
            body = "".join(
                f"<tr><td style='padding:2px 10px 2px 0; white-space:nowrap'><b style='color:#1565c0'>"
                f"{html.escape(keys)}</b></td><td style='padding:2px 0'>{html.escape(what)}</td></tr>"
                for keys, what in sections[name])
            label = QLabel(f"<div style='font-weight:bold; color:#546e7a; margin-bottom:4px'>{html.escape(name)}"
                           f"</div><table cellspacing=0>{body}</table>")
            label.setTextFormat(Qt.TextFormat.RichText)
            label.setWordWrap(True)
            label.setMinimumWidth(470)
            label.setMaximumWidth(560)
            label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
            self.grid.addWidget(label, k // 2, k % 2, Qt.AlignmentFlag.AlignTop)
        self._place()

    def sections(self) -> list[str]:
        """Section titles shown (tests)."""
        out = []
        for k in range(self.grid.count()):
            text = self.grid.itemAt(k).widget().text()
            out.append(html.unescape(text.split(">", 1)[1].split("<", 1)[0]))
        return out

    def open(self) -> None:
        """Show over the whole window and take the keyboard."""
        self._place()
        self.show()
        self.raise_()
        self.setFocus(Qt.FocusReason.PopupFocusReason)

    def _place(self) -> None:
        parent = self.parentWidget()
        self.setGeometry(parent.rect())
        self.card.adjustSize()
        size = self.card.sizeHint().boundedTo(self.size() * 0.95)
        self.card.resize(size)
        self.card.move((self.width() - size.width()) // 2, (self.height() - size.height()) // 2)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.parentWidget() and event.type() == QEvent.Type.Resize and self.isVisible():
            self._place()
        return False

    def paintEvent(self, _event: QPaintEvent) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(20, 30, 40, 150))
        p.end()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() not in (Qt.Key.Key_Shift, Qt.Key.Key_Control, Qt.Key.Key_Alt, Qt.Key.Key_Meta):
            self.hide()
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.hide()
        event.accept()
