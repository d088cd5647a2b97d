"""How good the latest model is: overall top-1/top-5, per class, and where it confuses classes."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
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


class ReliabilityPlot(QWidget):
    """Accuracy per top-1 confidence bin against the diagonal (a calibrated model's bars touch it), with the
    expected calibration error in the title; from a model's metrics["calibration"]."""

    def __init__(self, calibration: dict | None, parent: QWidget | None = None):
        super().__init__(parent)
        import pyqtgraph as pg  # here, so opening the window does not import pyqtgraph

        self.bars: list = []  # one BarGraphItem per non-empty confidence bin
        self.label = QLabel("")
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.label.setWordWrap(True)
        self.plot = pg.PlotWidget(background="w")
        self.plot.setMinimumSize(260, 220)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        for side, text in (("bottom", "confidence of the top guess"), ("left", "accuracy")):
            axis = self.plot.getAxis(side)
            axis.setLabel(text, color="#37474f")
            axis.setTextPen("#37474f")
            axis.setPen("#90a4ae")
        self.plot.setXRange(0, 1, padding=0.02)
        self.plot.setYRange(0, 1, padding=0.02)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addWidget(self.plot, 1)
        bins = (calibration or {}).get("bins") or []
        ece = (calibration or {}).get("ece")
        if not bins or ece is None:
            self.label.setText("<b>Reliability</b><br><span style='color:#546e7a'>This model has no calibration"
                               " data: it was trained before calibration was measured, or no labelled test images"
                               " had predictions. Train again to see it.</span>")
            self.plot.hide()
            return
        n = sum(int(b.get("n", 0)) for b in bins) or 1
        self.plot.setTitle(f"Reliability — ECE {ece * 100:.1f}%", color="#263238", size="11pt")
        self.label.setText(f"<b>Reliability</b> · ECE <b>{ece * 100:.1f}%</b> <span style='color:#546e7a'>"
                           f"(0 when a 70% guess is right 70% of the time; {n} test images)</span>")
        self.plot.plot([0, 1], [0, 1], pen=pg.mkPen("#90a4ae", width=1.5, style=Qt.PenStyle.DashLine))
        for b in bins:
            lo, hi, acc, conf = float(b["lo"]), float(b["hi"]), float(b["accuracy"]), float(b["confidence"])
            over = conf > acc  # over-confident bins are red, under-confident blue
            bar = pg.BarGraphItem(x0=[lo + 0.005], width=[hi - lo - 0.01], height=[acc], y0=[0],
                                  brush="#e57373" if over else "#64b5f6", pen=pg.mkPen("#455a64", width=0.8))
            bar.setToolTip(f"{lo:.0%}–{hi:.0%}: {b.get('n', 0)} images, accuracy {acc:.0%},"
                           f" mean confidence {conf:.0%}")
            self.plot.addItem(bar)
            self.bars.append(bar)
        self.plot.plot([float(b["confidence"]) for b in bins], [float(b["accuracy"]) for b in bins], pen=None,
                       symbol="o", symbolSize=6, symbolBrush="#263238", symbolPen=None)


class EvaluateDialog(QDialog):
    """A model's test-split scores, in the CLI's `evaluate --json` shape. Clicking a confusion cell emits
    cell_chosen(true class name, predicted class name): the window shows those test images in the grid."""

    cell_chosen = Signal(str, str)

    def __init__(self, result: dict, parent: QWidget | None = None, calibration: dict | None = None):
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
        self.confusion.cellClicked.connect(self._on_cell)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self._titled("Per class", self.per_class))
        splitter.addWidget(self._titled("Confusion (true ↓, predicted →)", self.confusion))
        self.reliability = ReliabilityPlot(calibration if calibration is not None else result.get("calibration"))
        splitter.addWidget(self.reliability)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setStretchFactor(2, 2)
        splitter.setSizes([330, 480, 430])  # the tables keep their columns readable beside the plot
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(splitter, 1)
        layout.addWidget(buttons)
        self.resize(1240, 540)

    def _on_cell(self, row: int, column: int) -> None:
        names = self.result.get("classes") or []
        if row < len(names) and column < len(names):
            self.cell_chosen.emit(names[row], names[column])

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
                item.setToolTip(f"{count} of {sum(row)} '{names[r]}' images predicted as '{names[c]}'"
                                " — click to show them in the grid")
                table.setItem(r, c, item)
        header = table.horizontalHeader()
        width = max([48] + [header.fontMetrics().horizontalAdvance(n) + 16 for n in names])
        header.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        header.setDefaultSectionSize(width)  # equal columns: the matrix reads as a grid of squares
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignCenter)
        table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        table.verticalHeader().setDefaultSectionSize(30)
        return table
