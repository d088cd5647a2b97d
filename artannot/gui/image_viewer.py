"""The selected image at a readable size, its label, and what the model thinks it is."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QObject, QRect, QRunnable, QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import QColor, QFontMetrics, QImage, QPainter, QPixmap, QResizeEvent
from PySide6.QtWidgets import QFrame, QLabel, QSizePolicy, QVBoxLayout, QWidget

from artannot.store.repo import ClassInfo, ImageRow

MAX_VIEW_PX = 1600  # decoded images are shrunk to this on the worker; the view never needs more
SOURCE_WORDS = {"human": "set by you", "rule": "from a naming rule", "import": "imported",
                "model": "model guess"}
RIGHT = Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight


def pil_to_qimage(image) -> QImage:
    """A PIL RGB image as a QImage that owns its pixels (safe to hand across threads)."""
    image = image.convert("RGB")
    data = image.tobytes("raw", "RGB")
    return QImage(data, image.width, image.height, 3 * image.width, QImage.Format.Format_RGB888).copy()


class _ViewerSignals(QObject):
    loaded = Signal(int, object, str)  # request token, QImage or None, error


class _LoadTask(QRunnable):
    """Decodes one image off the GUI thread."""

    def __init__(self, token: int, path: str, signals: _ViewerSignals):
        super().__init__()
        self.token, self.path, self.signals = token, path, signals

    def run(self) -> None:
        from artannot.data.images import load_image

        try:
            image = load_image(self.path)
            if max(image.size) > MAX_VIEW_PX:
                image.thumbnail((MAX_VIEW_PX, MAX_VIEW_PX))
            qimage = pil_to_qimage(image)
        except Exception as exc:  # shown in the viewer, never a dead worker
            self.signals.loaded.emit(self.token, None, str(exc) or type(exc).__name__)
        else:
            self.signals.loaded.emit(self.token, qimage, "")


class _FitImage(QLabel):
    """A label that shows a pixmap scaled to fit, keeping its aspect ratio."""

    def __init__(self):
        super().__init__()
        self._pixmap: QPixmap | None = None
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(200, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setStyleSheet("background: white; border: 1px solid #cfd8dc; color: #78909c;")

    def sizeHint(self) -> QSize:
        return QSize(360, 360)

    def minimumSizeHint(self) -> QSize:
        return QSize(200, 200)

    def set_image(self, pixmap: QPixmap | None, text: str = "") -> None:
        self._pixmap = pixmap
        if pixmap is None:
            self.setPixmap(QPixmap())
            self.setText(text)
        else:
            self.setText("")
            self._rescale()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._rescale()

    def _rescale(self) -> None:
        if self._pixmap is None:
            return
        area = self.contentsRect().size() - QSize(8, 8)
        pm = self._pixmap
        if pm.width() > area.width() or pm.height() > area.height():
            pm = pm.scaled(area, Qt.AspectRatioMode.KeepAspectRatio,
                           Qt.TransformationMode.SmoothTransformation)
        self.setPixmap(pm)


class PredictionBars(QWidget):
    """The model's top guesses as labelled bars with percentages."""

    ROW = 22

    def __init__(self):
        super().__init__()
        self._rows: list[tuple[str, float, str]] = []
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_predictions(self, rows: Sequence[tuple[str, float, str]]) -> None:
        """(class name, score 0-1, colour) rows, best first."""
        self._rows = list(rows)
        self.setFixedHeight(max(1, len(self._rows)) * self.ROW + 4)
        self.update()

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fm = QFontMetrics(self.font())
        widest = max((fm.horizontalAdvance(n) for n, _, _ in self._rows), default=0)
        name_w = min(self.width() // 2, widest + 8)
        pct_w = fm.horizontalAdvance("100%") + 6
        bar_w = max(10, self.width() - name_w - pct_w - 4)
        for k, (name, score, color) in enumerate(self._rows):
            y = 2 + k * self.ROW
            p.setPen(QColor("#263238"))
            text = fm.elidedText(name, Qt.TextElideMode.ElideRight, name_w - 6)
            p.drawText(QRect(0, y, name_w - 6, self.ROW), RIGHT, text)
            track = QRect(name_w, y + 5, bar_w, self.ROW - 10)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor("#eceff1"))
            p.drawRoundedRect(track, 3, 3)
            p.setBrush(QColor(color))
            bar = QRect(track.left(), track.top(), max(2, int(bar_w * score)), track.height())
            p.drawRoundedRect(bar, 3, 3)
            p.setPen(QColor("#37474f"))
            p.drawText(QRect(name_w + bar_w + 4, y, pct_w, self.ROW), RIGHT, f"{score * 100:.0f}%")
        p.end()


