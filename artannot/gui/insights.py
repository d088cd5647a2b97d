"""The pictures that explain a model and a collection, wired into the main window.

`install_insight_views(window)` is the one entry point: it adds the Saliency, Collection map (t-SNE) and
Similar images docks and the model-analysis dialog, with their View / Model menu actions. The views talk to
the window only through `Insights` (this file), which knows the window's public attributes (project, grid,
job queue, labelling) and keeps per-project caches (features in memory, loaded explainers).

Long work runs as worker Jobs: maps, analysis and first feature extraction on the window's queue (one
training/analysis job at a time, progress in the train panel and Cancel); one-image work (saliency, "more
like this", morphing) on a small queue of its own where the newest request replaces older ones, so the
overlay follows the current image even while a model trains.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PySide6.QtCore import QEvent, QObject, QRunnable, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QAction, QImage, QKeyEvent, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QMainWindow,
    QMenu,
    QScrollArea,
    QWidget,
)

from artannot.worker.jobs import Job, JobQueue

IMAGENET = -1  # combo data of "the ImageNet backbone, no trained model"
UNLABELLED = "#b0bec5"
ID_ROLE = Qt.ItemDataRole.UserRole + 1  # the image id of an item in a strip of thumbnails


# -- small shared helpers -------------------------------------------------------------------------------------


def array_to_qimage(rgb: np.ndarray) -> QImage:
    """An H×W×3 uint8 array as a QImage that owns its pixels."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def save_widget_png(widget: QWidget, path: str | Path) -> Path:
    """Write what a widget shows to a PNG file; returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    if not widget.grab().save(str(path), "PNG"):
        raise OSError(f"cannot write {path}")
    return path


def ask_png_path(parent: QWidget, default_name: str) -> str | None:
    """A save-file dialog for a PNG, or None when cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, "Export PNG", default_name, "PNG images (*.png)")
    return path or None


