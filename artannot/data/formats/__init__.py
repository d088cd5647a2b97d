"""Annotation formats other tools write and read: CSV, COCO, Pascal VOC, YOLO, labelme.

Each format module has `read_*(src, images_root) -> list[Annotation]` (pure: reads files, touches no
project) and `write_*(conn, out) -> int` (the curated set, returns how many images it wrote). Readers
check every image path with `safe_join` and raise ImportFormatError with one line naming the file and
line or entry; `import_annotations` in data/importer.py then applies them to a project.

Paths are relative to the collection root, '/'-separated, and may carry undecodable file-name bytes as
surrogate escapes (os.fsdecode); the project stores those as the raw bytes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from artannot.errors import ImportFormatError
from artannot.store.files import atomic_write_bytes

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Box:
    """A box by class name; in pixels, or in fractions of the image size when `normalized` (YOLO)."""

    label: str
    x: float
    y: float
    w: float
    h: float
    normalized: bool = False


@dataclass(slots=True)  # a label file may list a million rows: a quarter of the memory without __dict__
class Annotation:
    """What a label file says about one image: its path under the root, label, split, boxes and tags."""

    path: str
    label: str | None = None
    split: str | None = None
    boxes: list[Box] = field(default_factory=list)
    where: str = ""  # "labels.csv line 3": where it came from, for messages
    tags: list[str] | None = None  # None: the file says nothing about tags; []: it says the image has none


# ---- messages ----------------------------------------------------------------------------------------


def printable(text: object) -> str:
    """Text as one printable line: newlines and undecodable bytes shown as escapes."""
    s = os.fspath(text) if isinstance(text, os.PathLike) else str(text)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


QUOTED_MAX = 80  # characters of a quoted value shown in a message; a longer one is cut with …


def quoted(text: object) -> str:
    """'text' for a message, printable (unlike repr, escapes are not doubled), cut short when long."""
    s = str(text) if not isinstance(text, os.PathLike) else os.fspath(text)
    shown = printable(s[:QUOTED_MAX]) + ("…" if len(s) > QUOTED_MAX else "")
    return f"'{shown}'"


def show(path: str | os.PathLike) -> str:
    """A file's name for a message: short, and one printable line."""
    return printable(Path(path).name)


# ---- paths -------------------------------------------------------------------------------------------


def clean_relpath(rel: str, where: str, root: Path | None = None) -> str:
    """A relative image path normalised to 'a/b.png'; absolute paths and '..' climbs are refused."""
    if not isinstance(rel, str) or not rel.strip():
        raise ImportFormatError(f"{where}: the image path is empty")
    raw = rel
    rel = rel.replace("\\", "/")  # label files written on Windows; also catches zip-slip names like ..\\x
    def inside() -> str:  # only for a message: printing a long root for every good row costs seconds
        return f" the collection root {printable(root)}" if root is not None else " the collection root"

    if "\x00" in rel:
        raise ImportFormatError(f"{where}: image path {quoted(raw)} contains a NUL byte")
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":" and rel[0].isalpha()):
        raise ImportFormatError(
            f"{where}: image path {quoted(raw)} is absolute; give it relative to{inside()}")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImportFormatError(f"{where}: image path {quoted(raw)} climbs out of{inside()} with '..'")
    if not parts:
        raise ImportFormatError(f"{where}: image path {quoted(raw)} names no file")
    return "/".join(parts)


def safe_join(root: str | os.PathLike, rel: str, where: str = "", dirs: dict[str, str] | None = None) -> Path:
    """root/rel, refusing absolute paths, '..' escapes and links that lead out of root.

    `dirs` (optional, for one reader's many rows) remembers the resolved folders, so a million rows cost a
    stat each rather than a full path resolution.
    """
    root = Path(root)
    clean = clean_relpath(rel, where or "path", root)
    path = root / clean
    if dirs is None:
        real_root, real = str(root.resolve()), str(path.resolve())
    else:
        if "" not in dirs:
            dirs[""] = str(root.resolve())
        real_root = dirs[""]
        folder, _, name = clean.rpartition("/")
        if folder not in dirs:
            dirs[folder] = str(root.joinpath(*folder.split("/")).resolve()) if folder else real_root
        real = os.path.join(dirs[folder], name)
        if os.path.islink(real):  # only the file itself can still be a link: its folder is resolved
            real = os.path.realpath(real)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise ImportFormatError(
            f"{where or 'path'}: image path {quoted(rel)} is a link that leads outside the collection"
            f" root {printable(root)}")
    return path


