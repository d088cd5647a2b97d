"""Label formats: export -> import into a new project gives the same labels, boxes and splits; every kind of
bad input is refused with one line and leaves the project exactly as it was."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from artannot.cli import main
from artannot.data.formats import read_annotations, safe_join
from artannot.errors import ArtAnnotError, ImportFormatError
from artannot.project import Project
from artannot.store import boxes as B
from tests.shapes import make_shape_collection

TABLES = ("sources", "images", "classes", "events", "labels", "boxes")


def snapshot(conn: sqlite3.Connection) -> dict[str, tuple]:
    """path under the root -> (label, split, sorted boxes)."""
    names = {r[0]: r[1] for r in conn.execute("SELECT id, name FROM classes")}
    boxes = B.boxes_by_image(conn)
    out = {}
    for r in conn.execute(
        "SELECT i.id, i.path, i.split, l.class_id FROM images i"
        " LEFT JOIN labels l ON l.image_id = i.id AND l.active = 1 ORDER BY i.id"
    ):
        out[os.fsdecode(r[1])] = (names.get(r[3]), r[2], sorted(
            (names[b.class_id], b.x, b.y, b.w, b.h) for b in boxes.get(r[0], [])))
    return out


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    """A collection and a project with rule labels, a curator's label, a cleared label, boxes and a val image."""
    tmp = tmp_path_factory.mktemp("curated")
    root = make_shape_collection(tmp / "art", per_class=3)
    path = tmp / "src.artannot"
    with Project.create(path) as p:
        p.import_folder(root)
        rows = p.images()
        circle, square = p.class_id("circle"), p.class_id("square")
        p.set_label([rows[0].id], square)
        p.set_label([rows[8].id], None)
        B.add_boxes(p.conn, [(rows[0].id, circle, 10, 20, 30.5, 40), (rows[0].id, square, 100, 100, 60, 60),
                             (rows[4].id, square, 0, 0, 160, 160), (rows[4].id, circle, 3.25, 7, 1.5, 2)],
                    "human", "draw")
        p.set_split([rows[1].id], "val")
        expected = snapshot(p.conn)
    return root, path, expected


def _round_trip(curated, tmp_path, kind: str, out_name: str):
    root, path, expected = curated
    out = tmp_path / out_name
    with Project(path) as p:
        assert p.export(out, kind) == len(expected)
    with Project.create(tmp_path / "new.artannot") as q:
        report = q.import_folder(root, labels_from=f"{kind}:{out}")
        assert report.added == len(expected) and not report.not_found and not report.failed, report.summary()
        assert report.boxes == 4
        got = snapshot(q.conn)
        q.undo()  # the whole import's labels and boxes are one undo step
        assert not q.conn.execute("SELECT 1 FROM boxes WHERE active = 1").fetchone()
    return out, expected, got


@pytest.mark.parametrize("kind,out_name", [("coco", "coco.json"), ("voc", "voc"), ("labelme", "labelme")])
def test_round_trip_keeps_labels_boxes_and_splits(curated, tmp_path, kind, out_name):
    _, expected, got = _round_trip(curated, tmp_path, kind, out_name)
    assert got == expected


def test_csv_round_trip_keeps_labels_and_splits(curated, tmp_path):
    root, path, expected = curated
    with Project(path) as p:
        p.export(tmp_path / "labels.csv", "csv")
    with Project.create(tmp_path / "new.artannot") as q:
        report = q.import_folder(root, labels_from=f"csv:{tmp_path / 'labels.csv'}")
        assert report.labelled == 8 and report.unlabelled == 1
        assert snapshot(q.conn) == {k: (label, split, []) for k, (label, split, _) in expected.items()}
        row = next(r for r in q.images() if r.class_id is not None)
        assert q.history(row.id)[0]["detail"].startswith("labels.csv line ")  # auditable evidence


def test_yolo_round_trip_boxes_within_a_pixel(curated, tmp_path):
    out, expected, got = _round_trip(curated, tmp_path, "yolo", "yolo")
    assert (out / "classes.txt").read_text().split() == ["circle", "square", "triangle"]
    assert "names:" in (out / "data.yaml").read_text()
    assert {k: v[1] for k, v in got.items()} == {k: v[1] for k, v in expected.items()}
    assert all(v[0] is None for v in got.values())  # YOLO has no image-level label
    for key, (_, _, boxes) in expected.items():
        assert len(got[key][2]) == len(boxes)
        for a, b in zip(got[key][2], boxes, strict=True):
            assert a[0] == b[0] and all(abs(u - v) <= 1 for u, v in zip(a[1:], b[1:], strict=True))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2, in annToMask
