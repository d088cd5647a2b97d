"""Run a long function in a child process that the calling thread supervises: progress and the result come back
over a pipe, cancel is a flag the child polls, a crash in the child is a one-line error.

Training in the window's own process competes with the GUI thread for the interpreter (the GIL) and for the
SQLite file, so a label written during training waited up to 0.4 s; in a child process it does not, and a
crash in native code (a driver, a BLAS, an out-of-memory kill) ends the child, never the window. The child
opens the project itself and writes through the store's own short transactions, so whatever happens to it
the project stays consistent: a transaction it had not committed is simply not there.

The function is named "package.module:function" (the child imports it: 'spawn' starts a fresh interpreter,
no state of the parent is inherited) and is called as fn(*args, progress=..., cancel=...).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from artannot.errors import ArtAnnotError, Cancelled

Progress = Callable[[int, int, str], None]
GRACE_S = 2.0  # a cancelled child has this long to stop at its next check before it is terminated
PROGRESS_EVERY_S = 0.05  # the child sends at most this often (plus every stage change and the last step)
# The child runs at a lower CPU priority (and its DataLoader workers with it): on a machine with few cores the
# scheduler then gives the window's thread the CPU first when a curator presses a key, and training takes
# what is left. 0 keeps the parent's priority.
CHILD_NICE = int(os.environ.get("ARTANNOT_TRAIN_NICE", "10"))


def _resolve(target: str) -> Callable:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _child_main(conn, requests, cancel) -> None:
    """The child's side: for each (target, args, kwargs) request, run it, send ('progress', done, total,
    stage)* then one final message; None (or the parent gone) ends the process."""
    if hasattr(os, "setsid"):  # a process group of its own: ending it ends its workers too (a DataLoader's)
        os.setsid()
    if CHILD_NICE > 0 and hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(CHILD_NICE)
    while True:
        try:
            request = requests.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        _run_one(conn, cancel, *request)


def _run_one(conn, cancel, target: str, args: Sequence, kwargs: dict) -> None:
    last = [0.0, None]

    def progress(done: int, total: int, stage: str) -> None:
        now = time.perf_counter()
        if stage != last[1] or done >= total or now - last[0] >= PROGRESS_EVERY_S:
            last[0], last[1] = now, stage
            conn.send(("progress", int(done), int(total), str(stage)))
        if cancel.is_set():
            raise Cancelled("cancelled")

    try:
        result = _resolve(target)(*args, **kwargs, progress=progress, cancel=cancel)
    except Cancelled:
        message = ("cancelled", None)
    except ArtAnnotError as exc:
        message = ("error", str(exc))
    except BaseException as exc:  # a bug: its traceback to the terminal, one line to the user
        traceback.print_exc()
        message = ("bug", f"{type(exc).__name__}: {exc}")
    else:
        message = ("cancelled", None) if cancel.is_set() else ("result", result)
    try:
        conn.send(message)
    except Exception as exc:  # a result that cannot be pickled is a bug, reported as such
        conn.send(("bug", f"its result could not be sent back ({type(exc).__name__}: {exc})"))


def describe_exit(code: int | None) -> str:
    """'was killed by signal SIGKILL' / 'exited with code 3'."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"was killed by signal {name}"
    return f"exited with code {code}"


