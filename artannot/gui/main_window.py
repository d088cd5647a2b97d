"""The main window: classes on the left, filter bar and grid (or the review queue) in the middle, the image
with its boxes on the right, jobs below. Every edit is committed at once; the session is restored on start.

Menus, actions and the File menu's dialogs live in actions.py, jobs in job_runner.py. Components own their
part and are wired here: review mode (review_panel.ReviewController: every key there), box edits
(image_viewer.BoxEdits), class edits (class_dialogs.ClassEdits), the session (session.Session), box
proposals (proposals.py), the Models dock (models_view.py), the insight views (insights.py), Predict folder
(predict_dialog.py), the Tags dock (tag_panel.TagEdits).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QDockWidget,
    QLabel,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QToolBar,
    QWidget,
)

from artannot.errors import ArtAnnotError
from artannot.gui.actions import build_menus, shortcut_rows, start_dir
from artannot.gui.class_dialogs import ClassEdits
from artannot.gui.class_list import ClassList
from artannot.gui.evaluate_dialog import EvaluateDialog
from artannot.gui.filter_bar import FilterBar
from artannot.gui.image_viewer import BoxEdits, ImageCache, ImageViewer
from artannot.gui.insights import install_insight_views
from artannot.gui.job_runner import JobRunner
from artannot.gui.models_view import install_models_view
from artannot.gui.predict_dialog import install_predict
from artannot.gui.proposals import install_proposals
from artannot.gui.review_panel import ReviewController, ReviewPanel
from artannot.gui.session import MAX_SAVED_SELECTION, Session
from artannot.gui.shortcuts_overlay import ShortcutsOverlay
from artannot.gui.tag_panel import TagEdits
from artannot.gui.thumbnail_grid import DatabaseSource, ThumbnailGrid, ThumbnailModel
from artannot.gui.train_panel import TrainPanel, describe_metrics
from artannot.project import SUFFIX, Project
from artannot.store import classes as class_store
from artannot.store import labels as label_store
from artannot.store import queries
from artannot.store.repo import ClassInfo, ImageRow, get_model, top_predictions

LEFT, RIGHT = Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea


if TYPE_CHECKING:
    from artannot.gui.train_dialog import TrainDialog


class MainWindow(QMainWindow):
    """One open project: browse, filter, relabel from the keyboard, review, draw boxes, tag, train, export."""

    def __init__(self, parent: QWidget | None = None, settings: QSettings | None = None):
        super().__init__(parent)
        self.project: Project | None = None
        self.settings = settings  # None: no session is saved or restored (tests, embedding)
        self.session = Session(self)  # the last project, filter, selection, layout; recent projects
        self.class_edits = ClassEdits(self)  # add, rename, merge, delete, key: the Classes menu and list
        self.confirm_close: Callable[[], bool] = self._ask_close  # tests replace it
        self.last_error: str | None = None
        self.evaluate_dialog: EvaluateDialog | None = None
        self._classes: list[ClassInfo] = []
        self._model_id: int | None = None
        self._summary: dict[str, int] = {}
        self.image_cache = ImageCache(self)
        self.thumbnails = ThumbnailModel(self)
        self.grid = ThumbnailGrid(self.thumbnails)
        self.filter_bar = FilterBar()
        self.filter_box = self.filter_bar.show_box  # the "Show" choice (All, Unlabelled, Class: ...)
        self.class_list = ClassList()
        self.viewer = ImageViewer(self.image_cache)
        self.review = ReviewPanel(self.image_cache, self.thumbnails.row_by_id)
        self.review_controller = ReviewController(self, self.review)  # what each key does in review mode
        self.train_panel = TrainPanel()
        self.counts = QLabel("")
        self.runner = JobRunner(self)
        self.jobs = self.runner.queue
        for name in ("training_finished", "training_cancelled", "import_finished", "export_finished", "job_failed"):
            setattr(self, name, getattr(self.runner, name))
        self.overlay = ShortcutsOverlay(self)
        self._summary_timer = QTimer(self, singleShot=True, interval=600)  # totals refresh after a burst of edits
        self._summary_timer.timeout.connect(self._refresh_summary)
        self._save_timer = QTimer(self, singleShot=True, interval=500)
        self._save_timer.timeout.connect(self.save_session)
        self.job_actions: list = []  # actions that need a project and an idle worker (components add theirs)
        self.project_actions: list = []  # actions that need a project
        self._build_layout()
        build_menus(self)
        # Other views (e.g. gui/insights.py) install their docks and View menu entries after this line.
        install_insight_views(self)  # saliency, collection map, similar images, model analysis
        install_models_view(self)  # the Models dock: compare, make active, delete
        install_proposals(self)  # box proposals: the threshold bar, review keys, Model ▸ Propose boxes
        install_predict(self)  # Model ▸ Predict folder…
        self._connect()
        self.set_project(None)
        self.resize(1400, 900)

    # ---- construction -----------------------------------------------------------------------------
    def _build_layout(self) -> None:
        self.stack = QStackedWidget()
        self.stack.addWidget(self.grid)
        self.stack.addWidget(self.review)
        self.review.setMinimumSize(320, 240)  # a small window squeezes the review page, never grows
        self.setCentralWidget(self.stack)
        for title, widget, area, name in (("Classes", self.class_list, LEFT, "classes"),
                                          ("Image", self.viewer, RIGHT, "image")):
            dock = QDockWidget(title, self)
            dock.setObjectName(name)
            dock.setWidget(widget)
            dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                             | QDockWidget.DockWidgetFeature.DockWidgetClosable)
            self.addDockWidget(area, dock)
            setattr(self, f"{name}_dock", dock)
        self.classes_dock.setMinimumWidth(190)  # class names and counts stay readable beside a wide map
        self.tag_edits = TagEdits(self)  # the Tags dock: the selection's tags, suggestions, edits
        self.tag_panel, self.tags_dock = self.tag_edits.panel, self.tag_edits.dock
        self.splitDockWidget(self.image_dock, self.tags_dock, Qt.Orientation.Vertical)
        self.resizeDocks([self.classes_dock, self.image_dock], [240, 400], Qt.Orientation.Horizontal)
        self.resizeDocks([self.image_dock, self.tags_dock], [520, 320], Qt.Orientation.Vertical)
        top = QToolBar("Filter")  # spans the window: the filter bar needs the room
        top.setObjectName("filter")
        top.setMovable(False)
        top.addWidget(self.filter_bar)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, top)
        bottom = QToolBar("Model")
        bottom.setObjectName("model")
        bottom.setMovable(False)
        bottom.addWidget(self.train_panel)
        self.addToolBar(Qt.ToolBarArea.BottomToolBarArea, bottom)
        self.statusBar().addPermanentWidget(self.counts)
        self.empty_hint = QLabel("This project has no images yet.\n\nFile ▸ Import…  (Ctrl+I): a folder of images,"
                                 " labels from sub-folders,\nfile names or a CSV / COCO / VOC / YOLO / labelme file.",
                                 self.grid.viewport())
        self.empty_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_hint.setStyleSheet("color: #546e7a; font-size: 14px;")
        self.empty_hint.hide()

    def _connect(self) -> None:
        self.grid.hotkey_pressed.connect(self._on_hotkey)
        self.grid.accept_requested.connect(self.accept_predictions)
        self.grid.current_image_changed.connect(self._show_current)
        self.grid.selectionModel().selectionChanged.connect(lambda *_: self._save_timer.start())
        self.class_list.hotkey_pressed.connect(self._on_hotkey)
        self.class_list.class_activated.connect(self._on_class_activated)
        self.class_list.add_class_requested.connect(self.class_edits.ask_add_class)
        self.class_list.edit_requested.connect(self.class_edits.on_class_edit)
        self.filter_bar.changed.connect(self.apply_filter)
        self.train_panel.train_requested.connect(self.start_training)
        self.train_panel.cancel_requested.connect(self.cancel_job)
        self.viewer.editor.accept_requested.connect(self.accept_predictions)
        self.box_edits = BoxEdits(self)  # drawn, moved, deleted, reclassified boxes in both editors
        self.tag_edits.connect()
        self._keep_keys_for_labelling()

    def _keep_keys_for_labelling(self) -> None:
        """Buttons and boxes of the bottom and top bars never keep the keyboard: after a click the class keys
        still label (a spin box or combo takes focus only when clicked, and gives it back when used)."""
        for bar in (self.train_panel, self.filter_bar):
            for button in bar.findChildren(QAbstractButton):
                button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
                button.clicked.connect(self._focus_grid_later)
            for box in bar.findChildren(QAbstractSpinBox):
                box.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
                box.editingFinished.connect(self._focus_grid_later)
            for combo in bar.findChildren(QComboBox):
                combo.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
                combo.activated.connect(self._focus_grid_later)

    def _focus_grid_later(self, *_args) -> None:
        """Give the keyboard back to the grid (or the review queue) once the click is handled."""
        QTimer.singleShot(0, lambda: (self.review if self.review_mode() else self.grid).setFocus())

    # ---- project ----------------------------------------------------------------------------------
    def open_project(self, path: str | Path) -> bool:
        """Open a project file; errors are shown, not raised."""
        if self.jobs.busy:
            self.show_error("Wait for the running job to finish (or cancel it) before switching projects.")
            return False
        try:
            project = Project(path, exclusive=True)
        except ArtAnnotError as exc:
            self.show_error(str(exc))
            return False
        self.set_project(project)
        self.session.remember(project.path)
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
        self.set_review_mode(False)
        self.thumbnails.shutdown()
        self.image_cache.clear()
        if self.project is not None:
            self.project.close()
        self.project = project
        self.setWindowTitle(f"{project.path.stem} — ArtAnnot" if project else "ArtAnnot")
        self.train_panel.set_enabled_for_project(project is not None)
        self.filter_bar.blockSignals(True)
        self.filter_bar.reset()  # a new project starts with every image shown
        self.filter_bar.blockSignals(False)
        if project is None:
            self._classes, self._model_id, self._summary = [], None, {}
            self.thumbnails.set_project_data([], [], None)
            self.class_list.clear_project()
            self.filter_bar.set_classes([])
        else:
            self._model_id = project.active_model_id()
            self._classes = class_store.visible_classes(project.conn)
            self.thumbnails.set_source(DatabaseSource(project.conn, self._model_id), None, self._classes,
                                       project.cache_dir / "thumbs")
            self._refresh_summary()
            self._refresh_classes(force=True)
            self.show_model_summary()
            if self.thumbnails.rowCount():
                self.grid.select_rows([0])
            self.grid.setFocus()
        self.tag_edits.refresh_known_tags()
        self._show_current()
        self.update_actions()
        self._save_timer.start()

    def reload(self) -> None:
        """Re-read after undo, import or training: the filter runs again, selection and focus stay."""
        if self.project is None:
            return
        model_id = self.project.active_model_id()
        if model_id != self._model_id:
            self._model_id = model_id
            self.thumbnails.source.model_id = model_id  # type: ignore[attr-defined]
        self.thumbnails.reload()
        self._refresh_summary()
        self._refresh_classes()
        self.tag_edits.refresh_known_tags()
        self.apply_filter(keep_selection=True)
        self.update_actions()

    def _refresh_classes(self, force: bool = False) -> None:
        """Class names and counts (one indexed count per class), the filter's class entries."""
        assert self.project is not None
        old = [(c.id, c.name, c.color, c.hotkey, c.negative) for c in self._classes]
        self._classes = class_store.visible_classes(self.project.conn)
        self.class_list.set_classes(self._classes, self._summary.get("images", 0))
        if force or old != [(c.id, c.name, c.color, c.hotkey, c.negative) for c in self._classes]:
            self.thumbnails.set_classes(self._classes)
            self.filter_bar.set_classes(self._classes)
        self._update_counts()

    def _refresh_summary(self) -> None:
        if self.project is not None:
            self._summary = queries.summary(self.project.conn, self._model_id)
            self._update_counts()

    def _update_counts(self) -> None:
        if self.project is None:
            self.empty_hint.hide()
            self.counts.setText("No project open — File ▸ New project… or Open project…")
            self.filter_bar.set_count(0, 0)
            return
        total = self._summary.get("images", 0)
        labelled = sum(c.count for c in self._classes)
        text = f"{total:,} images · {labelled:,} labelled · {len(self._classes)} classes"
        if self._model_id is not None:
            text += (f" · model {self._model_id}: {self._summary.get('disagree', 0):,} disagree,"
                     f" {self._summary.get('flagged', 0):,} suspects")
        self.counts.setText(text)
        self.empty_hint.setVisible(total == 0)
        if total == 0:
            self.empty_hint.setGeometry(self.grid.viewport().rect())
        self.train_panel.show_label_sources(self._summary)
        self.filter_bar.set_count(self.thumbnails.rowCount(), total)

    def show_model_summary(self) -> None:
        """The latest model's scores in the bottom bar."""
        if self.project is None or self._model_id is None:
            self.train_panel.show_result("No class model trained yet")
            self.train_panel.show_candidates(None)
            return
        row = get_model(self.project.conn, self._model_id)
        self.train_panel.show_result(describe_metrics(self._model_id, json.loads(row["metrics"] or "{}")))
        self.train_panel.show_candidates(json.loads(row["params"] or "{}").get("auto"))

    # ---- filter -----------------------------------------------------------------------------------
    def apply_filter(self, keep_selection: bool = True) -> None:
        """Query the images the filter bar asks for (SQL, by index) and show them; keep the focus if shown."""
        if self.project is None:
            return
        query = self.filter_bar.query(self._model_id, self.detector_id(), self.proposal_review.threshold)
        if query.needs_model() and self._model_id is None:
            self.statusBar().showMessage("Train a model first (Model ▸ Train): this view needs its guesses", 6000)
        ids = queries.image_ids(self.project.conn, query)
        if np.array_equal(ids, self.thumbnails.ids()):  # e.g. an undo that changed no membership: no relayout
            self.thumbnails.reload()
        else:
            current = self.grid.current_row()
            selected = self.grid.selected_ids()[:MAX_SAVED_SELECTION] if keep_selection else []
            self.thumbnails.set_ids(ids)
            if not (current and self.grid.select_ids(selected or [current.id], current.id)) \
                    and self.thumbnails.rowCount():
                self.grid.select_rows([0])
        self._show_current()
        self._update_counts()
        self._save_timer.start()

    def after_class_edit(self) -> None:
        """A class was added, renamed, merged, deleted or given a key: every view shows it."""
        self.thumbnails.reload()
        self._refresh_classes(force=True)
        self._summary_timer.start()
        self._show_current()
        self.update_actions()

    def start_dir(self, name: str = "") -> str:
        """Where file dialogs open: the project's folder (gui/actions.py)."""
        return start_dir(self, name)

    def save_session(self) -> None:
        """Remember the project, filter, selection and window layout (gui/session.py)."""
        self.session.save()

    def restore_session(self) -> bool:
        """Reopen the last project with its filter and selection; False if there was none."""
        return self.session.restore()

    def recent_projects(self) -> list[str]:
        """File ▸ Recent projects, newest first."""
        return self.session.recent()

    def fill_recent_menu(self) -> None:
        self.session.fill_menu(self.recent_menu)

    def review_mode(self) -> bool:
        """Whether the review queue replaces the grid (review_panel.ReviewController)."""
        return self.review_controller.active()

    def set_review_mode(self, on: bool) -> None:
        """Review the current filter one image at a time, from the focused image (Ctrl+R; Esc leaves)."""
        self.review_controller.set_active(on)

    def review_row(self) -> ImageRow | None:
        """The image review mode shows (None outside it)."""
        return self.review_controller.current_row()

    def show_suspects(self) -> None:
        """Show the images whose label the latest model finds most likely wrong."""
        self.show_preset("suspects")

    def show_preset(self, name: str) -> None:
        """Switch the grid to one of the filter bar's Show presets (suspects, proposals, box_suspects…); the
        grid queries again even when it already showed it."""
        self.set_review_mode(False)
        k = self.filter_box.findData(name)
        if self.filter_box.currentIndex() == k:
            self.reload()
        else:
            self.filter_box.setCurrentIndex(k)

    def on_proposal_threshold(self) -> None:
        """The proposal threshold moved: a grid listing images with proposals follows it."""
        if self.filter_box.currentData() in ("proposals", "box_suspects"):
            self.apply_filter(keep_selection=True)

    def detector_id(self) -> int | None:
        """The detector proposals come from (None: none trained)."""
        return self.project.detector_model_id() if self.project is not None else None

    def classes(self) -> list[ClassInfo]:
        """The project's visible classes, as the class list shows them."""
        return list(self._classes)

    def focus_search(self) -> None:
        """Ctrl+F: type part of a file name."""
        self.set_review_mode(False)
        self.filter_bar.focus_search()

    def set_show_boxes(self, show: bool) -> None:
        """Draw boxes on the thumbnails."""
        self.thumbnails.set_show_boxes(bool(show))

    # ---- labelling --------------------------------------------------------------------------------
    def _class_for_key(self, key: str) -> ClassInfo | None:
        info = next((c for c in self._classes if c.hotkey == key), None)
        if info is None and key not in ("0", "clear"):
            self.statusBar().showMessage(f"No class on key {key.upper()} — assign one in the Classes dock"
                                         " (Classes ▸ Set class key…)", 5000)
        return info

    def _on_hotkey(self, key: str) -> None:
        if self.project is None:
            return
        if self.review_mode():
            self.review_controller.on_key(key)
        elif key in ("0", "clear"):
            self.set_label_of_selection(None)
        elif (info := self._class_for_key(key)) is not None:
            self.set_label_of_selection(info.id)

    def _on_class_activated(self, class_id: int | None) -> None:
        editor = self.review.editor if self.review_mode() else self.viewer.editor
        if editor.selected_proposal() is not None:
            self.proposal_review.key(editor, class_id)
        elif editor.selected_box() is not None:
            self.box_edits.set_class(editor, editor.selected_box(), class_id)
        elif self.review_mode():
            self.review_controller.label(class_id)
        else:
            self.set_label_of_selection(class_id)

    def _label(self, ids: list[int], class_id: int | None) -> None:
        """Commit one label for these images and mirror it in the grid and counts."""
        assert self.project is not None
        self.project.set_label(ids, class_id)
        self.thumbnails.update_labels(ids, class_id, "human")
        self._after_edit()

    def _after_edit(self) -> None:
        self._refresh_classes()
        self._summary_timer.start()
        self.update_actions()

    def set_label_of_selection(self, class_id: int | None) -> None:
        """Give every selected image this class (None clears), committed at once and undoable."""
        if self.project is None:
            return
        ids = self.grid.selected_ids()
        if not ids:
            self.statusBar().showMessage("Select images first (click, Shift/Ctrl+click, drag, Ctrl+A)", 4000)
            return
        self._label(ids, class_id)
        name = next((c.name for c in self._classes if c.id == class_id), None)
        n = f"{len(ids):,} image{'s' if len(ids) != 1 else ''}"
        self.statusBar().showMessage(f"{n} labelled '{name}' (Ctrl+Z undoes)" if name else
                                     f"Cleared the label of {n}", 5000)
        if len(ids) == 1 and self.advance_action.isChecked():
            self.grid.advance()
        self._show_current()

    def _clear_selection(self) -> None:
        self.set_label_of_selection(None)

    def accept_predictions(self) -> None:
        """Space: each selected image takes the model's top guess (one undoable edit)."""
        if self.project is None:
            return
        if self._model_id is None:
            self.statusBar().showMessage("No model yet: train one (Ctrl+T) to get guesses to accept", 5000)
            return
        ids = self.grid.selected_ids()
        guesses = queries.top_classes(self.project.conn, self._model_id, ids)
        changes = [label_store.LabelChange(i, guesses[i], "human") for i in ids if i in guesses]
        n = len(changes)
        label_store.apply_labels(self.project.conn, changes,
                                 description=f"accept the model's guess for {n} image{'s' if n != 1 else ''}")
        for class_id in set(guesses.values()):
            self.thumbnails.update_labels([i for i, c in guesses.items() if c == class_id], class_id, "human")
        self._after_edit()
        self.statusBar().showMessage(f"Accepted the model's guess for {n:,} image{'s' if n != 1 else ''}", 4000)
        if len(ids) == 1 and self.advance_action.isChecked():
            self.grid.advance()
        self._show_current()

    def undo(self) -> None:
        """Undo the last edit (label, box, tag or class) and show its effect."""
        self._undo_redo(self.project.undo if self.project else None, "Undid")

    def redo(self) -> None:
        """Redo the last undone edit."""
        self._undo_redo(self.project.redo if self.project else None, "Redid")

    def _undo_redo(self, op, verb: str) -> None:
        if op is None:
            return
        try:
            event = op()
        except Exception as exc:  # e.g. a rename whose old name was taken since: say so, change nothing
            self.show_error(f"{verb[:-1]}ing failed: {exc}")
            return
        if event is None:
            self.statusBar().showMessage(f"Nothing to {verb.lower()[:-1]}", 3000)
            return
        self.reload()
        if self.review_mode():
            self.review_controller.show(self.review.current_id())
        n = event.n_changes
        self.statusBar().showMessage(f"{verb}: {event.description} ({n} change{'s' if n != 1 else ''})", 5000)

    # ---- current image and boxes --------------------------------------------------------------------
    def _describe(self, row: ImageRow):
        """(label class, top-5, colours, model id, suggested class name) for the viewer and review."""
        label = next((c for c in self._classes if c.id == row.class_id), None)
        preds = top_predictions(self.project.conn, self._model_id, row.id) if self._model_id else []
        suggested = next((c.name for c in self._classes if c.id == getattr(row, "suggested_id", None)), None)
        return label, preds, {c.name: c.color for c in self._classes}, self._model_id, suggested

    def _show_current(self, _row: ImageRow | None = None) -> None:
        self.tag_edits.refresh_tags_soon()
        row = self.grid.current_row()
        if row is None or self.project is None:
            self.viewer.show_image(None)
            return
        self.viewer.show_image(row, *self._describe(row))
        self.box_edits.show(self.viewer.editor, row.id)
        nxt = [self.thumbnails.row_at(k) for k in range(self.grid.currentIndex().row() + 1,
                                                           min(self.grid.currentIndex().row() + 3,
                                                               self.thumbnails.rowCount()))]
        self.image_cache.prefetch([r.path for r in nxt])

    # ---- jobs (job_runner.py) ---------------------------------------------------------------------
    @property
    def current_job(self):
        return self.runner.current

    def start_training(self, _checked=False, options: dict | None = None):
        """Train a model in the background; the grid shows its predictions and suspects when done."""
        return self.runner.start_training(options)

    def train_with_options(self, _checked=False) -> TrainDialog | None:
        """Open the Train dialog; OK starts training with the chosen method, backbone and budget."""
        from artannot.gui.train_dialog import TrainDialog

        if self.project is None:
            return None
        dialog = TrainDialog(self, models=self.project.models())
        dialog.accepted.connect(lambda: self.start_training(options=dialog.options()))
        dialog.open()
        return dialog

    def import_folder(self, src: str | Path, options: dict | None = None):
        """Import a folder in the background (options: Project.import_folder's; None: labels from sub-folders);
        a report dialog follows."""
        return self.runner.import_folder(src, options)

    def ask_import(self, _checked=False):
        """File ▸ Import…: the Import dialog; Import runs it in the worker."""
        from artannot.gui.import_dialog import ImportDialog

        if self.project is None:
            self.show_error("Open or create a project first (File menu).")
            return None
        dialog = ImportDialog(self, start_dir=self.project.path.parent)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

        def run() -> None:
            options = dialog.options()
            self.import_folder(options.pop("src"), options)

        dialog.accepted.connect(run)
        dialog.open()
        self.import_dialog = dialog
        return dialog

    def export(self, out: str | Path, fmt: str):
        """Write the curated set (or predictions) in the background."""
        return self.runner.export(out, fmt)

    def ask_export(self, _checked=False):
        """File ▸ Export…: every format the CLI writes; runs in the worker, a summary follows."""
        from artannot.gui.export_dialog import ExportDialog

        if self.project is None:
            self.show_error("Open or create a project first (File menu).")
            return None
        dialog = ExportDialog(self, start_dir=self.project.path.parent, stem=self.project.path.stem)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.export(*dialog.options()))
        dialog.open()
        self.export_dialog = dialog
        return dialog

    def cancel_job(self) -> None:
        """Ask the running job to stop."""
        self.runner.cancel()

    def show_evaluation(self) -> EvaluateDialog | None:
        """Open the scores of the latest model on the test split."""
        if self.project is None:
            return None
        try:
            result = self.project.evaluate()
        except ArtAnnotError as exc:
            self.show_error(str(exc))
            return None
        metrics = json.loads(get_model(self.project.conn, result["model"])["metrics"] or "{}")
        self.evaluate_dialog = EvaluateDialog(result, self, calibration=metrics.get("calibration"))
        self.evaluate_dialog.cell_chosen.connect(self.show_confusion_cell)
        self.evaluate_dialog.show()
        return self.evaluate_dialog

    def show_confusion_cell(self, true_name: str, pred_name: str) -> None:
        """The test images labelled true_name that the active model predicts as pred_name, in the grid."""
        by_name = {c.name: c.id for c in self._classes}
        if true_name not in by_name or pred_name not in by_name:
            self.statusBar().showMessage("That class no longer exists", 4000)
            return
        self.set_review_mode(False)
        self.filter_bar.show_confusion(by_name[true_name], by_name[pred_name],
                                       f"Test: {true_name} predicted {pred_name}")
        n = self.thumbnails.rowCount()
        self.statusBar().showMessage(f"{n:,} test image{'s' if n != 1 else ''} labelled '{true_name}' that model"
                                     f" {self._model_id} predicts as '{pred_name}'", 8000)

    def show_shortcuts(self) -> None:
        """The `?` overlay with every key."""
        if self.overlay.isVisible():
            self.overlay.hide()
            return
        self.overlay.set_rows(shortcut_rows(self))
        self.overlay.open()

    # ---- feedback ---------------------------------------------------------------------------------
    def show_error(self, message: str) -> None:
        """Tell the user without blocking the event loop (jobs keep reporting)."""
        self.last_error = message
        self.statusBar().showMessage(message, 10000)
        box = QMessageBox(QMessageBox.Icon.Warning, "ArtAnnot", message, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def update_actions(self) -> None:
        """Enable what makes sense now."""
        has, busy = self.project is not None, self.jobs.busy
        conn = self.project.conn if has else None
        self.undo_action.setEnabled(has and label_store.can_undo(conn))
        self.redo_action.setEnabled(has and label_store.can_redo(conn))
        for action in (self.clear_action, self.review_action, self.add_class_action, self.rename_class_action,
                       self.merge_class_action, self.delete_class_action, self.hotkey_class_action,
                       self.focus_tags_action, self.accept_tags_action, self.filename_tags_action):
            action.setEnabled(has)
        for action in (self.import_action, self.export_dialog_action, *self.export_actions, *self.job_actions):
            action.setEnabled(has)  # while a job runs, another one queues behind it
        for action in self.project_actions:
            action.setEnabled(has)
        self.train_action.setEnabled(has)
        self.cancel_action.setEnabled(busy)
        for action in (self.evaluate_action, self.accept_action, self.suspects_action):
            action.setEnabled(has and self._model_id is not None)
        self._update_counts()

    # ---- closing ----------------------------------------------------------------------------------
    def _ask_close(self) -> bool:
        name = self.current_job.name if self.current_job else "a job"
        answer = QMessageBox.question(self, "Quit ArtAnnot", f"{name.capitalize()} is running. Cancel it and quit?")
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.jobs.busy:
            if not self.confirm_close():
                event.ignore()
                return
            QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
            try:
                self.runner.shutdown(120_000)
            finally:
                QApplication.restoreOverrideCursor()
        self.runner.release()  # the training child kept warm ends with the window
        self.save_session()
        self.viewer.shutdown()
        self.set_project(None)
        event.accept()