def test_coco_export_loads_in_pycocotools(curated, tmp_path):
    from pycocotools.coco import COCO

    _, path, expected = curated
    with Project(path) as p:
        p.export(tmp_path / "c.json", "coco")
    coco = COCO(str(tmp_path / "c.json"))
    assert len(coco.getImgIds()) == len(expected) and len(coco.getAnnIds()) == 4
    cats = {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())}
    img = next(i for i in coco.loadImgs(coco.getImgIds()) if expected[i["file_name"]][2])
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
    assert sorted((a["category_id"], *a["bbox"]) for a in anns) == sorted(
        (cats[n], x, y, w, h) for n, x, y, w, h in expected[img["file_name"]][2])
    assert all(a["iscrowd"] == 0 and a["area"] == a["bbox"][2] * a["bbox"][3] for a in anns)
    assert coco.annToMask(anns[0]).sum() > 0  # the box's polygon is a valid segmentation
    assert len(coco.dataset["image_labels"]) == 8


def test_predictions_json_and_csv_need_a_model(curated, tmp_path):
    _, path, _ = curated
    with Project(path) as p:
        for fmt in ("predictions", "predictions-json"):
            with pytest.raises(ArtAnnotError, match="no trained model"):
                p.export(tmp_path / "x", fmt)
        model = p.conn.execute(
            "INSERT INTO models(backbone, method, classes, created_at) VALUES ('b', 'svm', '[]', 'now')").lastrowid
        first = p.images()[0]
        p.conn.execute("INSERT INTO predictions VALUES (?, ?, 1, ?, 0.9)", (model, first.id, first.class_id))
        assert p.export(tmp_path / "p.json", "predictions-json") == 9
        data = json.loads((tmp_path / "p.json").read_text())
        assert data["images"][0]["predictions"] == [{"class": "square", "score": 0.9}]
        assert p.export(tmp_path / "p.csv", "predictions") == 9


def test_reimport_applies_labels_to_known_images_but_keeps_curator_edits(curated, tmp_path):
    root, path, expected = curated
    with Project(path) as p:
        p.export(tmp_path / "c.json", "coco")
    data = json.loads((tmp_path / "c.json").read_text())
    triangle = next(c["id"] for c in data["categories"] if c["name"] == "triangle")
    data["image_labels"] = [{**x, "category_id": triangle} for x in data["image_labels"]]  # all -> triangle
    for a in data["annotations"]:
        a["bbox"][0] += 1
    (tmp_path / "c.json").write_text(json.dumps(data))
    with Project.create(tmp_path / "q.artannot") as q:
        q.import_folder(root)  # rule labels from folders
        first = q.images()[0]
        q.set_label([first.id], q.class_id("circle"))  # curator's decision
        report = q.import_folder(root, labels_from=f"coco:{tmp_path / 'c.json'}")
        assert report.added == 0 and report.already_known == 9 and report.kept_human == 1
        got = snapshot(q.conn)
        assert got[os.fsdecode(q.conn.execute("SELECT path FROM images WHERE id = ?", (first.id,))
                               .fetchone()[0])][0] == "circle"
        assert sum(v[0] == "triangle" for v in got.values()) == 8  # all but the curator's
        assert sorted(b[1] for v in got.values() for b in v[2]) == sorted(
            b[1] + 1 for v in expected.values() for b in v[2])
        again = q.import_folder(root, labels_from=f"coco:{tmp_path / 'c.json'}")  # nothing new to do
        assert again.boxes == 0 and q.conn.execute("SELECT COUNT(*) FROM boxes").fetchone()[0] == 4


def test_resplit_with_val_is_stratified_deterministic_and_set_split_edits(curated, tmp_path):
    root, _, _ = curated
    make_shape_collection(tmp_path / "big", per_class=10)
    with Project.create(tmp_path / "s.artannot") as p:
        p.import_folder(tmp_path / "big")
        sizes = p.resplit(test=0.2, val=0.1)
        assert sizes == {"train": 21, "val": 3, "test": 6}
        first = [(r.id, r.split) for r in p.images()]
        p.resplit(test=0.2, val=0.1)
        assert [(r.id, r.split) for r in p.images()] == first
        assert p.set_split([first[0][0], first[1][0]], "test") >= 1
        assert p.images()[0].split == "test"
        with pytest.raises(ArtAnnotError, match="train, val, test"):
            p.set_split([first[0][0]], "holdout")
        with pytest.raises(ArtAnnotError, match="fractions"):
            p.resplit(test=0.6, val=0.5)


