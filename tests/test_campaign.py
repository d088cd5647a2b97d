"""The hostile-input campaign: every awkward image kind and malformed annotation file, built by test code.

Each case is imported into a fresh project that holds a curator's label; the outcome is exact: the file is
imported, skipped with its reason, or the import is refused in one line (an ArtAnnotError) with nothing
written. Afterwards `PRAGMA integrity_check` is ok and no committed label has changed.

`python -m tests.test_campaign` prints how many cases there are and how each is meant to end.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from artannot.errors import ArtAnnotError
from tests import hostile
from tests.shapes import make_shape_collection

IMPORTED, SKIPPED, REFUSED = "imported", "skipped", "refused"


@dataclass(frozen=True)
class Case:
    """One hostile input: build(tmp, root) writes it and returns the --labels-from value."""

    name: str
    build: Callable[[Path, Path], str]
    outcome: str  # IMPORTED, SKIPPED or REFUSED
    words: tuple[str, ...] = ()  # in the skip reason or the refusal


CASES: list[Case] = []


def case(name: str, outcome: str, *words: str):
    def register(build):
        CASES.append(Case(name, build, outcome, words))
        return build
    return register


# ---- images --------------------------------------------------------------------------------------------
_REASONS = {"bomb_png": "limit", "gif_frame_bomb": "bomb", "truncated_jpeg": "truncated", "truncated_png": "truncated",
            "corrupt_jpeg": "corrupt", "zero_byte": "empty", "text_as_jpg": "not a", "newline_name": "\\n"}
_HOSTILE = {
    "bomb_png": (hostile.make_bomb_png, False), "gif_frame_bomb": (hostile.make_gif_frame_bomb, False),
    "truncated_jpeg": (hostile.make_truncated_jpeg, False), "truncated_png": (hostile.make_truncated_png, False),
    "corrupt_jpeg": (hostile.make_corrupt_jpeg, False), "zero_byte": (hostile.make_zero_byte, False),
    "text_as_jpg": (hostile.make_text_as_jpg, False), "png_as_jpg": (hostile.make_png_as_jpg, True),
    "palette_alpha_png": (hostile.make_palette_alpha_png, True), "la_png": (hostile.make_la_png, True),
    "rgba_png": (hostile.make_rgba_png, True), "cmyk_jpeg": (hostile.make_cmyk_jpeg, True),
    "png_16bit": (hostile.make_16bit_png, True), "tiff_16bit": (hostile.make_16bit_tiff, True),
    "tiff_float": (hostile.make_float_tiff, True), "png_1bit": (hostile.make_1bit_png, True),
    "exif_rotated_jpeg": (hostile.make_exif_rotated_jpeg, True), "animated_gif": (hostile.make_animated_gif, True),
    "animated_png": (hostile.make_animated_png, True),
    "tiff_claiming_huge": (lambda f: hostile.make_tiff_claiming(f, 50_000, 50_000), False),
}


def _image_case(name: str, make, ok: bool) -> None:
    def build(tmp: Path, root: Path) -> str:
        folder = root / "odd"
        folder.mkdir()
        make(folder)
        return "folder"
    CASES.append(Case(f"image:{name}", build, IMPORTED if ok else SKIPPED,
                      () if ok else (_REASONS.get(name, "limit"),)))


for _name, (_make, _ok) in _HOSTILE.items():
    _image_case(_name, _make, _ok)


@case("image:fifo", SKIPPED, "a named pipe (FIFO), not a regular file")
def _fifo(tmp, root):
    (root / "odd").mkdir()
    os.mkfifo(root / "odd" / "x.png")
    return "folder"


@case("image:socket", SKIPPED, "a socket, not a regular file")
def _socket(tmp, root):
    (root / "odd").mkdir()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(root / "odd" / "s.png"))
    s.close()  # the socket file stays
    return "folder"


@case("image:symlink-inside", SKIPPED, "a symbolic link")
def _link_in(tmp, root):
    (root / "odd").mkdir()
    (root / "odd" / "l.png").symlink_to(root / "circle" / "circle_000.png")
    return "folder"


@case("image:symlink-outside", SKIPPED, "a symbolic link")
def _link_out(tmp, root):
    (root / "odd").mkdir()
    (root / "odd" / "l.png").symlink_to("/etc/passwd")
    return "folder"


@case("image:dangling-symlink", SKIPPED, "a symbolic link")
def _link_dangling(tmp, root):
    (root / "odd").mkdir()
    (root / "odd" / "l.png").symlink_to(tmp / "nowhere.png")
    return "folder"


@case("image:folder-link-loop", IMPORTED)
def _loop(tmp, root):
    (root / "odd").symlink_to(root, target_is_directory=True)
    return "folder"


def _odd_name(name: str):
    def build(tmp, root):
        (root / "odd").mkdir()
        os.rename(hostile.make_png_as_jpg(root / "odd"), root / "odd" / name)
        return "folder"
    return build


for _label, _fname in (("unicode", "café-日本.png"), ("spaces", "  a b .png"), ("leading-dash", "-rf.png"),
                       ("semicolon", "a;b|c.png"), ("long", "x" * 240 + ".png"), ("formula", "=1+1.png"),
                       ("quote", "it's \"q\".png"), ("backslash", "a\\b.png")):
    CASES.append(Case(f"image:name-{_label}", _odd_name(_fname), IMPORTED))


@case("image:undecodable-bytes-name", IMPORTED)
def _bytes_name(tmp, root):
    (root / "odd").mkdir()
    Path(hostile.make_png_as_jpg(root / "odd")).rename(os.fsdecode(bytes(root / "odd") + b"/caf\xe9.png"))
    return "folder"


# ---- CSV -----------------------------------------------------------------------------------------------
def _csv(text: str | bytes):
    def build(tmp, root):
        path = tmp / "labels.csv"
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
        return f"csv:{path}"
    return build


for _n, _text, _outcome, _words in (
    ("ok", "circle/circle_000.png,circle\n", IMPORTED, ()),
    ("bom-header", "\ufeffpath,label\ncircle/circle_000.png,circle\n", IMPORTED, ()),
    ("formula-class", "circle/circle_000.png,=HYPERLINK(\"x\")\n", IMPORTED, ()),
    ("empty", "", IMPORTED, ()),
    ("climb", "../outside.png,circle\n", REFUSED, ("climbs out",)),
    ("climb-backslash", "..\\..\\x.png,circle\n", REFUSED, ("climbs out",)),
    ("absolute-outside", "/etc/passwd,circle\n", REFUSED, ("outside the collection root",)),
    ("windows-absolute", "C:\\x.png,circle\n", REFUSED, ("absolute",)),
    ("nul-byte", "circle/circle_000.png\x00,circle\n", REFUSED, ("labels.csv",)),
    ("control-char-class", "circle/circle_000.png,a\x07b\n", REFUSED, ("control characters",)),
    ("long-class", "circle/circle_000.png," + "c" * 101 + "\n", REFUSED, ("at most 100",)),
    ("huge-field", "circle/circle_000.png," + "c" * 200_000 + "\n", REFUSED, ("not valid CSV",)),
    ("bad-split", "path,label,split\ncircle/circle_000.png,circle,holdout\n", REFUSED, ("train, val or test",)),
    ("header-without-label", "path,colour\ncircle/circle_000.png,red\n", REFUSED, ("no label column",)),
    ("conflict", "circle/circle_000.png,a\ncircle/circle_000.png,b\n", REFUSED, ("an image has one label",)),
    ("only-missing", "nowhere/x.png,circle\n", REFUSED, ("none of the 1 images",)),
    ("long-tag", "path,label,tags\ncircle/circle_000.png,circle," + "t" * 65 + "\n", REFUSED, ("64",)),
):
    CASES.append(Case(f"csv:{_n}", _csv(_text), _outcome, _words))
CASES.append(Case("csv:binary-junk", _csv(bytes(range(256)) * 4), REFUSED, ("labels.csv",)))
CASES.append(Case("csv:latin1-class", _csv(b"circle/circle_000.png,caf\xe9\n"), REFUSED, ("not valid UTF-8",)))


# ---- COCO ----------------------------------------------------------------------------------------------
def _coco(data: object | str):
    def build(tmp, root):
        path = tmp / "c.json"
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return f"coco:{path}"
    return build


def _coco_doc(**over) -> dict:
    doc = {"images": [{"id": 1, "file_name": "circle/circle_000.png", "width": 64, "height": 64}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]}],
           "categories": [{"id": 1, "name": "ring"}]}
    doc.update(over)
    return doc


for _n, _data, _outcome, _words in (
    ("ok", _coco_doc(), IMPORTED, ()),
    ("not-json", "{images: nope", REFUSED, ("c.json", "not valid JSON")),
    ("huge-int", '{"images": [{"id": ' + "7" * 5000 + ', "file_name": "a.png"}]}', REFUSED,
     ("c.json", "not valid JSON")),
    ("deep-nesting", "[" * 100_000 + "]" * 100_000, REFUSED, ("c.json", "nested too deeply")),
    ("deep-object", '{"a":' * 100_000 + "1" + "}" * 100_000, REFUSED, ("c.json", "nested too deeply")),
    ("top-level-list", [1, 2], REFUSED, ("JSON object",)),
    ("no-categories", {"images": [], "annotations": []}, REFUSED, ("categories",)),
    ("climb", _coco_doc(images=[{"id": 1, "file_name": "../../x.png"}]), REFUSED, ("climbs out",)),
    ("absolute", _coco_doc(images=[{"id": 1, "file_name": "/etc/passwd"}]), REFUSED, ("outside",)),
    ("nan-bbox", _coco_doc(annotations=[{"id": 1, "image_id": 1, "category_id": 1,
                                         "bbox": [float("nan"), 1, 2, 2]}]), REFUSED, ("finite",)),
    ("negative-box", _coco_doc(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, -5, 2]}]),
     REFUSED, ("above 0",)),
    ("string-bbox", _coco_doc(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": "1,1,2,2"}]),
     REFUSED, ("c.json",)),
    ("duplicate-image-id", _coco_doc(images=[{"id": 1, "file_name": "circle/circle_000.png"},
                                             {"id": 1, "file_name": "circle/circle_001.png"}]),
     REFUSED, ("listed twice",)),
    ("unknown-category", _coco_doc(annotations=[{"id": 1, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2]}]),
     REFUSED, ("c.json",)),
    ("long-category", _coco_doc(categories=[{"id": 1, "name": "k" * 500}]), REFUSED, ("at most 100",)),
    ("list-as-id", _coco_doc(images=[{"id": [[[1]]], "file_name": "circle/circle_000.png"}]), REFUSED,
     ("must be a number or a string",)),
):
    CASES.append(Case(f"coco:{_n}", _coco(_data), _outcome, _words))


# ---- Pascal VOC ----------------------------------------------------------------------------------------
def _voc(xml: str):
    def build(tmp, root):
        folder = tmp / "voc" / "Annotations" / "circle"
        folder.mkdir(parents=True)
        (folder / "circle_000.xml").write_text(xml)
        return f"voc:{tmp / 'voc'}"
    return build


def _voc_doc(filename: str = "circle_000.png", folder: str = "circle", obj: str = "") -> str:
    return (f"<annotation><folder>{folder}</folder><filename>{filename}</filename><size><width>64</width>"
            f"<height>64</height><depth>3</depth></size>{obj}</annotation>")


_BOX = "<object><name>ring</name><bndbox><xmin>{}</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">'
           '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]><annotation><filename>&lol3;</filename></annotation>')
_XXE = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        '<annotation><filename>&xxe;</filename></annotation>')
for _n, _xml, _outcome, _words in (
    ("ok", _voc_doc(obj=_BOX.format(1)), IMPORTED, ()),
    ("entity-expansion", _LAUGHS, REFUSED, ("circle_000.xml",)),
    ("external-entity", _XXE, REFUSED, ("circle_000.xml",)),
    ("malformed", "<annotation><filename>x", REFUSED, ("circle_000.xml",)),
    ("climb", _voc_doc(filename="../../../x.png", folder=""), REFUSED, ("climbs out",)),
    ("nan-coordinate", _voc_doc(obj=_BOX.format("nan")), REFUSED, ("finite",)),
    ("text-coordinate", _voc_doc(obj=_BOX.format("left")), REFUSED, ("not a number",)),
    ("deep-nesting", "<a>" * 50_000 + "</a>" * 50_000, REFUSED, ("circle_000.xml",)),
):
    CASES.append(Case(f"voc:{_n}", _voc(_xml), _outcome, _words))


# ---- YOLO ----------------------------------------------------------------------------------------------
def _yolo(line: str, names: str = "ring\n", extra: dict[str, str] | None = None):
    def build(tmp, root):
        folder = tmp / "yolo"
        (folder / "labels" / "circle").mkdir(parents=True)
        (folder / "classes.txt").write_text(names)
        (folder / "labels" / "circle" / "circle_000.txt").write_text(line)
        for rel, text in (extra or {}).items():
            (folder / rel).write_text(text)
        return f"yolo:{folder}"
    return build


for _n, _args, _outcome, _words in (
    ("ok", ("0 0.5 0.5 0.2 0.2\n",), IMPORTED, ()),
    ("class-out-of-range", ("7 0.5 0.5 0.2 0.2\n",), REFUSED, ("circle_000.txt",)),
    ("not-numbers", ("0 a b c d\n",), REFUSED, ("not a number",)),
    ("too-few-fields", ("0 0.5\n",), REFUSED, ("circle_000.txt",)),
    ("nan", ("0 nan 0.5 0.2 0.2\n",), REFUSED, ("finite",)),
    ("huge-int-class", ("9" * 5000 + " 0.5 0.5 0.2 0.2\n",), REFUSED, ("circle_000.txt",)),
    ("empty-class-name", ("0 0.5 0.5 0.2 0.2\n", "\n\n"), REFUSED, ()),
    ("list-climbs", ("0 0.5 0.5 0.2 0.2\n", "ring\n", {"data.yaml": "train: ../../../etc/x.txt\nnames: [ring]\n"}),
     REFUSED, ("climbs out",)),
):
    CASES.append(Case(f"yolo:{_n}", _yolo(*_args), _outcome, _words))


# ---- labelme -------------------------------------------------------------------------------------------
def _labelme(data: object | str, name: str = "a.json"):
    def build(tmp, root):
        folder = tmp / "lm"
        folder.mkdir()
        (folder / name).write_text(data if isinstance(data, str) else json.dumps(data))
        return f"labelme:{folder}"
    return build


def _lm_doc(**over) -> dict:
    doc = {"imagePath": str(Path("..") / "art" / "circle" / "circle_000.png"), "flags": {"ring": True},
           "shapes": [{"label": "ring", "points": [[1, 1], [9, 9]], "shape_type": "rectangle"}]}
    doc.update(over)
    return doc


for _n, _data, _outcome, _words in (
    ("ok", _lm_doc(), IMPORTED, ()),
    ("climb", _lm_doc(imagePath="../../../../../../x.png"), REFUSED, ("outside",)),
    ("absolute", _lm_doc(imagePath="/etc/passwd"), REFUSED, ("outside",)),
    ("two-flags", _lm_doc(flags={"a": True, "b": True}), REFUSED, ("one label",)),
    ("bad-shape", _lm_doc(shapes=[{"label": "r", "points": [[1, 1], [2, 2]], "shape_type": "blob"}]), REFUSED,
     ("not supported",)),
    ("points-not-pairs", _lm_doc(shapes=[{"label": "r", "points": [1, 2, 3]}]), REFUSED, ("pairs",)),
    ("inf-point", _lm_doc(shapes=[{"label": "r", "points": [[1, 1], [1e999, 2]]}]), REFUSED, ("finite",)),
    ("no-shapes", {"imagePath": "x.png"}, REFUSED, ("not a labelme file",)),
    ("huge-int", '{"shapes": [], "imagePath": "x.png", "imageWidth": ' + "1" * 5000 + "}", REFUSED,
     ("a.json", "not valid JSON")),
    ("deep-nesting", '{"shapes": ' + "[" * 100_000 + "]" * 100_000 + "}", REFUSED, ("a.json", "nested too deeply")),
):
    CASES.append(Case(f"labelme:{_n}", _labelme(_data), _outcome, _words))


# ---- the run --------------------------------------------------------------------------------------------
def _state(path: Path) -> tuple[list, list]:
    conn = sqlite3.connect(path)
    try:
        labels = conn.execute("SELECT id, image_id, class_id, source, active FROM labels ORDER BY id").fetchall()
        classes = conn.execute("SELECT id, name FROM classes ORDER BY id").fetchall()
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    return labels, classes


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_campaign_case(c: Case, tmp_path):
    from artannot.project import Project

    if c.name in ("image:fifo", "image:socket") and not hasattr(os, "mkfifo"):
        pytest.skip("POSIX only")
    root = make_shape_collection(tmp_path / "art", per_class=1, kinds=("circle", "square"))
    path = tmp_path / "p.artannot"
    with Project.create(path) as p:
        p.import_folder(root)
        p.set_label([p.images()[0].id], p.class_id("square"))  # a curator's label, committed
    before_labels, before_classes = _state(path)
    labels_from = c.build(tmp_path, root)
    with Project(path) as p:
        try:
            report = p.import_folder(root, labels_from=labels_from)
        except ArtAnnotError as exc:
            assert c.outcome == REFUSED, f"{c.name} was refused: {exc}"
            text = str(exc)
            assert "\n" not in text and len(text) < 600, text
            for w in c.words:
                assert w in text, (w, text)
            assert _state(path) == (before_labels, before_classes)  # nothing written on refusal
            return
    assert c.outcome != REFUSED, f"{c.name} was not refused: {report.summary()}"
    notes = "\n".join(report.notes(limit=None))
    if c.outcome == SKIPPED:
        assert report.added == 0 and (report.failed or report.not_files), report.summary()
        for w in c.words:
            assert w in notes, (w, notes)
    else:
        assert not report.failed and not report.not_files, notes
    labels, _ = _state(path)
    human = [r for r in before_labels if r[3] == "human"]
    assert human and all(r in labels for r in human)  # the curator's label, still there and still active


def counts() -> dict[str, int]:
    """How many cases, and how many of them are meant to be imported, skipped or refused."""
    out = {"tried": len(CASES)}
    for c in CASES:
        out[c.outcome] = out.get(c.outcome, 0) + 1
    return out


if __name__ == "__main__":
    print(counts())
