"""Import images into a project: safe probing, batched inserts, labels from folders, names or label files.

`import_folder` (labels from folder or file names) and `import_annotations` (labels, boxes, splits and
tags read from CSV/COCO/VOC/YOLO/labelme by data.formats) share one loop, `_import`, that probes new files and
commits them in batches together with what they are given.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from artannot.data.formats import Annotation, Box, check_tags, printable, quoted
from artannot.data.images import (
    GRID_THUMB_PX,
    is_image_path,
    not_regular_reason,
    probe_image,
    save_thumbnail_cached,
    sha256_file,
)
from artannot.data.rules import Vocabulary
from artannot.data.splits import stratified_split
from artannot.errors import ArtAnnotError, ImportFormatError
from artannot.store.boxes import add_boxes, boxes_for, clip_box, delete_boxes
from artannot.store.db import now, write
from artannot.store.labels import LabelChange, apply_labels, current_labels_for
from artannot.store.repo import ensure_classes, ensure_source
from artannot.store.tags import TagChange, apply_tags, current_tag_rows, ensure_tags

Progress = Callable[[int, int, str], None]
LABEL_MODES = ("folder", "filename", "none")
SPLIT_MODES = ("auto", "train", "test")
BATCH = 200
# New files are probed (decoded, checked) and hashed by this many threads ahead of the loop, in order; the
# database writes stay in the importing thread. Decoders and hashlib release the GIL on real images.
PROBE_WORKERS = min(8, os.cpu_count() or 1)
PROBE_AHEAD = 256  # files probed ahead of the loop at most (memory stays bounded on a million files)
NOTES_SHOWN = 20  # notes listed after an import; the rest are counted
NOT_FOUND_KEPT = 1000  # annotated files missing from the folder named in the report; the rest only counted


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
    boxes: int = 0
    tagged: int = 0  # images whose tags the import changed
    kept_human: int = 0  # images whose curator label, boxes or removed tags the import left alone
    duplicate_of: list[tuple[str, str]] = field(default_factory=list)  # (new path, path with the same content)
    not_found: list[str] = field(default_factory=list)  # annotated images not under the root (the first ones)
    not_found_total: int = 0  # how many there were (a million-row label file keeps only the first few)
    new_classes: list[str] = field(default_factory=list)  # class names the label files introduced
    skipped_boxes: list[str] = field(default_factory=list)  # one line each: which box, why
    ambiguous: list[tuple[str, list[str]]] = field(default_factory=list)  # file names naming several classes
    not_files: list[tuple[str, str]] = field(default_factory=list)  # (path, why): links, pipes, devices skipped

    def summary(self) -> str:
        """One line a curator reads after an import."""
        parts = [f"{self.added} added", f"{self.already_known} already in project", f"{self.labelled} labelled",
                 f"{self.unlabelled} unlabelled"]
        if self.boxes:
            parts.append(f"{self.boxes} boxes")
        if self.tagged:
            parts.append(f"{self.tagged} tagged")
        if self.kept_human:
            parts.append(f"{self.kept_human} curator edits kept")
        if self.new_classes:
            parts.append(f"{len(self.new_classes)} new classes")
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicate content")
        if self.failed:
            parts.append(f"{len(self.failed)} skipped as unreadable")
        if self.not_files:
            parts.append(f"{len(self.not_files)} skipped as not regular files (links, pipes, devices)")
        if self.not_found:
            parts.append(f"{max(self.not_found_total, len(self.not_found))} annotated images not found")
        if self.skipped_boxes:
            parts.append(f"{len(self.skipped_boxes)} boxes skipped")
        if self.ambiguous:
            parts.append(f"{len(self.ambiguous)} ambiguous file names left unlabelled")
        if self.missing:
            parts.append(f"{len(self.missing)} known files missing on disk")
        if self.cancelled:
            parts.append("cancelled (what was imported so far is kept)")
        return ", ".join(parts)

    def notes(self, limit: int | None = NOTES_SHOWN) -> list[str]:
        """One printable line per thing a curator may want to check, for the CLI and the GUI's log: the first
        `limit` of them, then one line saying how many more there were (None: all)."""
        out = self.all_notes()
        unnamed = max(0, self.not_found_total - len(self.not_found))  # counted, not listed (one line says so)
        if limit is not None and len(out) > limit:
            out = [*out[:limit], f"… and {len(out) - limit + unnamed - (1 if unnamed else 0):,} more"]
        return out

    def all_notes(self) -> list[str]:
        """Every note, uncapped."""
        out = [f"skipped {printable(rel)}: {reason}" for rel, reason in [*self.failed, *self.not_files]]
        out += [f"missing {printable(rel)}: known to the project but no longer on disk" for rel in self.missing]
        out += [f"not found {where}: the label file names it, but it is not an image under the folder"
                for where in self.not_found]
        if self.not_found_total > len(self.not_found):
            out.append(f"not found: {self.not_found_total - len(self.not_found):,} more annotated images")
        out += [f"duplicate {printable(rel)}: same content as {printable(first)} (imported anyway)"
                for rel, first in self.duplicate_of]
        out += self.skipped_boxes
        out += [f"ambiguous {printable(rel)}: the file name names {', '.join(printable(n) for n in names)};"
                " left unlabelled" for rel, names in self.ambiguous]
        if self.new_classes:
            out.append(f"new classes from the label files: {printable(', '.join(self.new_classes))}"
                       " (pass --vocabulary to refuse unknown names instead)")
        return out


def scan_images(root: Path) -> Iterator[Path]:
    """Image files under root, sorted, never following links out of it or into loops."""
    yield from scan_collection(root)[0]


def scan_collection(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """(regular image files under root, sorted; (path under root, reason) of image-named entries skipped).

    Only regular files are kept: links (never followed, out of root or into loops), named pipes, sockets
    and devices are skipped with their reason, so opening one can neither hang nor read outside root.
    """
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if not is_image_path(path):
                continue
            try:
                why = not_regular_reason(os.lstat(path).st_mode)
            except OSError as exc:
                why = f"cannot be read ({exc.strerror or exc})"
            if why is None:
                files.append(path)
            else:
                rel = path.relative_to(root).as_posix()
                skipped.append((rel, f"{printable(rel)} is {why}, not a regular file; only image files are read"
                                if not why.startswith("cannot") else f"{printable(rel)} {why}"))
    return files, skipped


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
    unlabelled_folders: Sequence[str] = (),
    thumbnails: str | Path | None = None,
) -> ImportReport:
    """Add the images under src that the project does not know yet; never overwrite a curator's label.

    unlabelled_folders: sub-folder names (any case, e.g. `unsorted`) whose images get no label from the folder.
    thumbnails: a thumbnail cache folder: each new image's grid thumbnail is made there by the probing threads.
    A file name whose words name two classes is left unlabelled and listed in report.ambiguous."""
    if labels_from not in LABEL_MODES:
        raise ImportFormatError(f"--labels-from must be one of {', '.join(LABEL_MODES)}, csv:FILE, coco:FILE,"
                                f" voc:DIR, yolo:DIR or labelme:DIR, not {labels_from!r}")
    root = _check_root(src, split)
    if labels_from == "filename" and vocabulary is None:
        names = [r[0] for r in conn.execute("SELECT name FROM classes ORDER BY position, id")]
        if not names:
            raise ImportFormatError(
                "file-name labels need a vocabulary: pass --vocabulary FILE (one class per line)"
            )
        vocabulary = Vocabulary.from_names(names)

    skip = {n.strip().lower() for n in unlabelled_folders if n.strip()}
    report = ImportReport()

    def item_for(rel: str) -> _Item:
        path = Path(rel)
        if labels_from == "folder" and (folder_label(path) or "").lower() in skip:
            return _Item()
        if labels_from == "filename" and vocabulary is not None:
            found = vocabulary.match_all(path.name)
            if len({m.class_name for m in found}) > 1:
                report.ambiguous.append((rel, [m.class_name for m in found]))
                return _Item()
        label, detail = _label_for(path, labels_from, vocabulary)
        return _Item(label, detail)

    _import(conn, root, item_for, report, source="rule", relabel_known=False, split=split,
            description=f"labels from {labels_from} names on import of {root.name}", progress=progress,
            cancel=cancel, thumbnails=thumbnails)
    return report


def import_annotations(
    conn: sqlite3.Connection,
    images_root: str | Path,
    annotations: Iterable[Annotation],
    *,
    source: str = "import",
    split: str = "auto",
    vocabulary: Vocabulary | None = None,
    description: str = "labels from annotations",
    progress: Progress | None = None,
    cancel=None,
    thumbnails: str | Path | None = None,
) -> ImportReport:
    """Add the images under images_root with the labels, boxes, splits and tags that annotations give them.

    Images the project knows already get the annotations too, except where a curator labelled them
    (their label, boxes a person drew and tag states a person set are kept). An annotation that lists
    tags replaces the tags earlier imports or rules gave the image. Labels, boxes and tags form one
    undoable event.
    Everything is checked before the first write: an unknown class (with a vocabulary) or conflicting
    annotations refuse the import and change nothing. Annotated files missing on disk are reported.
    """
    root = _check_root(images_root, split)
    files, not_files = scan_collection(root)
    on_disk = {p.relative_to(root).as_posix() for p in files}
    # Streamed: only the annotations of files on disk are kept (a million junk rows cost no memory); the
    # others are counted, the first NOT_FOUND_KEPT named in the report.
    found: list[Annotation] = []
    missing: dict[str, str] = {}
    total, first = 0, None
    for a in annotations:
        total += 1
        first = first or a
        if a.path in on_disk:
            found.append(a)
        elif len(missing) < NOT_FOUND_KEPT:
            missing.setdefault(a.path, f"{printable(a.path)} ({a.where})")
    if total and not found:
        raise ImportFormatError(
            f"none of the {total} images the label file names is under {printable(root)} (the first,"
            f" {printable(first.path)} from {first.where}, is not there); check the folder and the paths")
    by_rel = _merge(found)
    rename = _class_mapping(conn, by_rel.values(), vocabulary)
    if vocabulary is not None:  # checked: now the vocabulary's classes may be created, in its order
        ensure_classes(conn, vocabulary.classes)
    existing = _class_names(conn)
    used = {n for rel, a in by_rel.items() if rel in on_disk for n in [a.label, *(b.label for b in a.boxes)] if n}
    report = ImportReport(new_classes=sorted({rename[n] for n in used if rename[n] not in existing}))
    items = {
        rel: _Item(rename.get(a.label), a.where or None, a.split,
                   [replace(b, label=rename[b.label]) for b in a.boxes], a.where, a.tags)
        for rel, a in by_rel.items() if rel in on_disk  # only files found are ever asked for
    }
    seen = _import(conn, root, items.get, report, source=source, relabel_known=True, split=split,
                   description=f"{description} on import of {root.name}", progress=progress, cancel=cancel,
                   scanned=(files, not_files), thumbnails=thumbnails)
    if report.cancelled:  # only the classes the committed batches created
        report.new_classes = [n for n in report.new_classes if n in _class_names(conn)]
    if not report.cancelled:
        report.not_found = [*missing.values(),
                            *(f"{printable(a.path)} ({a.where})" for rel, a in by_rel.items() if rel not in seen)]
        report.not_found_total = total - len(found) + sum(1 for rel in by_rel if rel not in seen)
    return report


def _check_root(src: str | Path, split: str) -> Path:
    if split not in SPLIT_MODES:
        raise ImportFormatError(f"--split must be one of {', '.join(SPLIT_MODES)}, not {split!r}")
    root = Path(src).expanduser()
    if not root.is_dir():
        raise ImportFormatError(f"{printable(root)} is not a folder of images")
    return root.resolve()


def _class_names(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM classes")}


def _merge(annotations: Sequence[Annotation]) -> dict[str, Annotation]:
    """One annotation per image path, tags cleaned and joined; two that disagree on its label or split are an error."""
    out: dict[str, Annotation] = {}
    for a in annotations:
        tags = None if a.tags is None else check_tags(a.tags, a.where or printable(a.path))
        old = out.get(a.path)
        if old is None:
            out[a.path] = Annotation(a.path, a.label, a.split, list(a.boxes), a.where, tags)
            continue
        if tags is not None:
            old.tags = check_tags([*(old.tags or []), *tags], a.where)
        for what, mine, theirs in (("label", a.label, old.label), ("split", a.split, old.split)):
            if mine is not None and theirs is not None and mine != theirs:
                raise ImportFormatError(
                    f"{a.where}: {printable(a.path)} gets {what} {quoted(mine)}, but {old.where} gave it"
                    f" {quoted(theirs)}; an image has one {what}")
        old.label, old.split = old.label or a.label, old.split or a.split
        old.boxes.extend(a.boxes)
    return out


def _class_mapping(conn: sqlite3.Connection, annotations, vocabulary: Vocabulary | None) -> dict[str, str]:
    """Each class name the annotations use -> the project class it means.

    Without a vocabulary, unknown names become new classes (the report lists them); with one, a name must
    be a class of the vocabulary or one of its synonyms (any case), else the import is refused.
    """
    used: dict[str, str] = {}
    for a in annotations:
        for name in ([a.label] if a.label else []) + [b.label for b in a.boxes]:
            used.setdefault(name, a.where)
    if vocabulary is None:
        return {n: n for n in used}
    known = {c.lower(): c for c in [*vocabulary.classes, *_class_names(conn)]}
    out = {}
    for name, where in used.items():
        target = known.get(name.lower()) or vocabulary.lookup(name)
        if target is None:
            some = ", ".join(vocabulary.classes[:8]) + (", ..." if len(vocabulary.classes) > 8 else "")
            raise ImportFormatError(f"{where}: class {quoted(name)} is not in the vocabulary ({some});"
                                    " add it to the vocabulary or fix the label")
        out[name] = target
    return out


@dataclass
class _Item:
    """What an import gives one image file: label with its evidence, split, boxes, tags (None: no say)."""

    label: str | None = None
    detail: str | None = None
    split: str | None = None
    boxes: Sequence[Box] = ()
    where: str = ""
    tags: Sequence[str] | None = None


def _db_path(rel: str) -> str | bytes:
    """The path as stored: text, or the raw bytes of a name that is not valid UTF-8 (lossless)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(rel)
    return rel


