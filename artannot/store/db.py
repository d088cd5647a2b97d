"""Open project databases: schema, version check, WAL, and short write transactions."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from artannot.errors import DiskFullError, ProjectError

SCHEMA_VERSION = 9  # 1 is SCHEMA below; later versions are steps in migrations.py
APPLICATION_ID = 0x41525441  # "ARTA": marks a file as an ArtAnnot project
# Files up to this size get the full integrity_check on open (well under 0.5 s); bigger ones quick_check.
FULL_CHECK_MAX_BYTES = 16 * 1024 * 1024  # a 100k-image project (~60 MB) opens in ~0.5 s, not 2 s

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
    """Open (or create) a project database on this thread: checked, intact, upgraded and in WAL mode."""
    from artannot.store.migrations import migrate

    path = Path(path)
    if not create and not path.exists():
        raise ProjectError(f"no project at {path}: create it with `artannot init {path}`")
    if create and path.exists() and path.stat().st_size > 0:
        raise ProjectError(f"{path} already exists; open it instead of creating it")
    _check_writable(path, create)
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
            verify_integrity(conn, path)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        if not create:
            migrate(conn, path)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise storage_error(exc, path, opening=True) or ProjectError(
            f"{path} is damaged or not an ArtAnnot project ({exc}); {backup_hint(path)}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _check_writable(path: Path, create: bool) -> None:
    """Refuse up front what would fail at the first edit: a read-only file or folder."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ProjectError(f"the folder {folder} does not exist")
    if not create and not os.access(path, os.R_OK | os.W_OK):
        raise ProjectError(f"{path} is read-only: ArtAnnot saves every edit as it is made, so it needs write"
                           " access (fix the file's permissions, or copy it to a writable folder)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ProjectError(f"the folder {folder} is read-only: ArtAnnot keeps its journal and caches beside"
                           f" {path.name} (fix the folder's permissions, or copy the project elsewhere)")


def backup_hint(path: Path) -> str:
    """What a curator can restore from: the automatic backups beside the project, newest first."""
    prefix = f"{path.name}.backup-"
    try:
        backups = sorted((path.parent / n for n in os.listdir(path.parent)
                          if n.startswith(prefix) and not n.endswith(".tmp")), reverse=True)
    except OSError:
        backups = []
    if not backups:
        return "no automatic backup beside it: restore it from your own backups"
    names = ", ".join(b.name for b in backups[:3]) + (f" and {len(backups) - 3} more" if len(backups) > 3 else "")
    return f"backups beside it: {names} (copy one over {path.name} to restore it)"


_verified: set[tuple] = set()
_verified_lock = threading.Lock()


