"""Import a folder of images into a project: safe probing, batched inserts, labels from folders or names."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from artannot.data.images import is_image_path, probe_image, sha256_file
from artannot.data.rules import Vocabulary
from artannot.data.splits import stratified_split
from artannot.errors import ArtAnnotError, ImportFormatError
from artannot.store.db import now, write
from artannot.store.labels import LabelChange, apply_labels
from artannot.store.repo import ensure_classes, ensure_source

Progress = Callable[[int, int, str], None]
LABEL_MODES = ("folder", "filename", "none")
SPLIT_MODES = ("auto", "train", "test")
BATCH = 200


@dataclass
class ImportReport:
    """What an import did, for the CLI summary and the GUI's status bar."""

    found: int = 0
    added: int = 0
    already_known: int = 0
    labelled: int = 0
    unlabelled: int = 0
    duplicates: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    cancelled: bool = False

    def summary(self) -> str:
        """One line a curator reads after an import."""
        parts = [f"{self.added} added", f"{self.already_known} already in project", f"{self.labelled} labelled",
                 f"{self.unlabelled} unlabelled"]
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicate content")
        if self.failed:
            parts.append(f"{len(self.failed)} skipped as unreadable")
        if self.missing:
            parts.append(f"{len(self.missing)} known files missing on disk")
        if self.cancelled:
            parts.append("cancelled (what was imported so far is kept)")
        return ", ".join(parts)


def scan_images(root: Path) -> Iterator[Path]:
    """Image files under root, sorted, never following links out of it or into loops."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if is_image_path(path) and not path.is_symlink():
                yield path


def folder_label(rel: Path) -> str | None:
    """The parent folder's name is the label; files directly under the root have none."""
    return rel.parent.name if len(rel.parts) > 1 else None


def import_folder(
    conn: sqlite3.Connection,
    src: str | Path,
    *,
    labels_from: str = "folder",
    vocabulary: Vocabulary | None = None,
    split: str = "auto",
    progress: Progress | None = None,
    cancel=None,
) -> ImportReport:
    """Add the images under src that the project does not know yet; never overwrite a curator's label."""
    if labels_from not in LABEL_MODES:
        raise ImportFormatError(f"--labels-from must be one of {', '.join(LABEL_MODES)}, not {labels_from!r}")
    if split not in SPLIT_MODES:
        raise ImportFormatError(f"--split must be one of {', '.join(SPLIT_MODES)}, not {split!r}")
    root = Path(src).expanduser()
    if not root.is_dir():
        raise ImportFormatError(f"{root} is not a folder of images")
    root = root.resolve()
    if labels_from == "filename" and vocabulary is None:
        names = [r[0] for r in conn.execute("SELECT name FROM classes ORDER BY position, id")]
        if not names:
            raise ImportFormatError(
                "file-name labels need a vocabulary: pass --vocabulary FILE (one class per line)"
            )
        vocabulary = Vocabulary.from_names(names)

    report = ImportReport()
    source_id = ensure_source(conn, root)
    known = {r[0]: r[1] for r in conn.execute(
        "SELECT path, id FROM images WHERE source_id = ?", (source_id,))}
    known_hashes = {r[0] for r in conn.execute("SELECT sha256 FROM images")}
    files = list(scan_images(root))
    report.found = len(files)
    on_disk = {p.relative_to(root).as_posix() for p in files}
    report.missing = sorted(set(known) - on_disk)
    if report.missing:
        with write(conn):
            conn.executemany("UPDATE images SET missing = 1 WHERE source_id = ? AND path = ?",
                             [(source_id, p) for p in report.missing])

    new_ids: list[int] = []
    batch: list[tuple] = []
    event_id: int | None = None

    def flush() -> None:
        """Commit a batch of images with their labels: a crash keeps whole batches or nothing."""
        nonlocal event_id
        if not batch:
            return
        with write(conn):
            labels: list[LabelChange] = []
            class_ids = ensure_classes(conn, sorted({r[6] for r in batch if r[6] is not None}))
            for row in batch:
                cur = conn.execute(
                    "INSERT INTO images(source_id, path, sha256, width, height, added_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)", row[:6])
                image_id = int(cur.lastrowid)
                new_ids.append(image_id)
                if row[6] is not None:
                    labels.append(LabelChange(image_id, class_ids[row[6]], "rule", detail=row[7]))
            first = apply_labels(conn, labels, description=f"labels from {labels_from} names on import"
                                 f" of {root.name}", event_id=event_id)
            event_id = event_id or first
            report.labelled += len(labels)
        batch.clear()

    stamp = now()
    for done, path in enumerate(files, 1):
        if cancel is not None and cancel.is_set():
            report.cancelled = True
            break
        rel = path.relative_to(root).as_posix()
        if rel in known:
            report.already_known += 1
            if known[rel] is not None:
                conn.execute("UPDATE images SET missing = 0 WHERE id = ? AND missing = 1", (known[rel],))
        else:
            try:
                info = probe_image(path)
                digest = sha256_file(path)
            except ArtAnnotError as exc:
                report.failed.append((rel, str(exc)))
            except OSError as exc:
                report.failed.append((rel, f"{rel}: cannot read ({exc.strerror or exc})"))
            else:
                if digest in known_hashes:
                    report.duplicates += 1
                known_hashes.add(digest)
                label, detail = _label_for(Path(rel), labels_from, vocabulary)
                batch.append((source_id, rel, digest, info.width, info.height, stamp, label, detail))
                if len(batch) >= BATCH:
                    flush()
        if progress is not None and (done % 16 == 0 or done == len(files)):
            progress(done, len(files), "importing")
    flush()
    report.added = len(new_ids)

    report.unlabelled = report.added - report.labelled
    _assign_splits(conn, new_ids, split)
    return report


def _label_for(rel: Path, labels_from: str, vocabulary: Vocabulary | None) -> tuple[str | None, str | None]:
    """The class name a file gets on import, and the evidence for it."""
    if labels_from == "folder":
        name = folder_label(rel)
        return name, (f"folder '{name}'" if name else None)
    if labels_from == "filename" and vocabulary is not None:
        match = vocabulary.match(rel.name)
        if match is not None:
            return match.class_name, f"file-name token '{match.token}'"
    return None, None


def _assign_splits(conn: sqlite3.Connection, image_ids: list[int], split: str) -> None:
    """Give newly imported images their split: fixed, or stratified 80/20 by label."""
    if not image_ids:
        return
    if split in ("train", "test"):
        assignment = {i: split for i in image_ids}
    else:
        rows = {}
        for start in range(0, len(image_ids), 500):
            chunk = image_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows.update({r[0]: (r[1], r[2]) for r in conn.execute(
                f"SELECT i.id, i.sha256, l.class_id FROM images i LEFT JOIN labels l"
                f" ON l.image_id = i.id AND l.active = 1 WHERE i.id IN ({marks})", chunk)})
        labelled = {i: c for i, (_, c) in rows.items() if c is not None}
        assignment = stratified_split(labelled, {i: h for i, (h, _) in rows.items()})
        assignment.update({i: "train" for i in rows if i not in labelled})
    with write(conn):
        conn.executemany("UPDATE images SET split = ? WHERE id = ?", [(s, i) for i, s in assignment.items()])