def _probe_and_hash(path: Path, rel: str, thumbnails: Path | None = None) -> tuple[object, str | None, str | None]:
    """(image info, sha256, None) for a readable image, else (None, None, the one-line reason); with a
    thumbnail folder, the grid's thumbnail is made too (one that fails is made later, by the grid)."""
    try:
        info, digest = probe_image(path), sha256_file(path)
        if thumbnails is not None:
            with contextlib.suppress(ArtAnnotError, OSError, ValueError):
                save_thumbnail_cached(path, digest, thumbnails, size=GRID_THUMB_PX)
        return info, digest, None
    except ArtAnnotError as exc:
        return None, None, str(exc)
    except OSError as exc:
        return None, None, f"{printable(rel)}: cannot read ({exc.strerror or exc})"


def _import(
    conn: sqlite3.Connection,
    root: Path,
    item_for: Callable[[str], _Item | None],
    report: ImportReport,
    *,
    source: str,
    relabel_known: bool,
    split: str,
    description: str,
    progress: Progress | None,
    cancel,
    scanned: tuple[list[Path], list[tuple[str, str]]] | None = None,
    thumbnails: str | Path | None = None,
) -> set[str]:
    """The one import loop: probe new files, commit them in batches with their labels, boxes and tags.

    Returns the paths (under root) of every image file found. Known files get their item applied only
    with relabel_known; a curator's label, boxes or tag states are never replaced.
    """
    source_id = ensure_source(conn, root)
    known = {os.fsdecode(r[0]): (r[1], r[2], r[3]) for r in conn.execute(
        "SELECT path, id, width, height FROM images WHERE source_id = ?", (source_id,))}
    known_hashes = {r[0]: os.fsdecode(r[1]) for r in conn.execute("SELECT sha256, path FROM images ORDER BY id")}
    files, report.not_files = scanned if scanned is not None else scan_collection(root)
    report.found = len(files)
    on_disk = {p.relative_to(root).as_posix() for p in files}
    report.missing = sorted(set(known) - on_disk)
    if report.missing:
        with write(conn):
            conn.executemany("UPDATE images SET missing = 1 WHERE source_id = ? AND path = ?",
                             [(source_id, _db_path(p)) for p in report.missing])

    new_ids: list[int] = []
    explicit: dict[int, str] = {}
    batch: list[tuple] = []  # (image id or None, rel, sha256, width, height, item)
    event_id: int | None = None
    labelled_new = 0

    def flush() -> None:
        """Commit a batch of images with their labels, boxes and tags: a crash keeps whole batches or nothing."""
        nonlocal event_id, labelled_new
        if not batch:
            return
        with write(conn):
            names = {n for *_, it in batch if it for n in [it.label, *(b.label for b in it.boxes)] if n}
            class_ids = ensure_classes(conn, sorted(names))
            targets = []  # (image id, width, height, rel, item, new?)
            for image_id, rel, digest, width, height, item in batch:
                if image_id is None:
                    cur = conn.execute(
                        "INSERT INTO images(source_id, path, sha256, width, height, added_at)"
                        " VALUES (?, ?, ?, ?, ?, ?)", (source_id, _db_path(rel), digest, width, height, stamp))
                    image_id = int(cur.lastrowid)
                    new_ids.append(image_id)
                if item is not None:
                    targets.append((image_id, width, height, rel, item, digest is not None))
            current = current_labels_for(conn, [t[0] for t in targets if t[4].label is not None])
            labels = []
            for image_id, _, _, _, item, is_new in targets:
                if item.label is None:
                    continue
                cur = current.get(image_id)
                if cur is not None and cur["source"] == "human":
                    if cur["class_id"] != class_ids[item.label]:
                        report.kept_human += 1
                    continue
                labels.append(LabelChange(image_id, class_ids[item.label], source, detail=item.detail))
                report.labelled += 1
                labelled_new += is_new
            first = apply_labels(conn, labels, description=description, protect_human=True, event_id=event_id)
            event_id = event_id or first
            event_id = _apply_boxes(conn, targets, class_ids, report, source, description, event_id)
            event_id = _apply_tags(conn, targets, report, source, description, event_id)
            for image_id, _, _, _, item, is_new in targets:
                if item.split is not None:
                    if is_new:
                        explicit[image_id] = item.split
                    conn.execute("UPDATE images SET split = ? WHERE id = ? AND (split IS NULL OR ?)",
                                 (item.split, image_id, is_new))
        batch.clear()

    stamp = now()
    seen: set[str] = set()
    reappeared: list[int] = []
    rels = [path.relative_to(root).as_posix() for path in files]
    thumbs = Path(thumbnails) if thumbnails is not None else None
    pool = ThreadPoolExecutor(max_workers=PROBE_WORKERS) if PROBE_WORKERS > 1 else None
    probes: dict[int, Future] = {}
    ahead = 0  # files[:ahead] are submitted

    def probe(k: int) -> tuple[object, str | None, str | None]:
        nonlocal ahead
        if pool is None:
            return _probe_and_hash(files[k], rels[k], thumbs)
        while ahead < min(len(files), k + PROBE_AHEAD):
            if rels[ahead] not in known:
                probes[ahead] = pool.submit(_probe_and_hash, files[ahead], rels[ahead], thumbs)
            ahead += 1
        return probes.pop(k).result()

    try:
        for done in range(1, len(files) + 1):
            if cancel is not None and cancel.is_set():
                report.cancelled = True
                break
            rel = rels[done - 1]
            seen.add(rel)
            item = item_for(rel)
            if rel in known:
                report.already_known += 1
                image_id, width, height = known[rel]
                reappeared.append(image_id)
                if relabel_known and item is not None:
                    batch.append((image_id, rel, None, width, height, item))
            else:
                info, digest, error = probe(done - 1)
                if error is not None:
                    report.failed.append((rel, error))
                else:
                    if digest in known_hashes:
                        report.duplicates += 1
                        report.duplicate_of.append((rel, known_hashes[digest]))
                    known_hashes.setdefault(digest, rel)
                    batch.append((None, rel, digest, info.width, info.height, item))
            if len(batch) >= BATCH:
                flush()
            if progress is not None and (done % 16 == 0 or done == len(files)):
                progress(done, len(files), "importing")
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    flush()
    if reappeared:
        with write(conn):
            conn.executemany("UPDATE images SET missing = 0 WHERE id = ? AND missing = 1",
                             [(i,) for i in reappeared])
    report.added = len(new_ids)
    report.unlabelled = report.added - labelled_new
    # Images a crashed or cancelled import committed without a split get theirs now, with the new ones.
    unsplit = [r[0] for r in conn.execute(
        "SELECT id FROM images WHERE source_id = ? AND split IS NULL", (source_id,)) if r[0] not in explicit]
    _assign_splits(conn, unsplit, split)
    return seen


