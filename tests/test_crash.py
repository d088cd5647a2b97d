"""kill -9 of the real CLI in the middle of an import and of a training: nothing committed is lost.

The CLI runs as `python -c WRAPPER ...`: the wrapper slows or pauses one library call so the kill lands at a
known point, then calls the real `artannot.cli.main`; the product code has no test hooks.
"""

from __future__ import annotations

import hashlib
import os
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from artannot.data.importer import BATCH
from artannot.ml.classify.classifiers import SVMClassifier
from artannot.project import Project
from artannot.store import repo, staged
from artannot.store.model_files import resolve_model_file
from tests.shapes import make_shape_collection

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("red", "green", "blue")
PER_CLASS = 300

# The import CLI, 4 ms slower per file so that a 900-file import takes seconds instead of one.
SLOW_IMPORT = """
import sys, time
import artannot.data.importer as importer
from artannot.cli import main
real = importer.probe_image
def slow(path):
    time.sleep(0.004)
    return real(path)
importer.probe_image = slow
sys.exit(main(sys.argv[1:]))
"""

# The train CLI, paused at one point: 'checkpoint' half-way through writing the model file,
# 'commit' after the first chunk of the new model's predictions went in (store/staged.py: the model is pending).
PAUSED_TRAIN = """
import os, sys, time
import artannot.store.staged as staged
from artannot.cli import main
def pause():
    print("PAUSED", flush=True)
    time.sleep(300)
if sys.argv[1] == "checkpoint":
    def half_written(fd):
        os.ftruncate(fd, os.fstat(fd).st_size // 2)
        pause()
    os.fsync = half_written
else:
    real = staged.add_rows
    def write_then_pause(*args, **kwargs):
        real(*args, **kwargs)
        pause()
    staged.add_rows = write_then_pause
sys.exit(main(sys.argv[2:]))
"""


def _cli(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 240) -> None:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sel.select(timeout=1.0):
            line = proc.stdout.readline()
            if line.strip() == text:
                return
            if not line:
                break
    proc.kill()
    pytest.fail(f"the CLI never reached {text}: {proc.stderr.read()[-2000:]}")


def _kill(proc: subprocess.Popen) -> None:
    assert proc.poll() is None, "the CLI finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _checked(path: Path) -> Project:
    project = Project(path)  # runs the integrity check of every open
    assert project.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return project


