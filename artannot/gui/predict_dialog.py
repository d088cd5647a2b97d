"""Model ▸ Predict folder…: score a folder that is not in the project with the active model, show the guesses,
save them as the CSV `artannot predict FOLDER --out F` writes.

The scoring runs in the worker (progress and Cancel in the bottom bar); `PredictionsDialog` gets the results
and owns them: a table of each file's best guesses, a line that says what happened, and Save CSV….
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from artannot.data.export import prediction_table, write_csv
from artannot.errors import ArtAnnotError
from artannot.project import Project

if TYPE_CHECKING:
    from artannot.gui.main_window import MainWindow

COLUMNS = ("File", "Best guess", "Score", "Second", "Score", "Third", "Score")


def _predict(path: Path, src: str, progress, cancel):
    with Project(path) as p:
        model = p.active_model_id()
        return model, p.predict_source(src, progress=progress, cancel=cancel)


class PredictionsDialog(QDialog):
    """A folder's predictions: what was scored by which model, each file's top three, Save CSV…."""

    def __init__(self, results, src: str, model_id: int | None, parent: QWidget | None = None):
        super().__init__(parent)
        self.results = list(results)
        self.src = src
        self.setWindowTitle(f"Predictions — {Path(src).name}")
        unreadable = sum(1 for _, preds in self.results if not preds)
        n = len(self.results)
        self.summary = QLabel(f"Model {model_id} scored {n - unreadable:,} image{'s' if n - unreadable != 1 else ''}"
                              f" under {src}" + (f"; {unreadable:,} could not be read" if unreadable else ""))
        self.summary.setWordWrap(True)
        self.table = QTableWidget(n, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setDefaultSectionSize(22)
        root = Path(src)
        for r, (path, preds) in enumerate(self.results):
            try:
                name = str(Path(path).relative_to(root))
            except ValueError:
                name = Path(path).name
            item = QTableWidgetItem(name)
            item.setToolTip(str(path))
            self.table.setItem(r, 0, item)
            if not preds:
                self.table.setItem(r, 1, QTableWidgetItem("could not be read"))
            for k, (cls, score) in enumerate(preds[:3]):
                self.table.setItem(r, 1 + 2 * k, QTableWidgetItem(cls))
                cell = QTableWidgetItem(f"{score * 100:.1f}%")
                cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, 2 + 2 * k, cell)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in range(1, len(COLUMNS)):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        self.saved = QLabel("")
        self.saved.setStyleSheet("color: #2e7d32;")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.save_button = QPushButton("Save CSV…")
        buttons.addButton(self.save_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.save_button.clicked.connect(self._ask_save)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.saved)
        layout.addWidget(buttons)
        self.resize(760, 480)

    def _ask_save(self) -> None:
        out, _ = QFileDialog.getSaveFileName(self, "Save predictions", str(Path(self.src) / "predictions.csv"),
                                             "CSV (*.csv)")
        if out:
            self.save(out)

    def save(self, out: str | Path) -> bool:
        """Write the CSV `artannot predict` writes; the dialog says where (or why not)."""
        try:
            write_csv(Path(out), *prediction_table(self.results))
        except (OSError, ArtAnnotError) as exc:
            self.saved.setStyleSheet("color: #c62828;")
            self.saved.setText(f"Could not save: {getattr(exc, 'strerror', None) or exc}")
            return False
        self.saved.setStyleSheet("color: #2e7d32;")
        self.saved.setText(f"Saved {len(self.results):,} rows to {out}")
        return True


def predict_folder(w: MainWindow, src: str | Path):
    """Score every image under src with the active model, in the worker; the dialog follows."""
    if w.project is None:
        return None
    if w.project.active_model_id() is None:
        w.show_error("No model yet: train one first (Model ▸ Train), then predict a folder with it.")
        return None

    def done(result) -> None:
        model_id, results = result
        w.predictions_dialog = PredictionsDialog(results, str(src), model_id, w)
        w.predictions_dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        w.predictions_dialog.show()
        w.statusBar().showMessage(w.predictions_dialog.summary.text(), 10000)

    return w.runner.run_job("predicting", partial(_predict, w.project.path, str(src)), done)


def install_predict(w: MainWindow) -> None:
    """Model ▸ Predict folder…."""
    def ask() -> None:
        src = QFileDialog.getExistingDirectory(w, "Predict the images of a folder with the active model",
                                               w.start_dir())
        if src:
            predict_folder(w, src)

    action = QAction("&Predict folder…", w)
    action.setStatusTip("Score a folder that is not in the project with the active model; save the CSV")
    action.triggered.connect(ask)
    w.model_menu.insertAction(w.evaluate_action, action)
    w.predict_action = action
    w.job_actions.append(action)