def _apply_boxes(conn: sqlite3.Connection, targets: list[tuple], class_ids: dict[str, int], report: ImportReport,
                 source: str, description: str, event_id: int | None) -> int | None:
    """Add a batch's boxes, clipped to their images; a known image's earlier imported boxes are replaced
    (unless identical), boxes a person drew are kept. Returns the event they joined."""
    adds: list[tuple] = []
    drops: list[int] = []
    for image_id, width, height, rel, item, is_new in targets:
        if not item.boxes:
            continue
        rows = []
        for k, b in enumerate(item.boxes, 1):
            x, y, w, h = (b.x * width, b.y * height, b.w * width, b.h * height) if b.normalized \
                else (b.x, b.y, b.w, b.h)
            what = f"{item.where}: box {k} ({printable(b.label)}) on {printable(rel)}"
            try:
                rows.append((image_id, class_ids[b.label], *clip_box(x, y, w, h, width, height, what)))
            except ArtAnnotError as exc:
                report.skipped_boxes.append(f"{exc}; skipped")
        old = [] if is_new else boxes_for(conn, image_id)
        if old:
            if any(o.source == "human" for o in old):
                report.kept_human += 1
                continue
            key = sorted((o.class_id, *(round(v, 2) for v in (o.x, o.y, o.w, o.h))) for o in old)
            if key == sorted((r[1], *(round(v, 2) for v in r[2:])) for r in rows):
                continue
            drops += [o.id for o in old]
        adds += rows
    if drops:
        event_id = delete_boxes(conn, drops, source=source, description=description, event_id=event_id)
    if adds:
        event_id = add_boxes(conn, adds, source, description, event_id=event_id)
        report.boxes += len(adds)
    return event_id