# ---- import ---------------------------------------------------------------------------------------------
def _tiny_collection(root: Path) -> Path:
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for k in range(PER_CLASS):
            Image.new("RGB", (16, 16), (k % 256, k // 256 * 60, 80 * c)).save(root / name / f"{name}_{k:03d}.png")
    return root


@pytest.fixture(scope="module")
def killed_import(tmp_path_factory) -> dict:
    """A project with curated labels, an import of 900 files killed mid-way, then the import run again."""
    tmp = tmp_path_factory.mktemp("killed_import")
    make_shape_collection(tmp / "earlier", per_class=2)
    src = _tiny_collection(tmp / "collection")
    path = tmp / "p.artannot"
    with Project.create(path) as p:
        p.import_folder(tmp / "earlier")
        earlier = [r.id for r in p.images()]
        p.set_label(earlier[:2], p.class_id("triangle"))  # a curator's edits, committed before the crash
        curated = {h["image_id"]: h["class_id"] for i in earlier for h in p.history(i) if h["active"]}

    proc = _cli(SLOW_IMPORT, "import", str(path), str(src))
    watcher = sqlite3.connect(path)
    try:
        deadline = time.monotonic() + 240
        while watcher.execute("SELECT COUNT(*) FROM images").fetchone()[0] < len(earlier) + 2 * BATCH:
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            time.sleep(0.02)
    finally:
        watcher.close()
    _kill(proc)

    info: dict = {"path": path, "earlier": earlier, "curated": curated}
    with _checked(path) as p:
        info["after_kill"] = [(r.id, r.path, r.class_id, r.label_source) for r in p.images()]
        info["names"] = repo.class_names(p.conn)
    again = subprocess.run([sys.executable, "-m", "artannot", "import", str(path), str(src)], cwd=REPO,
                           capture_output=True, text=True, timeout=240)
    info["reimport"] = again
    return info


def test_killed_import_keeps_whole_batches_and_every_earlier_label(killed_import):
    rows = killed_import["after_kill"]
    new = [r for r in rows if r[0] not in killed_import["earlier"]]
    assert 2 * BATCH <= len(new) < len(CLASSES) * PER_CLASS
    assert len(new) % BATCH == 0  # each batch commits with its labels, or not at all
    names = killed_import["names"]
    assert all(names.get(cls) == Path(file).parent.name and src == "rule" for _, file, cls, src in new)
    current = {i: c for i, _, c, _ in rows}
    assert {i: current[i] for i in killed_import["curated"]} == killed_import["curated"]


def test_import_after_a_kill_adds_only_what_was_missing(killed_import):
    proc = killed_import["reimport"]
    assert proc.returncode == 0, proc.stderr
    n_before = len(killed_import["after_kill"]) - len(killed_import["earlier"])
    assert f"{len(CLASSES) * PER_CLASS - n_before} added, {n_before} already in project" in proc.stdout
    with _checked(killed_import["path"]) as p:
        rows = p.images()
        assert len(rows) == len(killed_import["earlier"]) + len(CLASSES) * PER_CLASS
        assert len({r.path for r in rows}) == len(rows)
        assert all(r.class_id is not None for r in rows)
        assert {r.id: r.class_id for r in rows if r.id in killed_import["curated"]} == killed_import["curated"]


def test_import_after_a_kill_gives_every_image_a_split(killed_import):
    with Project(killed_import["path"]) as p:
        assert all(r.split is not None for r in p.images())


# ---- training -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A project with one good model: its id, checkpoint bytes and predictions."""
    tmp = tmp_path_factory.mktemp("killed_training")
    make_shape_collection(tmp / "images", per_class=8)
    path = tmp / "p.artannot"
    with Project.create(path) as p:
        p.import_folder(tmp / "images")
        model = p.train(method="svm", device="cpu").model_id
        return {"path": path, "model": model, **_model_state(p, model)}


def _model_state(p: Project, model_id: int) -> dict:
    checkpoint = resolve_model_file(p.cache_dir, repo.get_model(p.conn, model_id)["checkpoint"])
    return {
        "checkpoint": checkpoint,
        "digest": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "predictions": p.conn.execute("SELECT * FROM predictions WHERE model_id = ? ORDER BY image_id, rank",
                                      (model_id,)).fetchall(),
    }


@pytest.mark.slow  # a training and two CLI start-ups (torch import): about 20 s on 2 cores
@pytest.mark.parametrize("stage", ["checkpoint", "commit"])
def test_killed_training_leaves_the_good_model_as_it_was(trained, stage):
    models = trained["checkpoint"].parent
    files_before = set(os.listdir(models))
    proc = _cli(PAUSED_TRAIN, stage, "train", str(trained["path"]), "--method", "svm", "--device", "cpu")
    _wait_for_line(proc, "PAUSED")
    _kill(proc)
    with _checked(trained["path"]) as p:
        assert p.active_model_id() == trained["model"]  # the killed run stored no model anyone sees
        assert [m["id"] for m in p.models()] == [trained["model"]]
        pending = [r[0] for r in p.conn.execute("SELECT id FROM models WHERE pending IS NOT NULL")]
        if stage == "commit":  # its half-written rows are there, unlisted, until the next writer clears them
            assert len(pending) == 1
            assert p.conn.execute("SELECT COUNT(*) FROM predictions WHERE model_id = ?", pending).fetchone()[0] > 0
            assert staged.clear_abandoned(p.conn) == pending
        assert p.conn.execute("SELECT COUNT(*) FROM models").fetchone()[0] == 1
        assert p.conn.execute("SELECT COUNT(*) FROM predictions WHERE model_id != ?",
                              (trained["model"],)).fetchone()[0] == 0
        state = _model_state(p, trained["model"])
        assert state["checkpoint"] == trained["checkpoint"] and state["digest"] == trained["digest"]
        assert [tuple(r) for r in state["predictions"]] == [tuple(r) for r in trained["predictions"]]
        SVMClassifier.load(state["checkpoint"])  # the good model still loads
        assert p.evaluate()["n"] > 0
    new = set(os.listdir(models)) - files_before
    if stage == "checkpoint":  # only the half-written temp file is left, under a name nothing loads
        assert len(new) == 1 and next(iter(new)).endswith(".tmp"), new
    else:  # the complete checkpoint file exists but no model row points at it
        assert len(new) == 1 and next(iter(new)).endswith(".npz"), new