class ModelCombo(QComboBox):
    """Stored models (newest first) and the plain ImageNet backbone, as data: model id or IMAGENET.

    It follows the newest model until the curator picks one; that choice is kept while it exists.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.chosen = False
        self.activated.connect(lambda _i: setattr(self, "chosen", True))

    def set_models(self, models: Sequence[dict], keep: bool = True, allow_imagenet: bool = True) -> None:
        old = self.currentData() if keep and self.chosen else None
        self.blockSignals(True)
        self.clear()
        for m in reversed(models):
            if m.get("method") == "ensemble":
                continue  # an average of models has no single network to look into
            text = f"Model {m['id']} · {m['method']} · {m['backbone']}"
            if m.get("top1") is not None:
                text += f" · top-1 {m['top1']:.0%}"
            elif m.get("map") is not None:
                text += f" · mAP {m['map']:.0%}"
            self.addItem(text, int(m["id"]))
            self.setItemData(self.count() - 1, m.get("summary") or text, Qt.ItemDataRole.ToolTipRole)
        if allow_imagenet:
            self.addItem("ImageNet efficientnet_lite0 (no training)", IMAGENET)
        k = self.findData(old) if old is not None else -1
        self.setCurrentIndex(k if k >= 0 else 0)
        self.blockSignals(False)

    def model_id(self) -> int | None:
        """The chosen stored model, or None for the ImageNet backbone."""
        data = self.currentData()
        return None if data in (None, IMAGENET) else int(data)


class _ThumbSignals(QObject):
    done = Signal(int, object)  # image id, QImage or None


class _ThumbTask(QRunnable):
    def __init__(self, image_id: int, path: str, sha: str, cache_dir: Path, size: int, signals: _ThumbSignals):
        super().__init__()
        self.args = (image_id, path, sha, cache_dir, size)
        self.signals = signals

    def run(self) -> None:
        from artannot.data.images import save_thumbnail_cached

        image_id, path, sha, cache_dir, size = self.args
        try:
            image = QImage(str(save_thumbnail_cached(path, sha, cache_dir, size=size)))
        except Exception:  # an unreadable image shows no thumbnail, never a dead pool thread
            image = None
        self.signals.done.emit(image_id, image if image is not None and not image.isNull() else None)


class ThumbnailLoader(QObject):
    """Thumbnails of image ids from the project's disk cache, decoded off the GUI thread, kept in memory."""

    loaded = Signal(int)  # image id whose thumbnail arrived (or failed)

    def __init__(self, insights: Insights, size: int = 160, keep: int = 600):
        super().__init__(insights)
        self.insights, self.size, self.keep = insights, size, keep
        self._pixmaps: dict[int, QPixmap | None] = {}
        self._pending: set[int] = set()
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(2)
        self._signals = _ThumbSignals(self)
        self._signals.done.connect(self._on_done)

    def pixmap(self, image_id: int) -> QPixmap | None:
        """The thumbnail if loaded; otherwise None and a load is started (`loaded` fires when done)."""
        if image_id in self._pixmaps:
            return self._pixmaps[image_id]
        if image_id not in self._pending:
            info = self.insights.image_files([image_id]).get(image_id)
            cache = self.insights.thumb_dir()
            if info is None or cache is None:
                return None
            self._pending.add(image_id)
            self._pool.start(_ThumbTask(image_id, info[0], info[1], cache, self.size, self._signals))
        return None

    def clear(self) -> None:
        self._pool.clear()
        self._pixmaps.clear()
        self._pending.clear()

    def shutdown(self) -> None:
        self._pool.clear()
        self._pool.waitForDone(5000)

    def wait(self, timeout_ms: int = 5000) -> bool:
        """Block until queued loads finish (tests and screenshots)."""
        ok = self._pool.waitForDone(timeout_ms)
        QApplication.processEvents()
        return ok

    def _on_done(self, image_id: int, image: QImage | None) -> None:
        self._pending.discard(image_id)
        if len(self._pixmaps) >= self.keep:
            for k in list(self._pixmaps)[: self.keep // 4]:
                del self._pixmaps[k]
        self._pixmaps[image_id] = QPixmap.fromImage(image) if image is not None else None
        self.loaded.emit(image_id)


# -- worker functions (each opens its own Project: a SQLite connection serves one thread) ----------------------


def _features_job(path: Path, model_id: int | None, progress, cancel):
    from artannot.ml.embedding import model_features
    from artannot.project import Project
    from artannot.store import repo

    with Project(path) as p:
        images = repo.all_images(p.conn)
        feats, ok, source = model_features(p.conn, p.cache_dir, model_id, [(f, sha) for _, f, sha in images],
                                           progress=progress, cancel=cancel)
    ids = np.array([i for (i, _, _), good in zip(images, ok, strict=True) if good], dtype=np.int64)
    return ids, np.ascontiguousarray(feats[ok]), source.description


class FeatureSet:
    """One model's penultimate features of the readable images, held in memory for neighbour queries."""

    def __init__(self, ids: np.ndarray, feats: np.ndarray, description: str):
        from artannot.ml.embedding import l2_normalize

        self.ids = ids
        self.unit = l2_normalize(feats)
        self.description = description
        self._codes: np.ndarray | None = None
        self._pos = {int(i): k for k, i in enumerate(ids.tolist())}
        self.graph = None  # top-k neighbour graph, built on the first morph

    def row(self, image_id: int) -> int | None:
        return self._pos.get(int(image_id))

    @property
    def codes(self) -> np.ndarray:
        """Binary hash codes by the median rule on these features (the fallback without a tag model), once."""
        if self._codes is None:
            from artannot.ml.embedding import hash_codes

            self._codes = hash_codes(self.unit)
        return self._codes

    def hash_codes(self, conn: sqlite3.Connection | None, tag_model: int | None = None):
        """Illustration2Vec's codes of these images (ml/embedding.py HashCodes): a tag model's sigmoid outputs
        >= 0.5 (tag_model, else the newest one), else the median rule on the features; kept per tag model."""
        from artannot.ml.embedding import HashCodes, collection_codes
        from artannot.store import tags as tag_store

        latest = tag_model if tag_model is not None else (
            tag_store.latest_tag_model_id(conn) if conn is not None else None)
        cached = getattr(self, "_hash", None)
        if cached is None or cached.tag_model != latest:
            self._hash = (collection_codes(conn, self.ids, tag_model=latest) if latest is not None
                          else HashCodes(self.codes, self.unit.shape[1], "median"))
        return self._hash


# -- the controller ------------------------------------------------------------------------------------------


class Insights(QObject):
    """What the insight views need from the main window, and the caches they share."""

    project_changed = Signal()  # another project (or none) is open: drop everything computed
    models_changed = Signal()  # a model was trained (or the project changed)
    labels_changed = Signal()  # labels may have changed (debounced)
    current_changed = Signal(object)  # image id or None

    def __init__(self, window: QMainWindow):
        super().__init__(window)
        self.window = window
        self.quick = JobQueue(self)
        self.explainers: dict = {}  # (project path, model id) -> Explainer; used by one quick job at a time
        self.features: dict[int | None, FeatureSet] = {}
        self._files: dict[int, tuple[str, str]] | None = None
        self._project_key: str | None = self._key()
        self._n_images = self._image_count()
        self._waiting: dict[int | None, list[Callable[[FeatureSet], None]]] = {}
        self._labels_seen: tuple | None = None
        self._labels_timer = QTimer(self, singleShot=True, interval=200)
        self._labels_timer.timeout.connect(self._check_labels)
        model = self.grid_model()
        if model is not None:
            model.modelReset.connect(self._on_reset)
            # the grid repaints after every edit (and after thumbnails load): a cheap signature of the
            # active labels tells real label changes apart
            for name in ("dataChanged", "repaint_requested", "layoutChanged"):
                signal = getattr(model, name, None)
                if signal is not None:
                    signal.connect(lambda *_: self._labels_timer.start())
        grid = getattr(window, "grid", None)
        if grid is not None and hasattr(grid, "current_image_changed"):
            grid.current_image_changed.connect(self._on_current)
        for owner in (window, getattr(window, "jobs", None)):
            signal = getattr(owner, "training_finished", None)
            if signal is not None:
                signal.connect(self._on_trained)
                break
        window.installEventFilter(self)

    # ---- window access ------------------------------------------------------------------------------
    @property
    def project(self):
        return getattr(self.window, "project", None)

    def project_path(self) -> Path | None:
        return self.project.path if self.project is not None else None

    def conn(self) -> sqlite3.Connection | None:
        """The GUI thread's connection (short reads only)."""
        return self.project.conn if self.project is not None else None

    def grid_model(self):
        return getattr(self.window, "thumbnails", None)

    def thumb_dir(self) -> Path | None:
        return self.project.cache_dir / "thumbs" if self.project is not None else None

    def models(self) -> list[dict]:
        return self.project.models() if self.project is not None else []

    def classes(self) -> list:
        return self.project.classes() if self.project is not None else []

    def current_image_id(self) -> int | None:
        row = self.window.grid.current_row()
        return None if row is None else int(row.id)

    def selected_ids(self) -> list[int]:
        return [int(i) for i in self.window.grid.selected_ids()]

    def select_in_grid(self, image_ids: Sequence[int], current: int | None = None) -> int:
        """Select these images in the grid (current first, shown in the viewer); returns how many are shown."""
        grid = self.window.grid
        ids = [int(i) for i in image_ids]
        if hasattr(grid, "select_ids"):
            return int(grid.select_ids(ids, current))
        model = self.grid_model()
        rows = [k for k in (model.position(i) for i in ids) if k is not None]
        first = model.position(current) if current is not None else None
        if first is not None:
            rows = [first] + [r for r in rows if r != first]
        if rows:
            grid.select_rows(rows)
            grid.scrollTo(model.index(rows[0], 0))
        return len(rows)

    def label_selection(self, class_id: int | None) -> None:
        self.window.set_label_of_selection(class_id)

    def forward_key(self, event: QKeyEvent) -> None:
        """Hand a key the views do not use to the grid (class keys label the grid's selection)."""
        grid = self.window.grid
        copy = QKeyEvent(event.type(), event.key(), event.modifiers(), event.text(), event.isAutoRepeat(),
                         event.count())
        QApplication.sendEvent(grid, copy)
        self._labels_timer.start()

    def status(self, text: str, ms: int = 6000) -> None:
        self.window.statusBar().showMessage(text, ms)

    def show_error(self, message: str) -> None:
        if hasattr(self.window, "show_error"):
            self.window.show_error(message)
        else:
            self.status(message, 10000)

    def image_files(self, image_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """(absolute path, sha256) of image ids, from a per-project table read once."""
        if self._files is None:
            from artannot.store import repo

            conn = self.conn()
            self._files = {} if conn is None else {i: (p, sha) for i, p, sha in repo.all_images(conn)}
        return {int(i): self._files[int(i)] for i in image_ids if int(i) in self._files}

    def point_attributes(self, image_ids: np.ndarray, model_id: int | None) -> dict[str, np.ndarray]:
        """Label class id, predicted class id (-1: none) and suspect score (NaN: none) per image id."""
        from artannot.ml.embedding import point_attributes

        conn = self.conn()
        if conn is None:
            n = len(image_ids)
            return {"label": np.full(n, -1), "prediction": np.full(n, -1), "suspect": np.full(n, np.nan)}
        return point_attributes(conn, image_ids, model_id)

    # ---- jobs ---------------------------------------------------------------------------------------
    def _window_queue(self) -> JobQueue:
        jobs = self.window.jobs
        return getattr(jobs, "queue", jobs)

    def run_job(self, name: str, fn, on_success: Callable, on_progress: Callable | None = None,
                on_end: Callable | None = None) -> Job | None:
        """A long job on the window's queue (after any training), its progress in the train panel too."""
        if self.project is None:
            self.show_error("Open or create a project first (File menu).")
            return None
        job = Job(name, fn)
        panel = getattr(self.window, "train_panel", None)
        if panel is not None:
            job.progressed.connect(panel.show_progress)
        if on_progress is not None:
            job.progressed.connect(on_progress)
        job.succeeded.connect(on_success)
        job.failed.connect(self.show_error)
        job.was_cancelled.connect(lambda: self.status(f"{name.capitalize()} cancelled"))
        if on_end is not None:
            job.finished.connect(on_end)
        self._window_queue().submit(job)
        return job

    def run_quick(self, name: str, fn, on_success: Callable, on_fail: Callable | None = None) -> Job | None:
        """A short job on the insights queue; a newer request cancels the ones still waiting or running."""
        if self.project is None:
            return None
        self.quick.cancel_all()
        job = Job(name, fn)
        job.succeeded.connect(on_success)
        job.failed.connect(on_fail or self.show_error)
        self.quick.submit(job)
        return job

    def with_features(self, model_id: int | None, then: Callable[[FeatureSet], None]) -> None:
        """Call `then` with a model's features: at once when loaded, else after a features job."""
        if model_id in self.features:
            then(self.features[model_id])
            return
        if model_id in self._waiting:
            self._waiting[model_id].append(then)
            return
        self._waiting[model_id] = [then]
        key = self._project_key

        def done(result) -> None:
            waiting = self._waiting.pop(model_id, [])
            if key != self._project_key:
                return
            fs = FeatureSet(*result)
            self.features[model_id] = fs
            for fn in waiting:
                fn(fs)

        job = self.run_job("features", _features_bound(self.project_path(), model_id), done)
        if job is None:
            self._waiting.pop(model_id, None)
        else:
            job.finished.connect(lambda: self._waiting.pop(model_id, None))

    # ---- events -------------------------------------------------------------------------------------
    def _key(self) -> str | None:
        p = self.project
        return None if p is None else str(p.path)

    def _image_count(self) -> int:
        conn = self.conn()
        return 0 if conn is None else int(conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    def _on_reset(self) -> None:
        key = self._key()
        self._files = None
        n = self._image_count()
        if n != self._n_images:  # an import or removal: features in memory no longer cover the collection
            self._n_images = n
            self.features.clear()
        if key != self._project_key:
            self._project_key = key
            for combo in self.window.findChildren(ModelCombo):
                combo.chosen = False
            self.quick.cancel_all()
            self.explainers.clear()
            self.features.clear()
            self.project_changed.emit()
            self.models_changed.emit()
        else:
            self._labels_timer.start()

    def _labels_signature(self) -> tuple | None:
        conn = self.conn()
        if conn is None:
            return None
        return tuple(conn.execute("SELECT COUNT(*), TOTAL(rowid), TOTAL(class_id) FROM labels WHERE active = 1")
                     .fetchone())

    def _check_labels(self) -> None:
        """Emit labels_changed when the active labels differ from the last look (edits, undo, import)."""
        now = self._labels_signature()
        if now != self._labels_seen:
            self._labels_seen = now
            self.labels_changed.emit()

    def _on_trained(self, _result=None) -> None:
        self.models_changed.emit()
        self._labels_seen = None  # new predictions and suspects: recolour whatever the labels did
        self._labels_timer.start()

    def _on_current(self, row) -> None:
        self.current_changed.emit(None if row is None else int(row.id))

    def shutdown(self) -> None:
        """Stop the insight jobs and loaders (the window is closing)."""
        self.quick.shutdown(30_000)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.window and event.type() == QEvent.Type.Close:
            self.shutdown()
        return False


def _features_bound(path: Path | None, model_id: int | None):
    def fn(progress, cancel: threading.Event):
        return _features_job(path, model_id, progress, cancel)
    return fn


# -- installation --------------------------------------------------------------------------------------------


def _menu(window: QMainWindow, title: str) -> QMenu:
    """The window's menu with this title (e.g. '&View'), created when missing."""
    for action in window.menuBar().actions():
        menu = action.menu()
        if menu is not None and menu.title().replace("&", "") == title.replace("&", ""):
            return menu
    return window.menuBar().addMenu(title)


class InsightViews(QObject):
    """The docks, dialog and actions this module adds to a main window (window.insights).

    The views are built the first time their dock is shown (or `saliency` / `map` / `similar` is read), so
    the window starts without importing pyqtgraph, scipy or torch.
    """

    VIEWS = {  # attribute -> (dock title, object name, module, class)
        "saliency": ("Saliency", "saliency", "artannot.gui.saliency_view", "SaliencyView"),
        "map": ("Collection map", "tsne_map", "artannot.gui.tsne_map", "TsneMap"),
        "similar": ("Similar images", "similar", "artannot.gui.similar_strip", "SimilarStrip"),
    }

    def __init__(self, window: QMainWindow):
        super().__init__(window)
        self.window = window
        self.insights = Insights(window)
        self._views: dict[str, QWidget] = {}
        self.analysis = None
        right = Qt.DockWidgetArea.RightDockWidgetArea
        self.saliency_dock = self._dock("saliency", right)
        self.map_dock = self._dock("map", right)
        self.similar_dock = self._dock("similar", Qt.DockWidgetArea.BottomDockWidgetArea)
        image_dock = getattr(window, "image_dock", None)
        if isinstance(image_dock, QDockWidget):
            window.tabifyDockWidget(image_dock, self.saliency_dock)
            window.tabifyDockWidget(image_dock, self.map_dock)
            image_dock.raise_()
        for dock in (self.saliency_dock, self.map_dock, self.similar_dock):
            dock.hide()

        view, model = _menu(window, "&View"), _menu(window, "&Model")
        view.addSeparator()
        for dock in (self.saliency_dock, self.map_dock, self.similar_dock):
            view.addAction(dock.toggleViewAction())
        model.addSeparator()
        self.explain_action = self._action(model, "E&xplain current image (saliency)", self.show_saliency,
                                           "Grad-CAM / VisualBackProp of the current image")
        self.map_action = self._action(model, "Collection &map (t-SNE)", self.show_map,
                                       "2-D map of the collection in the model's feature space")
        self.similar_action = self._action(model, "More &like this", self.more_like_this,
                                           "The images nearest to the current one in feature space")
        self.morph_action = self._action(model, "&Morph between two selected images", self.morph,
                                         "The shortest path through similar images between two selected ones")
        self.analysis_action = self._action(model, "&Analyse models…", self.show_analysis,
                                            "CKA between models, top activating images, per-class accuracy,"
                                            " training curves")

    def _view(self, key: str) -> QWidget:
        """The view of a dock, built on first use."""
        view = self._views.get(key)
        if view is None:
            import importlib

            _, _, module, cls = self.VIEWS[key]
            view = getattr(importlib.import_module(module), cls)(self.insights)
            self._views[key] = view
            getattr(self, f"{key}_dock").setWidget(fitting(view))
        return view

    @property
    def saliency(self):
        return self._view("saliency")

    @property
    def map(self):
        return self._view("map")

    @property
    def similar(self):
        return self._view("similar")

    def _dock(self, key: str, area: Qt.DockWidgetArea) -> QDockWidget:
        title, name, _, _ = self.VIEWS[key]
        dock = QDockWidget(title, self.window)
        dock.setObjectName(name)
        dock.visibilityChanged.connect(lambda visible, k=key: visible and self._view(k))
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.window.addDockWidget(area, dock)
        return dock

    def _action(self, menu: QMenu, text: str, slot, tip: str) -> QAction:
        action = QAction(text, self.window)
        action.setStatusTip(tip)
        action.setToolTip(tip)
        action.triggered.connect(lambda _=False: slot())
        menu.addAction(action)
        return action

    # ---- actions ------------------------------------------------------------------------------------
    def show_saliency(self) -> None:
        self.saliency_dock.show()
        self.saliency_dock.raise_()
        self.saliency.refresh()

    def show_map(self) -> None:
        self.map_dock.show()
        self.map_dock.raise_()
        self.map.compute_if_needed()

    def more_like_this(self) -> None:
        self.similar_dock.show()
        self.similar.more_like_this()

    def morph(self) -> None:
        self.similar_dock.show()
        self.similar.morph_selected()

    def show_analysis(self, tab: int = 0):
        if self.analysis is None:
            from artannot.gui.analysis_dialog import AnalysisDialog

            self.analysis = AnalysisDialog(self.insights, self.window)
        self.analysis.refresh_models()
        self.analysis.tabs.setCurrentIndex(tab)
        self.analysis.show()
        self.analysis.raise_()
        return self.analysis


def fitting(view: QWidget) -> QScrollArea:
    """The view in a scroll area: a dock opened on it fits the window's current size (the view scrolls when
    the dock is smaller than the view's minimum) instead of the window growing to the view's minimum."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    area.setWidget(view)
    area.setMinimumSize(160, 80)
    area.setFocusProxy(view)
    return area


def install_insight_views(window: QMainWindow) -> None:
    """Add the saliency, collection-map and similar-image docks, the analysis dialog and their menu actions."""
    if getattr(window, "insights", None) is not None:
        return
    window.insights = InsightViews(window)
