"""Hostile conditions for the project file: upgrades, damage, a full disk, read-only files, unsafe models.

Each test checks two things: the curator gets one line to act on, and nothing saved before is lost.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from artannot.errors import ModelError, ProjectError
from artannot.ml.backbones import load_backbone
from artannot.ml.classify.classifiers import SVMClassifier
from artannot.project import Project
from artannot.store import db, migrations, repo
from artannot.store import labels as L
from artannot.store.files import atomic_write_bytes
from tests.shapes import make_shape_collection

REPO = Path(__file__).resolve().parents[1]


def _project(tmp_path: Path, n: int = 6) -> tuple[Path, list[int]]:
    """A closed project with n images, a rule label on each and one human edit (so history exists)."""
    path = tmp_path / "p.artannot"
    with Project.create(path) as p:
        src = repo.ensure_source(p.conn, tmp_path)
        with db.write(p.conn):
            p.conn.executemany(
                "INSERT INTO images(source_id, path, sha256, width, height, added_at) VALUES (?, ?, ?, 8, 8, ?)",
                [(src, f"img{k}.png", f"{k:064x}", db.now()) for k in range(n)])
        ids = [r[0] for r in p.conn.execute("SELECT id FROM images ORDER BY id")]
        a, b = p.class_id("a"), p.class_id("b")
        L.apply_labels(p.conn, [L.LabelChange(i, a, "rule") for i in ids], description="rule")
        p.set_label(ids[:1], b)
    return path, ids


def _snapshot(path: Path) -> dict:
    """What a curator cares about in a file: its labels with their history, and its schema."""
    conn = sqlite3.connect(path)
    try:
        return {
            "version": conn.execute("PRAGMA user_version").fetchone()[0],
            "labels": conn.execute("SELECT image_id, class_id, source, active FROM labels ORDER BY id").fetchall(),
            "events": conn.execute("SELECT kind, state FROM events ORDER BY id").fetchall(),
            "schema": conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall(),
        }
    finally:
        conn.close()


def _one_line(exc: pytest.ExceptionInfo, *words: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


# ---- migrations -----------------------------------------------------------------------------------------
def _add_rating(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE images ADD COLUMN rating INTEGER")
    conn.execute("UPDATE images SET rating = 3")


def test_upgrade_backs_up_first_then_migrates_in_one_transaction(tmp_path, monkeypatch):
    path, ids = _project(tmp_path)
    before = _snapshot(path)
    v = db.SCHEMA_VERSION
    monkeypatch.setattr(db, "SCHEMA_VERSION", v + 1)
    monkeypatch.setitem(migrations.MIGRATIONS, db.SCHEMA_VERSION, _add_rating)
    with Project(path) as p:
        assert p.conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
        assert {r[0] for r in p.conn.execute("SELECT rating FROM images")} == {3}
        assert [h["source"] for h in p.history(ids[0])] == ["rule", "human"]
        assert p.undo() is not None  # the undo history came through the upgrade
    after = _snapshot(path)
    assert after["version"] == before["version"] + 1
    backups = sorted(tmp_path.glob(f"p.artannot.backup-v{v}-*"))
    assert len(backups) == 1 and not list(tmp_path.glob("*.tmp"))
    assert _snapshot(backups[0]) == before  # a self-contained copy of the file as it was
    with Project(path):
        pass
    assert len(list(tmp_path.glob("p.artannot.backup-*"))) == 1  # nothing to upgrade, no new backup


def test_failed_upgrade_changes_nothing_and_says_where_the_copy_is(tmp_path, monkeypatch):
    path, _ = _project(tmp_path)
    before = _snapshot(path)

    def broken(conn):
        conn.execute("CREATE TABLE half_done (x)")
        raise sqlite3.OperationalError("no such column: imaginary")

    v = db.SCHEMA_VERSION
    monkeypatch.setattr(db, "SCHEMA_VERSION", v + 2)
    monkeypatch.setitem(migrations.MIGRATIONS, v + 1, _add_rating)  # succeeds, then the next step fails
    monkeypatch.setitem(migrations.MIGRATIONS, v + 2, broken)
    with pytest.raises(ProjectError) as exc:
        Project(path)
    _one_line(exc, f"from schema {v} to {v + 2} failed", "no such column: imaginary", "unchanged", f".backup-v{v}-")
    monkeypatch.undo()
    assert _snapshot(path) == before  # neither step left a trace
    with Project(path) as p:
        assert p.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_upgrade_without_a_step_or_a_backup_is_refused(tmp_path, monkeypatch):
    path, _ = _project(tmp_path)
    before = _snapshot(path)
    v = db.SCHEMA_VERSION
    monkeypatch.setattr(db, "SCHEMA_VERSION", v + 1)
    with pytest.raises(ProjectError) as exc:
        Project(path)
    _one_line(exc, "cannot upgrade")
    monkeypatch.setitem(migrations.MIGRATIONS, db.SCHEMA_VERSION, _add_rating)

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(migrations.os, "replace", no_space)
    with pytest.raises(ProjectError) as exc:
        Project(path)
    _one_line(exc, "cannot back up", "No space left", "nothing was changed")
    monkeypatch.undo()
    assert _snapshot(path) == before
    assert not list(tmp_path.glob("p.artannot.backup-*"))


# ---- damaged files --------------------------------------------------------------------------------------
def _smash_page(path: Path, page: int) -> None:
    """Overwrite the start of a b-tree page with garbage, as a bad sector or a torn copy would."""
    conn = sqlite3.connect(path)
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(path, "r+b") as fh:
        fh.seek((page - 1) * size + (100 if page == 1 else 0))
        fh.write(bytes(range(7, 250, 3)) * 4)


def test_damaged_table_page_is_refused_naming_the_backups(tmp_path):
    path, _ = _project(tmp_path, n=400)
    with Project(path) as p:
        migrations.backup_project(p.conn, path, "manual")
        root = p.conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'labels'").fetchone()[0]
    assert not Path(f"{path}-wal").exists()  # checkpointed on close: the damage hits the real data
    _smash_page(path, root)
    with pytest.raises(ProjectError) as exc:
        Project(path)
    _one_line(exc, "p.artannot is damaged", "p.artannot.backup-manual-", "copy one over p.artannot")
    backup = next(tmp_path.glob("p.artannot.backup-manual-*"))
    restored = tmp_path / "restored.artannot"
    restored.write_bytes(backup.read_bytes())
    with Project(restored) as p:  # the backup named in the message is a working project
        assert p.conn.execute("SELECT COUNT(*) FROM labels WHERE active = 1").fetchone()[0] == 400


def test_damaged_header_is_refused_and_the_cli_says_so_in_one_line(tmp_path):
    path, _ = _project(tmp_path)
    _smash_page(path, 1)
    with pytest.raises(ProjectError) as exc:
        Project(path)
    _one_line(exc, "damaged", "no automatic backup")
    proc = subprocess.run([sys.executable, "-m", "artannot", "evaluate", str(path)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("artannot: error: "), proc.stderr
    assert "damaged" in proc.stderr


# ---- full disk ------------------------------------------------------------------------------------------
def _fill_disk(conn: sqlite3.Connection) -> None:
    """Let the file grow no further: SQLite then fails writes with SQLITE_FULL, as on a full disk."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def test_edit_on_a_full_disk_is_refused_and_loses_nothing(tmp_path):
    path, ids = _project(tmp_path, n=3000)
    before = _snapshot(path)
    with Project(path) as p:
        b = p.class_id("b")
        _fill_disk(p.conn)
        with pytest.raises(ProjectError) as exc:
            p.set_label(ids, b)
        _one_line(exc, "not saved", "is full", "everything saved before is intact")
        assert not p.conn.in_transaction
        assert _snapshot(path) == before
        p.conn.execute("PRAGMA max_page_count = 1073741823")  # space freed: the same window carries on
        assert p.set_label(ids, b) is not None
    with Project(path) as p:
        assert p.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert {r.class_id for r in p.images()} == {b}


