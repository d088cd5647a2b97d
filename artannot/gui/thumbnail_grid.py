"""The grid of thumbnails: a lazy Qt model over image rows, a painting delegate and the list view."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRect,
    QRunnable,
    QSize,
    Qt,
    QThreadPool,
    QTimer,
    Signal,
)
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QKeyEvent, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView, QStyle, QStyledItemDelegate, QStyleOptionViewItem

from artannot.store.repo import ClassInfo, ImageRow

THUMB_PX = 144  # drawn size of a thumbnail's longer side
CACHE_PX = 160  # size written to the on-disk thumbnail cache
CELL = QSize(THUMB_PX + 16, THUMB_PX + 48)
ROW_ROLE = Qt.ItemDataRole.UserRole + 1  # the ImageRow
THUMB_ROLE = Qt.ItemDataRole.UserRole + 2  # QPixmap, or None while loading / on error (asks for a load)
STATE_ROLE = Qt.ItemDataRole.UserRole + 3  # "loading" | "ready" | "error"
SOURCE_MARKS = {"human": ("H", "#2e7d32"), "rule": ("R", "#546e7a"), "import": ("I", "#6d4c41"),
                "model": ("M", "#6a1b9a")}
DISAGREE = QColor("#d32f2f")
LEFT = Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft


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


class ThumbnailModel(QAbstractListModel):
    """Image rows for the grid; thumbnails load on demand for the rows the view paints."""

    MAX_PIXMAPS = 800  # decoded thumbnails kept in memory (the disk cache holds the rest)
    MAX_QUEUED = 256  # pending requests kept; older ones (scrolled past) are dropped

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._all: list[ImageRow] = []
        self._rows: list[ImageRow] = self._all
        self._pos: dict[int, int] | None = None  # image id -> row in _rows, built on first need
        self._all_pos: dict[int, int] | None = None
        self._filter: Callable[[ImageRow], bool] | None = None
        self._sort: Callable[[ImageRow], object] | None = None
        self.classes: dict[int, ClassInfo] = {}
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

    # ---- content ----------------------------------------------------------------------------------
    def set_project_data(self, rows: list[ImageRow], classes: Sequence[ClassInfo],
                         cache_dir: Path | None) -> None:
        """Show a (new) project's images; drops every cached thumbnail."""
        self.beginResetModel()
        self._generation += 1
        self._queued.clear()
        self._in_flight.clear()
        self._pixmaps.clear()
        self._errors.clear()
        self.cache_dir = cache_dir
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
        self.classes = {c.id: c for c in classes}
        self._all = rows
        self._apply_view()
        self.endResetModel()

    def set_classes(self, classes: Sequence[ClassInfo]) -> None:
        """New class names, colours or counts: repaint labels."""
        self.classes = {c.id: c for c in classes}
        self._changed_all()

    def reload(self, rows: list[ImageRow]) -> None:
        """Fresh rows from the database (after undo or training); keeps thumbnails if the ids are the same."""
        same = len(rows) == len(self._all) and all(a.id == b.id for a, b in zip(rows, self._all))  # noqa: B905
        if not same:
            self.set_project_data(rows, list(self.classes.values()), self.cache_dir)
            return
        self._all = rows
        self._all_pos = None
        if self._filter is None and self._sort is None:
            self._rows = self._all
        else:
            self._rows = [self._all[self._all_position(r.id)] for r in self._rows]
        self._changed_all()

    def refresh_rows(self, rows: Iterable[ImageRow]) -> None:
        """Replace some rows with updated versions (same ids) and repaint just those."""
        changed = []
        for row in rows:
            k = self._all_position(row.id)
            if k is None:
                continue
            self._all[k] = row
            if self._rows is not self._all:
                j = self.position(row.id)
                if j is not None:
                    self._rows[j] = row
            changed.append(row.id)
        self._repaint(changed)

    def update_labels(self, image_ids: Sequence[int], class_id: int | None, source: str = "human") -> None:
        """Mirror an edit just committed to the database without re-reading it."""
        rows = []
        for image_id in image_ids:
            row = self.row_by_id(image_id)
            if row is None:
                continue
            if class_id is None and row.class_id is None and row.label_source is None:
                continue  # clearing an image that never had a label changes nothing
            rows.append(dataclasses.replace(row, class_id=class_id, label_source=source))
        self.refresh_rows(rows)

    def set_filter(self, keep: Callable[[ImageRow], bool] | None,
                   sort_key: Callable[[ImageRow], object] | None = None) -> None:
        """Show only rows that pass keep (None: all), optionally ordered by sort_key."""
        self.beginResetModel()
        self._filter, self._sort = keep, sort_key
        self._apply_view()
        self.endResetModel()

    def _apply_view(self) -> None:
        self._all_pos = None
        self._pos = None
        if self._filter is None and self._sort is None:
            self._rows = self._all
            return
        rows = [r for r in self._all if self._filter(r)] if self._filter is not None else list(self._all)
        if self._sort is not None:
            rows.sort(key=self._sort)
        self._rows = rows

    # ---- lookups ----------------------------------------------------------------------------------
    def rows(self) -> list[ImageRow]:
        """The rows shown, in display order."""
        return self._rows

    def all_rows(self) -> list[ImageRow]:
        """Every row of the project, whatever the filter."""
        return self._all

    def row_at(self, row: int) -> ImageRow:
        """The image shown at a grid position."""
        return self._rows[row]

    def position(self, image_id: int) -> int | None:
        """The grid position of an image, or None when filtered out."""
        if self._pos is None:
            self._pos = {r.id: k for k, r in enumerate(self._rows)}
        return self._pos.get(image_id)

    def _all_position(self, image_id: int) -> int | None:
        if self._rows is self._all:
            return self.position(image_id)
        if self._all_pos is None:
            self._all_pos = {r.id: k for k, r in enumerate(self._all)}
        return self._all_pos.get(image_id)

    def row_by_id(self, image_id: int) -> ImageRow | None:
        """An image's current row, whatever the filter."""
        k = self._all_position(image_id)
        return None if k is None else self._all[k]

    def thumbnail_state(self, row: int) -> str:
        """'ready', 'error' or 'loading' for a grid position."""
        image_id = self._rows[row].id
        if image_id in self._pixmaps:
            return "ready"
        return "error" if image_id in self._errors else "loading"

    def class_name(self, class_id: int | None) -> str | None:
        """Name of a class id (None for no label)."""
        info = self.classes.get(class_id) if class_id is not None else None
        return info.name if info is not None else None

    # ---- Qt model API -----------------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        row = self._rows[index.row()]
        if role == ROW_ROLE:
            return row
        if role == THUMB_ROLE:
            return self._thumbnail(row)
        if role == STATE_ROLE:
            return self.thumbnail_state(index.row())
        if role == Qt.ItemDataRole.DisplayRole:
            return Path(row.path).name
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(row)
        return None

    def _tooltip(self, row: ImageRow) -> str:
        label = self.class_name(row.class_id) or "unlabelled"
        lines = [row.path, f"{row.width}×{row.height} px, {row.split or 'no'} split",
                 f"label: {label}" + (f" ({row.label_source})" if row.label_source else "")]
        if row.pred_class_id is not None:
            lines.append(f"model: {self.class_name(row.pred_class_id)} ({(row.pred_score or 0) * 100:.0f}%)")
        if row.id in self._errors:
            lines.append(f"cannot show: {self._errors[row.id]}")
        return "\n".join(lines)

    # ---- lazy thumbnails --------------------------------------------------------------------------
    def _thumbnail(self, row: ImageRow) -> QPixmap | None:
        pixmap = self._pixmaps.get(row.id)
        if pixmap is not None:
            self._pixmaps.move_to_end(row.id)
            return pixmap
        if row.id in self._errors or self.cache_dir is None:
            return None
        if row.id not in self._in_flight:
            self._queued[row.id] = row
            self._queued.move_to_end(row.id)  # newest request first: what is on screen now
            while len(self._queued) > self.MAX_QUEUED:
                self._queued.popitem(last=False)
            if not self._pump_timer.isActive():
                self._pump_timer.start()
        return None

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
        self._repaint([image_id])
        if self._queued:
            self._pump_timer.start()

    def load_stats(self) -> dict[str, int]:
        """How many thumbnails are queued, loading, in memory and unreadable (for tests and diagnostics)."""
        return {"queued": len(self._queued), "loading": len(self._in_flight), "ready": len(self._pixmaps),
                "error": len(self._errors)}

    def shutdown(self, timeout_ms: int = 5000) -> None:
        """Drop queued loads and wait for running ones (before the app or project closes)."""
        self._queued.clear()
        self._pool.clear()
        self._pool.waitForDone(timeout_ms)

    # ---- repaint ----------------------------------------------------------------------------------
    def _repaint(self, image_ids: Iterable[int]) -> None:
        for image_id in image_ids:
            k = self.position(image_id)
            if k is not None:
                idx = self.index(k)
                self.dataChanged.emit(idx, idx)

    def _changed_all(self) -> None:
        if self._rows:
            self.dataChanged.emit(self.index(0), self.index(len(self._rows) - 1))


