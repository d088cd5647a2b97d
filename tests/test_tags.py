"""Multi-label tags: the store (history, undo, closed-world targets), `train --method tags`, and the CLI."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from artannot import cli
from artannot.errors import ArtAnnotError, Cancelled, ModelError
from artannot.project import Project
from artannot.store import db
from artannot.store import tags as tag_store
from tests.shapes import SHAPES, paint_shape


def _scene(rng: random.Random, kinds, size: int = 160) -> Image.Image:
    """Shapes in the cells of a 2x2 grid: an image whose tags are the shapes it shows."""
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    for kind, (cx, cy) in zip(kinds, rng.sample([(0, 0), (1, 0), (0, 1), (1, 1)], len(kinds)), strict=False):
        colour = tuple(rng.randint(0, 200) for _ in range(3))
        paint_shape(d, kind, cx * 80 + 40 + rng.randint(-8, 8), cy * 80 + 40 + rng.randint(-8, 8),
                    rng.randint(18, 30), colour)
    return img


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    """60 scenes imported without labels, each tagged by a curator with the shapes it shows."""
    root = tmp_path_factory.mktemp("scenes")
    rng = random.Random(3)
    truth = {}
    for n in range(60):
        kinds = [k for k in SHAPES if rng.random() < 0.5] or [rng.choice(SHAPES)]
        _scene(rng, kinds).save(root / f"scene_{n:02d}.png")
        truth[f"scene_{n:02d}.png"] = kinds
    path = root / "scenes.artannot"
    with Project.create(path) as p:
        p.import_folder(root, labels_from="none", split="auto")
        ids = {Path(r.path).name: r.id for r in p.images()}
        p.set_split([ids[f"scene_{n:02d}.png"] for n in range(45, 60)], "test")
        for kind in SHAPES:
            p.add_tags([ids[name] for name, kinds in truth.items() if kind in kinds], [kind])
    return path, truth


def _project_with_images(tmp_path: Path, n: int = 3) -> Project:
    for k in range(n):
        Image.new("RGB", (32, 32), (k * 60, 0, 0)).save(tmp_path / f"im{k}.png")
    p = Project.create(tmp_path / "t.artannot")
    p.import_folder(tmp_path, labels_from="none", split="train")
    return p


def test_tag_edits_keep_history_and_undo_with_labels(tmp_path):
    with _project_with_images(tmp_path) as p:
        a, b, c = (r.id for r in p.images())
        p.add_tags([a, b], ["Red", "round"])
        assert p.image_tags([a, b, c]) == {a: ["Red", "round"], b: ["Red", "round"]}
        assert p.add_tags([a], ["red"]) is None  # same tag, any case: nothing to change
        p.remove_tags([a], ["RED"])
        assert p.image_tags([a])[a] == ["round"]
        assert tag_store.tagged_images(p.conn, "train") == {a: {tag_store.ensure_tags(p.conn, ["round"])["round"]},
                                                            b: set(tag_store.ensure_tags(p.conn, ["red", "round"])
                                                                   .values())}
        p.set_label([c], p.class_id("cat"))  # a label edit in between: one undo stack for both
        assert p.undo().kind == "label"
        event = p.undo()
        assert event.kind == "tag" and event.n_changes == 1 and p.image_tags([a])[a] == ["Red", "round"]
        p.undo()
        assert p.image_tags([a, b]) == {}
        p.redo()
        p.redo()
        assert p.image_tags([a, b]) == {a: ["round"], b: ["Red", "round"]}
        history = [(r["tag"], r["present"], r["state"]) for r in tag_store.tag_history(p.conn, a)]
        assert history == [("Red", 1, "done"), ("round", 1, "done"), ("Red", 0, "done")]
        assert dict(p.tags()) == {"Red": 1, "round": 2}


def test_imports_and_rules_never_change_a_curators_tags(tmp_path):
    with _project_with_images(tmp_path) as p:
        a, b, _ = (r.id for r in p.images())
        red = tag_store.ensure_tags(p.conn, ["red"])["red"]
        p.remove_tags([a], ["red"])  # nothing to remove yet: no event
        assert not tag_store.current_tag_rows(p.conn, [a])
        p.add_tags([a], ["red"])
        p.remove_tags([a], ["red"])  # the curator says: not red
        changes = [tag_store.TagChange(i, red, True, "import") for i in (a, b)]
        tag_store.apply_tags(p.conn, changes, description="import", protect_human=True)
        assert p.image_tags([a, b]) == {b: ["red"]}
        assert tag_store.tag_sources_for(p.conn, b) == {"red": "import"}


@pytest.mark.parametrize("bad", ["", "   ", "a;b", "x" * 65, "bell\x07"])
def test_bad_tag_names_are_refused_and_change_nothing(tmp_path, bad):
    with _project_with_images(tmp_path) as p:
        before = p.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        with pytest.raises(ArtAnnotError):
            p.add_tags([p.images()[0].id], [bad])
        assert p.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == before
        assert p.tags() == []


def test_a_schema_2_project_upgrades_to_tags_with_a_backup(tmp_path, monkeypatch):
    path = tmp_path / "old.artannot"
    monkeypatch.setattr(db, "SCHEMA_VERSION", 2)
    with Project.create(path) as p:
        assert p.conn.execute("PRAGMA user_version").fetchone()[0] == 2
        p.class_id("cat")
    monkeypatch.undo()
    with Project(path) as p:
        assert p.conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
        assert p.tags() == [] and [c.name for c in p.classes()] == ["cat"]
    assert list(tmp_path.glob("old.artannot.backup-v2-*"))


def test_tag_model_learns_per_tag_thresholds_and_map(scenes):
    path, truth = scenes
    with Project(path) as p:
        result = p.train(method="tags", device="cpu")
        m = result.metrics
        assert result.method == "tags" and set(result.params["tags"]) == set(SHAPES)
        assert m["n"] == 15 and m["map"] >= 0.85, m  # a constant scorer gets each tag's frequency, about 0.55
        assert set(m["per_tag"]["circle"]) == {"ap", "precision", "recall", "f1", "n"}
        assert all(0.0 < t < 1.0 for t in result.params["thresholds"].values())
        again = p.evaluate(result.model_id)
        assert again["map"] == pytest.approx(m["map"]) and again["method"] == "tags"
        assert p.active_model_id() is None  # a tag model is not the grid's class model
        ids = {Path(r.path).name: r.id for r in p.images()}
        hits = 0
        for name, kinds in truth.items():
            over = {t for t, _, flag in p.tag_suggestions(ids[name]) if flag}
            hits += over == set(kinds)
        assert hits >= 0.8 * len(truth)  # exact tag sets, train and test images together
        with pytest.raises(ModelError, match="tag model"):
            p.predict_files([p.images()[0].path], model_id=result.model_id)
        # where the model sees a tag: Grad-CAM through the sigmoid head, mass on the one shape shown
        lone = next(name for name, kinds in truth.items() if kinds == ["circle"])
        heat = p.saliency(ids[lone], model_id=result.model_id, class_name="circle", device="cpu")
        assert heat.class_name == "circle" and {t for t, _ in heat.top} == set(SHAPES)
        ink = np.asarray(heat.image.convert("L")) < 250  # the shape, in the image the network saw
        ys, xs = np.nonzero(ink)
        box = np.zeros_like(ink)
        box[max(0, ys.min() - 8):ys.max() + 9, max(0, xs.min() - 8):xs.max() + 9] = True
        assert heat.heatmap[box].sum() / heat.heatmap.sum() > 2 * box.mean(), (box.mean(),)
        assert p.saliency(ids[lone], model_id=result.model_id, class_name="square", device="cpu").score < heat.score
        # accepting the model's tags: one human edit, batched; a tag a curator removed stays removed
        first, second = ids[lone], ids[next(n for n, k in truth.items() if "square" in k and n != lone)]
        p.remove_tags([first], ["circle"])
        square = tag_store.ensure_tags(p.conn, ["square"])["square"]
        tag_store.apply_tags(p.conn, [tag_store.TagChange(second, square, False, "rule")], description="a rule")
        event = p.accept_tag_suggestions([first, second])
        assert event is not None
        assert "circle" not in p.image_tags([first]).get(first, [])
        assert set(p.image_tags([second])[second]) >= {t for t, _, over in p.tag_suggestions(second) if over}
        assert tag_store.tag_sources_for(p.conn, second)["square"] == "human"
        assert p.undo().id == event and "circle" not in p.image_tags([first]).get(first, [])
        renamed = p.rename_tag("circle", "ring")  # thresholds follow the tag, not its name
        assert ("ring", True) in {(t, over) for t, _, over in p.tag_suggestions(ids[lone])}
        assert p.evaluate(result.model_id)["per_tag"]["ring"]["ap"] is not None
        assert p.undo().id == renamed


def test_tag_model_cancel_stores_nothing(scenes):
    path, _ = scenes
    stop = threading.Event()
    with Project(path) as p:
        before = p.conn.execute("SELECT COUNT(*) FROM models").fetchone()[0]
        files = set((p.cache_dir / "models").glob("*")) if (p.cache_dir / "models").exists() else set()

        def progress(done, total, stage):
            if stage.startswith("training the tag head"):
                stop.set()

        with pytest.raises(Cancelled):
            p.train(method="tags", device="cpu", progress=progress, cancel=stop)
        assert p.conn.execute("SELECT COUNT(*) FROM models").fetchone()[0] == before
        assert (set((p.cache_dir / "models").glob("*")) if (p.cache_dir / "models").exists() else set()) == files


def test_tag_model_needs_tagged_images(tmp_path):
    with _project_with_images(tmp_path) as p:
        p.add_tags([p.images()[0].id], ["red"])
        with pytest.raises(ModelError, match="tag at least 2"):
            p.train(method="tags", device="cpu")


def test_cli_tags_train_evaluate_and_models(scenes, tmp_path, capsys):
    path, _ = scenes
    with Project(path) as p:
        first = p.images()[0]
    assert cli.main(["tag", str(path), str(first.id), first.path, "--add", "star,blue"]) == 0
    assert "changed the tags of 2 images" in capsys.readouterr().out  # id and path name one image, listed twice
    assert cli.main(["tags", str(path), str(first.id), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert {"tag": "star", "source": "human"} in shown["tags"]
    assert cli.main(["tag", str(path), str(first.id), "--remove", "star,blue"]) == 0
    capsys.readouterr()
    assert cli.main(["tags", str(path), "--json"]) == 0
    counts = {d["tag"]: d["images"] for d in json.loads(capsys.readouterr().out)}
    assert counts["star"] == 0 and counts["circle"] > 0
    assert cli.main(["tag", str(path), "nowhere.png", "--add", "x"]) == 2
    assert "neither an image id nor the path" in capsys.readouterr().err
    assert cli.main(["tag", str(path), str(first.id), "--add", "a|b"]) == 2
    assert "separate tags" in capsys.readouterr().err

    assert cli.main(["train", str(path), "--method", "tags", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "tags" and out["metrics"]["map"] > 0.5
    assert cli.main(["evaluate", str(path), "--model", str(out["model"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["map"] == pytest.approx(out["metrics"]["map"])
    assert cli.main(["evaluate", str(path), "--model", str(out["model"])]) == 0
    text = capsys.readouterr().out
    assert "mAP" in text and "circle" in text
    assert cli.main(["models", str(path)]) == 0
    assert f"{out['metrics']['map']:6.1%}" in capsys.readouterr().out
    assert cli.main(["tags", str(path), str(first.id)]) == 0
    assert "tag model:" in capsys.readouterr().out


def test_rare_tags_get_a_threshold_floor():
    """A tag the head barely learns must not be suggested on every image because its best-F1 cut is tiny."""
    from artannot.ml.tags.multilabel import TagHead

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8))
    Y = np.zeros((60, 2))
    Y[:, 0] = X[:, 0] > 0  # learnable
    Y[[3, 17], 1] = 1  # two unrelated positives: out-of-fold scores near zero
    head = TagHead().fit(X, Y, ["common", "rare"])
    assert head.thresholds_[1] == pytest.approx(0.2) and 0.2 <= head.thresholds_[0] < 0.9
    assert head.predict(X)[:, 1].sum() <= 5


def test_rename_merge_and_delete_a_tag_everywhere_with_undo(tmp_path, capsys):
    with _project_with_images(tmp_path) as p:
        a, b, c = (r.id for r in p.images())
        p.add_tags([a, b], ["redd"])
        p.add_tags([c], ["red"])
        p.add_tags([a], ["Round"])
        assert p.rename_tag("round", "round") is not None  # a case-only rename is a rename
        assert p.image_tags([a])[a] == ["redd", "round"]
        event = p.rename_tag("redd", "RED")  # to an existing tag: merge into it
        assert p.image_tags([a, b, c]) == {a: ["red", "round"], b: ["red"], c: ["red"]}
        assert dict(p.tags()) == {"red": 3, "redd": 0, "round": 1}
        assert p.undo().id == event and p.image_tags([b]) == {b: ["redd"]}
        assert p.undo().description == "rename tag Round to round" and p.image_tags([a])[a] == ["redd", "Round"]
        p.redo()
        p.redo()
        assert p.rename_tag("red", "scarlet") is not None and dict(p.tags())["scarlet"] == 3
        p.undo()
        assert dict(p.tags())["red"] == 3
        with pytest.raises(ArtAnnotError, match="no tag named"):
            p.rename_tag("blue", "green")
        with pytest.raises(ArtAnnotError, match="separate tags"):
            p.rename_tag("red", "a;b")
        assert p.delete_tag("RED") is not None and dict(p.tags())["red"] == 0
        p.undo()
        assert dict(p.tags())["red"] == 3
        path = p.path
    assert cli.main(["tags", str(path), "--rename", "round", "circle"]) == 0
    assert cli.main(["tags", str(path), "--delete", "red"]) == 0
    capsys.readouterr()
    assert cli.main(["tags", str(path), "--json"]) == 0
    assert {d["tag"]: d["images"] for d in json.loads(capsys.readouterr().out)} == {
        "circle": 1, "red": 0, "redd": 0}
    assert cli.main(["tags", str(path), "--delete", "nope"]) == 2
    assert "no tag named 'nope'" in capsys.readouterr().err


def test_noisy_tags_from_file_names_and_a_vocabulary(tmp_path, capsys):
    names = ["angel_with_violins.png", "Fiddle-Night.png", "cat.png", "cherubs and angels.png"]
    for k, name in enumerate(names):
        Image.new("RGB", (24, 24), (k * 50, 0, 0)).save(tmp_path / name)
    (tmp_path / "vocab.txt").write_text("violin: fiddle\nangel: cherub  # putti too\nnight sky: night\n")
    path = tmp_path / "t.artannot"
    with Project.create(path) as p:
        p.import_folder(tmp_path, labels_from="none", split="train")
        ids = {Path(r.path).name: r.id for r in p.images()}
        p.add_tags([ids["Fiddle-Night.png"]], ["violin"])
        p.remove_tags([ids["Fiddle-Night.png"]], ["violin"])  # the curator says: no violin here
        event, n = p.tags_from_filenames(tmp_path / "vocab.txt")
        assert n == 3 and event is not None
        assert p.image_tags(list(ids.values())) == {
            ids["angel_with_violins.png"]: ["angel", "violin"], ids["Fiddle-Night.png"]: ["night sky"],
            ids["cherubs and angels.png"]: ["angel"]}
        assert tag_store.tag_sources_for(p.conn, ids["angel_with_violins.png"]) == {"angel": "rule", "violin": "rule"}
        assert p.tags_from_filenames(tmp_path / "vocab.txt") == (None, 3)  # again: nothing to change
        p.undo()
        assert p.image_tags([ids["angel_with_violins.png"]]) == {}
    (tmp_path / "bad.txt").write_text("a;b\n")
    assert cli.main(["tags", str(path), "--from-filenames", str(tmp_path / "bad.txt")]) == 2
    err = capsys.readouterr().err
    assert "bad.txt: tag 'a;b'" in err and "separate tags" in err
    assert cli.main(["tags", str(path), "--from-filenames", str(tmp_path / "vocab.txt")]) == 0
    assert "3 images matched" in capsys.readouterr().out


def test_the_grid_query_filters_by_tags(tmp_path):
    from artannot.store.queries import ImageQuery, count, image_ids

    with _project_with_images(tmp_path) as p:
        a, b, c = (r.id for r in p.images())
        p.add_tags([a, b], ["red"])
        p.add_tags([b], ["round"])
        p.add_tags([c], ["blue"])
        p.remove_tags([c], ["blue"])  # a removed tag leaves the image untagged
        ids = tag_store.ensure_tags(p.conn, ["red", "round"])
        assert image_ids(p.conn, ImageQuery(tag_ids=(ids["red"],))).tolist() == [a, b]
        assert image_ids(p.conn, ImageQuery(tag_ids=(ids["red"], ids["round"]))).tolist() == [b]  # all of them
        assert image_ids(p.conn, ImageQuery(untagged=True)).tolist() == [c]
        assert count(p.conn, ImageQuery(tag_ids=(ids["round"],), splits=("test",))) == 0
