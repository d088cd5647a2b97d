"""How good the latest model is: overall top-1/top-5, per class, and where it confuses classes."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

HOT = QColor("#1565c0")  # the colour of a full confusion cell
WRONG = QColor("#c62828")  # off-diagonal cells are shaded red: mistakes stand out


def _shade(base: QColor, frac: float) -> QColor:
    """base blended with white: 0 is white, 1 is base."""
    frac = max(0.0, min(1.0, frac))
    return QColor(int(255 + (base.red() - 255) * frac), int(255 + (base.green() - 255) * frac),
                  int(255 + (base.blue() - 255) * frac))


class _NumberItem(QTableWidgetItem):
    """A table cell that sorts by its number, not its text."""

    def __init__(self, text: str, value: float):
        super().__init__(text)
        self.setData(Qt.ItemDataRole.UserRole, value)
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        return (self.data(Qt.ItemDataRole.UserRole) or 0) < (other.data(Qt.ItemDataRole.UserRole) or 0)


class EvaluateDialog(QDialog):
    """A model's test-split scores, in the CLI's `evaluate --json` shape."""

    def __init__(self, result: dict, parent: QWidget | None = None):
        super().__init__(parent)
        self.result = result
        model = result.get("model", "?")
        split = result.get("split") or "all"
        self.setWindowTitle(f"Evaluate model {model}")
        self.summary = QLabel(
            f"<span style='font-size:14pt'><b>Model {model}</b> on the {split} split: "
            f"top-1 <b>{result['top1'] * 100:.1f}%</b> · top-5 <b>{result['top5'] * 100:.1f}%</b></span>"
            f"<br><span style='color:#546e7a'>{result['n']} labelled images; rows of the confusion matrix"
            " are the true classes, columns what the model predicted.</span>")
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.per_class = self._per_class_table(result)
        self.confusion = self._confusion_table(result)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self._titled("Per class", self.per_class))
        splitter.addWidget(self._titled("Confusion (true ↓, predicted →)", self.confusion))
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(splitter, 1)
        layout.addWidget(buttons)
        self.resize(1000, 520)

    @staticmethod
    def _titled(title: str, widget: QWidget) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        label = QLabel(title)
        label.setStyleSheet("font-weight: bold;")
        layout.addWidget(label)
        layout.addWidget(widget)
        return box

    @staticmethod
    def _per_class_table(result: dict) -> QTableWidget:
        names = result.get("classes") or list(result["per_class"])
        table = QTableWidget(len(names), 4)
        table.setHorizontalHeaderLabels(["Class", "Test images", "Top-1", "Top-5"])
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        for r, name in enumerate(names):
            stats = result["per_class"].get(name, {"n": 0, "top1": 0.0, "top5": 0.0})
            table.setItem(r, 0, QTableWidgetItem(name))
            table.setItem(r, 1, _NumberItem(str(stats["n"]), stats["n"]))
            for c, key in ((2, "top1"), (3, "top5")):
                item = _NumberItem(f"{stats[key] * 100:.0f}%" if stats["n"] else "–", stats[key])
                if stats["n"]:
                    item.setBackground(QBrush(_shade(QColor("#2e7d32"), 0.35 * stats[key])))
                table.setItem(r, c, item)
        table.setSortingEnabled(True)
        table.sortItems(0, Qt.SortOrder.AscendingOrder)
        header = table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in (1, 2, 3):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        return table

    @staticmethod
    def _confusion_table(result: dict) -> QTableWidget:
        names = result.get("classes") or []
        matrix = result.get("confusion") or []
        table = QTableWidget(len(names), len(names))
        table.setHorizontalHeaderLabels(names)
        table.setVerticalHeaderLabels(names)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        for r, row in enumerate(matrix):
            total = sum(row) or 1
            for c, count in enumerate(row):
                item = QTableWidgetItem(str(count) if count else "")
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                frac = count / total
                color = _shade(HOT if r == c else WRONG, frac)
                item.setBackground(QBrush(color))
                item.setForeground(QBrush(QColor("white") if frac > 0.55 else QColor("#212121")))
                item.setToolTip(f"{count} of {sum(row)} '{names[r]}' images predicted as '{names[c]}'")
                table.setItem(r, c, item)
        header = table.horizontalHeader()
        width = max([48] + [header.fontMetrics().horizontalAdvance(n) + 16 for n in names])
        header.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        header.setDefaultSectionSize(width)  # equal columns: the matrix reads as a grid of squares
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignCenter)
        table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        table.verticalHeader().setDefaultSectionSize(30)
        return table