def verify_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a damaged file with a message naming the backups; each file state is checked once a process."""
    st = path.stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with _verified_lock:
        if key in _verified:
            return
    pragma = "integrity_check" if st.st_size <= FULL_CHECK_MAX_BYTES else "quick_check"
    problems = [r[0] for r in conn.execute(f"PRAGMA {pragma}(3)")]
    if problems != ["ok"]:
        first = " ".join(problems[0].split())[:160]
        raise ProjectError(f"{path} is damaged ({pragma}: {first}); {backup_hint(path)}")
    with _verified_lock:
        _verified.add(key)


def _create(conn: sqlite3.Connection) -> None:
    """Write the schema in one transaction."""
    with write(conn):
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        from artannot.store.migrations import MIGRATIONS

        for version in range(2, SCHEMA_VERSION + 1):  # the same steps an old file upgrades through
            MIGRATIONS[version](conn)
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
    """A short BEGIN IMMEDIATE transaction: all of it commits, or none of it.

    A full disk, a read-only file, an I/O error or a lock held too long elsewhere becomes a ProjectError
    with one line to act on; whatever was committed before stays intact. Other errors pass through.
    """
    if conn.in_transaction:  # nested use joins the outer transaction
        yield conn
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.DatabaseError as exc:
        raise storage_error(exc, _db_path(conn)) or exc from None
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:  # SQLite may already have rolled back (e.g. on SQLITE_FULL)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.DatabaseError):
            err = storage_error(exc, _db_path(conn))
            if err is not None:
                raise err from None
        raise


def _db_path(conn: sqlite3.Connection) -> Path | None:
    try:
        return Path(conn.execute("PRAGMA database_list").fetchone()[2])
    except (sqlite3.Error, TypeError, IndexError):
        return None


# SQLite primary result codes (the low byte of extended codes) and the words Python < 3.11 reports them by.
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN = 5, 6, 8, 10, 11, 13, 14
_WORDS = {
    "database or disk is full": _FULL,
    "readonly database": _READONLY,
    "disk i/o error": _IOERR,
    "database is locked": _BUSY,
    "database table is locked": _LOCKED,
    "malformed": _CORRUPT,
    "unable to open": _CANTOPEN,
}


FULL_BELOW_BYTES = 1 << 20  # a disk with less free space than this counts as full


def disk_full(path: Path | None) -> bool:
    """Whether the disk holding path has (next to) no free space left."""
    if path is None:
        return False
    try:
        return shutil.disk_usage(Path(path).parent).free < FULL_BELOW_BYTES
    except OSError:
        return False


def storage_error(exc: sqlite3.DatabaseError, path: Path | None, *, opening: bool = False) -> ProjectError | None:
    """The ProjectError a curator should see for a storage failure, or None for other errors."""
    what = "cannot open the project" if opening else "not saved"
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    code = code & 0xFF if code is not None else next(
        (c for words, c in _WORDS.items() if words in str(exc).lower()), None)
    where = str(path) if path is not None else "the project file"
    if code == _IOERR and (getattr(exc, "errno", None) == errno.ENOSPC or disk_full(path)):
        code = _FULL  # SQLite reports a write that found no space (WAL, journal) as an I/O error
    if code == _FULL:
        return DiskFullError(f"{what}: the disk holding {where} is full; everything saved before is intact"
                            " (free some space and try again)")
    if code == _READONLY:
        return ProjectError(f"{what}: {where} is read-only; everything saved before is intact"
                            " (check the permissions of the file and its folder)")
    if code == _IOERR:
        return ProjectError(f"{what}: the disk holding {where} reported an I/O error ({exc});"
                            " everything saved before is intact, but check the disk")
    if code == _CANTOPEN:
        return ProjectError(f"{what}: {where} or the journal beside it cannot be opened ({exc}); check the"
                            " disk and the folder's permissions")
    if code in (_BUSY, _LOCKED):
        return ProjectError(f"{what}: {where} stayed busy in another program for over 30 s; try again")
    if code == _CORRUPT:
        hint = backup_hint(path) if path is not None else "restore it from a backup"
        return ProjectError(f"{where} is damaged ({exc}); {hint}")
    return None


class Checkpointer:
    """Copies the write-ahead log into the database from its own thread, so that a commit never does it.

    In WAL mode with synchronous=NORMAL a commit only appends to the log; about every 1000 pages the
    committing connection checkpoints, and that fsyncs the database: measured, 1 % of a curator's label edits
    took 7–35 ms instead of 0.2 ms. The window's connection turns that off (`wal_autocheckpoint = 0`) and
    this thread, on a connection of its own, runs a PASSIVE checkpoint (it never blocks readers or writers)
    whenever the log has grown past `pages` pages. Other processes on the project keep SQLite's default.
    """

    def __init__(self, conn: sqlite3.Connection, *, every_s: float = 1.0, pages: int = 1000):
        self.path = _db_path(conn)
        self.every_s, self.pages, self.done = every_s, pages, 0
        self._stop = threading.Event()
        self._page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        if self.path is not None and str(self.path):  # a file (not :memory:)
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._thread.start()

    def _log_pages(self) -> int:
        try:
            return os.path.getsize(f"{self.path}-wal") // self._page_size
        except OSError:
            return 0

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=1.0, check_same_thread=True)
        except sqlite3.Error:
            return
        try:
            while not self._stop.wait(self.every_s):
                if self._log_pages() >= self.pages:
                    with contextlib.suppress(sqlite3.Error):  # busy or gone: the next round tries again
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        self.done += 1
        finally:
            conn.close()

    def close(self) -> None:
        """Stop the thread (before the window's connection closes, which checkpoints one last time)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
