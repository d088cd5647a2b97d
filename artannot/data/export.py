"""Write the curated set and predictions in formats other tools read.

imagefolder copies images into OUT/<split>/<class>/; csv, coco, voc, yolo and labelme write label files
that point at the images where they are (data.formats); predictions and predictions-json write the
latest model's top-5 per image.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

from artannot.data.formats import curated_set, printable, write_csv_rows, write_text
from artannot.data.formats.coco import write_coco
from artannot.data.formats.csv_labels import write_csv_labels
from artannot.data.formats.labelme import write_labelme
from artannot.data.formats.voc import write_voc
from artannot.data.formats.yolo import write_yolo
from artannot.errors import ArtAnnotError, StorageError
from artannot.store import repo

Progress = Callable[[int, int, str], None]
FORMATS = ("imagefolder", "csv", "coco", "voc", "yolo", "labelme", "predictions", "predictions-json")
_WRITERS = {"csv": write_csv_labels, "coco": write_coco, "voc": write_voc, "yolo": write_yolo,
            "labelme": write_labelme}


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    """Write a UTF-8 CSV atomically (a crash never leaves half a file); odd file-name bytes survive."""
    write_csv_rows(path, header, rows)


def export_csv(conn: sqlite3.Connection, out: Path) -> int:
    """path, label, label source, split, evidence, tags: one row per image (unlabelled ones with an empty label)."""
    return write_csv_labels(conn, out)


def _model_id(conn: sqlite3.Connection, model_id: int | None) -> int:
    model_id = model_id if model_id is not None else repo.active_model_id(conn)
    if model_id is None:
        raise ArtAnnotError("no trained model yet: train one before exporting predictions")
    return model_id


def prediction_table(results, top: int = 5) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of `artannot predict`'s CSV: path, then class1, score1 ... classK, scoreK (empty cells for
    an image with fewer guesses, e.g. one that could not be read)."""
    header = ["path"] + [f"{k}{i}" for i in range(1, top + 1) for k in ("class", "score")]
    rows = []
    for path, preds in results:
        flat = [x for name, score in preds[:top] for x in (name, f"{score:.4f}")]
        rows.append([str(path), *flat, *[""] * (2 * top - len(flat))])
    return header, rows


def export_predictions(conn: sqlite3.Connection, out: Path, model_id: int | None = None, top: int = 5) -> int:
    """path, then the model's top-k classes and scores, one row per image."""
    model_id = _model_id(conn, model_id)
    rows = []
    for im in curated_set(conn)[1]:
        preds = repo.top_predictions(conn, model_id, im.id)[:top]
        flat: list = []
        for name, score in preds:
            flat += [name, f"{score:.4f}"]
        flat += [""] * (2 * top - len(flat))
        rows.append([im.path, im.label or "", *flat])
    header = ["path", "label"] + [f"{k}{i}" for i in range(1, top + 1) for k in ("class", "score")]
    write_csv(out, header, rows)
    return len(rows)


def export_predictions_json(conn: sqlite3.Connection, out: Path, model_id: int | None = None,
                            top: int = 5) -> int:
    """{"model", "images": [{"path", "label", "split", "predictions": [{"class", "score"}]}]} as JSON."""
    model_id = _model_id(conn, model_id)
    images = [
        {"path": im.path, "label": im.label, "split": im.split,
         "predictions": [{"class": name, "score": round(score, 6)}
                         for name, score in repo.top_predictions(conn, model_id, im.id)[:top]]}
        for im in curated_set(conn)[1]
    ]
    write_text(out, json.dumps({"model": model_id, "images": images}, indent=1))
    return len(images)


def export_imagefolder(conn: sqlite3.Connection, out: Path, progress: Progress | None = None) -> int:
    """OUT/<split>/<class>/<file>: copies of labelled images, the layout torchvision's ImageFolder reads."""
    if out.exists() and any(out.iterdir()):
        raise ArtAnnotError(f"{out} is not empty; export into a new folder")
    rows = [im for im in curated_set(conn)[1] if im.label]
    for n, im in enumerate(rows, 1):
        src = Path(im.path)
        folder = out / (im.split or "train") / _safe_name(im.label)
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / _safe_name(src.name)
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


FOLDER_FORMATS = ("imagefolder", "voc", "yolo", "labelme")
PARTIAL = ".partial-"  # the temporary sibling a folder export is written into


def into_folder(out: Path, write: Callable[[Path], int]) -> int:
    """Run a folder writer on a temporary sibling of out, then rename it to out: an interrupted export leaves
    no folder under the final name (only a `.<name>.partial-…` one), never a set that looks complete."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ArtAnnotError(f"{printable(out)} is not empty; export into a new folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}{PARTIAL}{uuid.uuid4().hex[:12]}"
        tmp.mkdir()  # as any folder the curator makes (umask), unlike mkdtemp's private 0700
    except OSError as exc:
        raise StorageError(f"cannot write {printable(out)}: {exc.strerror or exc}") from None
    try:
        n = write(tmp)
        if out.is_dir():
            out.rmdir()  # the empty folder the curator chose (refused above unless empty)
        os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, ArtAnnotError):
            raise StorageError(f"cannot write {printable(out)}: {exc.strerror or exc}; nothing was exported"
                               ) from None
        raise
    return n


def export(conn: sqlite3.Connection, out: Path, fmt: str, progress: Progress | None = None) -> int:
    """Dispatch to a format's writer; returns how many images it wrote (folders appear whole or not at all)."""
    if fmt in FOLDER_FORMATS:
        if fmt == "imagefolder":
            return into_folder(out, lambda tmp: export_imagefolder(conn, tmp, progress))
        return into_folder(out, lambda tmp: _WRITERS[fmt](conn, tmp))
    if fmt in _WRITERS:
        return _WRITERS[fmt](conn, out)
    if fmt == "predictions":
        return export_predictions(conn, out)
    if fmt == "predictions-json":
        return export_predictions_json(conn, out)
    if fmt == "imagefolder":
        return export_imagefolder(conn, out, progress)
    raise ArtAnnotError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
