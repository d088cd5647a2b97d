"""Tags travel through label files: CSV and COCO carry them in and out, an import sets them in the batch's
undo step, a re-import replaces what imports gave but never what a curator decided, bad tags refuse the file."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from artannot.data.formats import read_annotations
from artannot.errors import ImportFormatError
from artannot.project import Project
from artannot.store import tags as tag_store

TABLES = ("sources", "images", "classes", "events", "labels", "boxes", "tags", "image_tags")


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}


def ids(p: Project) -> dict[str, int]:
    """Image path under the root -> id."""
    return {os.fsdecode(r[1]): r[0] for r in p.conn.execute("SELECT id, path FROM images")}


def tags_by_path(p: Project) -> dict[str, list[str]]:
    """Image path -> the tags it carries (untagged images left out)."""
    paths = {v: k for k, v in ids(p).items()}
    return {paths[i]: t for i, t in p.image_tags(list(paths)).items()}


def sources_by_path(p: Project) -> dict[str, dict[str, str]]:
    return {path: tag_store.tag_sources_for(p.conn, i) for path, i in ids(p).items()}


def labels(p: Project) -> dict[int, int | None]:
    return {r.id: r.class_id for r in p.images()}


def test_csv_tags_only_file_tags_known_images_in_one_undo_step(small, tmp_path):
    root, path = small
    csv = tmp_path / "tags.csv"
    csv.write_text("path,tags\ncircle/circle_000.png,sky; Night\ncircle/circle_001.png,\n"
                   "square/square_000.png,sky|portrait\n")
    with Project(path) as p:
        before = labels(p)
        p.add_tags([ids(p)["square/square_001.png"]], ["Sky"])  # the curator's, earlier
        report = p.import_folder(root, labels_from=f"csv:{csv}")
        assert report.added == 0 and report.labelled == 0 and report.tagged == 2, report.summary()
        assert "2 tagged" in report.summary()
        assert tags_by_path(p) == {"circle/circle_000.png": ["Night", "Sky"],
                                   "square/square_000.png": ["portrait", "Sky"],
                                   "square/square_001.png": ["Sky"]}
        assert [n for n, _ in p.tags()] == ["Night", "portrait", "Sky"]  # 'sky' matched 'Sky'
        got = sources_by_path(p)
        assert got["circle/circle_000.png"] == {"Night": "import", "Sky": "import"}
        assert got["square/square_001.png"] == {"Sky": "human"}
        assert labels(p) == before
        p.undo()  # the whole import's tags are one step; the curator's tag stays
        assert tags_by_path(p) == {"square/square_001.png": ["Sky"]}
        p.redo()
        assert len(tags_by_path(p)) == 3


def test_reimport_replaces_imported_tags_and_keeps_curator_states(small, tmp_path):
    root, path = small
    csv = tmp_path / "tags.csv"
    csv.write_text("path,label,tags\ncircle/circle_000.png,,a;b\ncircle/circle_001.png,,a\n"
                   "square/square_000.png,,c\n")
    with Project(path) as p:
        p.import_folder(root, labels_from=f"csv:{csv}")
        image = ids(p)
        p.remove_tags([image["circle/circle_001.png"]], ["a"])  # the curator says: not a
        p.add_tags([image["circle/circle_000.png"]], ["d"])
        rule = tag_store.ensure_tags(p.conn, ["r"])["r"]
        tag_store.apply_tags(p.conn, [tag_store.TagChange(image["square/square_001.png"], rule, True, "rule")],
                             description="a rule")
        # Corrected: b dropped and e added; a listed again where the curator removed it; square_000 not
        # mentioned (its c stays); square_001 listed without tags (the rule's r goes).
        csv.write_text("path,label,tags\ncircle/circle_000.png,,a;e\ncircle/circle_001.png,,a\n"
                       "square/square_001.png,,\n")
        report = p.import_folder(root, labels_from=f"csv:{csv}")
        assert report.tagged == 2 and report.kept_human == 1, report.summary()
        assert tags_by_path(p) == {"circle/circle_000.png": ["a", "d", "e"], "square/square_000.png": ["c"]}
        assert sources_by_path(p)["circle/circle_000.png"] == {"a": "import", "d": "human", "e": "import"}
        events = counts(p.conn)["events"]
        again = p.import_folder(root, labels_from=f"csv:{csv}")  # nothing left to change
        assert again.tagged == 0 and counts(p.conn)["events"] == events
        p.undo()  # undoes the corrected import only
        assert tags_by_path(p) == {"circle/circle_000.png": ["a", "b", "d"], "square/square_000.png": ["c"],
                                   "square/square_001.png": ["r"]}


def test_csv_export_round_trips_tags_into_a_new_project(small, tmp_path):
    root, path = small
    with Project(path) as p:
        image = ids(p)
        p.add_tags([image["circle/circle_000.png"]], ["zebra", "Apple"])
        p.add_tags([image["square/square_001.png"]], ["night sky"])
        expected = tags_by_path(p)
        p.export(tmp_path / "out.csv", "csv")
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "path,label,label_source,split,evidence,tags"
    row = next(line for line in lines if "circle_000" in line)
    assert row.endswith(",Apple;zebra")
    with Project.create(tmp_path / "new.artannot") as q:
        report = q.import_folder(root, labels_from=f"csv:{tmp_path / 'out.csv'}")
        assert report.added == 4 and report.labelled == 4 and report.tagged == 2, report.summary()
        assert tags_by_path(q) == expected
        assert all(s == "import" for tags in sources_by_path(q).values() for s in tags.values())


def test_coco_round_trips_tags(small, tmp_path):
    root, path = small
    with Project(path) as p:
        p.add_tags([ids(p)["square/square_000.png"]], ["b", "a"])
        expected = tags_by_path(p)
        p.export(tmp_path / "c.json", "coco")
    data = json.loads((tmp_path / "c.json").read_text())
    assert {im["file_name"]: im.get("tags") for im in data["images"]} == {
        "circle/circle_000.png": None, "circle/circle_001.png": None,
        "square/square_000.png": ["a", "b"], "square/square_001.png": None}
    with Project.create(tmp_path / "new.artannot") as q:
        report = q.import_folder(root, labels_from=f"coco:{tmp_path / 'c.json'}")
        assert report.tagged == 1 and report.labelled == 4, report.summary()
        assert tags_by_path(q) == expected
        q.undo()  # labels and tags of the import are one step
        assert tags_by_path(q) == {} and all(c is None for c in labels(q).values())


def test_files_without_tags_say_nothing_about_them(small, tmp_path):
    root, _ = small
    csv = tmp_path / "l.csv"
    csv.write_text("circle/circle_000.png,circle,train,sky\n")  # headerless: path,label[,split] only
    assert read_annotations("csv", csv, root)[0].tags is None
    csv.write_text("path,label,tags\ncircle/circle_000.png,circle,\n")
    assert read_annotations("csv", csv, root)[0].tags == []
    csv.write_text("path,label\ncircle/circle_000.png,circle\n")
    assert read_annotations("csv", csv, root)[0].tags is None
    (tmp_path / "c.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": "circle/circle_000.png"}], "categories": []}))
    assert read_annotations("coco", tmp_path / "c.json", root)[0].tags is None


COCO_IMAGE = '{{"images": [{{"id": 1, "file_name": "circle/circle_000.png", "tags": {}}}], "categories": []}}'


@pytest.mark.parametrize("name,text,words", [
    ("c.json", COCO_IMAGE.format('"sky"'), ("c.json image 1 (id 1)", '"tags" must be a list')),
    ("c.json", COCO_IMAGE.format('["sky", 3]'), ("c.json image 1 (id 1)", '"tags" must be a list')),
    ("c.json", COCO_IMAGE.format('{"sky": 1}'), ("c.json image 1 (id 1)", '"tags" must be a list')),
    ("c.json", COCO_IMAGE.format('["a;b"]'), ("c.json image 1 (id 1)", "contains ';'")),
    ("l.csv", "path,tags\ncircle/circle_000.png,sky\ncircle/circle_001.png,ok;bad\x07tag\n",
     ("l.csv line 3", "control character")),
    ("l.csv", f"path,tags\ncircle/circle_000.png,sky;{'x' * 65}\n", ("l.csv line 2", "longer than 64")),
    ("l.csv", 'path,label,tags\ncircle/circle_000.png,circle,"a,b"\n', ("l.csv line 2", "contains ';'")),
    ("l.csv", b"path,tags\ncircle/circle_000.png,caf\xe9\n", ("l.csv line 2", "not valid UTF-8")),
    ("l.csv", "path,split,notes\ncircle/circle_000.png,train,x\n", ("l.csv line 1", "no label column",
                                                                     "no tags column")),
])
def test_malformed_tags_refuse_the_file_and_change_nothing(small, tmp_path, name, text, words):
    root, path = small
    file = tmp_path / name
    file.write_bytes(text if isinstance(text, bytes) else text.encode())
    with Project(path) as p:
        p.add_tags([ids(p)["circle/circle_000.png"]], ["kept"])
        before, tags = counts(p.conn), tags_by_path(p)
        with pytest.raises(ImportFormatError) as err:
            p.import_folder(root, labels_from=f"{'coco' if name.endswith('.json') else 'csv'}:{file}")
        message = str(err.value)
        assert "\n" not in message and message.startswith(name)
        for w in words:
            assert w in message, message
        assert counts(p.conn) == before and tags_by_path(p) == tags


def test_annotations_given_in_code_are_checked_before_any_write(small):
    from artannot.data.formats import Annotation
    from artannot.data.importer import import_annotations

    root, path = small
    with Project(path) as p:
        before = counts(p.conn)
        with pytest.raises(ImportFormatError, match=r"^mine 2: .*control character"):
            import_annotations(p.conn, root, [Annotation("circle/circle_000.png", tags=["fine"], where="mine 1"),
                                              Annotation("circle/circle_001.png", tags=["a\x00b"], where="mine 2")])
        assert counts(p.conn) == before
        report = import_annotations(p.conn, root, [Annotation("circle/circle_000.png", tags=["a"], where="1"),
                                                   Annotation("circle/circle_000.png", tags=["A", "b"], where="2")])
        assert report.tagged == 1 and tags_by_path(p) == {"circle/circle_000.png": ["a", "b"]}

