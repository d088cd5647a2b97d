"""The collection map: a t-SNE scatter of the images, linked to the grid (hover, click, lasso, relabel).

Points are drawn as one pyqtgraph scatter per colour (a class, or a band of suspect scores), so 50k points
render with a handful of brushes; hover and click find the nearest point with a k-d tree, and rectangle or
lasso selection tests the points inside the shape's bounding box only. A selection becomes the grid's
selection, so a class key relabels it at once (keys pressed on the map go to the grid).
"""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QPointF, Qt, Signal
from PySide6.QtGui import QColor, QKeyEvent, QPainterPath
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from scipy.spatial import cKDTree

from artannot.gui.insights import (
    UNLABELLED,
    Insights,
    ModelCombo,
    ThumbnailLoader,
    ask_png_path,
    save_widget_png,
)
from artannot.ml.embedding import Embedding

COLOUR_BY = (("Label", "label"), ("Prediction", "prediction"), ("Suspect score", "suspect"))
SUSPECT_BANDS = 8
HOVER_PX = 10  # a point this close to the pointer counts as hovered / clicked


def _embed_job(path: Path, model_id: int | None, progress, cancel: threading.Event) -> Embedding:
    """Worker: the project's (cached) t-SNE map for a model, or for the ImageNet backbone."""
    from artannot.project import Project

    with Project(path) as p:
        if model_id is None:
            return p.embedding(backbone="efficientnet_lite0", progress=progress, cancel=cancel)
        return p.embedding(model_id=model_id, progress=progress, cancel=cancel)