def _apply_tags(conn: sqlite3.Connection, targets: list[tuple], report: ImportReport, source: str,
                description: str, event_id: int | None) -> int | None:
    """Set a batch's tags: those listed on, those an import or rule gave before and no longer listed off;
    tag states a person set are kept. Returns the event they joined."""
    listed = [(t[0], t[4].tags) for t in targets if t[4].tags is not None]
    if not listed:
        return event_id
    ids = ensure_tags(conn, dict.fromkeys(n for _, names in listed for n in names))
    rows: dict[int, dict[int, sqlite3.Row]] = {}
    for (image_id, tag_id), row in current_tag_rows(conn, [i for i, _ in listed]).items():
        rows.setdefault(image_id, {})[tag_id] = row
    changes: list[TagChange] = []
    for image_id, names in listed:
        wanted = {ids[n] for n in names}
        has = rows.get(image_id, {})
        mine = [TagChange(image_id, t, True, source) for t in wanted
                if t not in has or (has[t]["source"] != "human" and not has[t]["present"])]
        mine += [TagChange(image_id, t, False, source) for t, row in has.items()
                 if t not in wanted and row["present"] and row["source"] in ("import", "rule")]
        if any(t in has and has[t]["source"] == "human" and not has[t]["present"] for t in wanted):
            report.kept_human += 1  # the curator removed a tag the file lists
        report.tagged += bool(mine)
        changes += mine
    first = apply_tags(conn, changes, description=description, protect_human=True, event_id=event_id)
    return event_id or first


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