def test_import_onto_a_full_disk_stops_with_earlier_imports_intact(tmp_path):
    make_shape_collection(tmp_path / "first", per_class=4)
    make_shape_collection(tmp_path / "second", per_class=80, seed=1)
    path = tmp_path / "p.artannot"
    with Project.create(path) as p:
        assert p.import_folder(tmp_path / "first").added == 12
        _fill_disk(p.conn)
        with pytest.raises(ProjectError) as exc:
            p.import_folder(tmp_path / "second")
        _one_line(exc, "is full")
    with Project(path) as p:
        assert p.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = p.images()
        assert len(rows) == 12 and all(r.class_id is not None and r.split for r in rows)


def test_checkpoint_write_failing_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "models" / "m.npz"
    atomic_write_bytes(target, b"good model")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"half a new model")
    assert target.read_bytes() == b"good model"
    assert os.listdir(target.parent) == ["m.npz"]  # no temp file left behind


# ---- read-only ------------------------------------------------------------------------------------------
def test_write_to_a_read_only_project_is_refused_and_loses_nothing(tmp_path):
    path, ids = _project(tmp_path)
    before = _snapshot(path)
    with Project(path) as p:
        p.conn.execute("PRAGMA query_only = ON")  # writes now fail with SQLITE_READONLY, even as root
        with pytest.raises(ProjectError) as exc:
            p.set_label(ids, p.class_id("a"))
        _one_line(exc, "not saved", "read-only", "everything saved before is intact")
        with pytest.raises(ProjectError, match="read-only"):
            p.undo()
    assert _snapshot(path) == before


