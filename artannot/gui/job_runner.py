"""Background jobs of the main window: training, import and export, one at a time, with progress and cancel.

Each job runs in a worker thread with a Project of its own (a SQLite connection serves one thread) and
reports by signal; training runs one step further away, in a child process that thread supervises
(worker/child.py). The window re-reads what changed when a job succeeds. Closing the window cancels the
running job and waits for it; a training child that does not stop within its grace period is terminated
(see MainWindow.closeEvent).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, Signal

from artannot.gui.train_panel import describe_metrics
from artannot.project import Project
from artannot.worker.child import close_warm_children, run_in_child
from artannot.worker.jobs import Job, JobQueue

if TYPE_CHECKING:
    from artannot.gui.main_window import MainWindow


TRAIN_TARGET = "artannot.worker.child:train_project"  # what a training child process runs


def _train(path: Path, options: dict, progress, cancel, target: str | None = TRAIN_TARGET):
    """Train in a child process supervised by the job's thread (target None: in this process)."""
    if target is None:
        with Project(path) as p:
            return p.train(**options, progress=progress, cancel=cancel)
    return run_in_child(target, (str(path), options), name="training", progress=progress, cancel=cancel,
                        keep=True)  # the child stays warm for the next training (torch, the model loaded)


def _import(path: Path, src: str, progress, cancel, options: dict | None = None):
    """Project.import_folder with the Import dialog's options; typed classes become a vocabulary file."""
    import tempfile

    options = dict(options or {"labels_from": "folder", "split": "auto"})
    text = options.pop("vocabulary_text", "")
    with Project(path) as p, tempfile.TemporaryDirectory() as tmp:
        if text:
            vocab = Path(tmp) / "classes.txt"
            typed = text if not options.get("vocabulary") else \
                Path(options["vocabulary"]).expanduser().read_text(encoding="utf-8") + "\n" + text
            vocab.write_text(typed + "\n", encoding="utf-8")
            options["vocabulary"] = str(vocab)
        return p.import_folder(src, **options, progress=progress, cancel=cancel)


def _export_model(path: Path, out: str, model_id, _progress, _cancel):
    with Project(path) as p:
        return p.export_onnx(out, model_id=model_id)


def _export(path: Path, out: str, fmt: str, progress, _cancel):
    with Project(path) as p:
        return p.export(out, fmt, progress=progress)


class JobRunner(QObject):
    """Submits the window's jobs to one queue and turns their results into window updates and signals."""

    training_finished = Signal(object)  # TrainResult, once the grid and viewer show the new model
    training_cancelled = Signal()
    import_finished = Signal(object)  # ImportReport
    export_finished = Signal(int)  # rows written
    model_exported = Signal(object)  # (model.onnx path, model.json path)
    job_failed = Signal(str)

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window
        self.queue = JobQueue(self)
        self.current: Job | None = None
        self._export_target = ""
        # Training runs in a child process (worker/child.py): labelling keeps its latency, a crash in native
        # code ends the child, not the window. None trains in the job's thread instead.
        self.train_target: str | None = TRAIN_TARGET
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
        if self.busy:  # queued, not refused: it starts when the running job (and those before it) end
            running = self.current.name if self.current is not None else "the running job"
            w.statusBar().showMessage(f"{name.capitalize()} queued: it starts when {running} finishes"
                                      f" ({self.queue.pending() + 1} waiting)", 6000)
        job = Job(name, fn)
        job.progressed.connect(w.train_panel.show_progress)
        job.succeeded.connect(on_success)
        job.failed.connect(self._on_failed)
        job.was_cancelled.connect(on_cancel or self._on_cancelled)
        self.queue.submit(job)
        return job

    def run_job(self, name: str, fn, on_success) -> Job | None:
        """A component's job (fn(progress, cancel)) with the bottom bar's progress and Cancel; on_success gets
        its result. Queued behind a running job."""
        return self._submit(name, fn, on_success)

    def start_training(self, options: dict | None = None) -> Job | None:
        """Train in the background (options: Project.train's keyword arguments; None: the one-click `auto`
        within the panel's budget); the grid shows the result."""
        w = self.window
        if options is None:
            options = w.train_panel.one_click_options()
        path = w.project.path if w.project else None
        return self._submit("training", partial(_train, path, dict(options or {}), target=self.train_target),
                            self._on_trained, self._on_train_cancelled)

    def import_folder(self, src: str | Path, options: dict | None = None) -> Job | None:
        """Import a folder in the background (options: the Import dialog's; None: labels from sub-folders)."""
        path = self.window.project.path if self.window.project else None
        self._import_source = str(src)
        return self._submit("import", partial(_import, path, str(src), options=options), self._on_imported)

    def export(self, out: str | Path, fmt: str) -> Job | None:
        """Write the curated set (or predictions) in the background."""
        path = self.window.project.path if self.window.project else None
        self._export_target = str(out)
        return self._submit("export", partial(_export, path, str(out), fmt), self._on_exported)

    def export_model(self, out: str | Path, model_id: int | None = None) -> Job | None:
        """Write a model (the newest by default) as ONNX + sidecar in the background."""
        path = self.window.project.path if self.window.project else None
        return self._submit("model export", partial(_export_model, path, str(out), model_id), self._on_model_exported)

    def cancel(self) -> None:
        """Ask the running job to stop."""
        if self.busy:
            self.window.train_panel.show_cancelling()
            self.queue.cancel_all()

    def shutdown(self, timeout_ms: int) -> None:
        """Cancel everything and wait (closing the window)."""
        self.window.train_panel.show_cancelling()
        self.queue.shutdown(timeout_ms)

    def release(self) -> None:
        """End the training child kept warm between trainings (the window closes, nothing runs)."""
        if not self.busy:
            close_warm_children()

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
            if getattr(w, "show_import_reports", True):
                from artannot.gui.import_dialog import ImportReportDialog

                w.import_report = ImportReportDialog(report, getattr(self, "_import_source", ""), w)
                w.import_report.show()
        self.import_finished.emit(report)

    def _on_exported(self, n: int) -> None:
        self.window.statusBar().showMessage(f"Exported {n:,} rows to {self._export_target}", 10000)
        w = self.window
        if getattr(w, "show_import_reports", True):
            from PySide6.QtWidgets import QMessageBox

            box = QMessageBox(QMessageBox.Icon.Information, "Export finished",
                              f"Exported {n:,} image{'s' if n != 1 else ''} to {self._export_target}",
                              QMessageBox.StandardButton.Ok, w)
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.setAttribute(Qt.WidgetAttribute.WA_ShowWithoutActivating)
            box.show()
            w.export_summary = box
        self.export_finished.emit(n)

    def _on_model_exported(self, paths) -> None:
        self.window.statusBar().showMessage(f"Exported the model to {paths[0]} (sidecar {Path(paths[1]).name})", 10000)
        self.model_exported.emit(paths)

    def _on_cancelled(self) -> None:
        self.window.statusBar().showMessage("Cancelled", 5000)

    def _on_failed(self, message: str) -> None:
        self.window.show_error(message)
        self.job_failed.emit(message)
