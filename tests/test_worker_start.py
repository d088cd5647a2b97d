"""DataLoader workers started from the window's threads never inherit a lock another thread holds.

A forked child gets a copy of every lock in the state it had at the fork, but none of the threads that would
release it. The window forks a feature job's workers while its GUI, thumbnail and checkpoint threads run, so
a worker could wait forever, and the job, Cancel and the window's close with it.
"""

from __future__ import annotations

import threading

import torch
from torch.utils.data import DataLoader, Dataset

from artannot.ml.device import loader_workers, worker_start_method

LOCK = threading.Lock()  # stands for any lock a library takes while decoding (a log handler, an allocator, I/O)


class NeedsTheLock(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        with LOCK:
            return torch.tensor([i])


def test_workers_started_while_another_thread_holds_a_lock_still_deliver():
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with LOCK:
            held.set()
            release.wait(120)

    h = threading.Thread(target=holder)
    h.start()
    assert held.wait(10)
    got: list[int] = []
    errors: list[BaseException] = []

    def job() -> None:  # a feature job on a worker thread of the window
        try:
            loader = DataLoader(NeedsTheLock(), batch_size=4, **loader_workers(2))
            got.extend(int(x) for batch in loader for x in batch)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    try:
        t = threading.Thread(target=job, daemon=True)
        t.start()
        t.join(90)
        assert not t.is_alive(), f"workers started by {worker_start_method()!r} waited on a lock held at the fork"
        assert not errors, errors
        assert sorted(got) == list(range(8))
    finally:
        release.set()
        h.join()


def test_no_workers_means_no_start_method():
    assert loader_workers(0) == {"num_workers": 0}
    assert loader_workers(2)["timeout"] > 0
