"""How a grid tile looks and where its thumbnail comes from: the painting delegate and the thumbnail loader.

The loader decodes thumbnails on a thread pool through the on-disk cache (data/images.py writes one small
JPEG per image hash), keeps the most recent ones as pixmaps, and serves the newest requests first: what
is on screen now, not what was scrolled past.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from pathlib import Path

from PySide6.QtCore import (
    QModelIndex,
    QObject,
    QRect,
    QRectF,
    QRunnable,
    QSize,
    Qt,
    QThreadPool,
    QTimer,
    Signal,
)
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

from artannot.data.images import GRID_THUMB_PX
from artannot.store.repo import ClassInfo, ImageRow

THUMB_PX = 144  # drawn size of a thumbnail's longer side
CACHE_PX = GRID_THUMB_PX  # size written to the on-disk thumbnail cache (the importer makes them too)
CELL = QSize(THUMB_PX + 16, THUMB_PX + 48)
ROW_ROLE = Qt.ItemDataRole.UserRole + 1  # the ImageRow
THUMB_ROLE = Qt.ItemDataRole.UserRole + 2  # QPixmap, or None while loading / on error (asks for a load)
STATE_ROLE = Qt.ItemDataRole.UserRole + 3  # "loading" | "ready" | "error"
BOXES_ROLE = Qt.ItemDataRole.UserRole + 4  # [(class id, x, y, w, h)] when boxes are shown on thumbnails
# label source (as queries.fetch_rows gives it) -> (mark letter, colour, what the mark means)
SOURCE_MARKS = {"human": ("H", "#2e7d32", "set by you"), "folder": ("F", "#1565c0", "from the folder name"),
                "rule": ("R", "#546e7a", "from a file-name rule"), "import": ("I", "#6d4c41", "imported"),
                "model": ("M", "#6a1b9a", "the model's guess, accepted")}
DISAGREE = QColor("#d32f2f")
DISAGREE_PEN = QPen(DISAGREE, 3)
SUSPECT = QColor("#ef6c00")
WHITE = QColor("#ffffff")
GREY_TEXT = QColor("#78909c")
FRAME_PEN = QPen(QColor("#cfd8dc"), 1)
LEFT = Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft


@functools.lru_cache(maxsize=256)
def text_color(color: str) -> QColor:
    """A class colour dark enough to read as text on white."""
    c = QColor(color)
    return c.darker(150) if c.lightness() > 150 else c


class _LoaderSignals(QObject):
    """Carries a finished thumbnail from a pool thread to the GUI thread."""

    done = Signal(int, int, object, str)  # generation, image id, QImage (None on error), error message


class _ThumbnailTask(QRunnable):
    """Writes (or finds) the cached thumbnail of one image and decodes it; never touches widgets."""

    def __init__(self, generation: int, row: ImageRow, cache_dir: Path, signals: _LoaderSignals):
        super().__init__()
        self.generation, self.row, self.cache_dir, self.signals = generation, row, cache_dir, signals

    def run(self) -> None:
        from artannot.data.images import save_thumbnail_cached

        try:
            out = save_thumbnail_cached(self.row.path, self.row.sha256, self.cache_dir, size=CACHE_PX)
            image = QImage(str(out))
            if image.isNull():
                raise OSError(f"cannot decode the cached thumbnail {out}")
            if max(image.width(), image.height()) > THUMB_PX:
                image = image.scaled(THUMB_PX, THUMB_PX, Qt.AspectRatioMode.KeepAspectRatio,
                                     Qt.TransformationMode.SmoothTransformation)
        except Exception as exc:  # any unreadable file becomes an error tile, never a dead pool thread
            self.signals.done.emit(self.generation, self.row.id, None, str(exc) or type(exc).__name__)
        else:
            self.signals.done.emit(self.generation, self.row.id, image, "")


class ThumbnailLoader(QObject):
    """Thumbnails on demand: a bounded pixmap cache in front of a thread pool and the disk cache."""

    loaded = Signal(int)  # image id whose thumbnail (or error) just arrived

    MAX_PIXMAPS = 800  # decoded thumbnails kept in memory (the disk cache holds the rest)
    MAX_QUEUED = 256  # pending requests kept; older ones (scrolled past) are dropped

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.cache_dir: Path | None = None
        self._pixmaps: OrderedDict[int, QPixmap] = OrderedDict()
        self._errors: dict[int, str] = {}
        self._queued: OrderedDict[int, ImageRow] = OrderedDict()
        self._in_flight: set[int] = set()
        self._generation = 0  # bumped per project: late results from the previous one are dropped
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max(1, min(4, QThreadPool.globalInstance().maxThreadCount())))
        self._signals = _LoaderSignals(self)
        self._signals.done.connect(self._on_loaded)
        self._pump_timer = QTimer(self, singleShot=True, interval=0)
        self._pump_timer.timeout.connect(self._pump)

    def reset(self, cache_dir: Path | None) -> None:
        """A new project: forget every pixmap, error and request."""
        self._generation += 1
        self._queued.clear()
        self._in_flight.clear()
        self._pixmaps.clear()
        self._errors.clear()
        self.cache_dir = cache_dir
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)

    def pixmap(self, row: ImageRow) -> QPixmap | None:
        """The thumbnail if it is ready; otherwise None, and the image is queued (newest request first)."""
        pixmap = self._pixmaps.get(row.id)
        if pixmap is not None:
            self._pixmaps.move_to_end(row.id)
            return pixmap
        if row.id in self._errors or self.cache_dir is None:
            return None
        if row.id not in self._in_flight:
            self._queued[row.id] = row
            self._queued.move_to_end(row.id)
            while len(self._queued) > self.MAX_QUEUED:
                self._queued.popitem(last=False)
            if not self._pump_timer.isActive():
                self._pump_timer.start()
        return None

    def state(self, image_id: int) -> str:
        """'ready', 'error' or 'loading'."""
        if image_id in self._pixmaps:
            return "ready"
        return "error" if image_id in self._errors else "loading"

    def error(self, image_id: int) -> str | None:
        """Why an image's thumbnail could not be made, if it could not."""
        return self._errors.get(image_id)

    def _pump(self) -> None:
        limit = self._pool.maxThreadCount() * 2
        while self._queued and len(self._in_flight) < limit:
            image_id, row = self._queued.popitem(last=True)
            self._in_flight.add(image_id)
            self._pool.start(_ThumbnailTask(self._generation, row, self.cache_dir, self._signals))

    def _on_loaded(self, generation: int, image_id: int, image: QImage | None, error: str) -> None:
        if generation != self._generation:
            return
        self._in_flight.discard(image_id)
        if image is None:
            self._errors[image_id] = error
        else:
            self._pixmaps[image_id] = QPixmap.fromImage(image)
            while len(self._pixmaps) > self.MAX_PIXMAPS:
                self._pixmaps.popitem(last=False)
        self.loaded.emit(image_id)
        if self._queued:
            self._pump_timer.start()

    def stats(self) -> dict[str, int]:
        """How many thumbnails are queued, loading, in memory and unreadable."""
        return {"queued": len(self._queued), "loading": len(self._in_flight), "ready": len(self._pixmaps),
                "error": len(self._errors)}

    def shutdown(self, timeout_ms: int = 5000) -> None:
        """Drop queued loads and wait for running ones (before the app or project closes)."""
        self._queued.clear()
        self._pool.clear()
        self._pool.waitForDone(timeout_ms)


