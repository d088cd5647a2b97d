"""Property-based fuzzing of every reader: whatever the bytes, only an ArtAnnotError may escape, and a refused
import writes nothing. Deterministic (derandomize=True), about 60 examples per reader."""

from __future__ import annotations

import json
import shutil
import sqlite3
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artannot.data.formats import read_annotations
from artannot.data.images import probe_image
from artannot.errors import ArtAnnotError
from artannot.project import Project
from tests.shapes import make_shape_collection

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

PATHS = st.sampled_from(["circle/circle_000.png", "square/square_000.png", "../x.png", "/etc/passwd", "a\\..\\b",
                         "", " ", "circle/", "C:\\x.png", "circle/../circle/circle_000.png", "nowhere.png"])
WORDS = st.one_of(PATHS, st.text(alphabet=string.printable + "é日\x00\x1b\u202e", max_size=12),
                  st.sampled_from(["train", "val", "test", "=1+1", "'-2", "x" * 120, "nan", "1e999", "-5"]))
KEYS = st.sampled_from(["images", "annotations", "categories", "id", "file_name", "bbox", "category_id",
                        "image_id", "name", "width", "height", "image_labels", "split", "tags", "shapes",
                        "imagePath", "flags", "points", "shape_type", "label", "imageData"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), WORDS)
JSONS = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(KEYS, inner, max_size=6)), max_leaves=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    """A collection root, and a project file with it imported (copied for the import-level fuzz)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    root = make_shape_collection(tmp / "art", per_class=1, kinds=("circle", "square"))
    with Project.create(tmp / "p.artannot") as p:
        p.import_folder(root)
        p.set_label([p.images()[0].id], p.class_id("square"))
    return root, tmp


def _read(kind: str, src: Path, root: Path) -> None:
    try:
        read_annotations(kind, src, root)
    except ArtAnnotError as exc:
        assert "\n" not in str(exc)


def _fresh(tmp: Path, name: str) -> Path:
    folder = tmp / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


@SETTINGS
@given(rows=st.lists(st.lists(WORDS, max_size=5), max_size=8), raw=st.binary(max_size=200), use_raw=st.booleans())
def test_csv_reader(world, rows, raw, use_raw):
    root, tmp = world
    src = _fresh(tmp, "csv") / "l.csv"
    src.write_bytes(raw if use_raw else "\n".join(",".join(r) for r in rows).encode("utf-8", "surrogatepass"))
    _read("csv", src, root)


@SETTINGS
@given(doc=JSONS)
def test_coco_reader(world, doc):
    root, tmp = world
    src = _fresh(tmp, "coco") / "c.json"
    src.write_text(json.dumps(doc))
    _read("coco", src, root)


@SETTINGS
@given(doc=JSONS, name=st.sampled_from(["a.json", "sub/b.json"]))
def test_labelme_reader(world, doc, name):
    root, tmp = world
    folder = _fresh(tmp, "lm")
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(doc))
    _read("labelme", folder, root)


TAGS = st.sampled_from(["annotation", "filename", "folder", "object", "name", "bndbox", "xmin", "ymin", "xmax",
                        "ymax", "size", "width", "height", "label", "split"])
XML = st.recursive(WORDS.map(lambda w: w.replace("<", "&lt;").replace("&", "&amp;")),
                   lambda inner: st.tuples(TAGS, st.lists(inner, max_size=3)).map(
                       lambda t: f"<{t[0]}>{''.join(t[1])}</{t[0]}>"), max_leaves=20)


@SETTINGS
@given(body=XML, raw=st.binary(max_size=120), use_raw=st.booleans())
def test_voc_reader(world, body, raw, use_raw):
    root, tmp = world
    folder = _fresh(tmp, "voc")
    (folder / "Annotations").mkdir()
    (folder / "Annotations" / "circle_000.xml").write_bytes(raw if use_raw else f"<annotation>{body}</annotation>"
                                                            .encode("utf-8", "surrogatepass"))
    _read("voc", folder, root)


@SETTINGS
@given(lines=st.lists(st.lists(st.one_of(WORDS, st.floats(allow_nan=True).map(str), st.integers(-3, 9).map(str)),
                               max_size=7).map(" ".join), max_size=5),
       names=st.lists(WORDS, max_size=3), yaml=st.text(max_size=60))
def test_yolo_reader(world, lines, names, yaml):
    root, tmp = world
    folder = _fresh(tmp, "yolo")
    (folder / "labels" / "circle").mkdir(parents=True)
    (folder / "classes.txt").write_text("\n".join(n.replace("\x00", "") for n in names), errors="surrogatepass")
    (folder / "data.yaml").write_text(yaml, errors="surrogatepass")
    (folder / "labels" / "circle" / "circle_000.txt").write_text("\n".join(lines), errors="surrogatepass")
    _read("yolo", folder, root)


@SETTINGS
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a",
                                                             b"II*\x00", b"BM", b"RIFF\x00\x00\x00\x00WEBP"]))
def test_image_probe(world, data, prefix):
    _, tmp = world
    path = _fresh(tmp, "img") / "x.png"
    path.write_bytes(prefix + data)
    try:
        probe_image(path)
    except ArtAnnotError as exc:
        assert "\n" not in str(exc)


def _state(path: Path) -> tuple:
    conn = sqlite3.connect(path)
    try:
        return (conn.execute("SELECT * FROM labels ORDER BY id").fetchall(),
                conn.execute("SELECT id, name FROM classes ORDER BY id").fetchall(),
                conn.execute("SELECT COUNT(*) FROM boxes").fetchone(), conn.execute("SELECT COUNT(*) FROM images").fetchone())
    finally:
        conn.close()


@settings(SETTINGS, max_examples=30)
@given(rows=st.lists(st.lists(WORDS, min_size=1, max_size=4), min_size=1, max_size=6))
def test_refused_csv_import_writes_nothing(world, rows):
    root, tmp = world
    folder = _fresh(tmp, "imp")
    shutil.copy2(tmp / "p.artannot", folder / "p.artannot")
    src = folder / "l.csv"
    src.write_bytes("\n".join(",".join(r) for r in rows).encode("utf-8", "surrogatepass"))
    before = _state(folder / "p.artannot")
    with Project(folder / "p.artannot") as p:
        try:
            p.import_folder(root, labels_from=f"csv:{src}")
        except ArtAnnotError as exc:
            assert "\n" not in str(exc)
            assert _state(folder / "p.artannot") == before
            return
    labels = _state(folder / "p.artannot")[0]
    human = [r for r in before[0] if r[3] == "human"]
    assert all(r in labels for r in human)
