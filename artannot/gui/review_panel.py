"""Review mode: one image at a time over the current filter, decided with one key, the next one already decoded.

The panel owns the queue (the grid's ids when review started) and the position in it, and reports keys by
signal; ReviewController (below) decides what each does, commits it and calls `advance()`. Skips are
remembered for the session so they can be revisited.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QKeyEvent, QPixmap
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from artannot.gui.actions import SKIP_KEY, key_name
from artannot.gui.box_editor import BoxEditor, BoxView
from artannot.gui.image_viewer import ImageCache, PredictionBars, ZoomDetail, label_html, prediction_title
from artannot.store import queries
from artannot.store.repo import ClassInfo, ImageRow

PREFETCH = 4  # images decoded ahead of the one on screen


class ReviewPanel(QWidget):
    """The review queue: big image with boxes, its label, the model's top 5, and the keys to decide."""

    hotkey_pressed = Signal(str)  # a class key (or "clear") for the image on screen
    accept_requested = Signal()  # Space: take the model's guess
    current_changed = Signal(object)  # image id on screen, or None at the end of the queue
    exit_requested = Signal()

    def __init__(self, cache: ImageCache, rows: Callable[[int], ImageRow | None], parent: QWidget | None = None):
        super().__init__(parent)
        self.cache = cache
        self.cache.ready.connect(self._on_ready)
        self._rows = rows
        self._ids = np.zeros(0, dtype=np.int64)
        self._index = 0
        self._row: ImageRow | None = None
        self._boxes: list[BoxView] = []
        self._select_box: int | None = None
        self.skipped: list[int] = []
        self.decided = 0
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

        self.editor = BoxEditor()
        self.editor.pass_navigation = True
        self.editor.hotkey_pressed.connect(self._on_editor_key)
        self.editor.accept_requested.connect(self.accept_requested)
        # tiled zoom as in the viewer: a huge scan is seen at full resolution when zoomed in
        self.zoom_detail = ZoomDetail(self.editor, cache, lambda: self._row.path if self._row is not None else None)
        self.header = QLabel("")
        self.header.setStyleSheet("font-size: 12pt; font-weight: bold;")
        self.header.setWordWrap(True)
        self.position = QLabel("")
        self.position.setStyleSheet("color: #546e7a;")
        self.name = QLabel("")
        self.name.setWordWrap(True)
        self.name.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.label = QLabel("")
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.label.setWordWrap(True)
        self.label.setStyleSheet("font-size: 11pt;")
        self.pred_title = QLabel("Model")
        self.pred_title.setStyleSheet("font-weight: bold; margin-top: 8px;")
        self.bars = PredictionBars()
        self.keys = QLabel(
            "<b>Space</b> accept the model's guess<br><b>class key</b> set that class<br>"
            f"<b>{SKIP_KEY.upper()}</b> skip for now<br><b>← →</b> previous / next<br>"
            "<b>0</b> clear the label<br><b>drag</b> on the image: draw a box<br><b>Esc</b> back to the grid")
        self.keys.setTextFormat(Qt.TextFormat.RichText)
        self.keys.setStyleSheet("color: #37474f; background: #f5f7f8; border: 1px solid #e0e6e8;"
                                " border-radius: 6px; padding: 8px;")
        self.skipped_button = QPushButton("Review the skipped images")
        self.skipped_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.skipped_button.clicked.connect(self.review_skipped)
        self.exit_button = QPushButton("Back to the grid (Esc)")
        self.exit_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.exit_button.clicked.connect(self.exit_requested)
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setStyleSheet("color: #cfd8dc;")
        side = QVBoxLayout()
        side.setContentsMargins(10, 4, 4, 4)
        for w in (self.header, self.position, line, self.name, self.label, self.pred_title, self.bars):
            side.addWidget(w)
        side.addStretch(1)
        side.addWidget(self.keys)
        side.addWidget(self.skipped_button)
        side.addWidget(self.exit_button)
        panel = QWidget()
        panel.setLayout(side)
        panel.setFixedWidth(330)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.editor, 1)
        layout.addWidget(panel)

    # ---- queue --------------------------------------------------------------------------------------
    def start(self, ids: np.ndarray, index: int = 0, description: str = "") -> None:
        """Review these images in order, starting at a position."""
        self._ids = np.asarray(ids, dtype=np.int64)
        self.skipped, self.decided = [], 0
        self.header.setText(f"Review: {description}" if description else "Review")
        self.go(min(max(index, 0), len(self._ids)))

    def queue(self) -> np.ndarray:
        """The ids under review, in order."""
        return self._ids

    def index(self) -> int:
        """Position in the queue (len(queue) at the end)."""
        return self._index

    def current_id(self) -> int | None:
        """The image on screen."""
        return int(self._ids[self._index]) if self._index < len(self._ids) else None

    def go(self, index: int) -> None:
        """Show the image at a queue position (the end shows a summary) and decode the next ones."""
        self._index = min(max(index, 0), len(self._ids))
        self._update_position()
        image_id = self.current_id()
        if image_id is None:
            self._row = None
            self.editor.set_image(None, message=self._summary())
            self.name.setText("")
            self.label.setText("")
            self.bars.set_predictions([])
            self.pred_title.setText("")
        nxt = [self._rows(int(i)) for i in self._ids[self._index + 1 : self._index + 1 + PREFETCH]]
        self.cache.prefetch([r.path for r in nxt if r is not None])
        self.current_changed.emit(image_id)

    def advance(self) -> None:
        """The decision is committed: on to the next image."""
        self.decided += 1
        self.go(self._index + 1)

    def skip(self) -> None:
        """Leave this image as it is, remember it, and move on."""
        image_id = self.current_id()
        if image_id is not None:
            if image_id not in self.skipped:
                self.skipped.append(image_id)
            self.go(self._index + 1)

    def review_skipped(self) -> None:
        """Start again over the images skipped so far."""
        if self.skipped:
            self.start(np.array(self.skipped), 0, "skipped images")

    def _update_position(self) -> None:
        n = len(self._ids)
        where = f"{min(self._index + 1, n):,} of {n:,}" if self._index < n else f"end of {n:,}"
        self.position.setText(f"{where} · {self.decided:,} decided · {len(self.skipped):,} skipped")
        self.skipped_button.setEnabled(bool(self.skipped))

    def _summary(self) -> str:
        return (f"End of the queue: {self.decided:,} decided, {len(self.skipped):,} skipped.\n"
                + ("Press R to review the skipped ones, Esc to go back to the grid." if self.skipped
                   else "Esc goes back to the grid."))

    # ---- content ------------------------------------------------------------------------------------
    def show_row(self, row: ImageRow, label: ClassInfo | None, predictions: Sequence[tuple[str, float]],
                 colors: dict[str, str], model_id: int | None, suggested: str | None = None) -> None:
        """What the window knows about the image on screen."""
        new = self._row is None or self._row.id != row.id
        self._row = row
        self.name.setText(f"<b>{row.path.rsplit('/', 1)[-1]}</b><br><span style='color:#78909c'>{row.width} ×"
                          f" {row.height} px · {row.split or 'no'} split</span>")
        self.label.setText(label_html(row, label, suggested))
        preds = list(predictions)[:5]
        self.bars.set_predictions([(n, s, colors.get(n, "#90a4ae")) for n, s in preds])
        self.pred_title.setText(prediction_title(row, model_id, len(preds)))
        if new:
            self._boxes, self._select_box = [], None
            self._show_decoded()

    def set_boxes(self, boxes: Sequence[BoxView], select: int | None = None) -> None:
        """The boxes of the image on screen."""
        self._boxes, self._select_box = list(boxes), select
        if self.editor.has_image():
            self.editor.set_boxes(self._boxes, select)

    def image_ready(self) -> bool:
        """Whether the image on screen is decoded (it appears at once when it was prefetched)."""
        return self._row is not None and self.editor.has_image()

    def _show_decoded(self) -> None:
        row = self._row
        if row is None:
            return
        image = self.cache.get(row.path)
        if image is not None:
            self.editor.set_image(QPixmap.fromImage(image), row.width, row.height)
            self.editor.set_boxes(self._boxes, self._select_box)
        elif self.cache.error(row.path):
            self.editor.set_image(None, message=f"Cannot show this image:\n{self.cache.error(row.path)}")
        else:
            self.editor.set_image(None, message="loading…")
            self.cache.request(row.path)

    def _on_ready(self, path: str) -> None:
        if self._row is not None and self._row.path == path and not self.editor.has_image():
            self._show_decoded()

    # ---- keys ---------------------------------------------------------------------------------------
    def _on_editor_key(self, name: str) -> None:
        if name == SKIP_KEY:
            self.skip()
        elif name == "r" and self.current_id() is None:
            self.review_skipped()
        else:
            self.hotkey_pressed.emit(name)

    def focusNextPrevChild(self, forward: bool) -> bool:
        return False if self.editor.boxes() else super().focusNextPrevChild(forward)  # Tab cycles the boxes

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key, mods = event.key(), event.modifiers()
        name = key_name(event)
        if name is not None:
            self._on_editor_key(name)
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Tab) or (
                key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and self.editor.selected_proposal() is not None):
            self.editor.keyPressEvent(event)  # proposals: Tab selects, Enter accepts, Delete rejects
        elif mods:
            super().keyPressEvent(event)
        elif key == Qt.Key.Key_Space:
            self.accept_requested.emit()
        elif key in (Qt.Key.Key_Right, Qt.Key.Key_Down, Qt.Key.Key_PageDown):
            self.go(self._index + 1)
        elif key in (Qt.Key.Key_Left, Qt.Key.Key_Up, Qt.Key.Key_PageUp):
            self.go(self._index - 1)
        elif key == Qt.Key.Key_Home:
            self.go(0)
        elif key == Qt.Key.Key_End:
            self.go(len(self._ids) - 1)
        elif key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.hotkey_pressed.emit("clear")
        elif key == Qt.Key.Key_Escape:
            self.exit_requested.emit()
        else:
            super().keyPressEvent(event)