class ChildRun:
    """A child process that runs target(*args, **kwargs, progress, cancel) requests one at a time; `wait`
    supervises the current one. Kept (warm: its imports and caches loaded) it serves the next request too."""

    def __init__(self, name: str = "job"):
        ctx = multiprocessing.get_context("spawn")
        self.name = name
        self._conn, child_conn = ctx.Pipe(duplex=False)
        child_requests, self._requests = ctx.Pipe(duplex=False)
        self._cancel = ctx.Event()
        self.process = ctx.Process(target=_child_main, args=(child_conn, child_requests, self._cancel),
                                   name=f"artannot-{name}")
        # Not a daemon: it may start its own workers (a DataLoader's). Should this process die without
        # stopping it, its next progress report finds the pipe broken and it ends there.
        self.process.start()
        child_conn.close()  # the child holds its ends: EOF here once it is gone
        child_requests.close()
        self.usable = True  # False once it crashed, was terminated or closed

    def submit(self, target: str, args: Sequence = (), kwargs: dict | None = None) -> None:
        """Start a request (the previous one has ended)."""
        self._cancel.clear()
        self._requests.send((target, tuple(args), dict(kwargs or {})))

    def close(self, timeout_s: float = 5.0) -> None:
        """Let the child end (no request is running), or end it."""
        self.usable = False
        with contextlib.suppress(OSError):
            self._requests.send(None)
        self.process.join(timeout_s)
        self.terminate()
        self._conn.close()
        self._requests.close()

    def cancel(self) -> None:
        """Ask the child to stop at its next progress check."""
        self._cancel.set()

    def _signal_group(self, sig: int) -> None:
        """Send sig to the child's process group (itself and the workers it started), where there is one."""
        if self.process.pid is not None and hasattr(os, "killpg"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)

    def terminate(self, grace_s: float = 2.0) -> None:
        """SIGTERM, then SIGKILL if it is still there after grace_s; then nothing of its group is left."""
        self.usable = False
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(grace_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(grace_s)
        self._signal_group(getattr(signal, "SIGKILL", signal.SIGTERM))  # workers it left behind

    def wait(self, progress: Progress | None = None, cancel: threading.Event | None = None,
             grace_s: float = GRACE_S) -> Any:
        """Relay the child's progress until it ends; its result, or its error raised here (one line).

        cancel (set by this process) is passed on to the child; a child still running grace_s later is
        terminated. A progress callback that raises Cancelled (the Job's does once cancel is set) counts as a
        cancel too. Raises Cancelled or ArtAnnotError, nothing else.
        """
        cancelled_at: float | None = None
        final = None
        try:
            while final is None:
                if cancelled_at is None and cancel is not None and cancel.is_set():
                    cancelled_at = time.perf_counter()
                    self.cancel()
                if cancelled_at is not None and time.perf_counter() - cancelled_at > grace_s:
                    self.terminate()  # stuck in native code: cancel is immediate all the same
                    final = ("cancelled", None)
                    break
                try:
                    if not self._conn.poll(0.05):
                        continue
                    message = self._conn.recv()
                except (EOFError, OSError):  # gone without a last word: it crashed (or was terminated)
                    self.process.join(5.0)
                    final = ("cancelled", None) if cancelled_at is not None else ("crash", self.process.exitcode)
                    break
                if message[0] != "progress":
                    final = message
                elif progress is not None and cancelled_at is None:
                    try:
                        progress(message[1], message[2], message[3])
                    except Cancelled:
                        cancelled_at = time.perf_counter()
                        self.cancel()
        finally:
            if final is None:  # interrupted here (KeyboardInterrupt): leave no child behind
                self.terminate()
        if final[0] == "crash" or not self.process.is_alive():
            self.usable = False
            self.terminate()  # a no-op once it has exited, but its workers go too
        kind, value = final
        if kind == "result":
            return value
        if kind == "cancelled":
            raise Cancelled(f"{self.name} cancelled")
        if kind == "error":  # an ArtAnnotError in the child: its message as it is
            raise ArtAnnotError(value)
        if kind == "bug":
            raise ArtAnnotError(f"{self.name} failed: {value}")
        raise ArtAnnotError(f"{self.name.capitalize()} stopped: its worker process {describe_exit(value)}"
                            " (what it had committed stays; nothing half-written)")


_WARM: dict[str, ChildRun] = {}  # name -> the child kept for the next request of that name
_WARM_LOCK = threading.Lock()


def run_in_child(target: str, args: Sequence = (), kwargs: dict | None = None, *,
                 progress: Progress | None = None, cancel: threading.Event | None = None,
                 name: str = "job", grace_s: float = GRACE_S, keep: bool = False) -> Any:
    """target(*args, **kwargs, progress=, cancel=) in a child process, supervised from this thread.

    keep: run it in the child kept under `name` (started now if there is none or it crashed) and keep
    that child for the next run: the second training does not import torch and load the model again.
    """
    with _WARM_LOCK:
        child = _WARM.pop(name, None) if keep else None
    if child is None or not child.usable or not child.process.is_alive():
        if child is not None:
            child.close(0.5)
        child = ChildRun(name)
    try:
        child.submit(target, args, kwargs)
        return child.wait(progress, cancel, grace_s)
    finally:
        if keep and child.usable and child.process.is_alive():
            with _WARM_LOCK:
                old = _WARM.pop(name, None)
                _WARM[name] = child
            if old is not None:
                old.close()
        else:
            child.close()


def close_warm_children(timeout_s: float = 5.0) -> None:
    """End the children kept for later runs (the app is closing)."""
    with _WARM_LOCK:
        children = list(_WARM.values())
        _WARM.clear()
    for child in children:
        child.close(timeout_s)


atexit.register(close_warm_children)


# ---- targets ------------------------------------------------------------------------------------------------
def train_project(path: str, options: dict, progress: Progress, cancel) -> Any:
    """Project.train in the child: the project opened there, its own connection and transactions."""
    from artannot.project import Project

    with Project(path) as p:
        return p.train(**options, progress=progress, cancel=cancel)

