"""Functions tests/test_child_training.py runs in a child process (worker/child.py imports them by name there)."""

from __future__ import annotations

import os
import time

from artannot.errors import ModelError


def die_in_training(path: str, options: dict, progress, cancel) -> None:
    """Report a step, then end the way a crash in native code does: no exception, no last message."""
    progress(0, 2, "about to crash")
    time.sleep(0.2)  # the step reaches the window first
    os._exit(int(options.get("code", 3)))


def refuse(path: str, options: dict, progress, cancel) -> None:
    raise ModelError("not enough labelled images: label at least 2 per class")


def buggy(path: str, options: dict, progress, cancel) -> None:
    raise ValueError("a bug")


def count_until_cancelled(n: int, progress, cancel) -> int:
    """Steps every 10 ms until cancelled (each progress call checks); returns n if never cancelled."""
    for k in range(n):
        progress(k, n, "counting")
        time.sleep(0.01)
    return n


def ignore_cancel(progress, cancel) -> None:
    """Stuck in 'native code': never checks cancel again."""
    progress(0, 1, "stuck")
    time.sleep(60)


def pid(progress, cancel) -> int:
    return os.getpid()
