"""Open project databases: schema, version check, WAL, and short write transactions."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from artannot.errors import ProjectError

SCHEMA_VERSION = 1
APPLICATION_ID = 0x41525441  # "ARTA": marks a file as an ArtAnnot project

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE sources (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    added_at TEXT NOT NULL
);
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    source_id INTEGER NOT NULL REFERENCES sources(id),
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    split TEXT CHECK (split IN ('train', 'val', 'test')),
    missing INTEGER NOT NULL DEFAULT 0,
    added_at TEXT NOT NULL,
    UNIQUE (source_id, path)
);
CREATE INDEX images_sha256 ON images(sha256);
CREATE INDEX images_split ON images(split);
CREATE TABLE classes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    color TEXT,
    hotkey TEXT,
    position INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'done' CHECK (state IN ('done', 'undone', 'dropped')),
    created_at TEXT NOT NULL
);
CREATE INDEX events_state ON events(state);
CREATE TABLE labels (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    class_id INTEGER REFERENCES classes(id),
    source TEXT NOT NULL CHECK (source IN ('human', 'rule', 'import', 'model')),
    confidence REAL,
    detail TEXT,
    event_id INTEGER NOT NULL REFERENCES events(id),
    replaces_id INTEGER REFERENCES labels(id),
    active INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX labels_one_active ON labels(image_id) WHERE active = 1;
CREATE INDEX labels_image ON labels(image_id);
CREATE INDEX labels_event ON labels(event_id);
CREATE INDEX labels_active_class ON labels(class_id) WHERE active = 1;
CREATE TABLE boxes (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    class_id INTEGER REFERENCES classes(id),
    x REAL NOT NULL, y REAL NOT NULL, w REAL NOT NULL, h REAL NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('human', 'rule', 'import', 'model')),
    event_id INTEGER NOT NULL REFERENCES events(id),
    replaces_id INTEGER REFERENCES boxes(id),
    active INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);
CREATE INDEX boxes_image ON boxes(image_id) WHERE active = 1;
CREATE TABLE models (
    id INTEGER PRIMARY KEY,
    backbone TEXT NOT NULL,
    method TEXT NOT NULL,
    classes TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    checkpoint TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE predictions (
    model_id INTEGER NOT NULL REFERENCES models(id),
    image_id INTEGER NOT NULL REFERENCES images(id),
    rank INTEGER NOT NULL,
    class_id INTEGER REFERENCES classes(id),
    score REAL NOT NULL,
    PRIMARY KEY (model_id, image_id, rank)
) WITHOUT ROWID;
"""


def now() -> str:
    """UTC timestamp with milliseconds, sortable as text."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def connect(path: str | Path, *, create: bool = False) -> sqlite3.Connection:
    """Open (or create) a project database on this thread, checked and in WAL mode."""
    path = Path(path)
    if not create and not path.exists():
        raise ProjectError(f"no project at {path}: create it with `artannot init {path}`")
    if create and path.exists() and path.stat().st_size > 0:
        raise ProjectError(f"{path} already exists; open it instead of creating it")
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True, timeout=30.0)
    except sqlite3.Error as exc:
        raise ProjectError(f"cannot open {path}: {exc}") from None
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA foreign_keys = ON")
        if create:
            _create(conn)
        else:
            _check(conn, path)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise ProjectError(f"{path} is not a readable ArtAnnot project ({exc})") from None
    except ProjectError:
        conn.close()
        raise
    return conn


def _create(conn: sqlite3.Connection) -> None:
    """Write the schema in one transaction."""
    with write(conn):
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("INSERT INTO meta(key, value) VALUES ('created_at', ?)", (now(),))


def _check(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse files that are not ArtAnnot projects or come from a newer version."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if app_id != APPLICATION_ID:
        raise ProjectError(f"{path} is not an ArtAnnot project")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise ProjectError(
            f"{path} was written by a newer ArtAnnot (schema {version}, this one reads {SCHEMA_VERSION}); "
            "update ArtAnnot to open it"
        )


@contextlib.contextmanager
def write(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A short BEGIN IMMEDIATE transaction: all of it commits, or none of it."""
    if conn.in_transaction:  # nested use joins the outer transaction
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