def output_path(out: str | os.PathLike, rel: str) -> Path:
    """Where a writer puts the file for image path rel: always inside out.

    An image path that is absolute or climbs with '..' (a crafted or odd project) keeps its shape with
    each '..' written as '__', so no writer can put a file outside its export folder.
    """
    parts = [p for p in str(rel).replace("\\", "/").split("/") if p not in ("", ".")]
    parts = ["__" if p == ".." else p.replace("\x00", "_") for p in parts]
    if parts and len(parts[0]) == 2 and parts[0][1] == ":":  # C: of a Windows path
        parts[0] = parts[0][0]
    return safe_join(out, "/".join(parts) or "_", "export")


def image_relpath(root: Path, raw: str, where: str, base: str = "", shown: str | None = None,
                  dirs: dict[str, str] | None = None) -> str:
    """The cleaned path under root of an image a label file names.

    Relative names are taken from `base` (a folder under root, '' for root itself). Absolute names are
    accepted only when they lie inside root (CSV exports list absolute paths); anything that leaves root,
    by '..', absolutely or through a link, is an ImportFormatError naming `where`.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise ImportFormatError(f"{where}: the image path is empty")
    candidate = raw.replace("\\", "/")
    raw = shown if shown is not None else raw  # as the label file wrote it
    if candidate.startswith("/"):
        norm = os.path.normpath(candidate)
        root_s = os.path.normpath(str(root))
        if os.path.commonpath([norm, root_s]) != root_s:  # perhaps the same folder reached through a link
            norm = os.path.join(os.path.realpath(os.path.dirname(norm)), os.path.basename(norm))
            root_s = os.path.realpath(root_s)
        if os.path.commonpath([norm, root_s]) != root_s or norm == root_s:
            raise ImportFormatError(
                f"{where}: image path {quoted(raw)} is outside the collection root {printable(root)}")
        rel = os.path.relpath(norm, root_s)
    else:
        joined = os.path.normpath(os.path.join(base, candidate)) if base else candidate
        if base and (joined == ".." or joined.startswith("../")):
            raise ImportFormatError(
                f"{where}: image path {quoted(raw)} climbs out of the collection root {printable(root)}")
        rel = joined
    rel = clean_relpath(rel, where, root)
    safe_join(root, rel, where, dirs)
    return rel


def find_image(root: Path, rel_stem: str) -> str | None:
    """The image under root whose path without extension is rel_stem ('a/b' -> 'a/b.jpg'), if any."""
    from artannot.data.images import is_image_path

    folder, _, stem = rel_stem.rpartition("/")
    try:
        names = sorted(os.listdir(root / folder if folder else root))
    except OSError:
        return None
    for name in names:
        if Path(name).stem == stem and is_image_path(name):
            return f"{folder}/{name}" if folder else name
    return None


# ---- reading -----------------------------------------------------------------------------------------


def read_text(path: Path, what: str) -> str:
    """A label file's text (UTF-8, BOM tolerated; undecodable bytes kept as surrogate escapes)."""
    import stat

    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)  # non-blocking: a named pipe given as a label file must not hang the import
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ImportFormatError(f"cannot read {what} {printable(path)}: not a regular file")
            with os.fdopen(fd, "rb") as fh:
                fd = -1
                data = fh.read()
        finally:
            if fd >= 0:
                os.close(fd)
    except OSError as exc:
        raise ImportFormatError(f"cannot read {what} {printable(path)}: {exc.strerror or exc}") from None
    return data.decode("utf-8-sig", errors="surrogateescape")


def load_json(path: Path) -> object:
    """Parse a JSON file; a syntax error names the line and column."""
    text = read_text(path, "JSON file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(
            f"{show(path)}: not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})") from None
    except RecursionError:
        raise ImportFormatError(f"{show(path)}: JSON nested too deeply to read") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts (4300)
        first = (str(exc).strip().splitlines() or ["unreadable value"])[0][:120]
        raise ImportFormatError(f"{show(path)}: not valid JSON ({first})") from None


