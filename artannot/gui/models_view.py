"""The Models dock: every trained model side by side (like `artannot models`), which one is active, and
Make active / Delete… — plus, for a one-click `auto` model, the candidates it tried.

`ModelsView` owns its state (the project it lists) and talks by signals: `active_changed(model id or None)`
after the curator picks the active model, `deleted(model id)` after a model is removed, `message(str)` for a
one-line status (e.g. a refused delete). `install_models_view(window)` adds the dock with its View and Model
menu entries and wires those signals to the window (reload the grid, the model summary, the status bar).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDockWidget,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from artannot.errors import ArtAnnotError
from artannot.gui.train_panel import CandidatesTable, format_estimate
from artannot.store import models as model_store
from artannot.store.repo import get_model

COLUMNS = ("", "Id", "Method", "Backbone", "Estimate ± spread", "Test top-1", "Top-5", "F1 / mAP", "Time", "Created")
ACTIVE_MARK = "●"


def _pct(value) -> str:
    return "–" if value is None else f"{float(value) * 100:.1f}%"


def _cells(m: dict, active: bool) -> tuple[str, ...]:
    f1_map = m.get("macro_f1") if m.get("macro_f1") is not None else m.get("map")
    seconds = m.get("seconds")
    estimate = format_estimate(m.get("estimate"), m.get("estimate_std"))
    if m.get("estimate") is not None and m.get("estimate_kind"):
        estimate += f" ({m['estimate_kind']})"
    return (ACTIVE_MARK if active else "", str(m["id"]), str(m.get("method") or "?"), str(m.get("backbone") or ""),
            estimate, _pct(m.get("top1")), _pct(m.get("top5")), _pct(f1_map),
            "–" if seconds is None else f"{float(seconds):.0f} s", str(m.get("created_at") or "")[:16])


class ModelsView(QWidget):
    """The project's models in a table (oldest first), the active one bold with ●; buttons act on the
    selected row. Nothing here takes keyboard focus, so class keys keep labelling the grid."""

    active_changed = Signal(object)  # the model id made active, or None (back to the best by estimate)
    deleted = Signal(int)  # a model id that was removed
    message = Signal(str)  # one line for the status bar

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.project = None
        self.models: list[dict] = []
        self.active_id: int | None = None
        self.confirm_delete: Callable[[int], bool] = self._ask_delete  # tests replace it
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setMinimumHeight(60)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.make_active_button = QPushButton("Make active")
        self.make_active_button.setToolTip("The grid, suspects and Space show this model's guesses")
        self.best_button = QPushButton("Best by estimate")
        self.best_button.setToolTip("Forget the choice: the model with the best honest estimate is active")
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setToolTip("Remove the model, its predictions and its files")
        for button in (self.make_active_button, self.best_button, self.delete_button):
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.make_active_button.clicked.connect(lambda: self.make_active(self.selected_id()))
        self.best_button.clicked.connect(lambda: self.make_active(None))
        self.delete_button.clicked.connect(lambda: self.delete(self.selected_id()))
        self.detail = QLabel("")
        self.detail.setWordWrap(True)
        self.detail.setStyleSheet("color: #455a64;")
        self.candidates = CandidatesTable()
        self.candidates_box = QWidget()
        box = QVBoxLayout(self.candidates_box)
        box.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Candidates the one-click run tried")
        title.setStyleSheet("font-weight: bold;")
        box.addWidget(title)
        box.addWidget(self.candidates)
        buttons = QHBoxLayout()
        buttons.addWidget(self.make_active_button)
        buttons.addWidget(self.best_button)
        buttons.addWidget(self.delete_button)
        buttons.addWidget(self.detail, 1)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.table, 1)
        top_layout.addLayout(buttons)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(top)
        splitter.addWidget(self.candidates_box)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(splitter)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.refresh()

    # ---- state ------------------------------------------------------------------------------------
    def set_project(self, project) -> None:
        """List this project's models (None: nothing open)."""
        self.project = project
        self.refresh()

    def refresh(self) -> None:
        """Re-read the models and the active one; the selected model stays selected."""
        keep = self.selected_id()
        if self.project is None:
            self.models, self.active_id = [], None
        else:
            self.models = self.project.models()
            self.active_id = model_store.active_model_id(self.project.conn)
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.models))
        bold = QFont(self.table.font())
        bold.setBold(True)
        for r, m in enumerate(self.models):
            active = m["id"] == self.active_id
            for c, text in enumerate(_cells(m, active)):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, int(m["id"]))
                if c >= 4 and c <= 8:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if active:
                    item.setFont(bold)
                    item.setToolTip("the active model: the grid shows its guesses")
                elif m.get("summary"):
                    item.setToolTip(m["summary"])
                self.table.setItem(r, c, item)
        self.table.blockSignals(False)
        if not self.select(keep) and not self.select(self.active_id):
            self.table.clearSelection()
        self._on_selection()

    def row_of(self, model_id: int | None) -> int | None:
        """The table row of a model id."""
        return next((r for r, m in enumerate(self.models) if m["id"] == model_id), None)

    def select(self, model_id: int | None) -> bool:
        """Select a model's row; False when it is not listed."""
        r = self.row_of(model_id)
        if r is None:
            return False
        self.table.selectRow(r)
        return True

    def selected_id(self) -> int | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows or rows[0].row() >= len(self.models):
            return None
        return int(self.models[rows[0].row()]["id"])

    def _on_selection(self) -> None:
        model_id = self.selected_id()
        has = self.project is not None
        chosen = model_store.chosen_model_id(self.project.conn) if has else None
        self.make_active_button.setEnabled(model_id is not None and model_id != self.active_id
                                           and self._method(model_id) != "tags")
        self.delete_button.setEnabled(model_id is not None)
        self.best_button.setEnabled(chosen is not None)
        auto = None
        if has and model_id is not None:
            row = get_model(self.project.conn, model_id)
            params = json.loads(row["params"] or "{}") if row is not None else {}
            auto = params.get("auto") if isinstance(params.get("auto"), dict) else None
            self.detail.setText((auto or {}).get("reason") or params.get("summary") or "")
        else:
            self.detail.setText("No models yet: Train (Ctrl+T) makes one" if has and not self.models else "")
        self.candidates.set_auto(auto)
        self.candidates_box.setVisible(auto is not None)

    def _method(self, model_id: int | None) -> str | None:
        r = self.row_of(model_id)
        return self.models[r].get("method") if r is not None else None

    # ---- actions ----------------------------------------------------------------------------------
    def make_active(self, model_id: int | None) -> bool:
        """Make this model active (None: the best by estimate); emits active_changed."""
        if self.project is None:
            return False
        try:
            model_store.set_active_model(self.project.conn, model_id)
        except ArtAnnotError as exc:
            self.message.emit(str(exc))
            return False
        self.refresh()
        self.message.emit(f"Model {self.active_id} is active: the grid shows its guesses"
                          if self.active_id is not None else "No model is active")
        self.active_changed.emit(self.active_id)
        return True

    def delete(self, model_id: int | None) -> bool:
        """Ask, then delete the model with its predictions and files; a refusal is one status line."""
        if self.project is None or model_id is None or not self.confirm_delete(model_id):
            return False
        try:
            removed = model_store.delete_model(self.project.conn, self.project.cache_dir, model_id)
        except ArtAnnotError as exc:
            self.message.emit(str(exc))
            return False
        except OSError as exc:
            self.message.emit(f"model {model_id} was deleted but a file could not be removed: {exc.strerror or exc}")
            removed = []
        was_active = model_id == self.active_id
        self.refresh()
        n = len(removed)
        self.message.emit(f"Deleted model {model_id} ({n} file{'s' if n != 1 else ''} removed)"
                          + (f"; model {self.active_id} is active now" if was_active and self.active_id else ""))
        self.deleted.emit(model_id)
        return True

    def _ask_delete(self, model_id: int) -> bool:
        m = self.models[self.row_of(model_id)] if self.row_of(model_id) is not None else {}
        answer = QMessageBox.question(
            self, "Delete model",
            f"Delete model {model_id} ({m.get('method', '?')} on {m.get('backbone', '?')}) with its predictions"
            " and files? This cannot be undone.")
        return answer == QMessageBox.StandardButton.Yes