def _crossings(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd ray casting of points against a closed polygon, one vectorised pass per edge."""
    hit = np.zeros(len(x), dtype=bool)
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for a, b, c, d in zip(x0, y0, x1, y1, strict=True):
        crosses = (b > y) != (d > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = a + (y - b) * (c - a) / (d - b)
        hit ^= crosses & (x < xint)
    return hit


RASTER_PX = 512  # the lasso's grid: points in cells no edge crosses are decided by a lookup
EXACT_BELOW = 4000  # fewer candidate points than this: every one by ray casting


def _cell_parity(poly_u: np.ndarray, n: int) -> np.ndarray:
    """Even-odd state at the centre of each cell of an n×n grid (polygon in cell units), by scanlines."""
    yc = np.arange(n) + 0.5
    a, b = poly_u[:, 0][:, None], poly_u[:, 1][:, None]
    c, d = np.roll(poly_u[:, 0], -1)[:, None], np.roll(poly_u[:, 1], -1)[:, None]
    crosses = (b > yc) != (d > yc)  # edges × rows
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = a + (yc - b) * (c - a) / (d - b)
    edge, row = np.nonzero(crosses)
    # a crossing at xint counts for the cells whose centre lies left of it: columns 0 .. ceil(xint - 0.5) - 1
    stop = np.clip(np.ceil(xint[edge, row] - 0.5), 0, n).astype(np.int64)
    counts = np.zeros((n, n + 1), dtype=np.int32)
    np.add.at(counts, (row, np.zeros_like(row)), 1)
    np.add.at(counts, (row, stop), -1)
    return (np.cumsum(counts, axis=1)[:, :n] % 2).astype(bool)


def _edge_cells(poly_u: np.ndarray, n: int) -> np.ndarray:
    """Cells an edge passes through, and their neighbours (sampled at a quarter cell along each edge)."""
    start, end = poly_u, np.roll(poly_u, -1, axis=0)
    steps = np.maximum(np.ceil(4 * np.abs(end - start).max(1)).astype(np.int64), 1)
    k = np.repeat(np.arange(len(poly_u)), steps + 1)
    t = np.concatenate([np.linspace(0.0, 1.0, s + 1) for s in steps])
    pts = start[k] + (end[k] - start[k]) * t[:, None]
    cells = np.clip(np.floor(pts).astype(np.int64), 0, n - 1)
    near = np.zeros((n, n), dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near[np.clip(cells[:, 1] + dy, 0, n - 1), np.clip(cells[:, 0] + dx, 0, n - 1)] = True
    return near


def points_in_polygon(xy: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Boolean mask of the points inside a closed polygon (even-odd rule).

    Points outside its bounding box are out. With many candidates, the box is cut into RASTER_PX cells a side:
    in a cell no edge passes through (nor near), every point has the state of the cell's centre, found once
    per cell by scanlines; only the points in cells along the edges are cast against every edge. The answer
    is the same as casting every point; a 200-vertex lasso over 100k points costs a few milliseconds.
    """
    inside = np.zeros(len(xy), dtype=bool)
    if len(poly) < 3 or not len(xy):
        return inside
    poly = np.asarray(poly, dtype=np.float64)
    lo, hi = poly.min(0), poly.max(0)
    box = np.flatnonzero((xy[:, 0] >= lo[0]) & (xy[:, 0] <= hi[0]) & (xy[:, 1] >= lo[1]) & (xy[:, 1] <= hi[1]))
    x, y = xy[box, 0].astype(np.float64), xy[box, 1].astype(np.float64)
    if len(box) < EXACT_BELOW:
        inside[box] = _crossings(x, y, poly)
        return inside
    n = RASTER_PX
    scale = n / np.maximum(hi - lo, 1e-12)
    poly_u = (poly - lo) * scale
    parity, near = _cell_parity(poly_u, n), _edge_cells(poly_u, n)
    cx = np.clip(np.floor((x - lo[0]) * scale[0]).astype(np.int64), 0, n - 1)
    cy = np.clip(np.floor((y - lo[1]) * scale[1]).astype(np.int64), 0, n - 1)
    hit = parity[cy, cx]
    edge = np.flatnonzero(near[cy, cx])
    hit[edge] = _crossings(x[edge], y[edge], poly)
    inside[box] = hit
    return inside


SUSPECT_RAMP = ("#b0c4de", "#ffc107", "#f4511e", "#b71c1c")  # calm blue-grey -> amber -> red -> dark red


def suspect_colours(n: int = SUSPECT_BANDS) -> list[str]:
    """Colours from calm (the model agrees with the label) to alarm (it is sure the label is wrong)."""
    anchors = np.array([[QColor(c).red(), QColor(c).green(), QColor(c).blue()] for c in SUSPECT_RAMP], float)
    t = np.linspace(0.0, 1.0, n)
    pos = np.linspace(0.0, 1.0, len(anchors))
    rgb = np.stack([np.interp(t, pos, anchors[:, j]) for j in range(3)], 1).round().astype(int)
    return [QColor(*map(int, c)).name() for c in rgb]


class _MapViewBox(pg.ViewBox):
    """A ViewBox whose left drag draws a rectangle or lasso instead of panning, in those modes."""

    def __init__(self, owner: TsneMap):
        super().__init__()
        self.owner = owner
        self.mode = "pan"
        self._trace: list[QPointF] = []
        self.shape_item = pg.QtWidgets.QGraphicsPathItem()
        self.shape_item.setPen(pg.mkPen("#263238", width=1.5, style=Qt.PenStyle.DashLine))
        self.shape_item.setBrush(pg.mkBrush(38, 50, 56, 30))
        self.shape_item.setZValue(1000)
        self.addItem(self.shape_item, ignoreBounds=True)

    def mouseDragEvent(self, ev, axis=None):
        if self.mode == "pan" or ev.button() != Qt.MouseButton.LeftButton:
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        here = self.mapToView(ev.pos())
        if ev.isStart():
            self._trace = [self.mapToView(ev.buttonDownPos())]
        self._trace.append(here)
        path = QPainterPath()
        if self.mode == "rect":
            a = self._trace[0]
            path.addRect(pg.QtCore.QRectF(a, here).normalized())
        else:
            path.moveTo(self._trace[0])
            for p in self._trace[1:]:
                path.lineTo(p)
            path.closeSubpath()
        self.shape_item.setPath(path)
        if ev.isFinish():
            add = bool(ev.modifiers() & Qt.KeyboardModifier.ShiftModifier)
            if self.mode == "rect":
                a = self._trace[0]
                poly = np.array([[a.x(), a.y()], [here.x(), a.y()], [here.x(), here.y()], [a.x(), here.y()]])
            else:
                poly = np.array([[p.x(), p.y()] for p in self._trace])
            self.shape_item.setPath(QPainterPath())
            self._trace = []
            self.owner.select_polygon(poly, add=add)


class _HoverCard(QFrame):
    """A floating thumbnail and caption next to the pointer."""

    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet("QFrame { background: white; border: 1px solid #90a4ae; border-radius: 4px; }"
                           " QLabel { border: none; }")
        self.picture = QLabel()
        self.picture.setFixedSize(160, 160)
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.text = QLabel()
        self.text.setMaximumWidth(200)
        self.text.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.picture)
        layout.addWidget(self.text)
        self.image_id: int | None = None
        self.hide()