class _Fonts:
    """The fonts and metrics a tile uses, made once per view font (not per tile and frame)."""

    def __init__(self, base: QFont):
        self.base, self.base_metrics = QFont(base), QFontMetrics(base)
        self.bold = QFont(base)
        self.bold.setBold(True)
        self.bold_metrics = QFontMetrics(self.bold)
        self.italic = QFont(base)
        self.italic.setItalic(True)
        self.small = QFont(base)
        self.small.setPointSize(max(7, round(base.pointSizeF() * 0.85)))
        self.small_metrics = QFontMetrics(self.small)
        self.badges = {}
        for factor in (0.8, 0.85):
            font = QFont(base)
            font.setPointSizeF(base.pointSizeF() * factor)
            font.setBold(True)
            self.badges[factor] = (font, QFontMetrics(font))


_COLORS: dict[str, QColor] = {}


def _color(name: str) -> QColor:
    color = _COLORS.get(name)
    if color is None:
        color = _COLORS[name] = QColor(name)
    return color


class ThumbnailDelegate(QStyledItemDelegate):
    """Paints a tile: thumbnail (and its boxes), source mark, label in its class colour, model and suspect badges.

    A frame paints every visible tile (40 or so), so the per-tile work is kept to drawing: the row, pixmap
    and state come from the model in one call (ThumbnailModel.tile), fonts and metrics are made once, and
    the elided texts of a tile are remembered.
    """

    MAX_TEXTS = 20_000  # elided texts remembered
    MAX_TILES = 160  # painted tiles remembered (~20 MB): several screens of a 1400×900 window

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._fonts: dict[str, _Fonts] = {}
        self._texts: dict[tuple, str] = {}
        self._tiles: OrderedDict[tuple, QPixmap] = OrderedDict()

    def _fonts_for(self, font: QFont) -> _Fonts:
        key = font.key()
        fonts = self._fonts.get(key)
        if fonts is None:
            fonts = self._fonts[key] = _Fonts(font)
        return fonts

    def _elided(self, key: tuple, text: str, metrics: QFontMetrics, mode: Qt.TextElideMode, width: int) -> str:
        key = (*key, text, width)
        out = self._texts.get(key)
        if out is None:
            if len(self._texts) > self.MAX_TEXTS:
                self._texts.clear()
            out = self._texts[key] = metrics.elidedText(text, mode, width)
        return out

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        return CELL

    def paint(self, p: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        model = index.model()
        tile = getattr(model, "tile", None)
        if tile is None:  # another view's model: painted directly
            row = index.data(ROW_ROLE)
            if row is not None:
                self._paint_tile(p, option, model, row, index.data(THUMB_ROLE), index.data(STATE_ROLE),
                                 index.data(BOXES_ROLE))
            return
        row, pixmap, state, boxes = tile(index.row())  # the grid's own model: everything in one call
        if row is None or option.rect.isEmpty():
            return
        # A scroll moves the same tiles: each is painted once into a pixmap, then copied (~20 µs against
        # ~400 µs). The key holds everything a tile shows, so any change of it paints the tile anew.
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        dpr = p.device().devicePixelRatioF() if p.device() is not None else 1.0
        key = (row, state if pixmap is None else pixmap.cacheKey(), tuple(boxes) if boxes else None,
               option.palette.highlight().color().rgba() if selected else 0, option.palette.base().color().rgba(),
               getattr(model, "classes_version", 0), option.rect.width(), option.rect.height(), option.font.key(), dpr)
        cached = self._tiles.get(key)
        if cached is None:
            cached = QPixmap(round(option.rect.width() * dpr), round(option.rect.height() * dpr))
            cached.setDevicePixelRatio(dpr)
            cached.fill(option.palette.base().color())
            painter = QPainter(cached)
            local = QStyleOptionViewItem(option)
            local.rect = QRect(0, 0, option.rect.width(), option.rect.height())
            self._paint_tile(painter, local, model, row, pixmap, state, boxes)
            painter.end()
            self._tiles[key] = cached
            while len(self._tiles) > self.MAX_TILES:
                self._tiles.popitem(last=False)
        else:
            self._tiles.move_to_end(key)
        p.drawPixmap(option.rect.topLeft(), cached)

    def _paint_tile(self, p: QPainter, option: QStyleOptionViewItem, model, row: ImageRow, pixmap: QPixmap | None,
                    state: str, boxes: list | None) -> None:
        fonts = self._fonts_for(option.font)
        p.save()
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        cell = option.rect.adjusted(2, 2, -2, -2)
        if option.state & QStyle.StateFlag.State_Selected:
            hl = option.palette.highlight().color()
            p.setPen(QPen(hl, 2))
            fill = QColor(hl)
            fill.setAlpha(50)
            p.setBrush(fill)
            p.drawRoundedRect(cell, 6, 6)
        box = QRect(cell.left() + (cell.width() - THUMB_PX) // 2, cell.top() + 6, THUMB_PX, THUMB_PX)
        drawn = self._paint_thumb(p, box, pixmap, state)
        classes = getattr(model, "classes", {})
        if boxes and drawn is not None:
            self._paint_boxes(p, drawn, row, boxes, classes)
        info = classes.get(row.class_id) if row.class_id is not None else None
        if row.disagrees:
            guess = model.guess_name(row.pred_class_id) if hasattr(model, "guess_name") else None
            self._paint_disagreement(p, fonts, box, guess, row.pred_score)
        if row.label_source in SOURCE_MARKS and row.class_id is not None:
            self._paint_source(p, fonts, box, *SOURCE_MARKS[row.label_source][:2])
        if getattr(row, "flagged", False):
            self._paint_suspect(p, fonts, box, getattr(row, "suspect", None))
        self._paint_text(p, fonts, cell, box, row, info)
        p.restore()

    @staticmethod
    def _paint_thumb(p: QPainter, box: QRect, pixmap: QPixmap | None, state: str) -> QRect | None:
        p.setPen(Qt.PenStyle.NoPen)
        drawn = None
        if pixmap is not None and not pixmap.isNull():
            if pixmap.width() < box.width() or pixmap.height() < box.height():
                p.fillRect(box, WHITE)  # a wide or tall image leaves a margin
            x = box.left() + (box.width() - pixmap.width()) // 2
            y = box.top() + (box.height() - pixmap.height()) // 2
            p.drawPixmap(x, y, pixmap)
            drawn = QRect(x, y, pixmap.width(), pixmap.height())
        else:
            p.fillRect(box, WHITE)
            p.setBrush(_color("#eceff1") if state != "error" else _color("#fbe9e7"))
            p.drawRect(box.adjusted(8, 8, -8, -8))
            p.setPen(_color("#90a4ae") if state != "error" else DISAGREE)
            p.drawText(box, Qt.AlignmentFlag.AlignCenter, "loading…" if state != "error" else "unreadable")
        p.setPen(FRAME_PEN)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(box)
        return drawn

    @staticmethod
    def _paint_boxes(p: QPainter, drawn: QRect, row: ImageRow, boxes, classes: dict[int, ClassInfo]) -> None:
        sx, sy = drawn.width() / max(1, row.width), drawn.height() / max(1, row.height)
        p.setBrush(Qt.BrushStyle.NoBrush)
        for class_id, x, y, w, h in boxes:
            info = classes.get(class_id) if class_id is not None else None
            p.setPen(QPen(QColor(info.color if info else "#37474f"), 2))
            p.drawRect(QRectF(drawn.left() + x * sx, drawn.top() + y * sy, w * sx, h * sy))

    def _paint_disagreement(self, p: QPainter, fonts: _Fonts, box: QRect, pred: str | None,
                            score: float | None) -> None:
        p.setPen(DISAGREE_PEN)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(box.adjusted(1, 1, -1, -1))
        font, metrics = fonts.badges[0.85]
        p.setFont(font)
        strip = QRect(box.left() + 2, box.bottom() - 19, box.width() - 3, 19)
        p.fillRect(strip, DISAGREE)
        p.setPen(WHITE)
        text = f"model: {pred or '?'}" + (f" {score * 100:.0f}%" if score is not None else "")
        text = self._elided(("pred",), text, metrics, Qt.TextElideMode.ElideRight, strip.width() - 8)
        p.drawText(strip.adjusted(4, 0, -4, 0), LEFT, text)

    @staticmethod
    def _paint_source(p: QPainter, fonts: _Fonts, box: QRect, letter: str, color: str) -> None:
        p.setFont(fonts.badges[0.8][0])
        mark = QRect(box.left() + 4, box.top() + 4, 17, 17)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(_color(color))
        p.drawRoundedRect(mark, 4, 4)
        p.setPen(WHITE)
        p.drawText(mark, Qt.AlignmentFlag.AlignCenter, letter)

    @staticmethod
    def _paint_suspect(p: QPainter, fonts: _Fonts, box: QRect, score: float | None) -> None:
        font, metrics = fonts.badges[0.8]
        p.setFont(font)
        text = "suspect" + (f" {score * 100:.0f}" if score is not None else "")
        width = metrics.horizontalAdvance(text) + 10
        mark = QRect(box.right() - width - 3, box.top() + 4, width, 17)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(SUSPECT)
        p.drawRoundedRect(mark, 4, 4)
        p.setPen(WHITE)
        p.drawText(mark, Qt.AlignmentFlag.AlignCenter, text)

    def _paint_text(self, p: QPainter, fonts: _Fonts, cell: QRect, box: QRect, row: ImageRow,
                    info: ClassInfo | None) -> None:
        line = QRect(cell.left() + 6, box.bottom() + 5, cell.width() - 12, fonts.base_metrics.height())
        if info is not None:
            chip = QRect(line.left(), line.center().y() - 5, 10, 10)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(_color(info.color))
            p.drawRoundedRect(chip, 2, 2)
            p.setFont(fonts.bold)
            p.setPen(text_color(info.color))
            text_rect = line.adjusted(15, 0, 0, 0)
            text = self._elided(("class",), info.name, fonts.bold_metrics, Qt.TextElideMode.ElideRight,
                                text_rect.width())
        else:
            p.setFont(fonts.italic)
            p.setPen(GREY_TEXT)
            text_rect = line
            text = "unlabelled"
        p.drawText(text_rect, LEFT, text)
        p.setFont(fonts.small)
        p.setPen(GREY_TEXT)
        name_rect = QRect(line.left(), line.bottom() + 1, line.width(), fonts.small_metrics.height() + 3)
        name = self._elided(("name",), row.path.replace("\\", "/").rsplit("/", 1)[-1], fonts.small_metrics,
                            Qt.TextElideMode.ElideMiddle, name_rect.width())
        p.drawText(name_rect, LEFT, name)
