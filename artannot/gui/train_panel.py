"""Train and Cancel buttons with the running job's stage, progress, ETA and the last model's scores."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

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
    if metrics and "map50" in metrics:
        if metrics["map50"] is None:
            return f"detector {model_id}: no boxed test images to score it"
        return (f"detector {model_id}: test box mAP {metrics['map'] * 100:.0f}%, AP50 {metrics['map50'] * 100:.0f}%"
                f" ({metrics.get('n', 0)} images)")
    if metrics and "map" in metrics:
        return f"tag model {model_id}: test mAP {metrics['map'] * 100:.0f}% ({metrics.get('n', 0)} tagged images)"
    if metrics and "oof_map" in metrics:
        return f"tag model {model_id}: no tagged test images to score it"
    if not metrics or "top1" not in metrics:
        return f"model {model_id}: no labelled test images to score it"
    return (f"model {model_id}: test top-1 {metrics['top1'] * 100:.0f}%, top-5 {metrics['top5'] * 100:.0f}%"
            f" ({metrics.get('n', 0)} images)")


def format_estimate(value: float | None, std: float | None) -> str:
    """'84.0% ± 3.1%' (or '–' when there is no estimate)."""
    if value is None:
        return "–"
    return f"{value * 100:.1f}%" + (f" ± {std * 100:.1f}%" if std else "")


CANDIDATE_COLUMNS = ("", "Method", "Backbone", "Labels", "Estimate ± spread", "Time", "Note")


class CandidatesTable(QTableWidget):
    """What a one-click `auto` run tried (params["auto"]): each candidate's honest estimate and time, the
    chosen one marked ●, the skipped ones greyed with their reason."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(0, len(CANDIDATE_COLUMNS), parent)
        self.setHorizontalHeaderLabels(CANDIDATE_COLUMNS)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # class keys keep labelling the grid
        self.setWordWrap(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.verticalHeader().setDefaultSectionSize(22)
        self.setMinimumHeight(60)
        self.reason = ""

    def set_auto(self, auto: dict | None) -> None:
        """Show an auto run's candidates and skipped attempts (None or {}: empty)."""
        auto = auto or {}
        candidates, skipped = list(auto.get("candidates") or []), list(auto.get("skipped") or [])
        self.reason = str(auto.get("reason") or "")
        self.setRowCount(len(candidates) + len(skipped))
        bold = QFont(self.font())
        bold.setBold(True)
        for r, c in enumerate(candidates):
            cells = ("●" if c.get("chosen") else "", c.get("method", "?"), c.get("backbone", "?"),
                     c.get("labels", "all"), format_estimate(c.get("estimate"), c.get("std")),
                     f"{c['seconds']:.0f} s" if c.get("seconds") is not None else "–",
                     "chosen" if c.get("chosen") else "")
            for k, text in enumerate(cells):
                item = QTableWidgetItem(str(text))
                if c.get("chosen"):
                    item.setFont(bold)
                    item.setToolTip(self.reason or "the chosen candidate")
                if k in (4, 5):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.setItem(r, k, item)
        grey = QBrush(QColor("#78909c"))
        for r, why in enumerate(skipped, start=len(candidates)):
            name, _, rest = str(why).partition(" (")
            cells = ("", name, "", "", "skipped", "", rest.rstrip(")") or str(why))
            for k, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setForeground(grey)
                item.setToolTip(f"skipped: {why}")
                self.setItem(r, k, item)
        self.setToolTip(self.reason)

    def fitted_height(self, max_rows: int = 3) -> int:
        """Pixels that show the header and up to max_rows rows."""
        rows = min(max(self.rowCount(), 1), max_rows)
        return self.horizontalHeader().sizeHint().height() + rows * self.verticalHeader().defaultSectionSize() + 6

    def chosen_row(self) -> int | None:
        """The row of the chosen candidate (marked ●), if any."""
        return next((r for r in range(self.rowCount()) if self.item(r, 0) and self.item(r, 0).text() == "●"), None)


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
        self.result = QLabel("No class model trained yet")
        self.result.setStyleSheet("color: #37474f;")
        self.sources = QLabel("")
        self.sources.setStyleSheet("color: #546e7a; padding-right: 12px;")
        self.sources.setToolTip("Labels a curator confirmed (H) against labels from folder names, file-name rules,"
                                " imports or accepted guesses — `auto` also tries training on the confirmed ones")
        self.candidates_button = QPushButton("Candidates")
        self.candidates_button.setCheckable(True)
        self.candidates_button.setToolTip("What the one-click Train tried, each with its honest estimate")
        self.candidates = CandidatesTable()
        self.candidates.hide()
        for button in (self.train_button, self.cancel_button, self.candidates_button):
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.train_button)
        row.addWidget(self.budget)
        row.addWidget(self.cancel_button)
        row.addWidget(self.progress)
        row.addWidget(self.stage, 1)
        row.addWidget(self.sources)
        row.addWidget(self.result)
        row.addWidget(self.candidates_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 2, 6, 2)
        layout.setSpacing(2)
        layout.addLayout(row)
        layout.addWidget(self.candidates)
        self.train_button.clicked.connect(self.train_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.candidates_button.toggled.connect(self.candidates.setVisible)
        self.show_candidates(None)
        self.set_running(None)
        self.set_enabled_for_project(False)

    def one_click_options(self) -> dict:
        """What the Train button trains: `auto` within the budget shown beside it."""
        return {"method": "auto", "options": {"budget": 60.0 * self.budget.value()}}

    def set_enabled_for_project(self, has_project: bool) -> None:
        """Training needs an open project."""
        self._has_project = has_project
        self.train_button.setEnabled(has_project)

    def set_running(self, job_name: str | None) -> None:
        """A job started (its name) or everything is idle (None)."""
        self._running = job_name is not None
        self.train_button.setEnabled(getattr(self, "_has_project", False))  # a click while busy queues a run
        self.cancel_button.setEnabled(self._running)
        self.progress.setVisible(self._running)
        self.stage.setMinimumWidth(240 if self._running else 0)  # idle: room for the label counts
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

    def show_candidates(self, auto: dict | None, reveal: bool = False) -> None:
        """An auto model's candidates table (params["auto"]); reveal opens it (right after a one-click run)."""
        self.candidates.set_auto(auto)
        self.candidates.setFixedHeight(self.candidates.fitted_height())
        has = bool(auto and (auto.get("candidates") or auto.get("skipped")))
        self.candidates_button.setVisible(has)
        if not has or reveal:
            self.candidates_button.setChecked(has)

    def show_label_sources(self, summary: dict) -> None:
        """How many labels a curator confirmed vs came from elsewhere (queries.summary's source_* counts)."""
        labelled = int(summary.get("labelled", 0) or 0)
        human = int(summary.get("source_human", 0) or 0)
        self.sources.setText(f"labels: {human:,} confirmed · {labelled - human:,} other" if labelled else "")