class TsneMap(QWidget):
    """The collection-map dock: model, colouring, pan/rectangle/lasso, compute, export."""

    selection_made = Signal(list)  # image ids chosen on the map

    def __init__(self, insights: Insights, parent: QWidget | None = None):
        super().__init__(parent)
        self.insights = insights
        self.embedding: Embedding | None = None
        self.embedding_model: int | None | str = "none"
        self.attributes: dict[str, np.ndarray] = {}
        self.selected = np.zeros(0, dtype=np.int64)  # row indices into the embedding
        self._tree: cKDTree | None = None
        self._pos: dict[int, int] = {}
        self._items: list[pg.ScatterPlotItem] = []
        self.job = None
        self.thumbs = ThumbnailLoader(insights)

        self.model_box = ModelCombo()
        self.model_box.setMinimumContentsLength(16)
        self.colour_box = QComboBox()
        for text, key in COLOUR_BY:
            self.colour_box.addItem(text, key)
        self.mode_group = QButtonGroup(self)
        self.mode_buttons = {}
        for text, key, tip in (("Pan", "pan", "Drag to pan, wheel to zoom, click a point to open it"),
                               ("Rectangle", "rect", "Drag a rectangle to select (Shift adds)"),
                               ("Lasso", "lasso", "Draw around points to select (Shift adds)")):
            b = QToolButton()
            b.setText(text)
            b.setCheckable(True)
            b.setToolTip(tip)
            self.mode_group.addButton(b)
            self.mode_buttons[key] = b
            b.toggled.connect(lambda on, k=key: on and self.set_mode(k))
        self.compute_button = QPushButton("Compute map")
        self.export_button = QPushButton("PNG…")
        self.csv_button = QPushButton("CSV…")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.hide()
        self.info = QLabel("No map yet: press Compute map")
        self.info.setStyleSheet("color: #546e7a;")
        self.legend = QLabel("")
        self.legend.setWordWrap(True)

        self.view = _MapViewBox(self)
        self.plot = pg.PlotWidget(viewBox=self.view, background="w")
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.view.setAspectLocked(True)
        self.view.setMenuEnabled(False)
        self.selection_item = pg.ScatterPlotItem(size=11, pen=pg.mkPen("#212121", width=1.5), brush=None,
                                                 pxMode=True)
        self.selection_item.setZValue(10)
        self.current_item = pg.ScatterPlotItem(size=20, pen=pg.mkPen("#d32f2f", width=3), brush=None,
                                               pxMode=True)
        self.current_item.setZValue(11)
        self.view.addItem(self.selection_item)
        self.view.addItem(self.current_item)
        self.card = _HoverCard(self.plot)

        top = QHBoxLayout()
        top.addWidget(self.model_box, 2)
        top.addWidget(QLabel("Colour"))
        top.addWidget(self.colour_box, 1)
        for b in self.mode_buttons.values():
            top.addWidget(b)
        top.addWidget(self.compute_button)
        top.addWidget(self.export_button)
        top.addWidget(self.csv_button)
        status = QHBoxLayout()
        status.addWidget(self.info, 1)
        status.addWidget(self.progress)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.legend)
        layout.addLayout(status)

        self.mode_buttons["pan"].setChecked(True)
        self.compute_button.clicked.connect(self.compute)
        self.export_button.clicked.connect(self._ask_export_png)
        self.csv_button.clicked.connect(self._ask_export_csv)
        self.colour_box.currentIndexChanged.connect(self.recolour)
        self.model_box.currentIndexChanged.connect(self._on_model_changed)
        self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.plot.scene().sigMouseClicked.connect(self._on_scene_click)  # scatter items take the click itself
        self.plot.installEventFilter(self)
        self.plot.viewport().installEventFilter(self)
        self.thumbs.loaded.connect(self._on_thumb)
        insights.labels_changed.connect(self.refresh_attributes)
        insights.models_changed.connect(lambda: self.model_box.set_models(self.insights.models()))
        insights.project_changed.connect(self.clear)
        insights.current_changed.connect(self.show_current)
        self.model_box.set_models(insights.models())

    # ---- computing ------------------------------------------------------------------------------------
    def compute_if_needed(self) -> None:
        """Compute (or load from the cache) the map of the chosen model unless it is shown already."""
        if self.embedding is None or self.embedding_model != self.model_box.model_id():
            self.compute()

    def compute(self) -> None:
        """Start the map job (features, PCA, t-SNE; cached per model) on the window's job queue."""
        path = self.insights.project_path()
        if path is None:
            return
        model_id = self.model_box.model_id()
        self.progress.setRange(0, 0)
        self.progress.show()
        self.compute_button.setEnabled(False)
        self.info.setText("Computing the map…")
        self.job = self.insights.run_job("collection map", partial(_embed_job, path, model_id),
                                         lambda emb: self.set_embedding(emb, model_id), self._on_progress,
                                         self._on_job_end)

    def _on_progress(self, stage: str, done: int, total: int, _eta: float) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(min(done, total))
        self.info.setText(f"{stage} {done:,}/{total:,}")

    def _on_job_end(self) -> None:
        self.progress.hide()
        self.compute_button.setEnabled(True)
        if self.embedding is None:
            self.info.setText("No map yet: press Compute map")

    def _on_model_changed(self) -> None:
        if self.isVisible() and self.embedding is not None:
            self.compute()

    # ---- showing ------------------------------------------------------------------------------------
    def set_embedding(self, emb: Embedding, model_id: int | None | str = "given") -> None:
        """Show a map (from a job, or given directly by tests and the benchmark)."""
        self.embedding, self.embedding_model = emb, model_id
        self._tree = cKDTree(emb.xy) if len(emb.xy) else None
        self._pos = {int(i): k for k, i in enumerate(emb.image_ids.tolist())}
        self.selected = np.zeros(0, dtype=np.int64)
        self.selection_item.setData([], [])
        self.refresh_attributes()
        self.view.autoRange(padding=0.04)
        self.show_current(self.insights.current_image_id())
        source = "from the cache" if emb.cached else f"{emb.engine}, {emb.seconds:.1f} s"
        self.info.setText(f"{len(emb.image_ids):,} images · {emb.description} · {source}")

    def refresh_attributes(self) -> None:
        """Re-read labels, predictions and suspect scores and recolour (after relabelling or training)."""
        if self.embedding is None:
            return
        model = self.embedding_model if isinstance(self.embedding_model, int) else None
        self.attributes = self.insights.point_attributes(self.embedding.image_ids, model)
        self.recolour()

    @property
    def colour_by(self) -> str:
        return self.colour_box.currentData()

    def _groups(self) -> list[tuple[str, str, np.ndarray]]:
        """(name, colour, row indices) per drawn group, bottom layer first, for the current colouring."""
        key = self.colour_by
        if key == "suspect":
            score = self.attributes["suspect"]
            colours = suspect_colours()
            band = np.clip((np.nan_to_num(score, nan=-1) * SUSPECT_BANDS).astype(int), -1, SUSPECT_BANDS - 1)
            groups = [("no score", UNLABELLED, np.flatnonzero(np.isnan(score)))]
            for b in range(SUSPECT_BANDS):
                lo, hi = b / SUSPECT_BANDS, (b + 1) / SUSPECT_BANDS
                groups.append((f"{lo:.2f}–{hi:.2f}", colours[b], np.flatnonzero(band == b)))
            return groups
        values = self.attributes[key]
        groups = [("unlabelled" if key == "label" else "no prediction", UNLABELLED, np.flatnonzero(values < 0))]
        for c in self.insights.classes():
            groups.append((c.name, c.color, np.flatnonzero(values == c.id)))
        return groups

    def recolour(self) -> None:
        """Redraw the points in the chosen colouring (one scatter item per colour)."""
        for item in self._items:
            self.view.removeItem(item)
        self._items = []
        if self.embedding is None or not self.attributes:
            return
        xy = self.embedding.xy
        n = len(xy)
        size = float(np.clip(900 / np.sqrt(max(n, 1)), 3, 9))
        chips = []
        for z, (name, colour, rows) in enumerate(self._groups()):
            if not len(rows):
                continue
            item = pg.ScatterPlotItem(x=xy[rows, 0], y=xy[rows, 1], size=size, pen=None,
                                      brush=pg.mkBrush(colour), pxMode=True, useCache=True)
            item.setZValue(z)
            self.view.addItem(item)
            self._items.append(item)
            chips.append(f"<span style='color:{colour}; font-size:14pt'>●</span>&nbsp;{name} ({len(rows):,})")
        self.legend.setText("&nbsp;&nbsp; ".join(chips))

    def show_current(self, image_id: int | None) -> None:
        """Ring the grid's current image on the map."""
        k = self._pos.get(int(image_id)) if image_id is not None else None
        if k is None or self.embedding is None:
            self.current_item.setData([], [])
        else:
            self.current_item.setData([self.embedding.xy[k, 0]], [self.embedding.xy[k, 1]])

    def clear(self) -> None:
        """Forget the map (another project)."""
        self.embedding = None
        self.embedding_model = "none"
        self.attributes = {}
        self._tree, self._pos = None, {}
        self.recolour()
        self.selection_item.setData([], [])
        self.current_item.setData([], [])
        self.legend.setText("")
        self.thumbs.clear()
        self.info.setText("No map yet: press Compute map")

    # ---- interaction ----------------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        """pan | rect | lasso: what a left drag does."""
        self.view.mode = mode
        self.view.setMouseEnabled(x=True, y=True)
        if not self.mode_buttons[mode].isChecked():
            self.mode_buttons[mode].setChecked(True)

    def nearest(self, x: float, y: float, max_px: float = HOVER_PX) -> int | None:
        """Row of the point nearest to view coordinates (x, y) within max_px pixels, or None."""
        if self._tree is None:
            return None
        dist, k = self._tree.query([x, y])
        px = self.view.viewPixelSize()
        scale = max(px[0], px[1]) if px[0] and px[1] else 0.0
        return int(k) if scale <= 0 or dist <= max_px * scale else None

    def _on_scene_click(self, ev) -> None:
        if ev.button() == Qt.MouseButton.LeftButton and not ev.double():
            self.click_at(self.view.mapSceneToView(ev.scenePos()))

    def click_at(self, pos: QPointF) -> None:
        """A click on a point opens that image in the viewer (it becomes the grid's current image)."""
        k = self.nearest(pos.x(), pos.y())
        if k is None or self.embedding is None:
            return
        image_id = int(self.embedding.image_ids[k])
        if not self.insights.select_in_grid([image_id], current=image_id):
            self.insights.status("That image is hidden by the grid's filter: show all images to open it")
        self.show_current(image_id)

    def select_polygon(self, poly: np.ndarray, add: bool = False) -> list[int]:
        """Select the points inside a polygon (view coordinates) on the map and in the grid."""
        if self.embedding is None:
            return []
        rows = np.flatnonzero(points_in_polygon(self.embedding.xy, poly))
        if add:
            rows = np.union1d(self.selected, rows)
        return self.select_rows(rows)

    def select_rows(self, rows: np.ndarray) -> list[int]:
        """Select these map rows; they become the grid's selection, ready for a class key."""
        self.selected = np.asarray(rows, dtype=np.int64)
        xy = self.embedding.xy[self.selected]
        self.selection_item.setData(xy[:, 0], xy[:, 1])
        ids = [int(i) for i in self.embedding.image_ids[self.selected]]
        shown = self.insights.select_in_grid(ids, current=ids[0] if ids else None) if ids else 0
        hidden = len(ids) - shown
        note = f" ({hidden:,} hidden by the grid's filter)" if hidden else ""
        self.insights.status(f"{len(ids):,} images selected on the map{note}: press a class key to label them")
        self.plot.setFocus()
        self.selection_made.emit(ids)
        return ids

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent):
            if event.key() == Qt.Key.Key_Escape:
                self.set_mode("pan")
                return True
            if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
                return False  # menu shortcuts (Ctrl+Z) stay the window's
            self.insights.forward_key(event)  # class keys label the selection, as in the grid
            return True
        if event.type() == QEvent.Type.Leave:
            self.card.hide()
        return False

    def _on_mouse_moved(self, scene_pos) -> None:
        if self.embedding is None or self.view.mode != "pan":
            self.card.hide()
            return
        p = self.view.mapSceneToView(scene_pos)
        k = self.nearest(p.x(), p.y())
        if k is None:
            self.card.hide()
            return
        image_id = int(self.embedding.image_ids[k])
        self._show_card(image_id, self.plot.mapFromScene(scene_pos))

    def hover_image(self, image_id: int) -> None:
        """Show the hover card of an image at its point (tests, screenshots)."""
        k = self._pos[int(image_id)]
        scene = self.view.mapViewToScene(QPointF(*map(float, self.embedding.xy[k])))
        self._show_card(int(image_id), self.plot.mapFromScene(scene))

    def _show_card(self, image_id: int, at) -> None:
        card = self.card
        if card.image_id != image_id:
            card.image_id = image_id
            self._fill_card()
        card.adjustSize()
        x = at.x() + 16 if at.x() + 16 + card.width() < self.plot.width() else at.x() - 16 - card.width()
        y = min(max(0, at.y() - card.height() // 2), max(0, self.plot.height() - card.height()))
        card.move(int(x), int(y))
        card.show()
        card.raise_()

    def _fill_card(self) -> None:
        card = self.card
        k = self._pos.get(card.image_id)
        if k is None:
            return
        pixmap = self.thumbs.pixmap(card.image_id)
        card.picture.setPixmap(pixmap if pixmap is not None else pg.QtGui.QPixmap())
        card.picture.setText("" if pixmap is not None else "loading…")
        names = {c.id: c.name for c in self.insights.classes()}
        files = self.insights.image_files([card.image_id])
        name = Path(files[card.image_id][0]).name if card.image_id in files else str(card.image_id)
        lines = [f"<b>{name}</b>"]
        if self.attributes:
            label = int(self.attributes["label"][k])
            pred = int(self.attributes["prediction"][k])
            lines.append(f"label: {names.get(label, 'unlabelled')}")
            if pred >= 0:
                lines.append(f"model: {names.get(pred, '?')}")
            s = float(self.attributes["suspect"][k])
            if not np.isnan(s):
                lines.append(f"suspect: {s:.2f}")
        card.text.setText("<br>".join(lines))

    def _on_thumb(self, image_id: int) -> None:
        if self.card.isVisible() and self.card.image_id == image_id:
            self._fill_card()
            self.card.adjustSize()

    # ---- export -------------------------------------------------------------------------------------
    def export_png(self, path: str | Path) -> Path:
        """The map as shown (points, selection, legend) to a PNG."""
        self.card.hide()
        return save_widget_png(self, path)

    def export_csv(self, path: str | Path) -> Path:
        """image_id, x, y, label, prediction, suspect score of every point."""
        from artannot.data.export import write_csv

        if self.embedding is None:
            raise ValueError("no map to export yet")
        names = {c.id: c.name for c in self.insights.classes()}
        a = self.attributes
        rows = [[i, f"{x:.5f}", f"{y:.5f}", names.get(int(a["label"][k]), ""), names.get(int(a["prediction"][k]), ""),
                 "" if np.isnan(a["suspect"][k]) else f"{a['suspect'][k]:.4f}"]
                for k, (i, (x, y)) in enumerate(zip(self.embedding.image_ids.tolist(), self.embedding.xy.tolist(),
                                                    strict=True))]
        write_csv(Path(path), ["image_id", "x", "y", "label", "prediction", "suspect"], rows)
        return Path(path)

    def _ask_export_png(self) -> None:
        path = ask_png_path(self, "collection-map.png")
        if path:
            self.insights.status(f"Saved {self.export_png(path)}")

    def _ask_export_csv(self) -> None:
        if self.embedding is None:
            self.insights.status("Compute the map first")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export map CSV", "collection-map.csv", "CSV files (*.csv)")
        if path:
            self.insights.status(f"Saved {self.export_csv(path)}")

