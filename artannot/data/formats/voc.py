"""Pascal VOC XML: one file per image, parsed with defusedxml (no DTDs, entities or external references).

Layout: DIR/Annotations/<path under the root, extension dropped>.xml and DIR/ImageSets/Main/{train,val,
test}.txt (one annotation id per line); DIR may also be the Annotations folder itself. An XML file names
its image by <filename>, in the folder matching the XML's own folder; when that file is not there, the
image with the XML's name is used. Boxes: x = xmin, y = ymin, w = xmax - xmin, h = ymax - ymin (pixels).
An image-level label, which VOC lacks, is written as a top-level <label> element.
"""

from __future__ import annotations

import os
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import defusedxml
import defusedxml.ElementTree as SafeET

from artannot.data.formats import (
    SPLITS,
    Annotation,
    check_name,
    curated_set,
    empty_folder,
    find_image,
    fmt_num,
    image_relpath,
    make_box,
    number,
    output_path,
    printable,
    read_text,
    write_text,
)
from artannot.errors import ImportFormatError

MAX_XML_BYTES = 16 * 1024 * 1024


def _layout(folder: Path) -> tuple[Path, Path]:
    """(annotations folder, ImageSets/Main folder) of a VOC folder or of its Annotations folder."""
    if (folder / "Annotations").is_dir():
        return folder / "Annotations", folder / "ImageSets" / "Main"
    return folder, folder.parent / "ImageSets" / "Main"


def _xml_files(folder: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.lower().endswith(".xml") and not name.startswith("."):
                out.append(Path(dirpath, name).relative_to(folder).as_posix())
    return out


def parse_xml(path: Path, where: str) -> ET.Element:
    """Parse an XML file refusing DTDs and entities (billion laughs, XXE) with a one-line message."""
    try:
        if path.stat().st_size > MAX_XML_BYTES:
            raise ImportFormatError(f"{where}: over {MAX_XML_BYTES >> 20} MB, too large for an annotation file")
        data = path.read_bytes()
    except OSError as exc:
        raise ImportFormatError(f"{where}: cannot read ({exc.strerror or exc})") from None
    try:
        return SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise ImportFormatError(
            f"{where}: refused, the XML declares a DTD or entities ({type(exc).__name__}), which can hide a"
            " billion-laughs or external-entity (XXE) attack; remove the <!DOCTYPE> block") from None
    except ET.ParseError as exc:
        line, col = getattr(exc, "position", (0, 0))
        reason = str(exc).split(":")[0]
        raise ImportFormatError(f"{where}: not well-formed XML at line {line} column {col + 1} ({reason})") from None


def _text(node: ET.Element, tag: str) -> str | None:
    child = node.find(tag)
    return child.text.strip() if child is not None and child.text and child.text.strip() else None


def read_voc(folder: str | Path, images_root: str | Path) -> list[Annotation]:
    """Annotations from a VOC folder; a bad file refuses the import, naming the file."""
    folder, root = Path(folder).absolute(), Path(images_root).resolve()
    if not folder.is_dir():
        raise ImportFormatError(f"{printable(folder)} is not a folder of Pascal VOC XML files")
    ann_dir, sets_dir = _layout(folder)
    splits = _read_splits(sets_dir)
    out = []
    for rel_xml in _xml_files(ann_dir):
        where = printable(rel_xml)
        doc = parse_xml(ann_dir / rel_xml, where)
        if doc.tag != "annotation":
            raise ImportFormatError(f"{where}: not a Pascal VOC file (the root element is <{doc.tag}>)")
        ann_id = rel_xml[:-4]
        parent = ann_id.rpartition("/")[0]
        filename = _text(doc, "filename")
        rel = image_relpath(root, filename, where, base=parent) if filename else None
        if rel is None or not (root / rel).is_file():
            rel = find_image(root, ann_id) or rel or ann_id
        label = _text(doc, "label")
        ann = Annotation(rel, check_name(label, where) if label else None, splits.get(ann_id), where=where)
        for k, obj in enumerate(doc.findall("object"), 1):
            owhere = f"{where} object {k}"
            box = obj.find("bndbox")
            if box is None:
                raise ImportFormatError(f"{owhere}: <bndbox> is missing")
            coords = []
            for tag in ("xmin", "ymin", "xmax", "ymax"):
                value = _text(box, tag)
                if value is None:
                    raise ImportFormatError(f"{owhere}: <{tag}> is missing")
                coords.append(number(value, owhere, tag))
            xmin, ymin, xmax, ymax = coords
            ann.boxes.append(make_box(check_name(_text(obj, "name"), owhere), xmin, ymin, xmax - xmin,
                                      ymax - ymin, owhere))
        out.append(ann)
    return out


def _read_splits(sets_dir: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for split in SPLITS:
        path = sets_dir / f"{split}.txt"
        if path.is_file():
            for line in read_text(path, "VOC image set").splitlines():
                if line.strip():
                    out[line.strip()] = split
    return out


def _safe(text: str) -> str:
    """Text XML can hold: undecodable file-name bytes become U+FFFD (the reader falls back on the name)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def write_voc(conn: sqlite3.Connection, out: Path) -> int:
    """OUT/Annotations/<path>.xml per image and OUT/ImageSets/Main/<split>.txt."""
    empty_folder(out)
    _, images = curated_set(conn)
    used: set[str] = set()
    sets: dict[str, list[str]] = {s: [] for s in SPLITS}
    for im in images:
        ann_id = im.rel.rsplit(".", 1)[0] if "." in Path(im.rel).name else im.rel
        if ann_id in used:
            ann_id = im.rel
        used.add(ann_id)
        doc = ET.Element("annotation")
        folder, _, name = im.rel.rpartition("/")
        ET.SubElement(doc, "folder").text = _safe(folder)
        ET.SubElement(doc, "filename").text = _safe(name)
        size = ET.SubElement(doc, "size")
        for tag, value in (("width", im.width), ("height", im.height), ("depth", 3)):
            ET.SubElement(size, tag).text = str(value)
        ET.SubElement(doc, "segmented").text = "0"
        if im.label is not None:
            ET.SubElement(doc, "label").text = im.label
        for label, x, y, w, h in im.boxes:
            obj = ET.SubElement(doc, "object")
            ET.SubElement(obj, "name").text = label
            for tag in ("pose", "truncated", "difficult"):
                ET.SubElement(obj, tag).text = "Unspecified" if tag == "pose" else "0"
            box = ET.SubElement(obj, "bndbox")
            for tag, value in (("xmin", x), ("ymin", y), ("xmax", x + w), ("ymax", y + h)):
                ET.SubElement(box, tag).text = fmt_num(value)
        ET.indent(doc)
        target = output_path(out / "Annotations", f"{ann_id}.xml")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text(target, ET.tostring(doc, encoding="unicode") + "\n")
        if im.split in sets:
            sets[im.split].append(ann_id)
    for split, ids in sets.items():
        if ids:
            write_text(out / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{i}\n" for i in ids))
    return len(images)