def check_name(name: object, where: str) -> str:
    """A class name from a label file: non-empty text, one line, valid UTF-8."""
    if not isinstance(name, str) or not name.strip():
        raise ImportFormatError(f"{where}: the class name is missing or empty")
    name = name.strip()
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ImportFormatError(
            f"{where}: class name {quoted(name)} is not valid UTF-8 text; save the file as UTF-8") from None
    if not name.isprintable():
        raise ImportFormatError(f"{where}: class name {quoted(name[:40])} contains control characters")
    from artannot.store.repo import MAX_CLASS_LENGTH

    if len(name) > MAX_CLASS_LENGTH:
        raise ImportFormatError(f"{where}: class name {quoted(name[:20] + '…')} is {len(name):,} characters long;"
                                f" a class name has at most {MAX_CLASS_LENGTH}")
    return name


def number(value: object, where: str, what: str) -> float:
    """A finite number from a label file."""
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ImportFormatError(f"{where}: {what} {quoted(str(value))} is not a number") from None
    if out != out or out in (float("inf"), float("-inf")) or isinstance(value, bool):
        raise ImportFormatError(f"{where}: {what} {quoted(str(value))} is not a finite number")
    return out


def make_box(label: str, x: float, y: float, w: float, h: float, where: str, normalized: bool = False) -> Box:
    """A box whose width and height are checked to be positive."""
    if w <= 0 or h <= 0:
        raise ImportFormatError(f"{where}: box of {quoted(label)} has width {w:g} and height {h:g};"
                                " both must be above 0")
    return Box(label, x, y, w, h, normalized)


def check_tags(values: object, where: str) -> list[str]:
    """Tag names from a label file, cleaned as the project stores them (case-insensitive duplicates dropped)."""
    from artannot.errors import ArtAnnotError
    from artannot.store.tags import clean_tag

    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ImportFormatError(f"{where}: tags must be a list of text names")
    out: dict[str, str] = {}
    for value in values:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ImportFormatError(
                f"{where}: tag {quoted(value)} is not valid UTF-8 text; save the file as UTF-8") from None
        try:
            tag = clean_tag(value)
        except ArtAnnotError as exc:
            raise ImportFormatError(f"{where}: {printable(exc)}") from None
        out.setdefault(tag.lower(), tag)
    return list(out.values())


def check_split(value: object, where: str) -> str | None:
    """A split name (train, val or test), or None when blank."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or value.strip().lower() not in SPLITS:
        raise ImportFormatError(f"{where}: split {quoted(str(value))} must be train, val or test")
    return value.strip().lower()


# ---- the curated set, for writers --------------------------------------------------------------------


@dataclass
class ExportImage:
    """One image as writers see it: path under the export root, size, label, split, boxes and tags."""

    id: int
    rel: str
    path: str
    width: int
    height: int
    split: str | None
    label: str | None
    label_source: str | None
    detail: str | None
    boxes: list[tuple[str, float, float, float, float]]
    tags: list[str] = field(default_factory=list)  # the tags it carries, sorted by name (any case)


def curated_set(conn: sqlite3.Connection) -> tuple[str, list[ExportImage]]:
    """(export root, images in import order): paths are relative to the folder holding every source."""
    from artannot.store.boxes import boxes_by_image
    from artannot.store.tags import tags_for

    names = {r[0]: r[1] for r in conn.execute("SELECT id, name FROM classes")}
    roots = [r[0] for r in conn.execute("SELECT path FROM sources")]
    base = os.path.commonpath(roots) if roots else ""
    if len(roots) == 1:
        base = roots[0]
    boxes = boxes_by_image(conn)
    rows = conn.execute(
        "SELECT i.id, s.path AS root, i.path, i.width, i.height, i.split, c.name AS label, l.source, l.detail"
        " FROM images i JOIN sources s ON s.id = i.source_id"
        " LEFT JOIN labels l ON l.image_id = i.id AND l.active = 1 LEFT JOIN classes c ON c.id = l.class_id"
        " ORDER BY i.id"
    ).fetchall()
    tags = tags_for(conn, [r["id"] for r in rows])
    out = []
    for r in rows:
        full = os.path.join(r["root"], os.fsdecode(r["path"]))
        rel = os.path.relpath(full, base).replace(os.sep, "/")
        out.append(ExportImage(
            r["id"], rel, full, r["width"], r["height"], r["split"], r["label"], r["source"], r["detail"],
            [(names[b.class_id], b.x, b.y, b.w, b.h) for b in boxes.get(r["id"], []) if b.class_id in names],
            tags.get(r["id"], []),
        ))
    return base, out


def ordered_classes(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    """(id, name) of every class in display order."""
    return [(r[0], r[1]) for r in conn.execute("SELECT id, name FROM classes ORDER BY position, id")]


def empty_folder(out: Path) -> None:
    """Refuse to export into a folder that already holds files."""
    from artannot.errors import ArtAnnotError

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ArtAnnotError(f"{printable(out)} is not empty; export into a new folder")
    out.mkdir(parents=True, exist_ok=True)


def encode_text(text: str) -> bytes:
    """UTF-8, with undecodable file-name bytes written back as the original bytes."""
    return text.encode("utf-8", errors="surrogateescape")


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    atomic_write_bytes(path, encode_text(text))


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def csv_cell(value: object) -> object:
    """A cell a spreadsheet will not run: text starting with = + - @ tab or CR gets a leading ' (OWASP).

    Plain numbers ("-0.25") are left as they are; the CSV reader drops the quote again on import.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_rows(rows) -> list[list]:
    """Rows with every cell passed through csv_cell: what every CSV writer writes."""
    return [[csv_cell(v) for v in row] for row in rows]