class ReviewController(QObject):
    """Review mode, the whole of it: switching to it (Ctrl+R) and back (Esc), showing each image, and what every
    key does there — Space takes the model's guess, a class key sets that class (0 or Delete clears), S skips,
    and with a box or a proposed box selected the key goes to that box instead (proposals: Enter accepts,
    Delete rejects). Each decision is committed at once through the window (one undoable edit), then the next
    image follows.

    It gets the window and its ReviewPanel; the panel reports keys by signal, the controller decides."""

    def __init__(self, window, panel: ReviewPanel):
        super().__init__(window)
        self.w, self.panel = window, panel
        panel.hotkey_pressed.connect(self.on_key)
        panel.accept_requested.connect(self.accept)
        panel.current_changed.connect(self.show)
        panel.exit_requested.connect(lambda: self.set_active(False))

    def active(self) -> bool:
        """Whether the review queue replaces the grid."""
        return self.w.stack.currentWidget() is self.panel

    def set_active(self, on: bool) -> None:
        """Review the current filter one image at a time, from the focused image."""
        w = self.w
        on = bool(on) and w.project is not None and w.thumbnails.rowCount() > 0
        if on == self.active():
            w.review_action.setChecked(on)
            return
        if on:
            current = w.grid.currentIndex()
            w.stack.setCurrentWidget(self.panel)
            w.image_dock.hide()
            self.panel.start(w.thumbnails.ids(), current.row() if current.isValid() else 0, w.filter_bar.describe())
            self.panel.setFocus()
        else:
            image_id = self.panel.current_id()
            w.stack.setCurrentIndex(0)
            w.image_dock.show()
            if image_id is not None:
                w.grid.select_ids([image_id], image_id)
            w.grid.setFocus()
        w.review_action.setChecked(on)

    def current_row(self) -> ImageRow | None:
        """The image review mode shows (None outside it)."""
        image_id = self.panel.current_id() if self.active() else None
        return self.w.thumbnails.row_by_id(image_id) if image_id is not None else None

    def show(self, image_id: int | None) -> None:
        """Show an image of the queue with its label, guesses, boxes and proposals (the best one selected)."""
        w = self.w
        if image_id is None or w.project is None:
            return
        w.thumbnails.refresh([image_id])
        row = w.thumbnails.row_by_id(image_id)
        if row is not None:
            self.panel.show_row(row, *w._describe(row))
            w.box_edits.show(self.panel.editor, image_id)
            first = self.panel.editor.proposals() or [p.id for p in w.proposal_review.shown(image_id)]
            if first:  # reviewing proposals: the best one is selected, Enter accepts it
                w.box_edits.show(self.panel.editor, image_id, -first[0])

    def label(self, class_id: int | None) -> None:
        """Give the image on screen this class (None clears), then the next image."""
        image_id = self.panel.current_id()
        if self.w.project is None or image_id is None:
            return
        self.w._label([image_id], class_id)
        self.panel.advance()

    def on_key(self, key: str) -> None:
        """A class key, 0 or 'clear' (Delete): for the selected proposal or box if any, else the image."""
        w = self.w
        if w.box_edits.key_for_selection(self.panel.editor, key, clear_box=False):
            return
        if key in ("0", "clear"):
            self.label(None)
        elif (info := w._class_for_key(key)) is not None:
            self.label(info.id)

    def accept(self) -> None:
        """Space: the model's top guess for the image on screen."""
        w = self.w
        image_id = self.panel.current_id()
        if w.project is None or image_id is None:
            return
        guess = queries.top_classes(w.project.conn, w._model_id, [image_id]) if w._model_id else {}
        if image_id not in guess:
            w.statusBar().showMessage("The model has no guess for this image: press a class key", 4000)
            return
        self.label(guess[image_id])
