"""Schema upgrades: a backup first, then every step in one transaction, or nothing changes.

MIGRATIONS maps a schema version to the step that upgrades a file from the version before it. A step runs
inside the upgrade's transaction with foreign keys on (use `PRAGMA defer_foreign_keys = ON` for table
rebuilds); the upgrade commits only if every step succeeds and `foreign_key_check` finds nothing.
Version 1 is db.SCHEMA; every later version is a step here (raise db.SCHEMA_VERSION in the same commit).
A new project is written as db.SCHEMA plus every step, so a fresh file and an upgraded one are the same.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from artannot.errors import ProjectError
from artannot.store import db

Migration = Callable[[sqlite3.Connection], None]


def _v2_curation(conn: sqlite3.Connection) -> None:
    """Curation: suspect scores per model, undoable class edits (rename, hotkey, soft delete), query indexes,
    and a trigram index over image paths for the search box (skipped where SQLite lacks FTS5 trigram)."""
    conn.execute("ALTER TABLE classes ADD COLUMN deleted_at TEXT")  # set: hidden once no image carries it
    conn.execute(
        "CREATE TABLE class_edits (event_id INTEGER NOT NULL REFERENCES events(id),"
        " class_id INTEGER NOT NULL REFERENCES classes(id),"
        " field TEXT NOT NULL CHECK (field IN ('name', 'hotkey', 'deleted_at')), old_value TEXT, new_value TEXT,"
        " PRIMARY KEY (event_id, class_id, field)) WITHOUT ROWID")
    # Undo and redo flip an event's state (store/labels.py); these triggers make class edits follow it, so a
    # rename or delete is undone by the same Ctrl+Z, from the app or any other program, as labels and boxes.
    for name, old, new, value in (("undo", "done", "undone", "old_value"), ("redo", "undone", "done", "new_value")):
        sets = "".join(
            f" UPDATE classes SET {f} = (SELECT e.{value} FROM class_edits e WHERE e.event_id = NEW.id"
            f" AND e.class_id = classes.id AND e.field = '{f}') WHERE id IN (SELECT class_id FROM class_edits"
            f" WHERE event_id = NEW.id AND field = '{f}');" for f in ("name", "hotkey", "deleted_at"))
        conn.execute(f"CREATE TRIGGER class_edits_{name} AFTER UPDATE OF state ON events"
                     f" WHEN OLD.state = '{old}' AND NEW.state = '{new}' BEGIN{sets} END")
    conn.execute(
        "CREATE TABLE suspects (model_id INTEGER NOT NULL REFERENCES models(id),"
        " image_id INTEGER NOT NULL REFERENCES images(id), score REAL NOT NULL, rank INTEGER NOT NULL,"
        " flagged INTEGER NOT NULL DEFAULT 0, reliable INTEGER NOT NULL DEFAULT 1,"
        " class_id INTEGER REFERENCES classes(id), suggested_id INTEGER REFERENCES classes(id),"
        " PRIMARY KEY (model_id, image_id)) WITHOUT ROWID")
    # Covering indexes for the curation queries (store/queries.py): the flagged suspects in rank order, the
    # top-1 guesses by score, the current label of an image, and image ids alone (a scan of 100k ints).
    conn.execute("CREATE INDEX suspects_rank ON suspects(model_id, flagged, rank)")
    conn.execute("CREATE INDEX predictions_top ON predictions(model_id, score, class_id) WHERE rank = 1")
    conn.execute("CREATE INDEX labels_active_image ON labels(image_id, class_id, source) WHERE active = 1")
    conn.execute("CREATE INDEX images_ids ON images(id)")
    try:
        conn.execute("CREATE VIRTUAL TABLE image_names USING fts5(path, content='images', content_rowid='id',"
                     " tokenize='trigram')")
    except sqlite3.OperationalError:  # an SQLite without FTS5 or older than 3.34: search falls back to LIKE
        return
    conn.execute("CREATE TRIGGER image_names_ai AFTER INSERT ON images BEGIN"
                 " INSERT INTO image_names(rowid, path) VALUES (NEW.id, NEW.path); END")
    conn.execute("CREATE TRIGGER image_names_ad AFTER DELETE ON images BEGIN"
                 " INSERT INTO image_names(image_names, rowid, path) VALUES ('delete', OLD.id, OLD.path); END")
    conn.execute("CREATE TRIGGER image_names_au AFTER UPDATE OF path ON images BEGIN"
                 " INSERT INTO image_names(image_names, rowid, path) VALUES ('delete', OLD.id, OLD.path);"
                 " INSERT INTO image_names(rowid, path) VALUES (NEW.id, NEW.path); END")
    conn.execute("INSERT INTO image_names(image_names) VALUES ('rebuild')")


def _v3_tags(conn: sqlite3.Connection) -> None:
    """Multi-label tags (store/tags.py): tag names, per-image tag states with history, a model's tag scores.

    Undo and redo flip an event's state (store/labels.py); the triggers switch the event's tag rows off and
    the rows they replaced on (undo), or the reverse (redo), off first so one row per (image, tag) is active.
    """
    conn.execute("CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE COLLATE NOCASE,"
                 " created_at TEXT NOT NULL)")
    conn.execute(
        "CREATE TABLE image_tags (id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL REFERENCES images(id),"
        " tag_id INTEGER NOT NULL REFERENCES tags(id), present INTEGER NOT NULL CHECK (present IN (0, 1)),"
        " source TEXT NOT NULL CHECK (source IN ('human', 'rule', 'import', 'model')), confidence REAL,"
        " event_id INTEGER NOT NULL REFERENCES events(id), replaces_id INTEGER REFERENCES image_tags(id),"
        " active INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL)")
    conn.execute("CREATE UNIQUE INDEX image_tags_one_active ON image_tags(image_id, tag_id) WHERE active = 1")
    conn.execute("CREATE INDEX image_tags_event ON image_tags(event_id)")
    conn.execute("CREATE INDEX image_tags_tag ON image_tags(tag_id, image_id) WHERE active = 1 AND present = 1")
    conn.execute("CREATE TRIGGER image_tags_undo AFTER UPDATE OF state ON events"
                 " WHEN OLD.state = 'done' AND NEW.state = 'undone' BEGIN"
                 " UPDATE image_tags SET active = 0 WHERE event_id = NEW.id;"
                 " UPDATE image_tags SET active = 1 WHERE id IN"
                 " (SELECT replaces_id FROM image_tags WHERE event_id = NEW.id); END")
    conn.execute("CREATE TRIGGER image_tags_redo AFTER UPDATE OF state ON events"
                 " WHEN OLD.state = 'undone' AND NEW.state = 'done' BEGIN"
                 " UPDATE image_tags SET active = 0 WHERE id IN"
                 " (SELECT replaces_id FROM image_tags WHERE event_id = NEW.id);"
                 " UPDATE image_tags SET active = 1 WHERE event_id = NEW.id; END")
    # A rename is an event too: its old and new name, switched by the same undo/redo triggers' sibling.
    conn.execute("CREATE TABLE tag_edits (event_id INTEGER NOT NULL REFERENCES events(id),"
                 " tag_id INTEGER NOT NULL REFERENCES tags(id), old_name TEXT NOT NULL, new_name TEXT NOT NULL,"
                 " PRIMARY KEY (event_id, tag_id)) WITHOUT ROWID")
    for name, old, new, value in (("undo", "done", "undone", "old_name"), ("redo", "undone", "done", "new_name")):
        conn.execute(f"CREATE TRIGGER tag_edits_{name} AFTER UPDATE OF state ON events"
                     f" WHEN OLD.state = '{old}' AND NEW.state = '{new}' BEGIN"
                     f" UPDATE tags SET name = (SELECT e.{value} FROM tag_edits e WHERE e.event_id = NEW.id"
                     f" AND e.tag_id = tags.id) WHERE id IN (SELECT tag_id FROM tag_edits WHERE event_id = NEW.id);"
                     " END")
    conn.execute("CREATE TABLE tag_predictions (model_id INTEGER NOT NULL REFERENCES models(id),"
                 " image_id INTEGER NOT NULL REFERENCES images(id), tag_id INTEGER NOT NULL REFERENCES tags(id),"
                 " score REAL NOT NULL, PRIMARY KEY (model_id, image_id, tag_id)) WITHOUT ROWID")


def _v4_relative_model_paths(conn: sqlite3.Connection) -> None:
    """Model files named relative to the project's cache folder, so a moved or copied project keeps its own
    (store/model_files.py); absolute paths into another project's folder are kept only where this project
    has no file of that name."""
    from artannot.store.model_files import migrate_model_paths, project_cache_dir

    try:
        cache_dir = project_cache_dir(conn)
    except ValueError:  # an in-memory database: nothing to rewrite against
        return
    migrate_model_paths(conn, cache_dir)


def _v5_proposals(conn: sqlite3.Connection) -> None:
    """Boxes a detector proposes, reviewed (accepted, rejected) with undo (store/proposals.py)."""
    from artannot.store.proposals import create_schema

    create_schema(conn)


def _v6_filter_index(conn: sqlite3.Connection) -> None:
    """What the grid's filters and sorts read, stored and indexed (store/queries.py): each model's top-1 guess
    per image with its disagreement flag (kept current by triggers), a covering index of current labels,
    suspects by rank, images by path."""
    from artannot.store.queries import create_filter_index

    create_filter_index(conn)


def _v7_negative_classes(conn: sqlite3.Connection) -> None:
    """A class can be marked negative ("no instrument"), undoably: classes.negative, and class_edits (with its
    undo/redo triggers) rebuilt to accept that field (store/classes.py)."""
    from artannot.store.classes import create_negative_schema

    create_negative_schema(conn)


def _v8_pending_models(conn: sqlite3.Connection) -> None:
    """models.pending: a model whose rows are still being written (or erased) in short transactions is
    listed nowhere until it is whole (store/staged.py)."""
    from artannot.store.staged import create_pending_schema

    create_pending_schema(conn)


def _v9_class_counts(conn: sqlite3.Connection) -> None:
    """class_count: images per class, kept by triggers on labels, so the class list costs a few rows to
    refresh after each label key instead of a count over every current label (store/queries.py)."""
    from artannot.store.queries import create_class_counts

    create_class_counts(conn)


MIGRATIONS: dict[int, Migration] = {2: _v2_curation, 3: _v3_tags, 4: _v4_relative_model_paths, 5: _v5_proposals,
                                    6: _v6_filter_index, 7: _v7_negative_classes, 8: _v8_pending_models,
                                    9: _v9_class_counts}


def migrate(conn: sqlite3.Connection, path: Path, *, target: int | None = None,
            steps: Mapping[int, Migration] | None = None) -> Path | None:
    """Bring an older project up to the current schema; returns the backup made, None if nothing to do."""
    target = db.SCHEMA_VERSION if target is None else target
    steps = MIGRATIONS if steps is None else steps
    old = conn.execute("PRAGMA user_version").fetchone()[0]
    if old >= target:
        return None
    missing = [v for v in range(old + 1, target + 1) if v not in steps]
    if missing:
        raise ProjectError(f"{path} uses schema {old}, which this ArtAnnot cannot upgrade (no step to"
                           f" schema {missing[0]}); open it with the version that wrote it and export")
    backup = backup_project(conn, path, f"v{old}")
    try:
        with db.write(conn):
            now_at = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have done it
            for version in range(now_at + 1, target + 1):
                steps[version](conn)
                conn.execute(f"PRAGMA user_version = {int(version)}")
            bad = conn.execute("PRAGMA foreign_key_check").fetchone()
            if bad is not None:
                raise ProjectError(f"a row of table {bad[0]} points to a missing row of {bad[2]}")
    except (sqlite3.Error, ProjectError, ValueError, KeyError) as exc:
        raise ProjectError(f"upgrading {path.name} from schema {old} to {target} failed ({exc}); the project"
                           f" is unchanged and a copy is in {backup.name}") from None
    return backup


def backup_project(conn: sqlite3.Connection, path: Path, tag: str) -> Path:
    """A consistent copy `<project>.backup-<tag>-<UTC time>` beside the project (SQLite backup API)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = path.with_name(f"{path.name}.backup-{tag}-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.backup-{tag}-{stamp}-{n}")
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        target = sqlite3.connect(tmp)
        try:
            conn.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            target.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except (OSError, sqlite3.Error) as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ProjectError(f"cannot back up {path.name} before upgrading it ({exc}); nothing was changed"
                           " (free some disk space or fix the folder's permissions)") from None
    return dest
