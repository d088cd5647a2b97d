"""COCO detection JSON: images, categories, box annotations, plus image-level labels.

COCO has no image-level class, so the writer adds a top-level `"image_labels"` list of
`{"image_id", "category_id"}` (pycocotools and other readers ignore keys they do not know; whole-image
boxes would have polluted detection training), a `"split"` key and, for tagged images, a `"tags"` list
of names on each image. The reader accepts them all, and plain COCO files without them (an image without
`"tags"` says nothing about its tags; `"tags": []` says it has none). `file_name` is the image path
relative to the collection root.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from artannot.data.formats import (
    Annotation,
    check_name,
    check_split,
    check_tags,
    curated_set,
    image_relpath,
    load_json,
    make_box,
    number,
    ordered_classes,
    printable,
    quoted,
    show,
    write_text,
)
from artannot.errors import ImportFormatError


def _list(data: dict, key: str, name: str, required: bool = True) -> list:
    value = data.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise ImportFormatError(f"{name}: COCO needs a list under \"{key}\"")
    return value


def _entry(item: object, where: str, *keys: str) -> dict:
    if not isinstance(item, dict):
        raise ImportFormatError(f"{where}: expected an object, found {type(item).__name__}")
    for key in keys:
        if key not in item:
            raise ImportFormatError(f"{where}: \"{key}\" is missing")
    return item


def _id(value: object, where: str, key: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ImportFormatError(f"{where}: \"{key}\" must be a number or a string, not {printable(value)}")
    return value


def read_coco(path: str | Path, images_root: str | Path) -> list[Annotation]:
    """Annotations from a COCO JSON file; a bad entry refuses the file, naming the entry."""
    path, root = Path(path), Path(images_root).resolve()
    name = show(path)
    data = load_json(path)
    if not isinstance(data, dict):
        raise ImportFormatError(f"{name}: a COCO file is a JSON object with images, annotations, categories")
    categories: dict[object, str] = {}
    for k, cat in enumerate(_list(data, "categories", name)):
        where = f"{name} category {k + 1}"
        _entry(cat, where, "id", "name")
        categories[_id(cat["id"], where, "id")] = check_name(cat["name"], where)
    by_id: dict[object, Annotation] = {}
    for k, img in enumerate(_list(data, "images", name)):
        where = f"{name} image {k + 1}"
        _entry(img, where, "id", "file_name")
        where = f"{name} image {k + 1} (id {printable(_id(img['id'], where, 'id'))})"
        if img["id"] in by_id:
            raise ImportFormatError(f"{where}: image id {printable(img['id'])} is listed twice")
        tags = None
        if "tags" in img:
            if not isinstance(img["tags"], list) or not all(isinstance(t, str) for t in img["tags"]):
                raise ImportFormatError(f"{where}: \"tags\" must be a list of names like [\"a\", \"b\"],"
                                        f" not {printable(json.dumps(img['tags'])[:60])}")
            tags = check_tags(img["tags"], where)
        by_id[img["id"]] = Annotation(image_relpath(root, img["file_name"], where),
                                      split=check_split(img.get("split"), where), where=where, tags=tags)

    def lookup(item: dict, where: str) -> tuple[Annotation, str]:
        _id(item["image_id"], where, "image_id")
        _id(item["category_id"], where, "category_id")
        if item["image_id"] not in by_id:
            raise ImportFormatError(f"{where}: image_id {printable(item['image_id'])} is not in \"images\"")
        if item["category_id"] not in categories:
            raise ImportFormatError(
                f"{where}: category_id {printable(item['category_id'])} is not in \"categories\"")
        return by_id[item["image_id"]], categories[item["category_id"]]

    for k, ann in enumerate(_list(data, "annotations", name, required=False)):
        where = f"{name} annotation {k + 1}"
        _entry(ann, where, "image_id", "category_id", "bbox")
        if "id" in ann:
            where += f" (id {printable(ann['id'])})"
        target, label = lookup(ann, where)
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ImportFormatError(f"{where}: bbox must be [x, y, width, height]")
        x, y, w, h = (number(v, where, "bbox value") for v in bbox)
        target.boxes.append(make_box(label, x, y, w, h, where))
    for k, item in enumerate(_list(data, "image_labels", name, required=False)):
        where = f"{name} image_labels {k + 1}"
        _entry(item, where, "image_id", "category_id")
        target, label = lookup(item, where)
        if target.label is not None and target.label != label:
            raise ImportFormatError(f"{where}: image {quoted(target.path)} already has label"
                                    f" {quoted(target.label)}; an image has one label")
        target.label = label
    return list(by_id.values())


def write_coco(conn: sqlite3.Connection, out: Path) -> int:
    """The curated set as one COCO JSON file (loads in pycocotools.coco.COCO)."""
    _, images = curated_set(conn)
    classes = ordered_classes(conn)
    cat_id = {name: cid for cid, name in classes}
    annotations, image_labels = [], []
    for im in images:
        if im.label is not None:
            image_labels.append({"image_id": im.id, "category_id": cat_id[im.label]})
        for label, x, y, w, h in im.boxes:
            annotations.append({
                "id": len(annotations) + 1, "image_id": im.id, "category_id": cat_id[label],
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
            })
    data = {
        "info": {"description": "exported by ArtAnnot", "version": "1"},
        "images": [{"id": im.id, "file_name": im.rel, "width": im.width, "height": im.height,
                    **({"split": im.split} if im.split else {}), **({"tags": im.tags} if im.tags else {})}
                   for im in images],
        "categories": [{"id": cid, "name": name, "supercategory": ""} for cid, name in classes],
        "annotations": annotations,
        "image_labels": image_labels,
    }
    write_text(out, json.dumps(data, indent=1))  # ensure_ascii: odd file-name bytes become \\udcXX escapes
    return len(images)