# ---- the window's side ------------------------------------------------------------------------------------


def _menu(window: QMainWindow, title: str):
    for action in window.menuBar().actions():
        menu = action.menu()
        if menu is not None and menu.title().replace("&", "") == title.replace("&", ""):
            return menu
    return window.menuBar().addMenu(title)


def install_models_view(window: QMainWindow) -> None:
    """Add the Models dock (hidden), its View toggle and Model ▸ Models…, and wire it to the window."""
    if getattr(window, "models_view", None) is not None:
        return
    view = ModelsView()
    dock = QDockWidget("Models", window)
    dock.setObjectName("models")
    dock.setWidget(view)
    dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                     | QDockWidget.DockWidgetFeature.DockWidgetClosable
                     | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
    window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
    dock.hide()
    window.models_view, window.models_dock = view, dock

    def show_models() -> None:
        view.set_project(window.project)
        dock.show()
        dock.raise_()

    def on_model_change(*_args) -> None:  # the grid, insights and summary follow the active model
        window.reload()
        window.show_model_summary()

    def on_trained(result) -> None:
        view.refresh()
        params = getattr(result, "params", None) or {}
        window.train_panel.show_candidates(params.get("auto"), reveal=True)

    _menu(window, "&View").addAction(dock.toggleViewAction())
    action = QAction("M&odels…", window)
    action.setStatusTip("Every model side by side: make one active, delete one, see what auto tried")
    action.triggered.connect(lambda _=False: show_models())
    _menu(window, "&Model").addAction(action)
    window.models_action = action
    dock.visibilityChanged.connect(lambda visible: visible and view.project is not window.project
                                   and view.set_project(window.project))
    window.thumbnails.modelReset.connect(lambda: view.project is not window.project
                                         and view.set_project(window.project))
    view.active_changed.connect(on_model_change)
    view.deleted.connect(on_model_change)
    view.message.connect(lambda text: window.statusBar().showMessage(text, 10000))
    window.training_finished.connect(on_trained)
