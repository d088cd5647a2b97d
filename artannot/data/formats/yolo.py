"""YOLO text labels: `class cx cy w h` per line, normalised to the image size, one file per image.

Layout: DIR/labels/<image path under the root, extension dropped>.txt (or the .txt files directly in DIR),
class names in DIR/classes.txt (or obj.names, or `names:` in DIR/data.yaml), and splits in list files
named by data.yaml's train/val/test keys (image paths absolute inside the collection root, or relative
to it). Without lists,
a first folder named train, val or test (Ultralytics' labels/train/...) gives the split. Polygon lines
(`class x1 y1 x2 y2 ...`) become their bounding box. YOLO has no image-level label.

The writer leaves images where they are, so Ultralytics, which finds a label by swapping `images` for
`labels` in the image's path, needs the images linked or copied under an `images/` folder beside `labels/`.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from artannot.data.formats import (
    SPLITS,
    Annotation,
    Box,
    check_name,
    curated_set,
    empty_folder,
    find_image,
    image_relpath,
    number,
    ordered_classes,
    output_path,
    printable,
    quoted,
    read_text,
    safe_join,
    show,
    write_text,
)
from artannot.errors import ImportFormatError

NAME_FILES = ("classes.txt", "obj.names")


def parse_data_yaml(text: str) -> dict[str, object]:
    """The few keys of a YOLO data.yaml we need (path, train, val, test, names), without a YAML library."""
    out: dict[str, object] = {}
    names: list[str] | None = None
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if raw[0] in " \t-" and names is not None:  # inside a `names:` block
            item = line.strip()
            item = item[1:] if item.startswith("-") else item.split(":", 1)[1] if ":" in item else item
            names.append(_scalar(item))
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        names = None
        if key == "names":
            if value.startswith("["):
                out["names"] = [_scalar(v) for v in value.strip("[]").split(",") if v.strip()]
            elif value.startswith("{"):  # {0: a, 1: b}
                out["names"] = [_scalar(v.split(":", 1)[-1]) for v in value.strip("{}").split(",") if v.strip()]
            elif not value:
                names = []
                out["names"] = names
        elif key in ("path", "train", "val", "test"):
            out[key] = _scalar(value)
    return out


def _scalar(value: str) -> str:
    value = value.strip()
    if value.startswith('"'):
        try:
            return str(json.loads(value))
        except json.JSONDecodeError:
            return value.strip('"')
    if value.startswith("'") and value.endswith("'") and len(value) > 1:
        return value[1:-1].replace("''", "'")
    return value


def _class_names(folder: Path, config: dict[str, object]) -> list[str]:
    for name in NAME_FILES:
        if (folder / name).is_file():
            lines = read_text(folder / name, "YOLO class list").splitlines()
            return [check_name(line, f"{name} line {n}") for n, line in enumerate(lines, 1) if line.strip()]
    names = config.get("names")
    if isinstance(names, list) and names:
        return [check_name(n, f"data.yaml names entry {k}") for k, n in enumerate(names)]
    raise ImportFormatError(f"{printable(folder)} has no classes.txt, obj.names or data.yaml `names`;"
                            " YOLO class numbers need their names")


def _label_files(folder: Path, skip: set[str]) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            rel = Path(dirpath, name).relative_to(folder).as_posix()
            if name.endswith(".txt") and not name.startswith(".") and rel not in skip:
                out.append(rel)
    return out


def _split_lists(folder: Path, root: Path, config: dict[str, object]) -> dict[str, str]:
    out: dict[str, str] = {}
    for split in SPLITS:
        value = config.get(split)
        if not isinstance(value, str) or not value.endswith(".txt"):
            continue
        listing = safe_join(folder, value, f"data.yaml {split}")
        if not listing.is_file():
            continue
        for n, line in enumerate(read_text(listing, "YOLO image list").splitlines(), 1):
            if line.strip():
                out[image_relpath(root, line.strip(), f"{show(listing)} line {n}")] = split
    return out


def read_yolo(folder: str | Path, images_root: str | Path) -> list[Annotation]:
    """Annotations from a YOLO folder; a bad line refuses the import, naming the file and line."""
    folder, root = Path(folder).absolute(), Path(images_root).resolve()
    if not folder.is_dir():
        raise ImportFormatError(f"{printable(folder)} is not a folder of YOLO label files")
    config = parse_data_yaml(read_text(folder / "data.yaml", "data.yaml")) if (folder / "data.yaml").is_file() else {}
    names = _class_names(folder, config)
    splits = _split_lists(folder, root, config)
    label_dir = folder / "labels" if (folder / "labels").is_dir() else folder
    skip = set(NAME_FILES) | {v for v in config.values() if isinstance(v, str)} if label_dir == folder else set()
    out = []
    for rel_txt in _label_files(label_dir, skip):
        where = printable(rel_txt)
        stem = rel_txt[:-4]
        rel = find_image(root, stem) or stem
        first = stem.split("/", 1)[0]
        split = splits.get(rel) or (first if first in SPLITS and "/" in stem else None)
        ann = Annotation(rel, None, split, where=where)
        for n, line in enumerate(read_text(label_dir / rel_txt, "YOLO label file").splitlines(), 1):
            if line.strip():
                ann.boxes.append(_parse_line(line, names, f"{where} line {n}"))
        out.append(ann)
    return out


def _parse_line(line: str, names: list[str], where: str) -> Box:
    tokens = line.split()
    if len(tokens) < 5 or (len(tokens) > 5 and len(tokens) % 2 == 0):
        raise ImportFormatError(f"{where}: expected `class cx cy w h` (or a polygon), got {len(tokens)} values")
    try:
        cls = int(tokens[0])
    except ValueError:
        raise ImportFormatError(f"{where}: class {quoted(tokens[0])} is not a whole number") from None
    if not 0 <= cls < len(names):
        raise ImportFormatError(f"{where}: class {cls} is not in the class list (0-{len(names) - 1})")
    values = [number(t, where, "coordinate") for t in tokens[1:]]
    if len(values) == 4:
        cx, cy, w, h = values
        x, y = cx - w / 2, cy - h / 2
    else:
        xs, ys = values[0::2], values[1::2]
        x, y, w, h = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
    if w <= 0 or h <= 0:
        raise ImportFormatError(f"{where}: box has width {w:g} and height {h:g}; both must be above 0")
    if not all(-0.01 <= v <= 1.01 for v in (x, y, x + w, y + h)):
        raise ImportFormatError(f"{where}: YOLO coordinates are fractions of the image size (0-1), got {quoted(line.strip())}")
    return Box(names[cls], x, y, w, h, normalized=True)


def write_yolo(conn: sqlite3.Connection, out: Path) -> int:
    """OUT/labels/<path>.txt per image, OUT/classes.txt, OUT/data.yaml and OUT/{train,val,test}.txt."""
    empty_folder(out)
    base, images = curated_set(conn)
    names = [name for _, name in ordered_classes(conn)]
    index = {name: k for k, name in enumerate(names)}
    used: set[str] = set()
    lists: dict[str, list[str]] = {s: [] for s in SPLITS}
    for im in images:
        stem = im.rel.rsplit(".", 1)[0] if "." in Path(im.rel).name else im.rel
        stem = im.rel if stem in used else stem
        used.add(stem)
        lines = []
        for label, x, y, w, h in im.boxes:
            cx, cy = (x + w / 2) / im.width, (y + h / 2) / im.height
            lines.append(f"{index[label]} {cx:.6f} {cy:.6f} {w / im.width:.6f} {h / im.height:.6f}\n")
        target = output_path(out / "labels", f"{stem}.txt")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text(target, "".join(lines))
        if im.split in lists:
            lists[im.split].append(im.path)
    write_text(out / "classes.txt", "".join(f"{n}\n" for n in names))
    yaml = [f"# written by ArtAnnot from the images under {json.dumps(base)}; lists hold absolute image paths\n"]
    for split, rels in lists.items():
        if rels:
            write_text(out / f"{split}.txt", "".join(f"{r}\n" for r in rels))
            yaml.append(f"{split}: {split}.txt\n")
    yaml.append(f"nc: {len(names)}\nnames:\n" + "".join(f"  {k}: {json.dumps(n)}\n" for k, n in enumerate(names)))
    write_text(out / "data.yaml", "".join(yaml))
    return len(images)
