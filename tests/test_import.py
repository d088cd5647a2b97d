"""Importing folders: labels from folders and file names, hostile files skipped, nothing ever lost."""

from __future__ import annotations

import os

import pytest

from artannot.data.importer import import_folder
from artannot.errors import ImportFormatError
from artannot.project import Project
from artannot.store import labels as L
from artannot.store import repo
from tests.hostile import make_hostile_set
from tests.shapes import make_shape_collection


def _labels_by_name(project: Project) -> dict[str, str | None]:
    names = repo.class_names(project.conn)
    return {os.path.basename(r.path): names.get(r.class_id) for r in project.images()}


def test_folder_import_with_hostile_files_skips_them_and_keeps_the_rest(tmp_path):
    root = tmp_path / "collection"
    make_shape_collection(root, per_class=4)
    hostile = make_hostile_set(root / "circle")
    with Project.create(tmp_path / "p.artannot") as p:
        calls = []
        report = p.import_folder(root, progress=lambda d, t, s: calls.append((d, t)))
        should_load = sum(ok for _, ok in hostile.values())
        should_fail = sum(not ok for _, ok in hostile.values())
        assert report.added == 12 + should_load
        assert len(report.failed) == should_fail
        failed_names = {rel.split("/")[-1] for rel, _ in report.failed}
        assert failed_names == {path.name for path, ok in hostile.values() if not ok}
        reasons = dict((rel.split("/")[-1], why) for rel, why in report.failed)
        assert "limit" in reasons["bomb.png"] and "empty" in reasons["empty.jpg"]
        assert "truncated" in reasons["truncated.jpg"]
        for _rel, reason in report.failed:
            assert "\n" not in reason and reason  # one clear line each
        assert calls[-1][0] == calls[-1][1] == report.found
        rows = p.images()
        rotated = next(r for r in rows if r.path.endswith("rotated.jpg"))
        assert rotated.height > rotated.width  # EXIF orientation applied
        assert {c.name: c.count for c in p.classes()}["circle"] == 4 + should_load
        assert all(r.label_source == "rule" for r in rows)
        hist = p.history(rows[0].id)
        assert "folder 'circle'" in hist[0]["detail"]


def test_filename_rule_with_vocabulary(tmp_path):
    from PIL import Image

    root = tmp_path / "art"
    root.mkdir()
    for name in ("Two_Violins_1890.png", "old-fiddle.jpg", "grand_pianos.png", "portrait_of_a_lady.png"):
        Image.new("RGB", (32, 32), "white").save(root / name)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("violin: fiddle\npiano\n", encoding="utf-8")
    with Project.create(tmp_path / "p.artannot") as p:
        report = p.import_folder(root, labels_from="filename", vocabulary=vocab)
        assert (report.labelled, report.unlabelled) == (3, 1)
        assert _labels_by_name(p) == {"Two_Violins_1890.png": "violin", "old-fiddle.jpg": "violin",
                                      "grand_pianos.png": "piano", "portrait_of_a_lady.png": None}
        fiddle = next(r for r in p.images() if r.path.endswith("old-fiddle.jpg"))
        assert p.history(fiddle.id)[0]["detail"] == "file-name token 'fiddle'"


def test_filename_rule_without_vocabulary_is_a_clear_error(tmp_path):
    make_shape_collection(tmp_path / "s", per_class=1)
    with Project.create(tmp_path / "p.artannot") as p, pytest.raises(ImportFormatError, match="vocabulary"):
        p.import_folder(tmp_path / "s", labels_from="filename")


def test_reimport_adds_only_new_files_never_overwrites_human_labels_reports_missing(tmp_path):
    root = tmp_path / "c"
    make_shape_collection(root, per_class=3)
    with Project.create(tmp_path / "p.artannot") as p:
        p.import_folder(root)
        first = p.images()[0]
        square = p.class_id("square")
        p.set_label([first.id], square)  # the curator disagrees with the folder
        make_shape_collection(tmp_path / "more", per_class=4, seed=5)
        (tmp_path / "more" / "circle" / "circle_003.png").rename(root / "circle" / "circle_new.png")
        (root / "triangle" / "triangle_000.png").unlink()
        report = p.import_folder(root)
        assert (report.added, report.already_known) == (1, 8)
        assert report.missing == ["triangle/triangle_000.png"]
        cur = L.current_labels_for(p.conn, [first.id])[first.id]
        assert (cur["class_id"], cur["source"]) == (square, "human")


def test_splits_auto_train_and_bad_modes(tmp_path):
    make_shape_collection(tmp_path / "c", per_class=10)
    with Project.create(tmp_path / "a.artannot") as p:
        p.import_folder(tmp_path / "c", split="auto")
        splits = [r.split for r in p.images()]
        assert splits.count("test") == 6 and splits.count("train") == 24
    with Project.create(tmp_path / "b.artannot") as p:
        p.import_folder(tmp_path / "c", split="train")
        assert {r.split for r in p.images()} == {"train"}
        with pytest.raises(ImportFormatError, match="labels-from"):
            import_folder(p.conn, tmp_path / "c", labels_from="magic")
        with pytest.raises(ImportFormatError, match="not a folder"):
            p.import_folder(tmp_path / "nope")


def test_symlink_loops_and_links_out_of_the_root_are_not_followed(tmp_path):
    root = tmp_path / "c"
    make_shape_collection(root, per_class=2)
    outside = tmp_path / "outside"
    make_shape_collection(outside, per_class=2, kinds=("square",))
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "circle" / "link.png").symlink_to(outside / "square" / "square_000.png")
    with Project.create(tmp_path / "p.artannot") as p:
        report = p.import_folder(root)
        assert report.added == 6
        assert all(str(root) in r.path for r in p.images())


def test_cancelled_import_keeps_committed_batches_consistent(tmp_path):
    import threading

    make_shape_collection(tmp_path / "c", per_class=12)
    stop = threading.Event()
    with Project.create(tmp_path / "p.artannot") as p:
        report = p.import_folder(tmp_path / "c", cancel=stop, progress=lambda d, t, s: stop.set())
        assert report.cancelled
        n = len(p.images())
        assert 0 < n < 36
        labelled = sum(c.count for c in p.classes())
        assert n == labelled  # every image that made it in has its label
        assert p.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        again = p.import_folder(tmp_path / "c")
        assert again.added + n == 36 and again.already_known == n


def test_import_makes_the_grid_thumbnails_in_its_probing_threads_unless_told_not_to(tmp_path):
    from PIL import Image

    from artannot.cli import main
    from artannot.data.images import GRID_THUMB_PX, thumbnail_path

    root = make_shape_collection(tmp_path / "art", per_class=3, kinds=("circle", "square"))
    (root / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    path = tmp_path / "p.artannot"
    with Project.create(path) as p:
        report = p.import_folder(root)
        assert report.added == 6 and len(report.failed) == 1
        thumbs = p.cache_dir / "thumbs"
        for im in p.images():
            made = thumbnail_path(im.sha256, thumbs, GRID_THUMB_PX)
            with Image.open(made) as t:  # a real JPEG of the grid's size, as the grid would make it
                assert max(t.size) == GRID_THUMB_PX
        assert len(list(thumbs.rglob("*.jpg"))) == 6  # none for the file that could not be read
    other = tmp_path / "q.artannot"
    Project.create(other).close()
    assert main(["import", str(other), str(root), "--no-thumbnails"]) == 0
    with Project(other) as q:
        assert len(q.images()) == 6
        assert not list((q.cache_dir / "thumbs").rglob("*.jpg"))
