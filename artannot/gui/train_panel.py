"""Train and Cancel buttons with the running job's stage, progress, ETA and the last model's scores."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QSizePolicy, QSpinBox, QWidget

DEFAULT_BUDGET_MIN = 2  # one click on a laptop: an SVM in well under a minute, fine-tuning only if it fits


def format_eta(seconds: float) -> str:
    """'ETA 8 s', 'ETA 2 min 05 s', or '' when unknown."""
    if seconds < 0:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"ETA {seconds} s"
    if seconds < 3600:
        return f"ETA {seconds // 60} min {seconds % 60:02d} s"
    return f"ETA {seconds // 3600} h {seconds // 60 % 60:02d} min"


def describe_metrics(model_id: int, metrics: dict) -> str:
    """'model 3: test top-1 72%, top-5 93%' (or a note when there was no test split)."""
    if metrics and "map" in metrics:
        return f"tag model {model_id}: test mAP {metrics['map'] * 100:.0f}% ({metrics.get('n', 0)} tagged images)"
    if metrics and "oof_map" in metrics:
        return f"tag model {model_id}: no tagged test images to score it"
    if not metrics or "top1" not in metrics:
        return f"model {model_id}: no labelled test images to score it"
    return (f"model {model_id}: test top-1 {metrics['top1'] * 100:.0f}%, top-5 {metrics['top5'] * 100:.0f}%"
            f" ({metrics.get('n', 0)} images)")


class TrainPanel(QWidget):
    """Starts and stops training and shows how far the running job is."""

    train_requested = Signal()
    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.train_button = QPushButton("Train")
        self.train_button.setToolTip("One click: automatic training on the labelled train split (an SVM on deep"
                                     " features first, then adaptive fine-tuning + SVM when it fits the time budget"
                                     " or there is a GPU); it keeps the more accurate and says why")
        self.train_button.setDefault(False)
        self.budget = QSpinBox()
        self.budget.setRange(1, 24 * 60)
        self.budget.setValue(DEFAULT_BUDGET_MIN)
        self.budget.setPrefix("budget ")
        self.budget.setSuffix(" min")
        self.budget.setToolTip("How long the one-click Train may take: more time lets it try fine-tuning"
                               " (Model ▸ Train with options… picks a method yourself)")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running job (nothing half-finished is kept)")
        self.progress = QProgressBar()
        self.progress.setMinimumWidth(200)
        self.progress.setMaximumWidth(320)
        self.progress.setTextVisible(True)
        self.stage = QLabel("")
        self.stage.setMinimumWidth(240)
        self.stage.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.result = QLabel("No model trained yet")
        self.result.setStyleSheet("color: #37474f;")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 2, 6, 2)
        layout.addWidget(self.train_button)
        layout.addWidget(self.budget)
        layout.addWidget(self.cancel_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.stage, 1)
        layout.addWidget(self.result)
        self.train_button.clicked.connect(self.train_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.set_running(None)
        self.set_enabled_for_project(False)

    def one_click_options(self) -> dict:
        """What the Train button trains: `auto` within the budget shown beside it."""
        return {"method": "auto", "options": {"budget": 60.0 * self.budget.value()}}

    def set_enabled_for_project(self, has_project: bool) -> None:
        """Training needs an open project."""
        self._has_project = has_project
        self.train_button.setEnabled(has_project and not self._running)

    def set_running(self, job_name: str | None) -> None:
        """A job started (its name) or everything is idle (None)."""
        self._running = job_name is not None
        self.train_button.setEnabled(getattr(self, "_has_project", False) and not self._running)
        self.cancel_button.setEnabled(self._running)
        self.progress.setVisible(self._running)
        if self._running:
            self.progress.setRange(0, 0)  # busy until the first progress report
            self.stage.setText(f"{job_name}: starting…")
        else:
            self.stage.setText("")

    def show_progress(self, stage: str, done: int, total: int, eta: float) -> None:
        """A job's progress report: stage name, items done of total, seconds left (-1 unknown)."""
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(min(done, total))
        else:
            self.progress.setRange(0, 0)
        eta_text = format_eta(eta)
        self.stage.setText(f"{stage} {done:,}/{total:,}" + (f" — {eta_text}" if eta_text else ""))

    def show_cancelling(self) -> None:
        """Cancel was pressed; the job stops at its next check."""
        self.cancel_button.setEnabled(False)
        self.stage.setText("cancelling…")

    def show_result(self, text: str) -> None:
        """The last model's one-line summary."""
        self.result.setText(text)
