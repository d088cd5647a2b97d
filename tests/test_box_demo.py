"""The bundled box demo (artannot/resources/demo_boxes) and `artannot demo DIR --boxes`."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from artannot.demo import BOX_DEMO_COCO, BOX_DEMO_NAME, box_demo_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def coco() -> dict:
    return json.loads((box_demo_folder() / BOX_DEMO_COCO).read_text(encoding="utf-8"))


def test_box_demo_lives_in_the_package_and_stays_small():
    folder = box_demo_folder()
    assert folder.is_relative_to(REPO / "artannot") and (folder / "LICENSE.md").is_file()
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 3 * 1024 * 1024


def test_bundled_coco_parses_and_every_box_lies_inside_its_image(coco):
    from artannot.data.formats.coco import read_coco

    folder = box_demo_folder()
    images = {im["id"]: im for im in coco["images"]}
    assert len(images) == len(coco["images"]) >= 60
    for im in images.values():
        with Image.open(folder / im["file_name"]) as pic:
            assert pic.size == (im["width"], im["height"]), im["file_name"]
        assert im["split"] in ("train", "test")
    cats = {c["id"] for c in coco["categories"]}
    for ann in coco["annotations"]:
        im = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and ann["category_id"] in cats and ann["iscrowd"] == 0
        assert x >= 0 and y >= 0 and x + w <= im["width"] and y + h <= im["height"], ann
        assert ann["area"] == w * h

    parsed = read_coco(folder / BOX_DEMO_COCO, folder)  # the importer's own reader accepts the file
    assert len(parsed) == len(images)
    assert sum(len(a.boxes) for a in parsed) == len(coco["annotations"])
    assert {a.split for a in parsed} == {"train", "test"}

    on_disk = {p.relative_to(folder).as_posix() for p in (folder / "images").iterdir()}
    assert on_disk == {im["file_name"] for im in images.values()}  # nothing unlisted is imported
    with (folder / "MANIFEST.csv").open(encoding="utf-8") as fh:
        assert {r["path"] for r in csv.DictReader(fh)} == on_disk


def test_every_class_has_train_and_test_boxes_and_some_images_have_none(coco):
    split = {im["id"]: im["split"] for im in coco["images"]}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    per = Counter((names[a["category_id"]], split[a["image_id"]]) for a in coco["annotations"])
    assert len(names) >= 4
    for name in names.values():
        assert per[name, "train"] >= 8 and per[name, "test"] >= 3, (name, per)
    boxed = {a["image_id"] for a in coco["annotations"]}
    assert 0 < len(set(split) - boxed) < len(split) // 4  # a few negatives


def test_artannot_demo_boxes_writes_a_project_with_its_boxes_both_splits_and_images_to_review(tmp_path, capsys,
                                                                                              coco):
    from artannot.cli import main
    from artannot.demo import box_demo_to_review
    from artannot.project import Project

    assert main(["demo", str(tmp_path / "d"), "--boxes"]) == 0
    path = tmp_path / "d" / BOX_DEMO_NAME
    assert str(path) in capsys.readouterr().out
    with Project(path) as p:
        n_images = p.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        n_boxes = p.conn.execute("SELECT COUNT(*) FROM boxes WHERE active = 1").fetchone()[0]
        splits = dict(p.conn.execute("SELECT split, COUNT(*) FROM images GROUP BY split").fetchall())
        classes = {r[0] for r in p.conn.execute("SELECT name FROM classes")}
    todo = box_demo_to_review(coco)
    withheld = [a for a in coco["annotations"] if a["image_id"] in todo]
    assert 10 <= len(todo) <= 16 and withheld  # train images a detector proposes boxes on
    assert n_images == len(coco["images"]) and n_boxes == len(coco["annotations"]) - len(withheld)
    assert splits == dict(Counter(im["split"] for im in coco["images"]))
    assert classes == {c["name"] for c in coco["categories"]}
    assert main(["demo", str(tmp_path / "d"), "--boxes"]) == 2  # never over an existing project
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and "\n" not in err


@pytest.mark.slow
def test_patches_trained_on_the_box_demo_from_the_cli_beats_random_boxes_and_proposes(tmp_path, capsys):
    """The demo's loop from the command line: train the cold-start detector, measure it with COCOeval on the
    test split, propose on the images left to review (the true boxes withheld there are found)."""
    from artannot.cli import main
    from artannot.project import Project
    from tests.test_detect import random_baseline

    assert main(["demo", str(tmp_path), "--boxes"]) == 0
    path = str(tmp_path / BOX_DEMO_NAME)
    assert main(["train", path, "--method", "patches"]) == 0
    capsys.readouterr()
    assert main(["evaluate", path, "--boxes", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert set(figures) >= {"map", "map50", "map75", "n", "per_class"} and figures["n"] > 0
    with Project(path) as p:
        base = random_baseline(p)
    assert figures["map50"] > 5 * base["map50"] + 0.05, (figures, base)
    assert main(["propose", path, "--json"]) == 0
    proposed = json.loads(capsys.readouterr().out)
    assert proposed["images"] >= 10 and proposed["proposals"] > 0
