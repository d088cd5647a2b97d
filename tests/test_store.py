"""The project file: schema checks, append-only label history, undo/redo across restarts."""

from __future__ import annotations

import sqlite3

import pytest

from artannot.errors import ProjectError
from artannot.project import Project
from artannot.store import labels as L
from artannot.store import repo
from artannot.store.db import SCHEMA_VERSION, connect, now


def _project_with_images(tmp_path, n=3):
    project = Project.create(tmp_path / "p.artannot")
    src = repo.ensure_source(project.conn, tmp_path)
    for k in range(n):
        project.conn.execute(
            "INSERT INTO images(source_id, path, sha256, width, height, added_at) VALUES (?, ?, ?, 8, 8, ?)",
            (src, f"img{k}.png", f"{k:064x}", now()),
        )
    ids = [r[0] for r in project.conn.execute("SELECT id FROM images ORDER BY id")]
    return project, ids


def test_create_then_reopen_and_refuse_overwrite(tmp_path):
    path = tmp_path / "c.artannot"
    Project.create(path).close()
    with Project(path) as p:
        assert p.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert p.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with pytest.raises(ProjectError, match="already exists"):
        Project.create(path)


def test_missing_foreign_and_newer_files_are_refused(tmp_path):
    with pytest.raises(ProjectError, match="artannot init"):
        Project(tmp_path / "nope.artannot")
    other = tmp_path / "other.artannot"
    sqlite3.connect(other).execute("CREATE TABLE t(x)").connection.close()
    with pytest.raises(ProjectError, match="not an ArtAnnot project"):
        Project(other)
    junk = tmp_path / "junk.artannot"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(ProjectError):
        Project(junk)
    newer = tmp_path / "newer.artannot"
    Project.create(newer).close()
    conn = connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ProjectError, match="newer ArtAnnot"):
        Project(newer)


def test_label_edits_keep_history_and_source(tmp_path):
    project, ids = _project_with_images(tmp_path)
    cat, dog = project.class_id("cat"), project.class_id("dog")
    L.apply_labels(project.conn, [L.LabelChange(ids[0], cat, "rule", detail="file-name token 'cats'")],
                   description="rule")
    project.set_label([ids[0]], dog)
    hist = project.history(ids[0])
    assert [(h["class_name"], h["source"], h["active"]) for h in hist] == [("cat", "rule", 0), ("dog", "human", 1)]
    assert hist[0]["detail"] == "file-name token 'cats'"
    # setting the same label again is not a new edit
    assert project.set_label([ids[0]], dog) is None


def test_undo_redo_order_and_redo_dropped_by_new_edit(tmp_path):
    project, ids = _project_with_images(tmp_path)
    a, b = project.class_id("a"), project.class_id("b")

    def labels():
        cur = L.current_labels_for(project.conn, ids)
        return [cur[i]["class_id"] if i in cur else None for i in ids]

    project.set_label(ids[:2], a)
    project.set_label([ids[1]], b)
    assert labels() == [a, b, None]
    assert project.undo().description.startswith("set label of 1")
    assert labels() == [a, a, None]
    assert project.undo() is not None
    assert labels() == [None, None, None]
    assert project.undo() is None
    assert project.redo() is not None
    assert labels() == [a, a, None]
    project.set_label([ids[2]], b)  # a new edit drops what was left to redo
    assert project.redo() is None
    assert labels() == [a, a, b]


def test_undo_survives_restart(tmp_path):
    project, ids = _project_with_images(tmp_path)
    a = project.class_id("a")
    project.set_label([ids[0]], a)
    path = project.path
    project.close()
    with Project(path) as again:
        assert L.can_undo(again.conn)
        again.undo()
        assert L.current_labels_for(again.conn, [ids[0]]).get(ids[0]) is None
    with Project(path) as third:
        assert L.can_redo(third.conn)
        third.redo()
        assert L.current_labels_for(third.conn, [ids[0]])[ids[0]]["class_id"] == a


def test_protect_human_keeps_curator_labels(tmp_path):
    project, ids = _project_with_images(tmp_path)
    a, b = project.class_id("a"), project.class_id("b")
    project.set_label([ids[0]], a)
    L.apply_labels(project.conn, [L.LabelChange(i, b, "import") for i in ids[:2]], description="reimport",
                   protect_human=True)
    cur = L.current_labels_for(project.conn, ids)
    assert cur[ids[0]]["class_id"] == a and cur[ids[0]]["source"] == "human"
    assert cur[ids[1]]["class_id"] == b


def test_classes_get_colours_hotkeys_and_counts(tmp_path):
    project, ids = _project_with_images(tmp_path, n=12)
    names = [f"c{k}" for k in range(11)]
    cids = repo.ensure_classes(project.conn, names)
    project.set_label(ids[:3], cids["c0"])
    classes = project.classes()
    assert [c.hotkey for c in classes[:10]] == [str(k) for k in range(1, 10)] + [None]
    assert classes[0].count == 3 and classes[1].count == 0
    assert len({c.color for c in classes}) == len(classes)


def test_failed_transaction_commits_nothing(tmp_path):
    project, ids = _project_with_images(tmp_path)
    a = project.class_id("a")
    bad = [L.LabelChange(ids[0], a, "human"), L.LabelChange(ids[1], 999_999, "human")]  # unknown class
    with pytest.raises(sqlite3.IntegrityError):
        L.apply_labels(project.conn, bad, description="bad")
    assert L.current_labels_for(project.conn, ids) == {}
    assert not L.can_undo(project.conn)


def test_atomic_write_failure_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    from artannot.errors import StorageError
    from artannot.store import files

    target = tmp_path / "model.npz"
    files.atomic_write_bytes(target, b"good")

    def no_space(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", no_space)  # the disk fills while the new file is written
    with pytest.raises(StorageError, match="the disk holding it is full; the previous file is intact"):
        files.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temp file left behind
