"""Write the curated set and predictions in formats other tools read."""

from __future__ import annotations

import csv
import io
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

from artannot.errors import ArtAnnotError
from artannot.store import repo
from artannot.store.files import atomic_write_bytes

Progress = Callable[[int, int, str], None]
FORMATS = ("imagefolder", "csv", "predictions")


def _current(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT i.id, s.path AS root, i.path, i.split, c.name AS label, l.source, l.detail"
        " FROM images i JOIN sources s ON s.id = i.source_id"
        " LEFT JOIN labels l ON l.image_id = i.id AND l.active = 1 LEFT JOIN classes c ON c.id = l.class_id"
        " ORDER BY i.id"
    ).fetchall()


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    """Write a UTF-8 CSV atomically (a crash never leaves half a file)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def export_csv(conn: sqlite3.Connection, out: Path) -> int:
    """path, label, label source, split, evidence: one row per image (unlabelled ones with an empty label)."""
    rows = [[str(Path(r["root"]) / r["path"]), r["label"] or "", r["source"] or "", r["split"] or "",
             r["detail"] or ""] for r in _current(conn)]
    write_csv(out, ["path", "label", "label_source", "split", "evidence"], rows)
    return len(rows)


def export_predictions(conn: sqlite3.Connection, out: Path, model_id: int | None = None, top: int = 5) -> int:
    """path, then the model's top-k classes and scores, one row per image."""
    model_id = model_id if model_id is not None else repo.latest_model_id(conn)
    if model_id is None:
        raise ArtAnnotError("no trained model yet: train one before exporting predictions")
    rows = []
    for r in _current(conn):
        preds = repo.top_predictions(conn, model_id, r["id"])[:top]
        flat: list = []
        for name, score in preds:
            flat += [name, f"{score:.4f}"]
        flat += [""] * (2 * top - len(flat))
        rows.append([str(Path(r["root"]) / r["path"]), r["label"] or "", *flat])
    header = ["path", "label"] + [f"{k}{i}" for i in range(1, top + 1) for k in ("class", "score")]
    write_csv(out, header, rows)
    return len(rows)


def export_imagefolder(conn: sqlite3.Connection, out: Path, progress: Progress | None = None) -> int:
    """OUT/<split>/<class>/<file>: copies of labelled images, the layout torchvision's ImageFolder reads."""
    if out.exists() and any(out.iterdir()):
        raise ArtAnnotError(f"{out} is not empty; export into a new folder")
    rows = [r for r in _current(conn) if r["label"]]
    for n, r in enumerate(rows, 1):
        src = Path(r["root"]) / r["path"]
        folder = out / (r["split"] or "train") / _safe_name(r["label"])
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / _safe_name(Path(r["path"]).name)
        k = 1
        while dest.exists():
            dest = folder / f"{Path(dest.name).stem.rsplit('~', 1)[0]}~{k}{src.suffix}"
            k += 1
        try:
            shutil.copy2(src, dest)
        except OSError as exc:
            raise ArtAnnotError(f"cannot copy {src} to {dest}: {exc.strerror or exc}") from None
        if progress is not None and (n % 50 == 0 or n == len(rows)):
            progress(n, len(rows), "exporting")
    return len(rows)


def _safe_name(name: str) -> str:
    """A file or folder name that cannot climb out of the export folder."""
    cleaned = name.replace("/", "_").replace("\\", "_").strip()
    return "_" if cleaned in ("", ".", "..") else cleaned


def export(conn: sqlite3.Connection, out: Path, fmt: str, progress: Progress | None = None) -> int:
    """Dispatch to a format's writer; returns how many images it wrote."""
    if fmt == "csv":
        return export_csv(conn, out)
    if fmt == "predictions":
        return export_predictions(conn, out)
    if fmt == "imagefolder":
        return export_imagefolder(conn, out, progress)
    raise ArtAnnotError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
