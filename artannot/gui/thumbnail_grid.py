"""The grid of thumbnails: a lazy Qt model over an array of image ids, and the list view that shows it.

The model never holds the project: it holds the ids the current filter selected (a numpy array, 800 kB
for 100k images) and a bounded cache of the rows painted recently, fetched a page at a time by primary
key. Filtering and sorting happen in SQL (store/queries.py); the view lays out uniform cells only.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from PySide6.QtCore import (
    QAbstractListModel,
    QItemSelection,
    QItemSelectionModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QKeyEvent, QMouseEvent
from PySide6.QtWidgets import QAbstractItemView, QListView

from artannot.gui.actions import key_name
from artannot.gui.thumbnail_delegate import (  # noqa: F401  (re-exported: the grid's public names)
    BOXES_ROLE,
    CELL,
    ROW_ROLE,
    SOURCE_MARKS,
    STATE_ROLE,
    THUMB_ROLE,
    ThumbnailDelegate,
    ThumbnailLoader,
)
from artannot.store import queries
from artannot.store.repo import ClassInfo, ImageRow

PAGE = 256  # rows fetched together when the view paints one that is not cached
LAYOUT_BATCH = 10_000  # rows the view lays out per event-loop turn (~30 ms)


class RowSource(Protocol):
    """Where the grid's rows come from."""

    def fetch(self, ids: Sequence[int]) -> dict[int, ImageRow]: ...
    def boxes(self, ids: Sequence[int]) -> dict[int, list]: ...
    def all_ids(self) -> np.ndarray: ...


class ListSource:
    """Rows held in memory (tests, small tools)."""

    def __init__(self, rows: Sequence[ImageRow]):
        self._rows = {r.id: r for r in rows}
        self._ids = np.fromiter((r.id for r in rows), dtype=np.int64, count=len(rows))

    def fetch(self, ids: Sequence[int]) -> dict[int, ImageRow]:
        return {int(i): self._rows[int(i)] for i in ids if int(i) in self._rows}

    def boxes(self, ids: Sequence[int]) -> dict[int, list]:
        return {}

    def all_ids(self) -> np.ndarray:
        return self._ids


class DatabaseSource:
    """Rows read from a project's database (on the GUI thread's connection), with the latest model's guesses."""

    def __init__(self, conn: sqlite3.Connection, model_id: int | None):
        self.conn, self.model_id = conn, model_id

    def fetch(self, ids: Sequence[int]) -> dict[int, ImageRow]:
        return queries.fetch_rows(self.conn, ids, self.model_id)  # type: ignore[return-value]

    def boxes(self, ids: Sequence[int]) -> dict[int, list]:
        return queries.boxes_of(self.conn, ids)

    def all_ids(self) -> np.ndarray:
        return queries.all_ids(self.conn)