def test_read_only_file_or_folder_is_refused_on_open(tmp_path, monkeypatch):
    path, _ = _project(tmp_path)
    real_access = os.access

    def refuse(where: Path):
        return lambda p, mode: Path(p).resolve() != where.resolve() and real_access(p, mode)

    monkeypatch.setattr(os, "access", refuse(path))  # what chmod 0444 does for a user who is not root
    with pytest.raises(ProjectError) as exc:
        Project(path)
    _one_line(exc, "p.artannot is read-only", "copy it to a writable folder")
    monkeypatch.setattr(os, "access", refuse(tmp_path))
    with pytest.raises(ProjectError) as exc:
        Project(path)
    _one_line(exc, "is read-only", "journal")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through chmod 0444")
def test_read_only_permissions_are_refused_on_open(tmp_path):
    path, _ = _project(tmp_path)
    path.chmod(0o444)
    try:
        with pytest.raises(ProjectError, match="read-only"):
            Project(path)
    finally:
        path.chmod(0o644)


# ---- model files that are not plain weights ---------------------------------------------------------------
class _Payload:
    """Pickled, this would make a folder when loaded: proof that no code from a model file ever runs."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_model_files_with_code_in_them_are_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil_pth = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "x": _Payload(marker)}, evil_pth)
    with pytest.raises(ModelError) as exc:
        load_backbone("efficientnet_lite0", weights_path=str(evil_pth))
    _one_line(exc, "cannot read", "replace the file")

    evil_npz = tmp_path / "svm-evil.npz"
    np.savez(evil_npz, classes=np.array([_Payload(marker)], dtype=object))
    path, ids = _project(tmp_path)
    with Project(path) as p:  # a project whose stored model file was swapped for one holding code
        with db.write(p.conn):
            model_id = repo.add_model(p.conn, backbone="efficientnet_lite0", method="svm", classes=[1, 2],
                                      params={})
            repo.update_model(p.conn, model_id, checkpoint=str(evil_npz), metrics={})
        with pytest.raises(ModelError) as exc:
            SVMClassifier.load(evil_npz)
        _one_line(exc, "cannot be read", "retrain")
        make_shape_collection(tmp_path / "new", per_class=1)
        with pytest.raises(ModelError, match="retrain"):
            p.predict_files(sorted((tmp_path / "new").rglob("*.png")))
    assert not marker.exists()
