"""Atomic file writes: a crash leaves the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from artannot.errors import DiskFullError, StorageError


def file_mode() -> int:
    """The mode a plain open() would give a new file: 0o666 less the umask (mkstemp alone gives 0o600)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:  # read without changing it (thread-safe)
            umask = next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync it, then os.replace over the target."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        with contextlib.suppress(OSError, AttributeError):  # exports and models: readable as the umask says
            os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc, "; the previous file is intact") from None
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_error(path: Path, exc: OSError, tail: str = "") -> StorageError:
    """The one-line StorageError for a failed write; a full disk (ENOSPC, EDQUOT) says so."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return DiskFullError(f"cannot write {path}: the disk holding it is full{tail} (free some space and try"
                             " again)")
    return StorageError(f"cannot write {path}: {exc.strerror or exc}{tail}")