class ImageViewer(QWidget):
    """The current image with its file name, label and the latest model's top-5 guesses."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._token = 0
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._signals = _ViewerSignals(self)
        self._signals.loaded.connect(self._on_loaded)
        self._predictions: list[tuple[str, float]] = []
        self.row: ImageRow | None = None

        self.title = QLabel("No image selected")
        self.title.setWordWrap(True)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.title.setStyleSheet("font-weight: bold; font-size: 11pt;")
        self.image = _FitImage()
        self.details = QLabel("")
        self.details.setStyleSheet("color: #546e7a;")
        self.label = QLabel("")
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.pred_title = QLabel("Model")
        self.pred_title.setStyleSheet("font-weight: bold; margin-top: 6px;")
        self.bars = PredictionBars()
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setStyleSheet("color: #cfd8dc;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(self.title)
        layout.addWidget(self.image, 1)
        layout.addWidget(self.details)
        layout.addWidget(self.label)
        layout.addWidget(line)
        layout.addWidget(self.pred_title)
        layout.addWidget(self.bars)
        self.show_image(None)

    def show_image(self, row: ImageRow | None, label: ClassInfo | None = None,
                   predictions: Sequence[tuple[str, float]] = (), colors: dict[str, str] | None = None,
                   model_id: int | None = None) -> None:
        """Show an image row, its label class and the model's ranked (class name, score) guesses."""
        reload = row is None or self.row is None or row.id != self.row.id
        self.row = row
        self._predictions = list(predictions)[:5]
        if row is None:
            self._token += 1
            self.title.setText("No image selected")
            self.image.set_image(None, "Select an image in the grid")
            self.details.setText("")
            self.label.setText("")
        else:
            self.title.setText(Path(row.path).name)
            self.title.setToolTip(row.path)
            self.details.setText(f"{row.width} × {row.height} px · {row.split or 'no'} split")
            self.label.setText(self._label_html(row, label))
            if reload:
                self._request(row.path)
        colors = colors or {}
        self.bars.set_predictions([(n, s, colors.get(n, "#90a4ae")) for n, s in self._predictions])
        if row is None:
            self.pred_title.setText("Model")
        elif model_id is None:
            self.pred_title.setText("Model: none trained yet (Model ▸ Train)")
        elif not self._predictions:
            self.pred_title.setText(f"Model {model_id}: no prediction for this image")
        else:
            self.pred_title.setText(f"Model {model_id}: top {len(self._predictions)}")

    @staticmethod
    def _label_html(row: ImageRow, label: ClassInfo | None) -> str:
        if label is None:
            return "Label: <i style='color:#78909c'>unlabelled</i>"
        how = SOURCE_WORDS.get(row.label_source or "", row.label_source or "")
        text = (f"Label: <span style='color:{label.color}'>■</span> <b>{label.name}</b>"
                f" <span style='color:#78909c'>({how})</span>")
        if row.disagrees:
            text += "<br><span style='color:#d32f2f'><b>The model disagrees</b> — check this label</span>"
        return text

    def predictions(self) -> list[tuple[str, float]]:
        """The ranked guesses shown, for tests and tooltips."""
        return list(self._predictions)

    def _request(self, path: str) -> None:
        self._token += 1
        self.image.set_image(None, "loading…")
        self._pool.start(_LoadTask(self._token, path, self._signals))

    def _on_loaded(self, token: int, image: QImage | None, error: str) -> None:
        if token != self._token:
            return  # the user has moved on to another image
        if image is None:
            self.image.set_image(None, f"Cannot show this image:\n{error}")
        else:
            self.image.set_image(QPixmap.fromImage(image))

    def shutdown(self, timeout_ms: int = 5000) -> None:
        """Wait for a pending decode before the window goes away."""
        self._pool.clear()
        self._pool.waitForDone(timeout_ms)
