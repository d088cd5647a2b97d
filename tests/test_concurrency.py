"""Several users of one project at once: processes and threads share it safely; a second app is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from artannot.errors import ProjectError
from artannot.project import Project
from artannot.store import db, repo
from artannot.store.lock import lock_path_for
from tests.shapes import SHAPES, make_shape_collection

REPO = Path(__file__).resolve().parents[1]

# A curator in another process: waits for the go file, then makes `n` one-image edits on its own images.
EDITOR = """
import json, os, sys, time
from artannot.project import Project
path, first, n, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with Project(path) as p:
    ids = [r[0] for r in p.conn.execute("SELECT id FROM images ORDER BY id")][first:first + 50]
    classes = [p.class_id("a"), p.class_id("b")]
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.005)
    errors, done = [], 0
    for j in range(n):
        try:
            done += p.set_label([ids[j % 50]], classes[(j // 50) % 2]) is not None
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
print(json.dumps({"done": done, "errors": errors[:5]}), flush=True)
"""

# The app: holds the project open with the window's exclusive lock until killed.
APP = """
import sys, time
from artannot.project import Project
p = Project(sys.argv[1], exclusive=True)
print("ready", flush=True)
time.sleep(120)
"""


def _spawn(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _fake_images(path: Path, n: int) -> None:
    with Project.create(path) as p:
        src = repo.ensure_source(p.conn, path.parent)
        with db.write(p.conn):
            p.conn.executemany(
                "INSERT INTO images(source_id, path, sha256, width, height, added_at) VALUES (?, ?, ?, 8, 8, ?)",
                [(src, f"img{k}.png", f"{k:064x}", db.now()) for k in range(n)])


def test_two_processes_editing_at_once_lose_no_edit(tmp_path):
    path = tmp_path / "p.artannot"
    _fake_images(path, 100)
    n = 400
    go = tmp_path / "go"
    editors = [_spawn(EDITOR, str(path), str(first), str(n), str(go)) for first in (0, 50)]
    try:
        for proc in editors:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        go.touch()
        results = [json.loads(proc.communicate(timeout=120)[0].strip().splitlines()[-1]) for proc in editors]
    finally:
        for proc in editors:
            proc.kill()
            proc.wait()
    assert [r["errors"] for r in results] == [[], []]
    assert [r["done"] for r in results] == [n, n]
    with Project(path) as p:
        assert p.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert p.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2 * n
        assert p.conn.execute("SELECT COUNT(*) FROM labels WHERE source = 'human'").fetchone()[0] == 2 * n
        final = {r.id: r.class_id for r in p.images()}
        expected = p.class_id("a") if ((n - 1) // 50) % 2 == 0 else p.class_id("b")
        assert set(final.values()) == {expected}  # each process's last round is what the images show


def test_second_app_is_refused_the_cli_is_not_and_a_killed_app_leaves_no_lock(tmp_path):
    path = tmp_path / "p.artannot"
    _fake_images(path, 3)
    make_shape_collection(tmp_path / "more", per_class=2)
    app = _spawn(APP, str(path))
    try:
        assert app.stdout.readline().strip() == "ready", app.stderr.read()
        with pytest.raises(ProjectError) as exc:
            Project(path, exclusive=True)
        msg = str(exc.value)
        assert "already open in another ArtAnnot window" in msg and f"process {app.pid}" in msg, msg
        with Project(path) as p:  # a script or the CLI beside the app: allowed
            p.set_label([1], p.class_id("a"))
        cli = subprocess.run([sys.executable, "-m", "artannot", "import", str(path), str(tmp_path / "more")],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0 and "6 added" in cli.stdout, cli.stderr
        os.kill(app.pid, signal.SIGKILL)
        app.wait(timeout=30)
    finally:
        app.kill()
        app.wait()
    with Project(path, exclusive=True) as first:  # the OS dropped the dead app's lock: nothing stale
        with Project(path, exclusive=True):  # reopening in the same app is not a second app
            pass
        assert first.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 9
        assert lock_path_for(path).exists()
    again = _spawn(APP, str(path))  # closed cleanly: another app may open it at once
    try:
        assert again.stdout.readline().strip() == "ready", again.stderr.read()
    finally:
        again.kill()
        again.wait()


def test_labelling_while_training_in_another_thread_never_hits_a_lock(tmp_path):
    make_shape_collection(tmp_path / "images", per_class=10)
    path = tmp_path / "p.artannot"
    with Project.create(path) as p:
        p.import_folder(tmp_path / "images", labels_from="folder", split="auto")
    failures: list[BaseException] = []
    result = {}

    def train() -> None:
        try:
            with Project(path) as p:  # its own connection, as the app's training worker has
                result["model"] = p.train(method="svm", device="cpu").model_id
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    trainer = threading.Thread(target=train)
    latencies, edits = [], 0
    with Project(path) as p:
        ids = [r.id for r in p.images()][:9]
        classes = [p.class_id(s) for s in SHAPES]
        trainer.start()
        while trainer.is_alive() or edits < 200:
            t0 = time.perf_counter()
            try:
                if p.set_label([ids[edits % 9]], classes[(edits // 9) % 3]) is not None:
                    edits += 1
            except Exception as exc:
                failures.append(exc)
                break
            latencies.append(time.perf_counter() - t0)
        trainer.join()
        assert failures == []
        assert p.conn.execute("SELECT COUNT(*) FROM labels WHERE source = 'human'").fetchone()[0] == edits
        n_images = len(p.images())
        assert p.conn.execute("SELECT COUNT(DISTINCT image_id) FROM predictions WHERE model_id = ?",
                              (result["model"],)).fetchone()[0] == n_images
    latencies.sort()  # how fast is bench/edit_latency.py's question; here: every edit landed, none failed
    print(f"label writes while training: median {1000 * latencies[len(latencies) // 2]:.1f} ms")
