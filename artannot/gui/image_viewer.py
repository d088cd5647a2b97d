"""The selected image at a readable size with its boxes, its label, and what the model thinks it is.

`ImageCache` decodes images off the GUI thread and keeps the last few, so the viewer and the review
queue show the next image at once: they ask for it (and the ones after it) before the curator gets there.
Each is decoded at most MAX_VIEW_PX on its longer side (a huge scan shrinks on load, never decoded whole);
zoomed in past that, the viewer asks the cache for the visible region at the resolution needed (tiled
zoom: `ImageCache.request_region`, a few regions kept), so a gigapixel scan is seen at full resolution.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QObject, QRect, QRectF, QRunnable, Qt, QThreadPool, Signal
from PySide6.QtGui import QColor, QFontMetrics, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QFrame, QLabel, QSizePolicy, QVBoxLayout, QWidget

from artannot.errors import ArtAnnotError
from artannot.gui.box_editor import BoxEditor, BoxView
from artannot.store import boxes as box_store
from artannot.store import queries
from artannot.store.repo import ClassInfo, ImageRow

MAX_VIEW_PX = 1600  # decoded images are shrunk to this on the worker; the view never needs more
SOURCE_WORDS = {"human": "set by you", "folder": "from the folder name", "rule": "from a file-name rule",
                "import": "imported",
                "model": "model guess"}
RIGHT = Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight


def pil_to_qimage(image) -> QImage:
    """A PIL RGB image as a QImage that owns its pixels (safe to hand across threads)."""
    image = image.convert("RGB")
    data = image.tobytes("raw", "RGB")
    return QImage(data, image.width, image.height, 3 * image.width, QImage.Format.Format_RGB888).copy()


class _CacheSignals(QObject):
    loaded = Signal(int, str, object, str)  # generation, path, QImage or None, error
    region = Signal(int, object, object, bool)  # generation, (path, box, size), QImage or None, skipped


class _DecodeTask(QRunnable):
    """Decodes one image off the GUI thread."""

    def __init__(self, generation: int, path: str, signals: _CacheSignals):
        super().__init__()
        self.generation, self.path, self.signals = generation, path, signals

    def run(self) -> None:
        from artannot.data.images import load_image

        try:
            image = load_image(self.path, max_side=MAX_VIEW_PX)  # a huge scan: shrunk on load
            if max(image.size) > MAX_VIEW_PX:
                image.thumbnail((MAX_VIEW_PX, MAX_VIEW_PX))
            qimage = pil_to_qimage(image)
        except Exception as exc:  # shown in the viewer, never a dead worker
            self.signals.loaded.emit(self.generation, self.path, None, str(exc) or type(exc).__name__)
        else:
            self.signals.loaded.emit(self.generation, self.path, qimage, "")


RegionKey = tuple[str, tuple[int, int, int, int], tuple[int, int]]  # path, box (x0, y0, x1, y1), output size


class _RegionTask(QRunnable):
    """Decodes one region of an image at one resolution off the GUI thread."""

    def __init__(self, generation: int, key: RegionKey, signals: _CacheSignals,
                 still_wanted: Callable[[RegionKey], bool]):
        super().__init__()
        self.generation, self.key, self.signals, self.still_wanted = generation, key, signals, still_wanted

    def run(self) -> None:
        from artannot.data.images import load_region

        if not self.still_wanted(self.key):  # another region was asked for since: the view has moved on
            self.signals.region.emit(self.generation, self.key, None, True)
            return
        path, box, size = self.key
        try:
            qimage = pil_to_qimage(load_region(path, box, size))
        except Exception:  # the smaller decode stays on screen
            qimage = None
        self.signals.region.emit(self.generation, self.key, qimage, False)


class ImageCache(QObject):
    """The last few decoded images by path; asks the pool for the one needed now before any prefetch."""

    ready = Signal(str)  # a path finished decoding (or failed)
    region_ready = Signal(object)  # a region finished decoding: its (path, box, size) key

    MAX_IMAGES = 10  # up to 1600 px each: ~75 MB at worst
    MAX_REGIONS = 4  # zoomed-in regions, a few screens each

    def __init__(self, parent: QObject | None = None, threads: int = 2):
        super().__init__(parent)
        self._images: OrderedDict[str, QImage] = OrderedDict()
        self._errors: dict[str, str] = {}
        self._pending: set[str] = set()
        self._regions: OrderedDict[RegionKey, QImage | None] = OrderedDict()
        self._pending_regions: set[tuple[int, RegionKey]] = set()  # (generation, key) queued or running
        self._latest_region: RegionKey | None = None  # the last region asked for; a queued older one is skipped
        self._generation = 0
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(threads)
        self._signals = _CacheSignals(self)
        self._signals.loaded.connect(self._on_loaded)
        self._signals.region.connect(self._on_region)

    def get(self, path: str) -> QImage | None:
        """The decoded image if it is ready."""
        image = self._images.get(path)
        if image is not None:
            self._images.move_to_end(path)
        return image

    def error(self, path: str) -> str | None:
        """Why an image could not be decoded, if it could not."""
        return self._errors.get(path)

    def request(self, path: str, *, urgent: bool = True) -> None:
        """Decode this image unless it is ready or on its way; urgent ones jump the queue."""
        if path in self._images or path in self._errors or path in self._pending:
            return
        self._pending.add(path)
        self._pool.start(_DecodeTask(self._generation, path, self._signals), 1 if urgent else 0)

    def prefetch(self, paths: Sequence[str]) -> None:
        """Decode these next (the images the curator will probably look at next)."""
        for path in paths:
            self.request(path, urgent=False)

    def region(self, key: RegionKey) -> QImage | None:
        """A decoded region if it is ready (None also when it could not be decoded)."""
        image = self._regions.get(key)
        if image is not None:
            self._regions.move_to_end(key)
        return image

    def request_region(self, key: RegionKey) -> None:
        """Decode this region of an image at this output size, ahead of any whole image waiting; regions asked
        for before it and not started yet are skipped (the view has moved on)."""
        self._latest_region = key
        if key in self._regions or (self._generation, key) in self._pending_regions:
            return
        self._pending_regions.add((self._generation, key))
        self._pool.start(_RegionTask(self._generation, key, self._signals, self._still_wanted), 2)

    def _still_wanted(self, key: RegionKey) -> bool:
        """Whether a region is still the last one asked for (called on the pool's threads)."""
        return key == self._latest_region

    def _on_region(self, generation: int, key: RegionKey, image: QImage | None, skipped: bool) -> None:
        self._pending_regions.discard((generation, key))
        if generation != self._generation or skipped:
            return
        self._regions[key] = image
        while len(self._regions) > self.MAX_REGIONS:
            self._regions.popitem(last=False)
        self.region_ready.emit(key)

    def stats(self) -> dict[str, int]:
        """Decoded, failed and pending counts (tests, diagnostics)."""
        return {"ready": len(self._images), "error": len(self._errors), "pending": len(self._pending)}

    def clear(self) -> None:
        """Forget everything (another project)."""
        self._generation += 1
        self._pool.clear()
        self._images.clear()
        self._errors.clear()
        self._pending.clear()
        self._regions.clear()
        self._pending_regions.clear()

    def _on_loaded(self, generation: int, path: str, image: QImage | None, error: str) -> None:
        if generation != self._generation:
            return
        self._pending.discard(path)
        if image is None:
            self._errors[path] = error
        else:
            self._images[path] = image
            while len(self._images) > self.MAX_IMAGES:
                self._images.popitem(last=False)
        self.ready.emit(path)

    def shutdown(self, timeout_ms: int = 5000) -> None:
        """Wait for running decodes before the window goes away."""
        self._pool.clear()
        self._pool.waitForDone(timeout_ms)


class ZoomDetail(QObject):
    """Tiled zoom for one editor: when it is zoomed in past the decode it shows, the visible region of the
    image it shows (current_path) is decoded on the cache's pool at the resolution needed and laid over it."""

    def __init__(self, editor: BoxEditor, cache: ImageCache, current_path: Callable[[], str | None]):
        super().__init__(editor)
        self.editor, self.cache, self.current_path = editor, cache, current_path
        self._wanted: RegionKey | None = None
        editor.detail_wanted.connect(self._want)
        cache.region_ready.connect(self._on_region)

    def _want(self, rect: QRectF, scale: float) -> None:
        path = self.current_path()
        if path is None or not self.editor.has_image():
            return
        box = (int(rect.left()), int(rect.top()), int(rect.right()), int(rect.bottom()))
        size = (max(1, round((box[2] - box[0]) * scale)), max(1, round((box[3] - box[1]) * scale)))
        self._wanted = (path, box, size)
        if self.cache.region(self._wanted) is not None:
            self._on_region(self._wanted)
        else:
            self.cache.request_region(self._wanted)

    def _on_region(self, key: RegionKey) -> None:
        image = self.cache.region(key)
        if key != self._wanted or image is None or key[0] != self.current_path():
            return
        x0, y0, x1, y1 = key[1]
        self.editor.set_detail(QPixmap.fromImage(image), QRectF(x0, y0, x1 - x0, y1 - y0))


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
    """The current image and its boxes, its file name, label and the latest model's top-5 guesses."""

    def __init__(self, cache: ImageCache | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.cache = cache or ImageCache(self)
        self.cache.ready.connect(self._on_ready)
        self._predictions: list[tuple[str, float]] = []
        self._boxes: list[BoxView] = []
        self._select_box: int | None = None
        self._shown_path: str | None = None
        self.row: ImageRow | None = None

        self.title = QLabel("No image selected")
        self.title.setWordWrap(True)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.title.setStyleSheet("font-weight: bold; font-size: 11pt;")
        self.editor = BoxEditor()
        self.zoom_detail = ZoomDetail(self.editor, self.cache, lambda: self._shown_path)
        self.details = QLabel("")
        self.details.setStyleSheet("color: #546e7a;")
        self.label = QLabel("")
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.label.setWordWrap(True)
        self.pred_title = QLabel("Model")
        self.pred_title.setStyleSheet("font-weight: bold; margin-top: 6px;")
        self.bars = PredictionBars()
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setStyleSheet("color: #cfd8dc;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(self.title)
        layout.addWidget(self.editor, 1)
        layout.addWidget(self.details)
        layout.addWidget(self.label)
        layout.addWidget(line)
        layout.addWidget(self.pred_title)
        layout.addWidget(self.bars)
        self.show_image(None)

    def show_image(self, row: ImageRow | None, label: ClassInfo | None = None,
                   predictions: Sequence[tuple[str, float]] = (), colors: dict[str, str] | None = None,
                   model_id: int | None = None, suggested: str | None = None) -> None:
        """Show an image row, its label class and the model's ranked (class name, score) guesses.

        suggested: for a suspect, the class the model picked when it was trained without this image."""
        self.row = row
        self._predictions = list(predictions)[:5]
        if row is None:
            self._shown_path = None
            self.title.setText("No image selected")
            self.editor.set_image(None, message="Select an image in the grid")
            self.details.setText("")
            self.label.setText("")
        else:
            self.title.setText(Path(row.path).name)
            self.title.setToolTip(row.path)
            self.details.setText(f"{row.width} × {row.height} px · {row.split or 'no'} split")
            self.label.setText(label_html(row, label, suggested))
            if row.path != self._shown_path:
                self._boxes, self._select_box = [], None
                self._show_decoded(row)
        colors = colors or {}
        self.bars.set_predictions([(n, s, colors.get(n, "#90a4ae")) for n, s in self._predictions])
        self.pred_title.setText(prediction_title(row, model_id, len(self._predictions)))

    def _show_decoded(self, row: ImageRow) -> None:
        image = self.cache.get(row.path)
        error = self.cache.error(row.path)
        if image is not None:
            self._shown_path = row.path
            self.editor.set_image(QPixmap.fromImage(image), row.width, row.height)
            self.editor.set_boxes(self._boxes, self._select_box)
        elif error is not None:
            self._shown_path = row.path
            self.editor.set_image(None, message=f"Cannot show this image:\n{error}")
        else:
            self._shown_path = None
            self.editor.set_image(None, message="loading…")
            self.cache.request(row.path)

    def _on_ready(self, path: str) -> None:
        if self.row is not None and self.row.path == path and self._shown_path != path:
            self._show_decoded(self.row)

    def detail_shown(self) -> tuple[QRectF, float] | None:
        """The region shown at a higher resolution than the whole image's decode (tests, diagnostics)."""
        return self.editor.detail()

    def set_boxes(self, boxes: Sequence[BoxView], select: int | None = None) -> None:
        """The current image's boxes (kept until the image itself arrives, if it is still decoding)."""
        self._boxes, self._select_box = list(boxes), select
        if self.editor.has_image():
            self.editor.set_boxes(self._boxes, select)

    def image_ready(self) -> bool:
        """Whether the current image is decoded and shown."""
        return self.row is not None and self._shown_path == self.row.path and self.editor.has_image()

    def predictions(self) -> list[tuple[str, float]]:
        """The ranked guesses shown, for tests and tooltips."""
        return list(self._predictions)

    def shutdown(self, timeout_ms: int = 5000) -> None:
        """Wait for a pending decode before the window goes away."""
        self.cache.shutdown(timeout_ms)


def label_html(row: ImageRow, label: ClassInfo | None, suggested: str | None = None) -> str:
    """'Label: ■ fish (set by you)', with a warning line when the model disagrees or flags it."""
    if label is None:
        text = "Label: <i style='color:#78909c'>unlabelled</i>"
    else:
        how = SOURCE_WORDS.get(row.label_source or "", row.label_source or "")
        text = (f"Label: <span style='color:{label.color}'>■</span> <b>{label.name}</b>"
                f" <span style='color:#78909c'>({how})</span>")
    if getattr(row, "flagged", False) and label is not None:
        maybe = f"; more likely <b>{suggested}</b>" if suggested else ""
        text += (f"<br><span style='color:#ef6c00'><b>Suspect</b>, rank {row.suspect_rank}"  # type: ignore
                 f" (suspect score {row.suspect:.2f}): models that never saw this image found this label"  # type: ignore
                 f" probably wrong{maybe}. <span style='color:#78909c'>Out-of-fold scores; the bars below are"
                 " the final model's, trained on this image too.</span></span>")
    elif row.disagrees:
        text += "<br><span style='color:#d32f2f'><b>The model disagrees</b> — check this label</span>"
    return text


def prediction_title(row: ImageRow | None, model_id: int | None, n: int) -> str:
    """The heading above the model's guesses."""
    if row is None:
        return "Model"
    if model_id is None:
        return "Class model: none trained yet (Model ▸ Train)"
    return (f"Model {model_id} (final model): top {n}" if n
            else f"Model {model_id}: no prediction for this image")


class BoxEdits(QObject):
    """Box editing in both editors (the image dock's and review mode's), the whole of it: a box drawn, moved,
    resized, deleted or given a class is committed at once (store/boxes.py, one undoable event each), then
    the image's boxes and open proposals are shown again with the edited box selected. A class key in the
    image dock goes to the selected proposal or box if there is one, else it labels the image."""

    def __init__(self, window):
        super().__init__(window)
        self.w = window
        window.viewer.editor.hotkey_pressed.connect(self.on_viewer_key)
        for editor in (window.viewer.editor, window.review.editor):
            editor.box_drawn.connect(lambda rect, e=editor: self.drawn(e, rect))
            editor.box_changed.connect(lambda box_id, rect, e=editor: self.changed(e, box_id, rect))
            editor.boxes_deleted.connect(lambda ids, e=editor: self.commit(e, box_store.delete_boxes, ids))

    def image_of(self, editor: BoxEditor) -> int | None:
        """The image an editor shows."""
        w = self.w
        if editor is w.review.editor:
            return w.review.current_id()
        row = w.viewer.row
        return row.id if row is not None else None

    def show(self, editor: BoxEditor, image_id: int | None, select: int | None = None) -> None:
        """An image's boxes and its open proposals (at or above the threshold) in an editor."""
        w = self.w
        if w.project is None or image_id is None:
            return
        info = {c.id: c for c in w.classes()}
        views = [BoxView(b.id, QRectF(b.x, b.y, b.w, b.h), info[b.class_id].name if b.class_id in info else None,
                         info[b.class_id].color if b.class_id in info else "#546e7a")
                 for b in box_store.boxes_for(w.project.conn, image_id)]
        views += w.proposal_review.views(image_id, info, editor)
        (w.review if editor is w.review.editor else w.viewer).set_boxes(views, select)

    def refresh(self, editor: BoxEditor, select: int | None = None) -> None:
        """Show an editor's image's boxes again (after an edit elsewhere), then its grid thumbnail and counts."""
        image_id = self.image_of(editor)
        self.show(editor, image_id, select)
        if image_id is not None:
            self.w.thumbnails.refresh([image_id])
        self.w.update_actions()

    def commit(self, editor: BoxEditor, fn, *args, **kwargs) -> None:
        """Commit a box edit, then show the image's boxes again with the edited box selected."""
        w = self.w
        image_id = self.image_of(editor)
        if w.project is None or image_id is None:
            return
        try:
            event_id = fn(w.project.conn, *args, **kwargs)
        except ArtAnnotError as exc:
            w.show_error(str(exc))
            event_id = None
        new = queries.box_ids_of_event(w.project.conn, event_id) if event_id else []
        self.show(editor, image_id, new[-1] if new else None)
        w.thumbnails.refresh([image_id])
        w.update_actions()

    def drawn(self, editor: BoxEditor, rect: QRectF) -> None:
        """A new box takes the class chosen in the class list, else the image's label."""
        w = self.w
        image_id = self.image_of(editor)
        row = w.thumbnails.row_by_id(image_id) if image_id is not None else None
        class_id = w.class_list.current_class() or (row.class_id if row else None)
        self.commit(editor, box_store.add_boxes, [(image_id, class_id, rect.x(), rect.y(), rect.width(),
                                                   rect.height())])

    def changed(self, editor: BoxEditor, box_id: int, rect: QRectF) -> None:
        self.commit(editor, box_store.update_box, box_id, x=rect.x(), y=rect.y(), w=rect.width(), h=rect.height())

    def set_class(self, editor: BoxEditor, box_id: int, class_id: int | None) -> None:
        self.commit(editor, box_store.update_box, box_id, class_id=class_id)

    def key_for_selection(self, editor: BoxEditor, key: str, *, clear_box: bool = True) -> bool:
        """A class key, 0 or 'clear' goes to the editor's selected proposal (accept as that class; 0 or clear
        rejects) or selected box (its class; 0, and 'clear' where clear_box, unclass it). False when nothing
        is selected there (or 'clear' with a box and not clear_box): the key is the image's."""
        w = self.w
        clear = key in ("0", "clear")
        if editor.selected_proposal() is not None:
            if clear or (info := w._class_for_key(key)) is not None:
                w.proposal_review.key(editor, None if clear else info.id)
            return True
        if editor.selected_box() is None or (key == "clear" and not clear_box):
            return False
        if clear or (info := w._class_for_key(key)) is not None:
            self.set_class(editor, editor.selected_box(), None if clear else info.id)
        return True

    def on_viewer_key(self, key: str) -> None:
        """A class key, 0 or 'clear' typed in the image dock's editor: its selected box or proposal, else the
        selected images."""
        if not self.key_for_selection(self.w.viewer.editor, key):
            self.w._on_hotkey(key)
