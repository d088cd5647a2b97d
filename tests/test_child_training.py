"""Training from the window runs in a child process the job's thread supervises (worker/child.py): progress,
a stored model, cancel, and a crash of the child that leaves a one-line error and a usable window."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest

from artannot.errors import ArtAnnotError, Cancelled
from artannot.gui.job_runner import TRAIN_TARGET
from artannot.project import Project
from artannot.worker import child as child_module
from artannot.worker.child import close_warm_children, describe_exit, run_in_child


def children() -> list[str]:
    return [p.name for p in multiprocessing.active_children()]


@pytest.mark.slow
def test_window_training_runs_in_a_child_and_stores_a_model(qtbot, window, demo_project):
    assert window.runner.train_target == TRAIN_TARGET
    seen: list[tuple[str, list[str]]] = []
    job = window.start_training(options={"method": "svm"})
    job.progressed.connect(lambda stage, done, total, eta: seen.append((stage, children())))
    with qtbot.waitSignal(window.runner.training_finished, timeout=180_000) as done:
        pass
    result = done.args[0]
    assert seen  # progress reached the window
    # the panel goes back to idle once the job's thread has ended (its `finished` follows `succeeded`)
    qtbot.waitUntil(window.train_panel.progress.isHidden, timeout=10_000)
    with Project(demo_project) as p:
        assert p.active_model_id() == result.model_id
        n = p.conn.execute("SELECT COUNT(*) FROM predictions WHERE model_id = ?", (result.model_id,)).fetchone()[0]
        assert n >= len(p.images())
    assert window._model_id == result.model_id  # the grid shows the new model's guesses
    assert "artannot-training" in children()  # it ran in the child, kept warm for the next training ...
    warm = child_module._WARM["training"]
    assert warm.process.pid != os.getpid() and warm.usable
    if hasattr(os, "getpriority"):  # it yields the CPU to the window: a key press is served first
        assert os.getpriority(os.PRIO_PROCESS, warm.process.pid) >= os.getpriority(os.PRIO_PROCESS, 0) + 1
    window.close()
    qtbot.waitUntil(lambda: "artannot-training" not in children(), timeout=10_000)  # ... until the window closes


def group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_cancelling_window_training_stops_the_child_and_stores_nothing(qtbot, window, demo_project):
    job = window.start_training(options={"method": "svm"})
    pids: set[int] = set()
    job.progressed.connect(lambda *_: pids.update(p.pid for p in multiprocessing.active_children()
                                                  if p.name == "artannot-training"))
    qtbot.waitUntil(lambda: window.train_panel.progress.maximum() > 0 and bool(pids), timeout=120_000)
    with qtbot.waitSignal(window.runner.training_cancelled, timeout=30_000):
        window.cancel_job()
    qtbot.waitUntil(lambda: not window.jobs.busy, timeout=10_000)  # the job ended (and was deleted)
    window.close()  # the child (kept for the next training after a clean cancel) ends with the window
    assert "artannot-training" not in children()
    if hasattr(os, "killpg"):  # nothing the child started (its loader's workers) outlives it
        qtbot.waitUntil(lambda: not any(group_alive(pid) for pid in pids), timeout=10_000)
    with Project(demo_project) as p:
        assert p.active_model_id() is None


def test_a_crashing_child_is_a_one_line_error_and_the_window_stays_usable(qtbot, window, demo_project):
    window.runner.train_target = "tests.child_targets:die_in_training"
    errors: list[str] = []
    window.runner.job_failed.connect(errors.append)
    window.show_error = lambda message: None  # the message box: its text is what job_failed carries
    with qtbot.waitSignal(window.runner.job_failed, timeout=60_000):
        window.start_training(options={"method": "svm"})
    assert len(errors) == 1 and "\n" not in errors[0]
    assert errors[0] == f"Training stopped: its worker process {describe_exit(3)} (what it had committed stays;" \
                        " nothing half-written)"
    qtbot.waitUntil(lambda: not window.jobs.busy, timeout=10_000)
    assert window.isVisible() and window.train_panel.train_button.isEnabled()
    first = window.thumbnails.id_at(0)
    window.grid.select_rows([0])
    window._on_hotkey("2")  # labelling goes on
    with Project(demo_project) as p:
        assert p.conn.execute("SELECT source FROM labels WHERE image_id = ? AND active = 1",
                              (first,)).fetchone()[0] == "human"


def test_errors_come_back_as_one_line_and_results_as_values():
    with pytest.raises(ArtAnnotError) as refused:
        run_in_child("tests.child_targets:refuse", ("p", {}), name="training")
    assert str(refused.value) == "not enough labelled images: label at least 2 per class"
    with pytest.raises(ArtAnnotError) as bug:
        run_in_child("tests.child_targets:buggy", ("p", {}), name="training")
    assert str(bug.value) == "training failed: ValueError: a bug"
    steps: list[tuple[int, int, str]] = []
    assert run_in_child("tests.child_targets:count_until_cancelled", (5,), progress=lambda *a: steps.append(a)) == 5
    assert steps[0] == (0, 5, "counting") and steps[-1][2] == "counting"


def test_cancel_reaches_the_child_and_a_stuck_child_is_terminated():
    cancel = threading.Event()

    def progress(done, total, stage):
        if done >= 3:
            cancel.set()

    with pytest.raises(Cancelled):
        run_in_child("tests.child_targets:count_until_cancelled", (100_000,), progress=progress, cancel=cancel)
    stuck = threading.Event()
    stuck.set()
    with pytest.raises(Cancelled):  # never checks again: terminated after the grace period
        run_in_child("tests.child_targets:ignore_cancel", progress=lambda *a: None, cancel=stuck, grace_s=0.5)
    assert not [n for n in children() if n.startswith("artannot-")]


def test_a_kept_child_serves_the_next_run_until_it_is_closed_or_crashes():
    first = run_in_child("tests.child_targets:pid", name="warm-test", keep=True)
    assert run_in_child("tests.child_targets:pid", name="warm-test", keep=True) == first  # warm: same process
    with pytest.raises(ArtAnnotError, match="exited with code 3"):
        run_in_child("tests.child_targets:die_in_training", ("p", {}), name="warm-test", keep=True)
    assert run_in_child("tests.child_targets:pid", name="warm-test", keep=True) != first  # a fresh one
    close_warm_children()
    assert "artannot-warm-test" not in children()
