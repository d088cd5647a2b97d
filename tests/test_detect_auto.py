"""`--method detect-auto`: detector or patches chosen by box mAP on held-out training images, on generated
scenes (tests/test_detect.py's shapes on clutter); the held-out part, the cold start, cancel, the CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from artannot.errors import Cancelled, ModelError
from artannot.ml.detect.auto import VAL_MIN_BOXES, holdout
from artannot.ml.detect.data import BoxImage
from artannot.project import Project
from artannot.store import boxes as B
from artannot.store import repo
from tests.test_detect import KINDS, build_project, make_scenes


def few_boxes_project(tmp_path: Path, most: int = 7) -> Path:
    """Whole train scenes with at most `most` boxes in all (>= 2 of each kind), plus boxed test scenes."""
    root = tmp_path / "few"
    truth = make_scenes(root, 16, seed=3)
    names = sorted(truth)
    test = names[::4]
    train, counts = [], dict.fromkeys(KINDS, 0)
    for name in names:
        boxes = truth[name]
        if name in test or not boxes or sum(counts.values()) + len(boxes) > most:
            continue
        train.append(name)
        for kind, *_ in boxes:
            counts[kind] += 1
    assert all(n >= 2 for n in counts.values()), counts
    for name in names:  # only the chosen train scenes and the test scenes: no half-boxed collection
        if name not in train and name not in test:
            (root / name).unlink()
    path = tmp_path / "few.artannot"
    with Project.create(path) as p:
        p.import_folder(root, labels_from="none", split="train")
        ids = repo.ensure_classes(p.conn, KINDS)
        by_name = {Path(im.path).name: im.id for im in p.images()}
        B.add_boxes(p.conn, [(by_name[n], ids[k], x, y, w, h) for n in train + test for k, x, y, w, h in truth[n]],
                    "import")
        p.set_split([by_name[n] for n in test], "test")
    return path


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return build_project(tmp_path_factory.mktemp("auto"), n=20, test_every=4)


def _model_files(p: Project) -> set[str]:
    d = p.cache_dir / "models"
    return {f.name for f in d.iterdir()} if d.exists() else set()


# ---- the held-out part -----------------------------------------------------------------------------------


def _images(spec: list[list[int]]) -> list[BoxImage]:
    return [BoxImage(k + 1, f"/x/{k}.png", 200, 200, [(c, 10.0 * j, 10.0, 8.0, 8.0) for j, c in enumerate(cs)])
            for k, cs in enumerate(spec)]


def test_holdout_is_deterministic_covers_every_class_and_keeps_negatives():
    spec = [[1, 1], [1], [2], [1, 2], [1], [1], [2], [1], [2, 2], [1], [], []]  # class 2 is rarer
    images = _images(spec)
    fit, val, how = holdout(images, [1, 2])
    assert how.startswith("20%") and 1 <= len(val) <= 3
    assert {b[0] for im in val for b in im.boxes} == {1, 2}  # an image of each class
    assert {im.image_id for im in fit} | {im.image_id for im in val} == {im.image_id for im in images}
    assert not {im.image_id for im in fit} & {im.image_id for im in val}
    assert all(im.boxes for im in val) and sum(not im.boxes for im in fit) == 2  # negatives stay fitting
    again = holdout(list(reversed(_images(spec))), [1, 2])
    assert [im.image_id for im in again[1]] == [im.image_id for im in val]
    fit_counts = {c: sum(b[0] == c for im in fit for b in im.boxes) for c in (1, 2)}
    assert all(n >= 2 for n in fit_counts.values())


def test_holdout_prefers_a_val_split_with_enough_boxes():
    images = _images([[1], [2], [1, 2], [1, 1], [2, 2], [1], [2], [1, 2], [1], [2]])
    val_ids = {8, 9, 10}  # 4 boxes of both classes
    assert VAL_MIN_BOXES <= 4
    fit, val, how = holdout(images, [1, 2], val_ids)
    assert how == "val split" and {im.image_id for im in val} == val_ids
    # a val split without a box of every class is not enough: 20% of the boxed images instead
    fit, val, how = holdout(images, [1, 2], {9, 10})
    assert how.startswith("20%")


# ---- runs ------------------------------------------------------------------------------------------------


def test_few_boxes_train_patches_only_through_the_cli(tmp_path, monkeypatch, capsys):
    from artannot.cli import main
    from artannot.ml import tasks
    from artannot.ml.detect import train as T

    assert "detect-auto" in tasks.methods() and tasks.task_of("detect-auto").name == "detect"
    assert tasks.task_of("auto").name == "classify"  # no clash with the class models' auto

    def no_detector(*args, **kwargs):
        raise AssertionError("a detector was trained on fewer boxes than it needs")

    monkeypatch.setattr(T, "_train_detector", no_detector)
    path = few_boxes_project(tmp_path)
    capsys.readouterr()
    assert main(["train", str(path), "--method", "detect-auto", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "patches"
    auto = out["params"]["auto"]
    assert auto["chosen"] == "patches" and set(auto["candidates"]) == {"patches"} and auto["n_val_images"] == 0
    assert "fewer than the detector's 8" in auto["reason"]
    assert out["params"]["n_boxes"] < T.MIN_BOXES["detector"]
    assert out["metrics"]["map"] is not None  # scored on the test split, which took no part in anything
    with Project(path) as p:
        assert len(p.models()) == 1 and p.models()[0]["method"] == "patches"
        assert p.detector_model_id() == out["model"] and p.active_model_id() is None
        again = p.evaluate(out["model"])
        assert again["map"] == pytest.approx(out["metrics"]["map"], abs=1e-6)


def test_progress_names_the_stage_and_too_few_boxes_are_refused(tmp_path, monkeypatch):
    from artannot.ml.detect import train as T

    monkeypatch.setattr(T, "_train_detector", lambda *a, **k: pytest.fail("no detector on few boxes"))
    path = few_boxes_project(tmp_path)
    stages = []
    with Project(path) as p:
        p.train(method="detect-auto", device="cpu", progress=lambda d, t, s: stages.append(s))
    assert stages and all(s.startswith("detect-auto: patches") for s in stages), set(stages)
    assert any("on the test split" in s for s in stages)
    with Project.create(tmp_path / "one.artannot") as p:
        make_scenes(tmp_path / "one", 2)
        p.import_folder(tmp_path / "one", labels_from="none")
        circle = repo.ensure_classes(p.conn, ["circle"])["circle"]
        B.add_boxes(p.conn, [(p.images()[0].id, circle, 10, 10, 30, 30)])
        with pytest.raises(ModelError, match="detect-auto needs at least 2 boxes"):
            p.train(method="detect-auto", device="cpu")


@pytest.mark.parametrize("stage", ["detect-auto: patches on", "detect-auto: detector on"])
def test_cancel_at_a_candidate_leaves_no_model_and_no_files(scenes, stage):
    cancel = threading.Event()
    seen = []

    def progress(done, total, name):
        seen.append(name)
        if name.startswith(stage):
            cancel.set()

    with Project(scenes) as p:
        before, n_models = _model_files(p), len(p.models())
        with pytest.raises(Cancelled):
            p.train(method="detect-auto", device="cpu", progress=progress, cancel=cancel,
                    options={"min_size": 160, "max_size": 256, "candidate_epochs": 1})
        assert len(p.models()) == n_models
        assert _model_files(p) == before  # no candidate files, no scratch folder
    assert any(s.startswith(stage) for s in seen)


@pytest.mark.slow
def test_enough_boxes_choose_by_val_map_and_store_one_model(scenes, capsys):
    stages = []
    with Project(scenes) as p:
        before, n_models = _model_files(p), len(p.models())
        result = p.train(method="detect-auto", epochs=8, device="cpu",
                         options={"min_size": 256, "max_size": 384},
                         progress=lambda d, t, s: stages.append(s))
        assert len(p.models()) == n_models + 1
        auto = result.params["auto"]
        cands = auto["candidates"]
        assert set(cands) == {"detector", "patches"}
        for c in cands.values():
            assert c["val_map"] is not None and c["val_map50"] is not None
        best = max(cands, key=lambda m: (cands[m]["val_map"], cands[m]["val_map50"], m == "patches"))
        assert auto["chosen"] == best == result.method
        assert auto["n_val_images"] >= 1 and auto["refit"] is True
        row = repo.get_model(p.conn, result.model_id)
        assert row["method"] == best and json.loads(row["params"])["auto"]["chosen"] == best
        # the test split took no part in the choice: none of its images were held out
        test_ids = {im.id for im in p.images() if im.split == "test"}
        assert not test_ids & set(auto["val_image_ids"])
        assert result.metrics["map"] is not None
        again = p.evaluate(result.model_id)
        assert again["map"] == pytest.approx(result.metrics["map"], abs=1e-6)
        assert p.detector_model_id() == result.model_id
        # the stored model's file, and no scratch folder of the candidates
        after = _model_files(p) - before
        assert all(not n.startswith("detect-auto-") for n in after) and len(after) == 2  # model + sidecar
        for stage in ("detect-auto: patches on", "detect-auto: detector on", "detect-auto: scoring patches",
                      "detect-auto: scoring detector", f"detect-auto: {best} on all", f"detect-auto: {best} on the test"):
            assert any(s.startswith(stage) for s in stages), stage
    with capsys.disabled():
        print(f"\ndetect-auto chose {best}: " + ", ".join(
            f"{m} val mAP {c['val_map']:.3f} AP50 {c['val_map50']:.3f} ({c['seconds']:.0f}s)" for m, c in cands.items())
            + f"; n_val_images {auto['n_val_images']} ({auto['holdout']}); test mAP {result.metrics['map']:.3f}"
            f" AP50 {result.metrics['map50']:.3f}; {result.seconds:.0f}s in all")


def test_refit_false_keeps_the_winning_candidate(scenes):
    with Project(scenes) as p:
        before, n_models = _model_files(p), len(p.models())
        result = p.train(method="detect-auto", device="cpu",
                         options={"min_size": 160, "max_size": 256, "candidate_epochs": 1, "refit": "false"})
        auto = result.params["auto"]
        assert auto["refit"] is False and set(auto["candidates"]) == {"detector", "patches"}
        assert result.method == auto["chosen"] and len(p.models()) == n_models + 1
        # the stored model learned from the fitting part only, and says so
        assert result.params["n_train"] == auto["n_fit_images"]
        after = _model_files(p) - before
        assert len(after) == 2 and all(not n.startswith("detect-auto-") for n in after)
        assert Path(result.params["predictor"]["path"]).name in after
        assert p.evaluate(result.model_id)["map"] == pytest.approx(result.metrics["map"], abs=1e-6)
