"""The window's label commits never checkpoint the write-ahead log themselves: a thread of its own does."""

from __future__ import annotations

import time

from artannot.project import Project
from artannot.store.db import Checkpointer
from tests.shapes import make_shape_collection


def test_the_windows_project_checkpoints_in_its_own_thread_and_the_log_stays_bounded(tmp_path):
    make_shape_collection(tmp_path / "art", per_class=4)
    path = tmp_path / "p.artannot"
    with Project.create(path) as p:
        p.import_folder(tmp_path / "art", thumbnails=False)
        assert p.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] > 0  # a CLI/script keeps SQLite's default
    with Project(path, exclusive=True) as p:
        assert p.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # commits only append
        p._checkpointer.close()
        checkpointer = p._checkpointer = Checkpointer(p.conn, every_s=0.05, pages=8)
        ids = [r.id for r in p.images()]
        classes = [c.id for c in p.classes()]
        for j in range(200):
            p.set_label([ids[j % len(ids)]], classes[j % len(classes)])
        deadline = time.monotonic() + 20
        while checkpointer.done == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checkpointer.done > 0
        busy, log, copied = p.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and copied == log  # nothing left behind in the log
        labels = {r.id: r.class_id for r in p.images()}
    with Project(path) as p:  # every edit is there after the window closed
        assert p.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert {r.id: r.class_id for r in p.images()} == labels