class ThumbnailDelegate(QStyledItemDelegate):
    """Paints a tile: thumbnail, source marker, label in its class colour, and disagreement badge."""

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        return CELL

    def paint(self, p: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        model = index.model()
        row: ImageRow | None = index.data(ROW_ROLE)
        if row is None:
            return
        pixmap = index.data(THUMB_ROLE)
        p.save()
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        cell = option.rect.adjusted(2, 2, -2, -2)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if selected:
            hl = option.palette.highlight().color()
            p.setPen(QPen(hl, 2))
            fill = QColor(hl)
            fill.setAlpha(50)
            p.setBrush(fill)
            p.drawRoundedRect(cell, 6, 6)
        box = QRect(cell.left() + (cell.width() - THUMB_PX) // 2, cell.top() + 6, THUMB_PX, THUMB_PX)
        self._paint_thumb(p, box, pixmap, index.data(STATE_ROLE))
        info = model.classes.get(row.class_id) if row.class_id is not None else None
        if row.disagrees:
            self._paint_disagreement(p, box, model.class_name(row.pred_class_id), row.pred_score)
        if row.label_source in SOURCE_MARKS and row.class_id is not None:
            self._paint_source(p, box, *SOURCE_MARKS[row.label_source])
        self._paint_text(p, option, cell, box, row, info)
        p.restore()

    @staticmethod
    def _paint_thumb(p: QPainter, box: QRect, pixmap: QPixmap | None, state: str) -> None:
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor("#ffffff"))
        p.drawRect(box)
        if pixmap is not None and not pixmap.isNull():
            x = box.left() + (box.width() - pixmap.width()) // 2
            y = box.top() + (box.height() - pixmap.height()) // 2
            p.drawPixmap(x, y, pixmap)
        else:
            p.setBrush(QColor("#eceff1") if state != "error" else QColor("#fbe9e7"))
            p.drawRect(box.adjusted(8, 8, -8, -8))
            p.setPen(QColor("#90a4ae") if state != "error" else DISAGREE)
            p.drawText(box, Qt.AlignmentFlag.AlignCenter, "loading…" if state != "error" else "unreadable")
        p.setPen(QPen(QColor("#cfd8dc"), 1))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(box)

    @staticmethod
    def _paint_disagreement(p: QPainter, box: QRect, pred: str | None, score: float | None) -> None:
        p.setPen(QPen(DISAGREE, 3))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(box.adjusted(1, 1, -1, -1))
        font = QFont(p.font())
        font.setPointSizeF(font.pointSizeF() * 0.85)
        font.setBold(True)
        p.setFont(font)
        strip = QRect(box.left() + 2, box.bottom() - 19, box.width() - 3, 19)
        p.fillRect(strip, DISAGREE)
        p.setPen(QColor("white"))
        text = f"model: {pred or '?'}" + (f" {score * 100:.0f}%" if score is not None else "")
        text = QFontMetrics(font).elidedText(text, Qt.TextElideMode.ElideRight, strip.width() - 8)
        p.drawText(strip.adjusted(4, 0, -4, 0), LEFT, text)

    @staticmethod
    def _paint_source(p: QPainter, box: QRect, letter: str, color: str) -> None:
        font = QFont(p.font())
        font.setPointSizeF(font.pointSizeF() * 0.8)
        font.setBold(True)
        p.setFont(font)
        mark = QRect(box.left() + 4, box.top() + 4, 17, 17)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(color))
        p.drawRoundedRect(mark, 4, 4)
        p.setPen(QColor("white"))
        p.drawText(mark, Qt.AlignmentFlag.AlignCenter, letter)

    @staticmethod
    def _paint_text(p: QPainter, option: QStyleOptionViewItem, cell: QRect, box: QRect, row: ImageRow,
                    info: ClassInfo | None) -> None:
        font = QFont(option.font)
        line = QRect(cell.left() + 6, box.bottom() + 5, cell.width() - 12, QFontMetrics(font).height())
        if info is not None:
            chip = QRect(line.left(), line.center().y() - 5, 10, 10)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(info.color))
            p.drawRoundedRect(chip, 2, 2)
            font.setBold(True)
            p.setFont(font)
            p.setPen(text_color(info.color))
            text_rect = line.adjusted(15, 0, 0, 0)
            text = QFontMetrics(font).elidedText(info.name, Qt.TextElideMode.ElideRight, text_rect.width())
        else:
            font.setItalic(True)
            p.setFont(font)
            p.setPen(QColor("#78909c"))
            text_rect = line
            text = "unlabelled"
        p.drawText(text_rect, LEFT, text)
        small = QFont(option.font)
        small.setPointSize(max(7, round(small.pointSizeF() * 0.85)))
        p.setFont(small)
        p.setPen(QColor("#78909c"))
        name_rect = QRect(line.left(), line.bottom() + 1, line.width(), QFontMetrics(small).height() + 3)
        name = QFontMetrics(small).elidedText(Path(row.path).name, Qt.TextElideMode.ElideMiddle,
                                              name_rect.width())
        p.drawText(name_rect, LEFT, name)