class ThumbnailModel(QAbstractListModel):
    """The images a filter selected, in its order; rows and thumbnails load for what the view paints.

    Changed rows are announced with `repaint_requested`, not dataChanged: QListView answers any dataChanged
    with a full relayout (two model calls per row: 0.3 s at 100k rows), where a repaint needs none.
    """

    repaint_requested = Signal(object)  # grid positions to repaint, or None for all
    MAX_ROWS = 20_000  # rows kept in memory (a few screens' worth many times over)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.source: RowSource = ListSource([])
        self._ids = np.zeros(0, dtype=np.int64)
        self._n = 0
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None  # (sorted ids, their positions), on demand
        self._rows: OrderedDict[int, ImageRow] = OrderedDict()
        self._boxes: dict[int, list] = {}
        self.show_boxes = False
        self.classes: dict[int, ClassInfo] = {}
        self.classes_version = 0  # a new set of classes (names, colours, negative): painted tiles are stale
        self.loader = ThumbnailLoader(self)
        self.loader.loaded.connect(lambda image_id: self._repaint([image_id]))

    @property
    def cache_dir(self) -> Path | None:
        return self.loader.cache_dir

    # ---- content ----------------------------------------------------------------------------------
    def set_source(self, source: RowSource, ids: np.ndarray | None, classes: Sequence[ClassInfo],
                   cache_dir: Path | None) -> None:
        """Show a (new) project: its row source, the ids to show (None: all) and its classes."""
        self.beginResetModel()
        self.loader.reset(cache_dir)
        self.source = source
        self._rows.clear()
        self._boxes.clear()
        self.classes = {c.id: c for c in classes}
        self.classes_version += 1
        self._set_ids(source.all_ids() if ids is None else ids)
        self.endResetModel()

    def set_project_data(self, rows: list[ImageRow], classes: Sequence[ClassInfo], cache_dir: Path | None) -> None:
        """Show rows held in memory, in their order."""
        self.set_source(ListSource(rows), None, classes, cache_dir)

    def set_ids(self, ids: np.ndarray) -> None:
        """Show these images, in this order (a new filter or sort); rows and thumbnails stay cached."""
        self.beginResetModel()
        self._set_ids(ids)
        self.endResetModel()

    def _set_ids(self, ids: np.ndarray) -> None:
        self._ids = np.asarray(ids, dtype=np.int64)
        self._n = len(self._ids)
        self._sorted = None

    def set_model_id(self, model_id: int | None) -> None:
        """A new model was trained: its guesses replace the old ones."""
        if isinstance(self.source, DatabaseSource):
            self.source.model_id = model_id
        self.reload()

    def set_classes(self, classes: Sequence[ClassInfo]) -> None:
        """New class names, colours or counts: repaint labels."""
        self.classes = {c.id: c for c in classes}
        self.classes_version += 1
        self._changed_all()

    def set_show_boxes(self, show: bool) -> None:
        """Draw each image's boxes on its thumbnail."""
        self.show_boxes = show
        self._boxes.clear()
        self._changed_all()

    def reload(self, _rows=None) -> None:
        """Forget cached rows (after undo, import or training) and repaint; thumbnails stay."""
        self._rows.clear()
        self._boxes.clear()
        self._changed_all()

    def refresh(self, image_ids: Iterable[int]) -> None:
        """Re-read some rows from the source and repaint them."""
        ids = [int(i) for i in image_ids]
        for i in ids:
            self._rows.pop(i, None)
            self._boxes.pop(i, None)
        self._repaint(ids)

    def update_labels(self, image_ids: Sequence[int], class_id: int | None, source: str = "human") -> None:
        """Mirror an edit just committed to the database without re-reading it."""
        changed = []
        for image_id in image_ids:
            row = self._rows.get(image_id)
            if row is None:
                continue  # not cached: it is read fresh when next painted
            if class_id is None and row.class_id is None and row.label_source is None:
                continue  # clearing an image that never had a label changes nothing
            self._rows[image_id] = dataclasses.replace(row, class_id=class_id, label_source=source)
            changed.append(image_id)
        self._repaint(changed)

    # ---- lookups ----------------------------------------------------------------------------------
    def ids(self) -> np.ndarray:
        """Ids shown, in display order."""
        return self._ids

    def id_at(self, row: int) -> int:
        """The image id at a grid position."""
        return int(self._ids[row])

    def row_at(self, row: int) -> ImageRow:
        """The image shown at a grid position."""
        image_id = int(self._ids[row])
        cached = self._rows.get(image_id)
        if cached is not None:
            return cached
        start = row - row % PAGE
        page = [int(i) for i in self._ids[start : start + PAGE] if int(i) not in self._rows]
        self._store(self.source.fetch(page))
        if image_id not in self._rows:  # deleted from the database meanwhile: show a placeholder
            self._rows[image_id] = ImageRow(image_id, "(removed)", "", 1, 1, None, None, None, None, None)
        return self._rows[image_id]

    def _store(self, rows: dict[int, ImageRow]) -> None:
        self._rows.update(rows)
        while len(self._rows) > self.MAX_ROWS:
            self._rows.popitem(last=False)

    def row_by_id(self, image_id: int) -> ImageRow | None:
        """An image's current row, shown or not."""
        row = self._rows.get(image_id)
        if row is None:
            self._store(self.source.fetch([image_id]))
            row = self._rows.get(image_id)
        return row

    def rows(self) -> list[ImageRow]:
        """Every row shown, in display order (reads them all: for tests and small projects)."""
        return [self.row_at(k) for k in range(len(self._ids))]

    def all_rows(self) -> list[ImageRow]:
        """Every row of the project, whatever the filter (reads them all)."""
        ids = self.source.all_ids()
        fetched = {}
        for start in range(0, len(ids), 2000):
            fetched.update(self.source.fetch(ids[start : start + 2000]))
        return [fetched[int(i)] for i in ids if int(i) in fetched]

    def position(self, image_id: int) -> int | None:
        """The grid position of an image, or None when filtered out (binary search on a sorted copy)."""
        found = self.positions([image_id])
        return int(found[0]) if len(found) else None

    def positions(self, image_ids: Sequence[int]) -> np.ndarray:
        """The grid positions of those of these images that are shown, in the order given (one vectorised
        binary search: a lasso of 10k points costs a millisecond)."""
        if self._sorted is None:
            order = np.argsort(self._ids, kind="stable")
            self._sorted = (self._ids[order], order)
        keys, order = self._sorted
        ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        if not len(keys) or not len(ids):
            return np.zeros(0, dtype=np.int64)
        k = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
        return order[k[keys[k] == ids]].astype(np.int64)

    def tile(self, position: int) -> tuple[ImageRow, object, str, list | None]:
        """What the delegate paints at a grid position, in one call: (row, pixmap or None, thumbnail state,
        boxes when shown)."""
        row = self.row_at(position)
        pixmap = self.loader.pixmap(row)
        state = "ready" if pixmap is not None else self.loader.state(row.id)
        return row, pixmap, state, self._boxes_of(position, row.id) if self.show_boxes else None

    def thumbnail_state(self, row: int) -> str:
        """'ready', 'error' or 'loading' for a grid position."""
        return self.loader.state(int(self._ids[row]))

    def class_name(self, class_id: int | None) -> str | None:
        """Name of a class id (None for no label)."""
        info = self.classes.get(class_id) if class_id is not None else None
        return info.name if info is not None else None

    def guess_name(self, class_id: int | None) -> str | None:
        """A model's guess as the grid names it: "none" for a negative class ("no instrument"), as the viewer."""
        info = self.classes.get(class_id) if class_id is not None else None
        return None if info is None else "none" if info.negative else info.name

    # ---- Qt model API -----------------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        # Called twice per row by every QListView layout: kept to one attribute read and one check.
        return 0 if parent.isValid() else self._n

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self._ids):
            return None
        row = self.row_at(index.row())
        if role == ROW_ROLE:
            return row
        if role == THUMB_ROLE:
            return self.loader.pixmap(row)
        if role == STATE_ROLE:
            return self.loader.state(row.id)
        if role == BOXES_ROLE:
            return self._boxes_of(index.row(), row.id) if self.show_boxes else None
        if role == Qt.ItemDataRole.DisplayRole:
            return Path(row.path).name
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(row)
        return None

    def _boxes_of(self, row: int, image_id: int) -> list:
        if image_id not in self._boxes:
            start = row - row % PAGE
            page = [int(i) for i in self._ids[start : start + PAGE]]
            found = self.source.boxes(page)
            if len(self._boxes) > self.MAX_ROWS:
                self._boxes.clear()
            self._boxes.update({i: found.get(i, []) for i in page})
        return self._boxes.get(image_id, [])

    def _tooltip(self, row: ImageRow) -> str:
        label = self.class_name(row.class_id) or "unlabelled"
        lines = [row.path, f"{row.width}×{row.height} px, {row.split or 'no'} split",
                 f"label: {label}" + (f" ({SOURCE_MARKS[row.label_source][0]}: {SOURCE_MARKS[row.label_source][2]})"
                                      if row.label_source in SOURCE_MARKS else
                                      f" ({row.label_source})" if row.label_source else "")]
        if row.pred_class_id is not None:
            lines.append(f"model: {self.guess_name(row.pred_class_id)} ({(row.pred_score or 0) * 100:.0f}%)")
        suspect = getattr(row, "suspect", None)
        if suspect is not None:
            lines.append(f"suspect score {suspect:.2f} (rank {row.suspect_rank})"  # type: ignore[attr-defined]
                         + (f", maybe {self.class_name(row.suggested_id)}" if row.flagged else ""))  # type: ignore
        if getattr(row, "n_boxes", 0):
            lines.append(f"{row.n_boxes} box{'es' if row.n_boxes != 1 else ''}")  # type: ignore[attr-defined]
        error = self.loader.error(row.id)
        if error:
            lines.append(f"cannot show: {error}")
        return "\n".join(lines)

    # ---- thumbnails -------------------------------------------------------------------------------
    def load_stats(self) -> dict[str, int]:
        """How many thumbnails are queued, loading, in memory and unreadable (for tests and diagnostics)."""
        return self.loader.stats()

    def shutdown(self, timeout_ms: int = 5000) -> None:
        """Drop queued loads and wait for running ones (before the app or project closes)."""
        self.loader.shutdown(timeout_ms)

    # ---- repaint ----------------------------------------------------------------------------------
    def _repaint(self, image_ids: Iterable[int]) -> None:
        rows = [k for k in (self.position(i) for i in image_ids) if k is not None]
        if rows:
            self.repaint_requested.emit(rows)

    def _changed_all(self) -> None:
        if self._n:
            self.repaint_requested.emit(None)