def uncsv_cell(text: str) -> str:
    """A cell as written before csv_cell quoted it (the reader's side)."""
    return text[1:] if text.startswith("'") and text[1:2] and text[1:].startswith(FORMULA_STARTS) else text


def write_csv_rows(path: Path, header: list[str], rows: list[list]) -> None:
    """Write a UTF-8 CSV atomically (a crash never leaves half a file); odd file-name bytes survive; cells that a
    spreadsheet would run as formulas are neutralised (csv_cell)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(csv_rows([header])[0])
    writer.writerows(csv_rows(rows))
    write_text(path, buf.getvalue())


def fmt_num(v: float) -> str:
    """A coordinate as text: integers without a decimal point, others to 1/100 px."""
    return str(int(round(v))) if abs(v - round(v)) < 1e-9 else f"{v:.2f}".rstrip("0").rstrip(".")


# ---- dispatch ----------------------------------------------------------------------------------------

# --labels-from KIND:PATH -> (module, reader); PATH is a file for csv and coco, a folder for the others.
READERS = {
    "csv": ("csv_labels", "iter_csv_labels"),
    "coco": ("coco", "read_coco"),
    "voc": ("voc", "read_voc"),
    "yolo": ("yolo", "read_yolo"),
    "labelme": ("labelme", "read_labelme"),
}


def read_annotations(kind: str, src: str | os.PathLike, images_root: str | os.PathLike) -> list[Annotation]:
    """Read a label file or folder of one of the READERS kinds, for images under images_root."""
    return list(iter_annotations(kind, src, images_root))


def iter_annotations(kind: str, src: str | os.PathLike, images_root: str | os.PathLike) -> Iterable[Annotation]:
    """read_annotations, streamed where the format allows (CSV: a row at a time); a bad entry raises
    ImportFormatError when it is reached, so a caller consumes it all before writing anything."""
    import importlib

    if kind not in READERS:
        raise ImportFormatError(f"unknown label format {kind!r}: use one of {', '.join(READERS)}")
    src = Path(src).expanduser()
    if not src.exists():
        raise ImportFormatError(f"{printable(src)} does not exist: pass an existing {kind} "
                                f"{'file' if kind in ('csv', 'coco') else 'folder'}")
    if kind in ("csv", "coco") and not src.is_file():
        raise ImportFormatError(f"{printable(src)} is not a file: {kind}:FILE names one {kind} file")
    module, reader = READERS[kind]
    fn = getattr(importlib.import_module(f"artannot.data.formats.{module}"), reader)
    return fn(src.absolute(), Path(images_root).expanduser().resolve())
