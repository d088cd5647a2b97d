"""One app window per project, any number of other users of it.

Decision (second instance): processes may share a project. SQLite in WAL mode with a busy timeout and
short BEGIN IMMEDIATE writes keeps concurrent processes safe (tests/test_concurrency.py edits labels from
two processes at once and finds every edit), so `artannot train` or `import` may run from a terminal
while the app has the project open. What is refused is a second *app* on the same project: two windows
would each show a stale grid and undo each other's edits from the shared history. The app opens its
project with `Project(path, exclusive=True)`, which takes an OS lock on `<project>.lock`; a second
exclusive opener gets a ProjectError naming the process that holds it. The OS releases the lock when that
process ends, however it ends (kill -9, power cut), so there is never a stale lock to delete by hand; the
file itself stays behind (empty after a clean close, else naming who held it last). Inside one process the lock is shared: reopening
the project the window already shows is not refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from artannot.errors import ProjectError

_LOCK_BYTE = 1 << 20  # Windows locks a byte range; one far past the holder's note keeps the note readable
_held: dict[Path, list] = {}  # lock path -> [file descriptor, users in this process]
_guard = threading.Lock()


def lock_path_for(project: Path) -> Path:
    """`<project>.lock`, beside the project file."""
    return project.with_name(project.name + ".lock")


class ProjectLock:
    """Held while an app window shows the project; release() (or process exit) frees it."""

    def __init__(self, project: str | Path):
        self.path = lock_path_for(Path(project).resolve())
        self._released = False
        with _guard:
            entry = _held.get(self.path)
            if entry is not None:
                entry[1] += 1
                return
            _held[self.path] = [_acquire(self.path), 1]

    def release(self) -> None:
        """Let another app open the project (idempotent)."""
        if self._released:
            return
        self._released = True
        with _guard:
            entry = _held[self.path]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self.path]
                _release(entry[0])


def holder(lock_path: Path) -> dict:
    """Who wrote the lock file last: pid, host, since (empty when unknown)."""
    try:
        with open(lock_path, encoding="utf-8") as fh:
            info = json.loads(fh.read(4096) or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _acquire(lock_path: Path) -> int:
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ProjectError(f"cannot create {lock_path} to mark the project open ({exc.strerror or exc});"
                           " check the folder's permissions") from None
    try:
        _lock(fd)
    except OSError:
        os.close(fd)
        info = holder(lock_path)
        who = f"process {info['pid']} on {info.get('host', '?')}, since {info.get('since', '?')}" \
            if "pid" in info else "another process"
        raise ProjectError(f"{lock_path.name[:-5]} is already open in another ArtAnnot window ({who});"
                           " switch to that window, or close it and try again") from None
    note = {"pid": os.getpid(), "host": socket.gethostname(), "program": "ArtAnnot",
            "since": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())}
    with contextlib.suppress(OSError):  # the note is a courtesy; the lock is what counts
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(note).encode())
    return fd


def _release(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    with contextlib.suppress(OSError):
        _unlock(fd)
    os.close(fd)


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, _LOCK_BYTE, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, _LOCK_BYTE, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(fd: int) -> None:
        # flock, not fcntl/lockf: a POSIX record lock is dropped when *any* descriptor of the file closes
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