def row_runs(rows: Sequence[int]) -> list[tuple[int, int]]:
    """The distinct rows as (first, last) runs of consecutive rows, ascending."""
    r = np.unique(np.asarray(rows, dtype=np.int64))
    if not len(r):
        return []
    breaks = np.flatnonzero(np.diff(r) != 1)
    starts = np.r_[r[0], r[breaks + 1]]
    ends = np.r_[r[breaks], r[-1]]
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


class ThumbnailGrid(QListView):
    """The images as a scrollable grid: keys label the selection, Space accepts the model's guesses."""

    hotkey_pressed = Signal(str)  # "0".."9", "a".."z", "F1".."F12", or "clear"
    accept_requested = Signal()  # Space: take the model's guess for the selection
    current_image_changed = Signal(object)  # ImageRow or None

    def __init__(self, model: ThumbnailModel, parent=None):
        super().__init__(parent)
        self.setModel(model)
        self.setItemDelegate(ThumbnailDelegate(self))
        # List mode with wrapping lays out uniform cells arithmetically: no per-item geometry for 100k rows.
        self.setViewMode(QListView.ViewMode.ListMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)
        # The layout still walks every row (~3 µs each, with two Python rowCount calls): at 1M rows that is 3 s
        # per open or filter. In batches the first LAYOUT_BATCH rows are placed at once (the grid shows) and
        # the rest between events, so keys and scrolling never wait more than one batch.
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(LAYOUT_BATCH)
        self.setSpacing(4)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setSelectionRectVisible(True)  # rubber band from empty space
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.verticalScrollBar().setSingleStep(CELL.height() // 4)
        self.setMouseTracking(True)
        self.selectionModel().currentChanged.connect(self._on_current)
        model.modelReset.connect(self._after_reset)
        model.repaint_requested.connect(self._repaint)
        self._anchor: QPersistentModelIndex | None = None  # where a Shift range starts
        self._deferred_scrolls = 0  # scrolls waiting for the first layout batch (see scrollTo)

    def thumbnail_model(self) -> ThumbnailModel:
        """The grid's model."""
        return self.model()  # type: ignore[return-value]

    def selected_rows(self) -> np.ndarray:
        """Grid positions of the selection, ascending (from selection ranges: cheap after Ctrl+A on 100k)."""
        parts = [np.arange(r.top(), r.bottom() + 1) for r in self.selectionModel().selection()]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def selected_ids(self) -> list[int]:
        """Ids of the selected images, in grid order."""
        return self.thumbnail_model().ids()[self.selected_rows()].tolist()

    def current_row(self) -> ImageRow | None:
        """The image with keyboard focus."""
        idx = self.currentIndex()
        return self.thumbnail_model().row_at(idx.row()) if idx.isValid() else None

    def select_rows(self, rows: Sequence[int]) -> None:
        """Select these grid positions; the first becomes current."""
        sel = self.selectionModel()
        model = self.model()
        selection = QItemSelection()
        for lo, hi in row_runs(rows):  # one range per run of neighbours: a lasso of 10k points is a few hundred
            selection.select(model.index(lo, 0), model.index(hi, 0))
        flags = QItemSelectionModel.SelectionFlag
        if len(rows):
            sel.setCurrentIndex(model.index(int(rows[0]), 0), flags.NoUpdate)
        sel.select(selection, flags.ClearAndSelect)
        if len(rows):
            self._anchor = QPersistentModelIndex(model.index(int(rows[0]), 0))
            self.scrollTo(model.index(int(rows[0]), 0))

    def select_ids(self, image_ids: Sequence[int], current: int | None = None) -> int:
        """Select the shown images among these ids (current one first); returns how many were found."""
        model = self.thumbnail_model()
        rows = model.positions(image_ids)
        first = model.position(current) if current is not None else None
        if first is not None:
            rows = np.r_[first, rows[rows != first]]
        if len(rows):
            self.select_rows(rows)
        return len(rows)

    def advance(self, step: int = 1) -> None:
        """Move the focus (and selection) to the next image, for one-key-per-image labelling."""
        idx = self.currentIndex()
        if idx.isValid() and 0 <= idx.row() + step < self.model().rowCount():
            self.setCurrentIndex(self.model().index(idx.row() + step, 0))

    # Shift+click and Shift+arrows select a range in reading order, as in a file manager. (Qt's own
    # rectangle between the two items would pick a block of columns in a wrapped grid.)
    def _select_range_to(self, index: QModelIndex, add: bool) -> None:
        anchor = self._anchor if self._anchor is not None and self._anchor.isValid() else self.currentIndex()
        lo, hi = sorted((anchor.row() if anchor.isValid() else index.row(), index.row()))
        flags = QItemSelectionModel.SelectionFlag
        sel = self.selectionModel()
        sel.setCurrentIndex(index, flags.NoUpdate)
        sel.select(QItemSelection(self.model().index(lo, 0), self.model().index(hi, 0)),
                   flags.Select if add else flags.ClearAndSelect)
        self.scrollTo(index)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        index = self.indexAt(event.position().toPoint())
        mods = event.modifiers()
        if event.button() == Qt.MouseButton.LeftButton and index.isValid() and mods & Qt.KeyboardModifier.ShiftModifier:
            self._select_range_to(index, bool(mods & Qt.KeyboardModifier.ControlModifier))
            event.accept()
            return
        super().mousePressEvent(event)
        if index.isValid():
            self._anchor = QPersistentModelIndex(index)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        name = key_name(event)
        moves = {Qt.Key.Key_Left: self.CursorAction.MoveLeft, Qt.Key.Key_Right: self.CursorAction.MoveRight,
                 Qt.Key.Key_Up: self.CursorAction.MoveUp, Qt.Key.Key_Down: self.CursorAction.MoveDown,
                 Qt.Key.Key_PageUp: self.CursorAction.MovePageUp, Qt.Key.Key_PageDown: self.CursorAction.MovePageDown,
                 Qt.Key.Key_Home: self.CursorAction.MoveHome, Qt.Key.Key_End: self.CursorAction.MoveEnd}
        if event.modifiers() == Qt.KeyboardModifier.ShiftModifier and event.key() in moves:
            if self._anchor is None or not self._anchor.isValid():
                self._anchor = QPersistentModelIndex(self.currentIndex())
            target = self.moveCursor(moves[event.key()], event.modifiers())
            if target.isValid():
                self._select_range_to(target, False)
            return
        if name is not None:
            self.hotkey_pressed.emit(name)
        elif not event.modifiers() and event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.hotkey_pressed.emit("clear")
        elif not event.modifiers() and event.key() == Qt.Key.Key_Space:
            self.accept_requested.emit()
        else:
            super().keyPressEvent(event)
            if not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
                self._anchor = QPersistentModelIndex(self.currentIndex())

    def keyboardSearch(self, search: str) -> None:
        """Typing labels images; it must not jump to a file name instead."""

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        model = self.thumbnail_model()
        self.current_image_changed.emit(model.row_at(current.row()) if current.isValid() else None)

    def _repaint(self, rows: list[int] | None) -> None:
        if rows is None or len(rows) > 64:
            self.viewport().update()
            return
        model = self.model()
        for r in rows:
            self.update(model.index(r, 0))

    def scrollTo(self, index: QModelIndex | QPersistentModelIndex,
                 hint: QAbstractItemView.ScrollHint = QAbstractItemView.ScrollHint.EnsureVisible) -> None:
        if index.isValid() and not self.visualRect(index).isValid():  # past the rows laid out so far
            if index.row() < LAYOUT_BATCH and self._deferred_scrolls < 10:
                # A new set shown while the previous one was still being laid out gets its first batch on the
                # next turn (QListView's batch timer is already running): scroll then, not after laying out all.
                self._deferred_scrolls += 1
                target = QPersistentModelIndex(index)
                QTimer.singleShot(1, self, lambda: target.isValid() and self.scrollTo(  # a timer: after the batch
                    self.model().index(target.row(), 0), hint))
                return
            self.finish_layout()
        self._deferred_scrolls = 0
        super().scrollTo(index, hint)

    def scrollToBottom(self) -> None:
        self.finish_layout()
        super().scrollToBottom()

    def moveCursor(self, action: QAbstractItemView.CursorAction, modifiers: Qt.KeyboardModifier) -> QModelIndex:
        if action == QAbstractItemView.CursorAction.MoveEnd:  # QListView's End is the last row placed so far
            self.finish_layout()
        index = super().moveCursor(action, modifiers)
        if index == self.currentIndex() and not self.laid_out():  # stuck at the edge of the rows placed
            self.finish_layout()
            index = super().moveCursor(action, modifiers)
        return index

    def laid_out(self) -> bool:
        """Whether every row has its place (a batched layout places them between events)."""
        n = self.model().rowCount()
        return n == 0 or self.visualRect(self.model().index(n - 1, 0)).isValid()

    def finish_layout(self) -> None:
        """Lay out the rows a batched layout has not reached yet, now: End, or a selection far down, right
        after a million rows were shown costs the rest of the layout once instead of stopping short."""
        if not self.laid_out():
            self.setLayoutMode(QListView.LayoutMode.SinglePass)
            try:
                self.doItemsLayout()
            finally:
                self.setLayoutMode(QListView.LayoutMode.Batched)

    def _after_reset(self) -> None:
        self.current_image_changed.emit(None)