# ---- bad input -----------------------------------------------------------------------------------------


def refused(path: Path, root: Path, labels_from: str, *words: str, vocabulary: Path | None = None) -> str:
    """Import must raise ImportFormatError with one line containing words and change nothing."""
    with Project(path) as p:
        before, snap = counts(p.conn), snapshot(p.conn)
        with pytest.raises(ImportFormatError) as err:
            p.import_folder(root, labels_from=labels_from, vocabulary=vocabulary)
        message = str(err.value)
        assert "\n" not in message and message
        for w in words:
            assert w in message, message
        assert counts(p.conn) == before and snapshot(p.conn) == snap
        assert p.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return message


def test_paths_escaping_the_root_are_refused_in_every_format(small, tmp_path):
    root, path = small
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    (root / "circle" / "link.png").symlink_to(outside)
    csv = tmp_path / "l.csv"
    for line, words in [("../secret.png,circle", ("l.csv line 2", "climbs out")),
                        (f"{outside},circle", ("l.csv line 2", "outside the collection root")),
                        ("circle/link.png,circle", ("link that leads outside",)),
                        ("C:\\Windows\\evil.png,circle", ("absolute",))]:
        csv.write_text(f"circle/circle_000.png,circle\n{line}\n")
        refused(path, root, f"csv:{csv}", *words)

    coco = {"images": [{"id": 1, "file_name": "../../secret.png"}], "categories": [], "annotations": []}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    refused(path, root, f"coco:{tmp_path / 'c.json'}", "c.json image 1 (id 1)", "climbs out")

    yolo = tmp_path / "yolo"
    (yolo / "labels" / "circle").mkdir(parents=True)
    (yolo / "labels" / "circle" / "circle_000.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (yolo / "classes.txt").write_text("circle\n")
    (yolo / "data.yaml").write_text("train: train.txt\nnames: [circle]\n")
    (yolo / "train.txt").write_text("circle/circle_000.png\n../../secret.png\n")
    refused(path, root, f"yolo:{yolo}", "train.txt line 2", "climbs out")

    labelme = tmp_path / "lm"
    labelme.mkdir()
    (labelme / "a.json").write_text(json.dumps({"imagePath": "../../../../etc/passwd", "shapes": []}))
    refused(path, root, f"labelme:{labelme}", "a.json", "outside the collection root")

    voc = tmp_path / "voc" / "Annotations"
    voc.mkdir(parents=True)
    (voc / "a.xml").write_text("<annotation><filename>../../secret.png</filename></annotation>")
    refused(path, root, f"voc:{voc.parent}", "a.xml", "climbs out")


def test_safe_join_refuses_zip_slip_names(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "jump").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert safe_join(root, "a/./b.png") == root / "a" / "b.png"
    assert safe_join(root, "a\\b.png") == root / "a" / "b.png"
    for name, words in [("../../evil.sh", "climbs out"), ("a/../../evil.sh", "climbs out"),
                        ("..\\..\\evil.sh", "climbs out"), ("/etc/cron.d/evil", "absolute"),
                        ("C:/Windows/evil.dll", "absolute"), ("jump/evil.sh", "link that leads outside"),
                        ("", "empty"), ("a/\x00.png", "NUL")]:
        with pytest.raises(ImportFormatError, match=words) as err:
            safe_join(root, name, "archive.zip member 3")
        assert str(err.value).startswith("archive.zip member 3: ") and "\n" not in str(err.value)


XXE = """<?xml version="1.0"?>
<!DOCTYPE annotation [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotation><filename>circle_000.png</filename><label>&xxe;</label></annotation>"""
LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<annotation><label>&lol3;</label></annotation>"""


@pytest.mark.parametrize("xml,words", [
    (XXE, ("circle/a.xml", "refused", "XXE")),
    (LAUGHS, ("billion-laughs",)),
    ("<annotation><object><name>x</name></annotation>", ("not well-formed XML at line 1 column",)),
    ("<annotation><object><name>circle</name><bndbox><xmin>1</xmin></bndbox></object></annotation>",
     ("object 1", "<ymin> is missing")),
    ("<svg/>", ("not a Pascal VOC file",)),
])
def test_voc_entities_and_malformed_xml_are_refused(small, tmp_path, xml, words):
    root, path = small
    voc = tmp_path / "voc" / "Annotations" / "circle"
    voc.mkdir(parents=True)
    (voc / "a.xml").write_text(xml)
    refused(path, root, f"voc:{tmp_path / 'voc'}", *words)


@pytest.mark.parametrize("text,words", [
    ('{"images": [}', ("c.json: not valid JSON at line 1 column 13",)),
    ('{"images": [{"id": 1, "file_name": "circle/circle_000.png"}],\n "categories": [],\n'
     ' "annotations": [{"image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1]}]}',
     ("annotation 1", "category_id 7")),
    ('{"images": [{"id": 1, "file_name": "circle/circle_000.png"}], "categories": [{"id": 1, "name": "c"}],'
     ' "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 5]}]}', ("must be above 0",)),
    ('{"images": [{"id": 1, "file_name": "circle/circle_000.png", "split": "holdout"}], "categories": []}',
     ("split 'holdout'",)),
    ("[1, 2]", ("a COCO file is a JSON object",)),
    ('{"images": [{"id": [1], "file_name": "x.png"}], "categories": []}', ('"id" must be',)),
])
def test_coco_malformed_json_and_entries_are_refused(small, tmp_path, text, words):
    root, path = small
    (tmp_path / "c.json").write_text(text)
    refused(path, root, f"coco:{tmp_path / 'c.json'}", *words)


def test_other_malformed_label_files_are_refused(small, tmp_path):
    root, path = small
    csv = tmp_path / "l.csv"
    csv.write_text("path,label,split\ncircle/circle_000.png,circle,train\ncircle/circle_001.png,circle,later\n")
    refused(path, root, f"csv:{csv}", "l.csv line 3", "split 'later'")
    csv.write_bytes(b"circle/circle_000.png,caf\xe9\n")
    refused(path, root, f"csv:{csv}", "l.csv line 1", "not valid UTF-8")
    csv.write_text("circle/circle_000.png,circle\ncircle/circle_000.png,square\n")
    refused(path, root, f"csv:{csv}", "l.csv line 2", "line 1 gave it 'circle'")

    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "a.json").write_text('{"imagePath": "x.png", "shapes": [')
    refused(path, root, f"labelme:{lm}", "a.json: not valid JSON at line 1")
    (lm / "a.json").write_text(json.dumps({"imagePath": str(root / "circle" / "circle_000.png"),
                                           "shapes": [{"label": "c", "shape_type": "line", "points": [[0, 0]]}]}))
    refused(path, root, f"labelme:{lm}", "a.json shape 1", "'line' is not supported")

    yolo = tmp_path / "y"
    (yolo / "circle").mkdir(parents=True)
    (yolo / "classes.txt").write_text("circle\n")
    (yolo / "circle" / "circle_000.txt").write_text("0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.1 0.1\n")
    refused(path, root, f"yolo:{yolo}", "circle/circle_000.txt line 2", "class 3 is not in the class list")
    (yolo / "circle" / "circle_000.txt").write_text("0 50 50 10 10\n")
    refused(path, root, f"yolo:{yolo}", "line 1", "fractions of the image size")
    (yolo / "classes.txt").unlink()
    refused(path, root, f"yolo:{yolo}", "no classes.txt")

    with Project(path) as p, pytest.raises(ArtAnnotError, match="needs its label file"):
        p.import_folder(root, labels_from="coco")
    refused(path, root, f"coco:{tmp_path / 'nope.json'}", "does not exist")


def test_unknown_classes_are_created_and_reported_or_refused_with_a_vocabulary(small, tmp_path):
    root, path = small
    csv = tmp_path / "l.csv"
    csv.write_text("circle/circle_000.png,Fiddle\ncircle/circle_001.png,oboe\n")
    vocab = tmp_path / "v.txt"
    vocab.write_text("violin: fiddle\ncircle\n")
    refused(path, root, f"csv:{csv}", "l.csv line 2", "'oboe' is not in the vocabulary (violin, circle)",
            vocabulary=vocab)
    csv.write_text("circle/circle_000.png,Fiddle\ncircle/circle_001.png,CIRCLE\n")
    with Project(path) as p:
        report = p.import_folder(root, labels_from=f"csv:{csv}", vocabulary=vocab)
        assert report.new_classes == [] and report.labelled == 2
        assert [v[0] for v in snapshot(p.conn).values()][:2] == ["violin", "circle"]
        csv.write_text("circle/circle_000.png,oboe\nsquare/nowhere.png,flute\n")
        report = p.import_folder(root, labels_from=f"csv:{csv}")
        assert report.new_classes == ["oboe"]  # flute names a missing image: no class was made for it
        assert any("new classes from the label files: oboe " in n for n in report.notes())
        assert "flute" not in {c.name for c in p.classes()}
        assert report.not_found == ["square/nowhere.png (l.csv line 2)"]  # reported, not fatal


def test_duplicate_images_are_reported(tmp_path):
    root = make_shape_collection(tmp_path / "art", per_class=2, kinds=("circle",))
    (root / "copy").mkdir()
    (root / "copy" / "same.png").write_bytes((root / "circle" / "circle_000.png").read_bytes())
    (tmp_path / "l.csv").write_text("copy/same.png,circle\n")
    with Project.create(tmp_path / "p.artannot") as p:
        report = p.import_folder(root, labels_from=f"csv:{tmp_path / 'l.csv'}")
        assert report.added == 3 and report.duplicates == 1
        assert report.duplicate_of == [("copy/same.png", "circle/circle_000.png")]
        assert "duplicate copy/same.png: same content as circle/circle_000.png (imported anyway)" in report.notes()
        assert "1 duplicate content" in report.summary()


def test_non_utf8_file_names_import_losslessly_and_export(tmp_path):
    root = tmp_path / "art"
    (root / "circle").mkdir(parents=True)
    raw = os.fsencode(root / "circle") + b"/caf\xe9.png"
    try:
        with open(raw, "wb") as fh:
            Image.new("RGB", (20, 10), "red").save(fh, format="PNG")
    except OSError:
        pytest.skip("this filesystem refuses non-UTF-8 names")
    Image.new("RGB", (20, 10), "blue").save(root / "circle" / "plain.png")
    name = os.fsdecode(b"circle/caf\xe9.png")
    (tmp_path / "l.csv").write_bytes(b"circle/caf\xe9.png,circle,test\n")
    with Project.create(tmp_path / "p.artannot") as p:
        report = p.import_folder(root, labels_from=f"csv:{tmp_path / 'l.csv'}")
        assert report.added == 2 and report.labelled == 1
        stored = p.conn.execute("SELECT path FROM images WHERE path != 'circle/plain.png'").fetchone()[0]
        assert stored == b"circle/caf\xe9.png"  # the exact bytes on disk
        assert snapshot(p.conn)[name] == ("circle", "test", [])
        assert p.import_folder(root).already_known == 2  # recognised again, not re-added
        p.export(tmp_path / "out.csv", "csv")
        assert b"/circle/caf\xe9.png,circle" in (tmp_path / "out.csv").read_bytes()
        p.export(tmp_path / "c.json", "coco")
        p.export(tmp_path / "voc", "voc")
        image_id = p.conn.execute("SELECT id FROM images WHERE path = ?", (stored,)).fetchone()[0]
        B.add_boxes(p.conn, [(image_id, p.class_id("circle"), 1, 1, 5, 5)], "human", "draw")
        p.export(tmp_path / "voc2", "voc")
    for kind, src in (("csv", "out.csv"), ("coco", "c.json"), ("voc", "voc2")):
        annotations = read_annotations(kind, tmp_path / src, root)
        assert name in {a.path for a in annotations}, kind


def test_cli_imports_label_files_and_exports_every_format(curated, tmp_path, capsys):
    root, path, expected = curated
    for fmt, out in (("coco", "c.json"), ("voc", "v"), ("yolo", "y"), ("labelme", "l"), ("csv", "x.csv")):
        assert main(["export", str(path), str(tmp_path / out), "--format", fmt]) == 0
    new = str(tmp_path / "n.artannot")
    assert main(["init", new]) == 0
    assert main(["import", new, str(root), "--labels-from", f"voc:{tmp_path / 'v'}"]) == 0
    assert "4 boxes" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{")
    assert main(["import", new, str(root), "--labels-from", f"coco:{tmp_path / 'bad.json'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("artannot: error: bad.json: not valid JSON at line 1 column 2") and "\n" not in err
