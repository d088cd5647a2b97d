"""Background jobs: run a plain function(progress, cancel) in a QThread and report by signals."""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from artannot.errors import ArtAnnotError, Cancelled

JobFunction = Callable[[Callable[[int, int, str], None], threading.Event], Any]


class Job(QThread):
    """One long task; never touches widgets, only emits signals the GUI thread receives."""

    progressed = Signal(str, int, int, float)  # stage, done, total, eta seconds (-1 unknown)
    succeeded = Signal(object)
    failed = Signal(str)
    was_cancelled = Signal()

    def __init__(self, name: str, fn: JobFunction, parent: QObject | None = None):
        super().__init__(parent)
        self.name = name
        self.fn = fn
        self.cancel_event = threading.Event()
        self._stage: str | None = None
        self._stage_start = 0.0
        self._last_emit = 0.0

    def cancel(self) -> None:
        """Ask the job to stop at its next check (within a batch)."""
        self.cancel_event.set()

    def _progress(self, done: int, total: int, stage: str) -> None:
        now = time.perf_counter()
        if stage != self._stage:
            self._stage, self._stage_start = stage, now
        elif now - self._last_emit < 0.05 and done < total:
            return  # keep the GUI's event queue light
        self._last_emit = now
        elapsed = now - self._stage_start
        eta = elapsed * (total - done) / done if done > 0 and elapsed > 0.2 else -1.0
        self.progressed.emit(stage, done, total, eta)
        if self.cancel_event.is_set():
            raise Cancelled(f"{self.name} cancelled")

    def run(self) -> None:
        try:
            result = self.fn(self._progress, self.cancel_event)
        except Cancelled:
            self.was_cancelled.emit()
        except ArtAnnotError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # a bug must reach the user, not kill the thread silently
            traceback.print_exc()
            self.failed.emit(f"{self.name} failed: {type(exc).__name__}: {exc}")
        else:
            if self.cancel_event.is_set():
                self.was_cancelled.emit()
            else:
                self.succeeded.emit(result)


class JobQueue(QObject):
    """Runs jobs one at a time (training and analysis share the CPU/GPU); the rest wait their turn."""

    started = Signal(object)
    idle = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._pending: deque[Job] = deque()
        self.current: Job | None = None

    def submit(self, job: Job) -> Job:
        """Queue a job; it starts now if nothing else is running."""
        job.setParent(self)
        job.finished.connect(self._next)
        self._pending.append(job)
        if self.current is None:
            self._next()
        return job

    def _next(self) -> None:
        if self.current is not None and self.current.isRunning():
            return
        if self.current is not None:
            self.current.deleteLater()
        self.current = self._pending.popleft() if self._pending else None
        if self.current is None:
            self.idle.emit()
            return
        self.started.emit(self.current)
        self.current.start()

    @property
    def busy(self) -> bool:
        """True while a job runs or waits."""
        return self.current is not None or bool(self._pending)

    def pending(self) -> int:
        """Jobs waiting behind the running one."""
        return len(self._pending)

    def cancel_all(self) -> None:
        """Drop waiting jobs and ask the running one to stop."""
        self._pending.clear()
        if self.current is not None:
            self.current.cancel()

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Cancel everything and wait for the running job's thread to end (on app close)."""
        self.cancel_all()
        job = self.current
        return True if job is None else job.wait(timeout_ms)
