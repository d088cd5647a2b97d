"""labelme JSON: one file per image with `imagePath` (relative to the JSON file) and `shapes`.

Rectangles, polygons and circles become boxes (a polygon's bounding box); the image-level label is the
one `flags` entry set to true. The writer adds a `"split"` key, which labelme keeps as extra data, and
never embeds image data.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path

from artannot.data.formats import (
    Annotation,
    Box,
    check_name,
    check_split,
    curated_set,
    empty_folder,
    image_relpath,
    load_json,
    make_box,
    number,
    output_path,
    printable,
    quoted,
    write_text,
)
from artannot.errors import ImportFormatError

SHAPES = ("rectangle", "polygon", "circle")


def _json_files(folder: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.lower().endswith(".json") and not name.startswith("."):
                out.append(Path(dirpath, name).relative_to(folder).as_posix())
    return out


def read_labelme(folder: str | Path, images_root: str | Path) -> list[Annotation]:
    """Annotations from a folder of labelme files; a bad file refuses the import, naming it."""
    folder, root = Path(folder).absolute(), Path(images_root).resolve()
    if not folder.is_dir():
        raise ImportFormatError(f"{printable(folder)} is not a folder of labelme JSON files")
    out = []
    for rel_json in _json_files(folder):
        where = printable(rel_json)
        path = folder / rel_json
        data = load_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
            raise ImportFormatError(f"{where}: not a labelme file (no \"shapes\" list)")
        image = data.get("imagePath")
        if not isinstance(image, str) or not image.strip():
            raise ImportFormatError(f"{where}: \"imagePath\" is missing")
        full = image if image.replace("\\", "/").startswith("/") else os.path.join(path.parent, image)
        ann = Annotation(image_relpath(root, full.replace("\\", "/"), where, shown=image), where=where,
                         split=check_split(data.get("split"), where))
        flags = data.get("flags") or {}
        if not isinstance(flags, dict):
            raise ImportFormatError(f"{where}: \"flags\" must be an object of name: true/false")
        chosen = [name for name, on in flags.items() if on is True]
        if len(chosen) > 1:
            raise ImportFormatError(f"{where}: {len(chosen)} flags are set ({printable(', '.join(chosen))});"
                                    " an image has one label, so set one")
        ann.label = check_name(chosen[0], where) if chosen else None
        for k, shape in enumerate(data["shapes"], 1):
            ann.boxes.append(_shape_box(shape, f"{where} shape {k}"))
        out.append(ann)
    return out


def _shape_box(shape: object, where: str) -> Box:
    if not isinstance(shape, dict):
        raise ImportFormatError(f"{where}: a shape must be an object")
    kind = shape.get("shape_type") or "polygon"
    if kind not in SHAPES:
        raise ImportFormatError(f"{where}: shape_type {quoted(kind)} is not supported;"
                                f" ArtAnnot imports {', '.join(SHAPES)}")
    points = shape.get("points")
    if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
        raise ImportFormatError(f"{where}: \"points\" must be a list of [x, y] pairs")
    pts = [(number(p[0], where, "x"), number(p[1], where, "y")) for p in points]
    if len(pts) < 2:
        raise ImportFormatError(f"{where}: a {kind} needs at least 2 points, found {len(pts)}")
    if kind == "circle":
        (cx, cy), (ex, ey) = pts[:2]
        r = math.hypot(ex - cx, ey - cy)
        x, y, w, h = cx - r, cy - r, 2 * r, 2 * r
    else:
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x, y, w, h = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
    return make_box(check_name(shape.get("label"), where), x, y, w, h, where)


def write_labelme(conn: sqlite3.Connection, out: Path) -> int:
    """OUT/<path>.json per image, pointing back at the original image (images are never copied)."""
    empty_folder(out)
    _, images = curated_set(conn)
    used: set[str] = set()
    for im in images:
        stem = im.rel.rsplit(".", 1)[0] if "." in Path(im.rel).name else im.rel
        stem = im.rel if stem in used else stem
        used.add(stem)
        target = output_path(out, f"{stem}.json")
        target.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "version": "5.4.1",
            "flags": {im.label: True} if im.label is not None else {},
            "shapes": [{"label": label, "points": [[x, y], [x + w, y + h]], "group_id": None,
                        "description": "", "shape_type": "rectangle", "flags": {}}
                       for label, x, y, w, h in im.boxes],
            "imagePath": os.path.relpath(im.path, target.parent),
            "imageData": None,
            "imageHeight": im.height,
            "imageWidth": im.width,
        }
        if im.split:
            data["split"] = im.split
        write_text(target, json.dumps(data, indent=1))
    return len(images)
