"""The main window: classes on the left, the grid in the middle, the image on the right, jobs below."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QToolBar,
    QWidget,
)

from artannot.errors import ArtAnnotError
from artannot.gui.class_list import ClassList
from artannot.gui.evaluate_dialog import EvaluateDialog
from artannot.gui.image_viewer import ImageViewer
from artannot.gui.thumbnail_grid import ThumbnailGrid, ThumbnailModel
from artannot.gui.train_panel import TrainPanel, describe_metrics
from artannot.project import SUFFIX, Project
from artannot.store import labels as label_store
from artannot.store.repo import ClassInfo, ImageRow, get_model, top_predictions
from artannot.worker.jobs import Job, JobQueue

EXPORTS = (("ImageFolder…", "imagefolder"), ("CSV…", "csv"), ("Predictions CSV…", "predictions"))
LEFT, RIGHT = Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea


# Jobs run in a worker thread with a Project of their own (a SQLite connection serves one thread).
def _train(path: Path, progress, cancel):
    with Project(path) as p:
        return p.train(progress=progress, cancel=cancel)


def _import(path: Path, src: str, progress, cancel):
    with Project(path) as p:
        return p.import_folder(src, labels_from="folder", split="auto", progress=progress, cancel=cancel)


def _export(path: Path, out: str, fmt: str, progress, _cancel):
    with Project(path) as p:
        return p.export(out, fmt, progress=progress)


class MainWindow(QMainWindow):
    """One open project: browse, relabel from the keyboard, train, evaluate, export."""

    training_finished = Signal(object)  # TrainResult, once the grid and viewer show the new model
    training_cancelled = Signal()
    import_finished = Signal(object)  # ImportReport
    export_finished = Signal(int)  # rows written
    job_failed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.project: Project | None = None
        self.jobs = JobQueue(self)
        self.current_job: Job | None = None
        self.confirm_close: Callable[[], bool] = self._ask_close  # tests replace it
        self.last_error: str | None = None
        self.evaluate_dialog: EvaluateDialog | None = None
        self._classes: list[ClassInfo] = []
        self._model_id: int | None = None
        self.thumbnails = ThumbnailModel(self)
        self.grid = ThumbnailGrid(self.thumbnails)
        self.class_list = ClassList()
        self.viewer = ImageViewer()
        self.train_panel = TrainPanel()
        self.filter_box = QComboBox()
        self.filter_box.setMinimumWidth(260)
        self.counts = QLabel("")
        self._build_layout()
        self._build_menus()
        self._connect()
        self.set_project(None)
        self.resize(1400, 900)

    # ---- construction -----------------------------------------------------------------------------
    def _build_layout(self) -> None:
        self.setCentralWidget(self.grid)
        for title, widget, area, name in (("Classes", self.class_list, LEFT, "classes"),
                                          ("Image", self.viewer, RIGHT, "image")):
            dock = QDockWidget(title, self)
            dock.setObjectName(name)
            dock.setWidget(widget)
            dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                             | QDockWidget.DockWidgetFeature.DockWidgetClosable)
            self.addDockWidget(area, dock)
            setattr(self, f"{name}_dock", dock)
        self.resizeDocks([self.classes_dock, self.image_dock], [240, 380], Qt.Orientation.Horizontal)
        top = QToolBar("View")
        top.setObjectName("view")
        top.setMovable(False)
        top.addWidget(QLabel(" Show: "))
        top.addWidget(self.filter_box)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, top)
        bottom = QToolBar("Model")
        bottom.setObjectName("model")
        bottom.setMovable(False)
        bottom.addWidget(self.train_panel)
        self.addToolBar(Qt.ToolBarArea.BottomToolBarArea, bottom)
        self.statusBar().addPermanentWidget(self.counts)

    def _action(self, menu, text: str, slot, keys=(), tip: str = "") -> QAction:
        action = QAction(text, self)
        action.setShortcuts([QKeySequence(k) for k in keys])
        action.setStatusTip(tip)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file = bar.addMenu("&File")
        self._action(file, "&New project…", self._ask_new_project, ["Ctrl+N"])
        self._action(file, "&Open project…", self._ask_open_project, ["Ctrl+O"])
        self.import_action = self._action(file, "&Import folder…", self._ask_import, ["Ctrl+I"],
                                          "Add a folder of images; sub-folder names become labels")
        export = file.addMenu("&Export")
        self.export_actions = [self._action(export, text, lambda _=False, f=fmt: self._ask_export(f))
                               for text, fmt in EXPORTS]
        file.addSeparator()
        self._action(file, "&Quit", self.close, ["Ctrl+Q"])
        edit = bar.addMenu("&Edit")
        self.undo_action = self._action(edit, "&Undo", self.undo, ["Ctrl+Z"])
        self.redo_action = self._action(edit, "&Redo", self.redo, ["Ctrl+Shift+Z", "Ctrl+Y"])
        edit.addSeparator()
        self.clear_action = self._action(edit, "&Clear label of selection", self._clear_selection,
                                         tip="Keys 1–9 set a class, 0 or Delete clears")
        self.advance_action = QAction("&Advance after labelling one image", self)
        self.advance_action.setCheckable(True)
        self.advance_action.setChecked(True)
        edit.addAction(self.advance_action)
        view = bar.addMenu("&View")
        view.addAction(self.classes_dock.toggleViewAction())
        view.addAction(self.image_dock.toggleViewAction())
        model = bar.addMenu("&Model")
        self.train_action = self._action(model, "&Train", self.start_training, ["Ctrl+T"])
        self.cancel_action = self._action(model, "&Cancel", self.cancel_job)
        self.evaluate_action = self._action(model, "&Evaluate…", self.show_evaluation, ["Ctrl+E"])

    def _connect(self) -> None:
        self.grid.hotkey_pressed.connect(self._on_hotkey)
        self.class_list.hotkey_pressed.connect(self._on_hotkey)
        self.grid.current_image_changed.connect(self._show_current)
        self.class_list.class_activated.connect(self.set_label_of_selection)
        self.class_list.add_class_requested.connect(self._ask_add_class)
        self.train_panel.train_requested.connect(self.start_training)
        self.train_panel.cancel_requested.connect(self.cancel_job)
        self.filter_box.currentIndexChanged.connect(self._apply_filter)
        self.jobs.started.connect(self._on_job_started)
        self.jobs.idle.connect(self._on_jobs_idle)

    # ---- project ----------------------------------------------------------------------------------
    def open_project(self, path: str | Path) -> bool:
        """Open a project file; errors are shown, not raised."""
        if self.jobs.busy:
            self.show_error("Wait for the running job to finish (or cancel it) before switching projects.")
            return False
        try:
            project = Project(path, exclusive=True)  # a second window on the same project is refused
        except ArtAnnotError as exc:
            self.show_error(str(exc))
            return False
        self.set_project(project)
        return True

    def new_project(self, path: str | Path) -> bool:
        """Create an empty project file and open it."""
        path = Path(path)
        if path.suffix != SUFFIX:
            path = path.with_name(path.name + SUFFIX)
        try:
            Project.create(path).close()
        except ArtAnnotError as exc:
            self.show_error(str(exc))
            return False
        return self.open_project(path)

    def set_project(self, project: Project | None) -> None:
        """Show this project (None: nothing open), closing the previous one."""
        self.thumbnails.shutdown()
        if self.project is not None:
            self.project.close()
        self.project = project
        self.setWindowTitle(f"{project.path.stem} — ArtAnnot" if project else "ArtAnnot")
        self.train_panel.set_enabled_for_project(project is not None)
        self.filter_box.blockSignals(True)
        self.filter_box.setCurrentIndex(-1)  # a new project starts with every image shown
        self.filter_box.blockSignals(False)
        self.thumbnails.set_filter(None)
        if project is None:
            self._classes, self._model_id = [], None
            self.thumbnails.set_project_data([], [], None)
            self.class_list.clear_project()
            self._rebuild_filters()
        else:
            self._model_id = project.latest_model_id()
            self._classes = project.classes()
            self.thumbnails.set_project_data(project.images(), self._classes, project.cache_dir / "thumbs")
            self._refresh_classes(force=True)
            self._show_model_summary()
            if self.thumbnails.rowCount():
                self.grid.select_rows([0])
        self._show_current()
        self._update_actions()

    def reload(self) -> None:
        """Re-read every row from the database (after undo, import, training)."""
        if self.project is None:
            return
        self._model_id = self.project.latest_model_id()
        self.thumbnails.reload(self.project.images())
        self._refresh_classes()
        if not self.grid.currentIndex().isValid() and self.thumbnails.rowCount():
            self.grid.select_rows([0])
        self._show_current()
        self._update_actions()

    def _refresh_classes(self, force: bool = False) -> None:
        assert self.project is not None
        old = [(c.id, c.name, c.color, c.hotkey) for c in self._classes]
        self._classes = self.project.classes()
        self.class_list.set_classes(self._classes, len(self.thumbnails.all_rows()))
        if force or old != [(c.id, c.name, c.color, c.hotkey) for c in self._classes]:
            self.thumbnails.set_classes(self._classes)
            self._rebuild_filters()
        self._update_counts()

    def _update_counts(self) -> None:
        rows = self.thumbnails.all_rows()
        if self.project is None:
            self.counts.setText("No project open — File ▸ New project… or Open project…")
            return
        labelled = sum(c.count for c in self._classes)
        text = f"{len(rows):,} images · {labelled:,} labelled · {len(self._classes)} classes"
        if self._model_id is not None:
            text += f" · model {self._model_id}: {sum(r.disagrees for r in rows):,} disagree with their label"
        shown = self.thumbnails.rowCount()
        self.counts.setText(text + (f" · {shown:,} shown" if shown != len(rows) else ""))

    def _show_model_summary(self) -> None:
        if self.project is None or self._model_id is None:
            self.train_panel.show_result("No model trained yet")
            return
        row = get_model(self.project.conn, self._model_id)
        self.train_panel.show_result(describe_metrics(self._model_id, json.loads(row["metrics"] or "{}")))

    # ---- filter -----------------------------------------------------------------------------------
    def _rebuild_filters(self) -> None:
        keep = self.filter_box.currentData()
        self.filter_box.blockSignals(True)  # rebuilding must not re-filter 100k rows per item
        self.filter_box.clear()
        self.filter_box.addItem("All images", "all")
        self.filter_box.addItem("Unlabelled", "unlabelled")
        self.filter_box.addItem("Model disagrees (most confident first)", "disagree")
        for c in self._classes:
            self.filter_box.addItem(f"Class: {c.name}", f"class:{c.id}")
        k = self.filter_box.findData(keep)
        self.filter_box.setCurrentIndex(max(0, k))
        self.filter_box.blockSignals(False)
        if k < 0 and keep not in (None, "all"):
            self._apply_filter()

    def _apply_filter(self) -> None:
        key = self.filter_box.currentData() or "all"
        if key == "all":
            self.thumbnails.set_filter(None)
        elif key == "unlabelled":
            self.thumbnails.set_filter(lambda r: r.class_id is None)
        elif key == "disagree":
            self.thumbnails.set_filter(lambda r: r.disagrees, lambda r: -(r.pred_score or 0.0))
        else:
            class_id = int(key.split(":", 1)[1])
            self.thumbnails.set_filter(lambda r: r.class_id == class_id)
        if self.thumbnails.rowCount():
            self.grid.select_rows([0])
        self._update_counts()

    # ---- labelling --------------------------------------------------------------------------------
    def _on_hotkey(self, key: str) -> None:
        if self.project is None:
            return
        if key in ("0", "clear"):
            self.set_label_of_selection(None)
            return
        info = next((c for c in self._classes if c.hotkey == key), None)
        if info is None:
            self.statusBar().showMessage(f"No class has key {key}", 4000)
            return
        self.set_label_of_selection(info.id)

    def set_label_of_selection(self, class_id: int | None) -> None:
        """Give every selected image this class (None clears), committed at once and undoable."""
        if self.project is None:
            return
        ids = self.grid.selected_ids()
        if not ids:
            self.statusBar().showMessage("Select images first (click, Shift/Ctrl+click, Ctrl+A)", 4000)
            return
        self.project.set_label(ids, class_id)
        self.thumbnails.update_labels(ids, class_id, "human")
        self._refresh_classes()
        name = next((c.name for c in self._classes if c.id == class_id), None)
        n = f"{len(ids)} image{'s' if len(ids) != 1 else ''}"
        done = f"{n} labelled '{name}' (Ctrl+Z undoes)" if name else f"cleared the label of {n}"
        self.statusBar().showMessage(done, 5000)
        if len(ids) == 1 and self.advance_action.isChecked():
            self.grid.advance()
        self._show_current()
        self._update_actions()

    def _clear_selection(self) -> None:
        self.set_label_of_selection(None)

    def undo(self) -> None:
        """Undo the last edit and show its effect."""
        self._undo_redo(self.project.undo if self.project else None, "Undid")

    def redo(self) -> None:
        """Redo the last undone edit."""
        self._undo_redo(self.project.redo if self.project else None, "Redid")

    def _undo_redo(self, op, verb: str) -> None:
        if op is None:
            return
        event = op()
        if event is None:
            self.statusBar().showMessage(f"Nothing to {verb.lower()[:-1]}", 3000)
            return
        self.reload()
        self.statusBar().showMessage(f"{verb}: {event.description} ({event.n_changes} images)", 5000)

    def _show_current(self, _row: ImageRow | None = None) -> None:
        row = self.grid.current_row()
        if row is None or self.project is None:
            self.viewer.show_image(None)
            return
        label = next((c for c in self._classes if c.id == row.class_id), None)
        preds = top_predictions(self.project.conn, self._model_id, row.id) if self._model_id else []
        colors = {c.name: c.color for c in self._classes}
        self.viewer.show_image(row, label, preds, colors, self._model_id)

    def _ask_add_class(self) -> None:
        if self.project is None:
            return
        name, ok = QInputDialog.getText(self, "Add class", "Name of the new class:")
        if ok and name.strip():
            self.project.class_id(name.strip())
            self._refresh_classes()

    # ---- jobs -------------------------------------------------------------------------------------
    def _submit(self, name: str, fn, on_success, on_cancel=None) -> Job | None:
        if self.project is None:
            self.show_error("Open or create a project first (File menu).")
            return None
        job = Job(name, fn)
        job.progressed.connect(self.train_panel.show_progress)
        job.succeeded.connect(on_success)
        job.failed.connect(self._on_job_failed)
        job.was_cancelled.connect(on_cancel or self._on_job_cancelled)
        self.jobs.submit(job)
        return job

    def start_training(self) -> Job | None:
        """Train a model in the background; the grid shows its predictions when done."""
        if self.jobs.busy:
            self.statusBar().showMessage("A job is already running", 4000)
            return None
        path = self.project.path if self.project else None
        return self._submit("training", partial(_train, path), self._on_train_succeeded,
                            self._on_train_cancelled)

    def import_folder(self, src: str | Path) -> Job | None:
        """Import a folder in the background, labels from sub-folder names."""
        path = self.project.path if self.project else None
        return self._submit("import", partial(_import, path, str(src)), self._on_import_succeeded)

    def export(self, out: str | Path, fmt: str) -> Job | None:
        """Write the curated set (or predictions) in the background."""
        path = self.project.path if self.project else None
        self._export_target = str(out)
        return self._submit("export", partial(_export, path, str(out), fmt), self._on_export_succeeded)

    def cancel_job(self) -> None:
        """Ask the running job to stop."""
        if self.jobs.busy:
            self.train_panel.show_cancelling()
            self.jobs.cancel_all()

    def _on_job_started(self, job: Job) -> None:
        self.current_job = job
        self.train_panel.set_running(job.name)
        self._update_actions()

    def _on_jobs_idle(self) -> None:
        self.current_job = None
        self.train_panel.set_running(None)
        self._update_actions()

    def _on_train_succeeded(self, result) -> None:
        if self.project is not None:
            self.reload()
            self._show_model_summary()
            self.statusBar().showMessage(f"Trained in {result.seconds:.0f} s — "
                                         + describe_metrics(result.model_id, result.metrics), 8000)
        self.training_finished.emit(result)

    def _on_train_cancelled(self) -> None:
        self.statusBar().showMessage("Training cancelled; no model was stored", 5000)
        self.training_cancelled.emit()

    def _on_import_succeeded(self, report) -> None:
        if self.project is not None:
            self.reload()
            self.statusBar().showMessage(f"Import: {report.summary()}", 15000)
        self.import_finished.emit(report)

    def _on_export_succeeded(self, n: int) -> None:
        self.statusBar().showMessage(f"Exported {n:,} rows to {getattr(self, '_export_target', '')}", 10000)
        self.export_finished.emit(n)

    def _on_job_cancelled(self) -> None:
        self.statusBar().showMessage("Cancelled", 5000)

    def _on_job_failed(self, message: str) -> None:
        self.show_error(message)
        self.job_failed.emit(message)

    def show_evaluation(self) -> EvaluateDialog | None:
        """Open the scores of the latest model on the test split."""
        if self.project is None:
            return None
        try:
            result = self.project.evaluate()
        except ArtAnnotError as exc:
            self.show_error(str(exc))
            return None
        self.evaluate_dialog = EvaluateDialog(result, self)
        self.evaluate_dialog.show()
        return self.evaluate_dialog

    # ---- dialogs ----------------------------------------------------------------------------------
    def _ask_new_project(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "New project", "", f"ArtAnnot projects (*{SUFFIX})")
        if path:
            self.new_project(path)

    def _ask_open_project(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open project", "", f"ArtAnnot projects (*{SUFFIX})")
        if path:
            self.open_project(path)

    def _ask_import(self) -> None:
        src = QFileDialog.getExistingDirectory(self, "Import a folder (sub-folder names become labels)")
        if src:
            self.import_folder(src)

    def _ask_export(self, fmt: str) -> None:
        if fmt == "imagefolder":
            out = QFileDialog.getExistingDirectory(self, "Export as ImageFolder into an empty folder")
        else:
            out, _ = QFileDialog.getSaveFileName(self, f"Export {fmt}", f"{fmt}.csv", "CSV files (*.csv)")
        if out:
            self.export(out, fmt)

    def show_error(self, message: str) -> None:
        """Tell the user without blocking the event loop (jobs keep reporting)."""
        self.last_error = message
        self.statusBar().showMessage(message, 10000)
        box = QMessageBox(QMessageBox.Icon.Warning, "ArtAnnot", message, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def _update_actions(self) -> None:
        has, busy = self.project is not None, self.jobs.busy
        conn = self.project.conn if has else None
        self.undo_action.setEnabled(has and label_store.can_undo(conn))
        self.redo_action.setEnabled(has and label_store.can_redo(conn))
        self.clear_action.setEnabled(has)
        for action in (self.import_action, *self.export_actions):
            action.setEnabled(has and not busy)
        self.train_action.setEnabled(has and not busy)
        self.cancel_action.setEnabled(busy)
        self.evaluate_action.setEnabled(has and self._model_id is not None)
        self._update_counts()

    # ---- closing ----------------------------------------------------------------------------------
    def _ask_close(self) -> bool:
        name = self.current_job.name if self.current_job else "a job"
        answer = QMessageBox.question(self, "Quit ArtAnnot",
                                      f"{name.capitalize()} is running. Cancel it and quit?")
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.jobs.busy:
            if not self.confirm_close():
                event.ignore()
                return
            self.train_panel.show_cancelling()
            QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
            try:
                self.jobs.shutdown(120_000)
            finally:
                QApplication.restoreOverrideCursor()
        self.viewer.shutdown()
        self.set_project(None)
        event.accept()
