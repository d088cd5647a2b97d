"""Schema upgrades: a backup first, then every step in one transaction, or nothing changes.

MIGRATIONS maps a schema version to the step that upgrades a file from the version before it. A step runs
inside the upgrade's transaction with foreign keys on (use `PRAGMA defer_foreign_keys = ON` for table
rebuilds); the upgrade commits only if every step succeeds and `foreign_key_check` finds nothing.
Version 1 is the first released schema, so the list is empty until the schema changes: add the step here
and raise db.SCHEMA_VERSION in the same commit.
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

MIGRATIONS: dict[int, Migration] = {}


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