class ThumbnailGrid(QListView):
    """The images of a project as a scrollable grid; digit keys label the selection."""

    hotkey_pressed = Signal(str)  # "0".."9" or "clear"
    current_image_changed = Signal(object)  # ImageRow or None

    def __init__(self, model: ThumbnailModel, parent=None):
        super().__init__(parent)
        self.setModel(model)
        self.setItemDelegate(ThumbnailDelegate(self))
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)
        self.setWrapping(True)
        self.setSpacing(4)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.verticalScrollBar().setSingleStep(CELL.height() // 4)
        self.setMouseTracking(True)
        self.selectionModel().currentChanged.connect(self._on_current)
        model.modelReset.connect(self._after_reset)

    def thumbnail_model(self) -> ThumbnailModel:
        """The grid's model."""
        return self.model()  # type: ignore[return-value]

    def selected_ids(self) -> list[int]:
        """Ids of the selected images, in grid order."""
        model = self.thumbnail_model()
        return [model.row_at(i.row()).id for i in sorted(self.selectionModel().selectedIndexes(),
                                                         key=lambda i: i.row())]

    def current_row(self) -> ImageRow | None:
        """The image with keyboard focus."""
        idx = self.currentIndex()
        return self.thumbnail_model().row_at(idx.row()) if idx.isValid() else None

    def select_rows(self, rows: Sequence[int]) -> None:
        """Select these grid positions; the first becomes current."""
        sel = self.selectionModel()
        sel.clearSelection()
        for k, r in enumerate(rows):
            flags = sel.SelectionFlag.Select
            if k == 0:
                sel.setCurrentIndex(self.model().index(r, 0), flags)
            else:
                sel.select(self.model().index(r, 0), flags)

    def advance(self) -> None:
        """Move the focus (and selection) to the next image, for one-key-per-image labelling."""
        idx = self.currentIndex()
        if idx.isValid() and idx.row() + 1 < self.model().rowCount():
            self.setCurrentIndex(self.model().index(idx.row() + 1, 0))

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        plain = not (event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier)
        if plain and Qt.Key.Key_0 <= key <= Qt.Key.Key_9:
            self.hotkey_pressed.emit(str(key - Qt.Key.Key_0))
        elif plain and key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.hotkey_pressed.emit("clear")
        else:
            super().keyPressEvent(event)

    def keyboardSearch(self, search: str) -> None:
        """Typing digits labels images; it must not jump to a file name instead."""

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        model = self.thumbnail_model()
        self.current_image_changed.emit(model.row_at(current.row()) if current.isValid() else None)

    def _after_reset(self) -> None:
        self.current_image_changed.emit(None)
