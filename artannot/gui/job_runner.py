"""Background jobs of the main window: training, import and export, one at a time, with progress and cancel.

Each job runs in a worker thread with a Project of its own (a SQLite connection serves one thread) and
reports by signal; the window re-reads what changed when a job succeeds. Closing the window cancels the
running job and waits for it (see MainWindow.closeEvent).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from artannot.gui.train_panel import describe_metrics
from artannot.project import Project
from artannot.worker.jobs import Job, JobQueue

if TYPE_CHECKING:
    from artannot.gui.main_window import MainWindow


def _train(path: Path, options: dict, progress, cancel):
    with Project(path) as p:
        return p.train(**options, progress=progress, cancel=cancel)


def _import(path: Path, src: str, progress, cancel):
    with Project(path) as p:
        return p.import_folder(src, labels_from="folder", split="auto", progress=progress, cancel=cancel)


def _export(path: Path, out: str, fmt: str, progress, _cancel):
    with Project(path) as p:
        return p.export(out, fmt, progress=progress)


class JobRunner(QObject):
    """Submits the window's jobs to one queue and turns their results into window updates and signals."""

    training_finished = Signal(object)  # TrainResult, once the grid and viewer show the new model
    training_cancelled = Signal()
    import_finished = Signal(object)  # ImportReport
    export_finished = Signal(int)  # rows written
    job_failed = Signal(str)

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window
        self.queue = JobQueue(self)
        self.current: Job | None = None
        self._export_target = ""
        self.queue.started.connect(self._on_started)
        self.queue.idle.connect(self._on_idle)

    @property
    def busy(self) -> bool:
        return self.queue.busy

    def _submit(self, name: str, fn, on_success, on_cancel=None) -> Job | None:
        w = self.window
        if w.project is None:
            w.show_error("Open or create a project first (File menu).")
            return None
        job = Job(name, fn)
        job.progressed.connect(w.train_panel.show_progress)
        job.succeeded.connect(on_success)
        job.failed.connect(self._on_failed)
        job.was_cancelled.connect(on_cancel or self._on_cancelled)
        self.queue.submit(job)
        return job

    def start_training(self, options: dict | None = None) -> Job | None:
        """Train in the background (options: Project.train's keyword arguments; None: the one-click `auto`
        within the panel's budget); the grid shows the result."""
        w = self.window
        if self.busy:
            w.statusBar().showMessage("A job is already running", 4000)
            return None
        if options is None:
            options = w.train_panel.one_click_options()
        path = w.project.path if w.project else None
        return self._submit("training", partial(_train, path, dict(options or {})), self._on_trained,
                            self._on_train_cancelled)

    def import_folder(self, src: str | Path) -> Job | None:
        """Import a folder in the background, labels from sub-folder names."""
        path = self.window.project.path if self.window.project else None
        return self._submit("import", partial(_import, path, str(src)), self._on_imported)

    def export(self, out: str | Path, fmt: str) -> Job | None:
        """Write the curated set (or predictions) in the background."""
        path = self.window.project.path if self.window.project else None
        self._export_target = str(out)
        return self._submit("export", partial(_export, path, str(out), fmt), self._on_exported)

    def cancel(self) -> None:
        """Ask the running job to stop."""
        if self.busy:
            self.window.train_panel.show_cancelling()
            self.queue.cancel_all()

    def shutdown(self, timeout_ms: int) -> None:
        """Cancel everything and wait (closing the window)."""
        self.window.train_panel.show_cancelling()
        self.queue.shutdown(timeout_ms)

    # ---- results ------------------------------------------------------------------------------------
    def _on_started(self, job: Job) -> None:
        self.current = job
        self.window.train_panel.set_running(job.name)
        self.window.update_actions()

    def _on_idle(self) -> None:
        self.current = None
        self.window.train_panel.set_running(None)
        self.window.update_actions()

    def _on_trained(self, result) -> None:
        w = self.window
        if w.project is not None:
            w.reload()
            w.show_model_summary()
            w.statusBar().showMessage(f"Trained in {result.seconds:.0f} s — "
                                      + describe_metrics(result.model_id, result.metrics), 8000)
        self.training_finished.emit(result)

    def _on_train_cancelled(self) -> None:
        self.window.statusBar().showMessage("Training cancelled; no model was stored", 5000)
        self.training_cancelled.emit()

    def _on_imported(self, report) -> None:
        w = self.window
        if w.project is not None:
            w.reload()
            w.statusBar().showMessage(f"Import: {report.summary()}", 15000)
        self.import_finished.emit(report)

    def _on_exported(self, n: int) -> None:
        self.window.statusBar().showMessage(f"Exported {n:,} rows to {self._export_target}", 10000)
        self.export_finished.emit(n)

    def _on_cancelled(self) -> None:
        self.window.statusBar().showMessage("Cancelled", 5000)

    def _on_failed(self, message: str) -> None:
        self.window.show_error(message)
        self.job_failed.emit(message)
