"""Image-level labels and tags as CSV: `path,label[,split]`, with or without a header row.

With a header, the columns are found by name (path/file/filename/image, label/class, split, tags/tag/
keywords) and others (label_source, evidence: what `artannot export --format csv` adds) are ignored; a
header may name tags without a label column. A tags cell lists names separated by ';' (or '|'); once a
file has a tags column, a blank cell says the image has no tags. Paths are relative to the collection
root, or absolute inside it.
"""

from __future__ import annotations

import csv
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from artannot.data.formats import (
    Annotation,
    check_name,
    check_split,
    check_tags,
    curated_set,
    image_relpath,
    printable,
    show,
    uncsv_cell,
    write_csv_rows,
)
from artannot.errors import ImportFormatError

PATH_COLUMNS = ("path", "file", "filename", "file_name", "image")
LABEL_COLUMNS = ("label", "class", "category")
TAG_COLUMNS = ("tags", "tag", "keywords")
HEADER = ["path", "label", "label_source", "split", "evidence", "tags"]


def read_csv_labels(path: str | Path, images_root: str | Path) -> list[Annotation]:
    """Annotations from a labels CSV; any bad row refuses the whole file with its line number."""
    return list(iter_csv_labels(path, images_root))


def iter_csv_labels(path: str | Path, images_root: str | Path) -> Iterator[Annotation]:
    """The annotations of a labels CSV one row at a time (a million-row file is never held in memory); a bad
    row raises ImportFormatError with its line number when it is reached."""
    path, root = Path(path), Path(images_root).resolve()
    name = show(path)
    cols: tuple[int | None, ...] = (0, 1, 2, None)
    try:  # streamed: a file of a million rows is read a line at a time, not held twice in memory
        fh = open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")  # noqa: SIM115
    except OSError as exc:
        raise ImportFormatError(f"cannot read labels CSV {printable(path)}: {exc.strerror or exc}") from None
    dirs: dict[str, str] = {}  # resolved folders, shared by the rows
    with fh:
        reader = csv.reader(fh)
        try:
            for n, row in enumerate(reader):
                where = f"{name} line {reader.line_num}"
                if not row or all(not cell.strip() for cell in row):
                    continue
                if n == 0 and row[0].strip().lower() in PATH_COLUMNS:
                    cols = _columns(row, where)
                    continue
                cells = [uncsv_cell(row[i].strip()) if i is not None and i < len(row) else "" for i in cols]
                rel = image_relpath(root, cells[0], where, dirs=dirs)
                label = check_name(cells[1], where) if cells[1] else None
                tags = None if cols[3] is None else check_tags(
                    [t for t in re.split(r"[;|]", cells[3]) if t.strip()], where)
                yield Annotation(rel, label, check_split(cells[2], where), where=where, tags=tags)
        except csv.Error as exc:
            raise ImportFormatError(f"{name} line {reader.line_num}: not valid CSV ({exc})") from None
        except OSError as exc:
            raise ImportFormatError(f"cannot read labels CSV {printable(path)}: {exc.strerror or exc}") from None


def _columns(header: list[str], where: str) -> tuple[int | None, ...]:
    """(path, label, split, tags) column indexes of a header row; label or tags may be absent, not both."""
    names = [h.strip().lower() for h in header]
    label = next((names.index(c) for c in LABEL_COLUMNS if c in names), None)
    tags = next((names.index(c) for c in TAG_COLUMNS if c in names), None)
    if label is None and tags is None:
        raise ImportFormatError(f"{where}: the header has no label column (one of {', '.join(LABEL_COLUMNS)})"
                                f" and no tags column ({', '.join(TAG_COLUMNS)}): {printable(','.join(header))}")
    return 0, label, names.index("split") if "split" in names else None, tags


def write_csv_labels(conn: sqlite3.Connection, out: Path) -> int:
    """path, label, label source, split, evidence, tags (';'-separated): one row per image."""
    _, images = curated_set(conn)
    rows = [[im.path, im.label or "", im.label_source or "", im.split or "", im.detail or "", ";".join(im.tags)]
            for im in images]
    write_csv_rows(out, HEADER, rows)
    return len(rows)
