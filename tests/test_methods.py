"""Every training method learns generated shapes well above chance, stores one complete model, and cancels.

Networks train at 96 px with small batches for 2-3 epochs so the whole file stays quick on two CPU cores;
chance is 1/3 on the 12 test images, and every method must reach 2/3.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from artannot.cli import main as cli_main
from artannot.errors import Cancelled, ModelError
from artannot.ml.backbones import load_backbone
from artannot.ml.classify import METHODS
from artannot.ml.device import select_runtime
from artannot.ml.features import FeatureCache, extract_features
from artannot.ml.finetune import (
    FineTuneConfig,
    build_network,
    head_scores,
    layer_plan,
    load_network,
    lr_factor,
    network_features,
)
from artannot.ml.metrics import average_precision, evaluate_ranked, macro_f1
from artannot.ml.tags.multilabel import TagHead, best_thresholds, evaluate_tags, finetune_tags
from artannot.project import Project
from artannot.store import repo
from tests.shapes import make_shape_collection, paint_shape

FAST = {"image_size": 96, "batch_size": 8}  # small, quick networks for tests
CHANCE_MARGIN = 2 / 3  # chance is 1/3 with three shapes


def _project(root: Path, per_class: int, seed: int, kinds=("circle", "square", "triangle")) -> Path:
    make_shape_collection(root / "images", per_class=per_class, seed=seed, kinds=kinds)
    path = root / "shapes.artannot"
    with Project.create(path) as p:
        p.import_folder(root / "images", labels_from="folder", split="auto")
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """60 shapes (48 train / 12 test) whose ImageNet features are cached by the first feature method."""
    return _project(tmp_path_factory.mktemp("methods"), per_class=20, seed=1)


@pytest.fixture(scope="module")
def trained(shapes) -> dict[str, int]:
    """svm and linear models, trained once for the tests that need existing models."""
    with Project(shapes) as p:
        return {m: p.train(method=m, device="cpu").model_id for m in ("svm", "linear")}


def _n_models(p: Project) -> int:
    return p.conn.execute("SELECT COUNT(*) FROM models").fetchone()[0]


def _files(p: Project) -> set[str]:
    folder = p.cache_dir / "models"
    return {f.name for f in folder.iterdir()} if folder.exists() else set()


def _check_learned(p: Project, result, method: str) -> dict:
    m = p.evaluate(result.model_id)
    assert m["n"] == 12
    assert m["top1"] >= CHANCE_MARGIN, (method, m["top1"], result.params.get("summary"))
    assert m["top5"] == 1.0 and 0.0 <= m["macro_f1"] <= 1.0
    assert all(r.pred_class_id is not None for r in repo.list_images(p.conn, result.model_id))
    row = repo.get_model(p.conn, result.model_id)
    stored = json.loads(row["metrics"])
    assert stored["top1"] == pytest.approx(m["top1"]) and "macro_f1" in stored and "seconds" in stored
    assert json.loads(row["params"])["predictor"]["kind"]
    return stored


@pytest.mark.parametrize("method", ["svm", "linear"])
def test_feature_methods_learn(shapes, trained, method):
    with Project(shapes) as p:
        result = p.train(method=method, device="cpu")
        _check_learned(p, result, method)
        assert result.params["cv_top1"] is not None and "ImageNet" in result.params["summary"]
        if method == "svm":
            assert result.params["kernel"] in ("rbf", "sigmoid", "linear")


def test_finetune_learns_and_saves_a_plain_state_dict(shapes):
    with Project(shapes) as p:
        result = p.train(method="finetune", device="cpu", epochs=3, options=FAST)
        stored = _check_learned(p, result, "finetune")
        curves = stored["curves"]
        assert 1 <= len(curves) <= 3 and {"train_loss", "val_loss", "val_top1", "lr"} <= set(curves[0])
        ckpt = Path(result.params["predictor"]["path"])
        state = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain tensors, nothing pickled
        assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
        assert state["_fc.weight"].shape == (3, 1280)
        meta = json.loads(ckpt.with_suffix(".json").read_text())
        assert meta["backbone"] == "efficientnet_lite0" and len(meta["class_ids"]) == 3
        image = p.images()[0]
        preds = p.predict_files([image.path], model_id=result.model_id)[0][1]
        assert preds[0][0] == repo.top_predictions(p.conn, result.model_id, image.id)[0][0]
        assert sum(s for _, s in preds) == pytest.approx(1.0, abs=1e-4)


def test_adaptive_then_svm_learns_with_the_papers_learning_rates(shapes):
    with Project(shapes) as p:
        result = p.train(method="adaptive", device="cpu", epochs=3, then_svm=True, options=FAST)
        _check_learned(p, result, "adaptive+svm")
        plan = {g["name"]: g for g in result.params["network"]["plan"]}
        assert plan["stem"]["reinit"] and plan["stem"]["lr"] == 1e-2
        assert plan["classifier"]["reinit"] and plan["classifier"]["lr"] == 1e-2
        assert not plan["stage4"]["reinit"] and plan["stage4"]["lr"] == 1e-4
        assert result.params["then_svm"] and result.params["predictor"]["classifier"] == "svm"
        key = result.params["predictor"]["features"]["key"]
        cache = FeatureCache(p.feature_cache_path)
        try:  # fine-tuned features are cached under the model's own key, never the backbone's
            shas = [r.sha256 for r in p.images()]
            tuned = cache.get_many(key, shas)
            imagenet = cache.get_many("efficientnet_lite0", shas)
        finally:
            cache.close()
        assert len(tuned) == len(shas)
        assert not np.allclose(tuned[shas[0]], imagenet.get(shas[0], np.zeros(1280)), atol=1e-2)
        image = p.images()[5]
        assert p.predict_files([image.path], model_id=result.model_id)[0][1][0][0] == \
            repo.top_predictions(p.conn, result.model_id, image.id)[0][0]
        # the same SVM after the fact, from the stored model's cached features: "optimized + SVM" in two steps
        again = p.train(method="svm", device="cpu", options={"from_model": result.model_id})
        assert again.params["predictor"]["features"]["key"] == key and "fine-tuned" in again.params["summary"]
        assert p.evaluate(again.model_id)["top1"] == p.evaluate(result.model_id)["top1"]


def test_adaptive_alone_learns_from_reinitialised_lower_layers(shapes):
    """The paper's "optimized" network on its own: its re-initialised stem and head must learn in a few epochs."""
    with Project(shapes) as p:
        result = p.train(method="adaptive", device="cpu", epochs=6, options=FAST)
        stored = _check_learned(p, result, "adaptive")
        assert not result.params["then_svm"] and result.params["predictor"]["kind"] == "network"
        assert len(stored["curves"]) == 6 and stored["curves"][-1]["train_loss"] < stored["curves"][0]["train_loss"]


def test_frozen_learns_and_keeps_the_lower_layers(shapes):
    with Project(shapes) as p:
        result = p.train(method="frozen", device="cpu", epochs=3, options={**FAST, "num_workers": 1})
        _check_learned(p, result, "frozen")
        frozen = [g["name"] for g in result.params["network"]["plan"] if g["frozen"]]
        assert frozen == ["stem", "stage1", "stage2", "stage3"]
        model, _ = load_network(result.params["predictor"]["path"])
        imagenet = load_backbone("efficientnet_lite0")
        assert torch.equal(model._conv_stem.weight, imagenet._conv_stem.weight)
        assert torch.equal(model._bn0.running_mean, imagenet._bn0.running_mean)
        assert not torch.equal(model._conv_head.weight, imagenet._conv_head.weight)


def test_double_finetunes_on_an_intermediate_project_first(shapes, tmp_path):
    other = _project(tmp_path, per_class=8, seed=7, kinds=("circle", "square"))
    with Project(shapes) as p:
        result = p.train(method="double", device="cpu", epochs=2, options={**FAST, "intermediate": str(other)})
        _check_learned(p, result, "double")
        network = result.params["network"]
        assert network["intermediate_classes"] == 2 and len(network["intermediate_curves"]) >= 1
        with pytest.raises(ModelError, match="intermediate"):
            p.train(method="double", device="cpu")


def test_ensemble_averages_the_chosen_models(shapes, trained):
    with Project(shapes) as p:
        ids = [trained["svm"], trained["linear"]]
        result = p.train(method="ensemble", device="cpu", options={"models": ids})
        _check_learned(p, result, "ensemble")
        image = p.images()[0]
        members = [dict(repo.top_predictions(p.conn, i, image.id)) for i in ids]
        for name, score in repo.top_predictions(p.conn, result.model_id, image.id):
            assert score == pytest.approx(np.mean([m[name] for m in members]), abs=1e-6)
        with pytest.raises(ModelError, match="at least two"):
            p.train(method="ensemble", device="cpu", options={"models": [ids[0]]})


@pytest.fixture(scope="module")
def demo_three(tmp_path_factory, demo_subset) -> Path:
    """fish, dinosaurs and roadsigns from the bundled demo: classes ImageNet has categories for."""
    import shutil

    root = tmp_path_factory.mktemp("baseline")
    for label in ("fish", "dinosaurs", "roadsigns"):
        shutil.copytree(demo_subset / label, root / "images" / label)
    path = root / "demo3.artannot"
    with Project.create(path) as p:
        p.import_folder(root / "images", labels_from="folder", split="auto")
    return path


def test_baseline_maps_imagenet_categories_without_training(demo_three, tmp_path):
    mapping = tmp_path / "map.csv"
    mapping.write_text("fish,goldfish\nfish,tench\nfish,puffer\nfish,lionfish\nfish,anemone fish\n"
                       "dinosaurs,triceratops\nroadsigns,street sign\nroadsigns,traffic light\n")
    with Project(demo_three) as p:
        result = p.train(method="baseline", device="cpu", options={"mapping": str(mapping)})
        every = p.evaluate(result.model_id, split=None)  # nothing was trained: every labelled image is a test
        assert every["n"] == 24 and every["top1"] >= 0.5, every  # chance is 1/3
        names = {c.name: c.id for c in p.classes()}
        assert result.params["predictor"]["mapping"][str(names["dinosaurs"])] == [51]  # triceratops
        (tmp_path / "bad.json").write_text('{"fish": ["not a category"]}')
        with pytest.raises(ModelError, match="not an ImageNet category"):
            p.train(method="baseline", device="cpu", options={"mapping": str(tmp_path / "bad.json")})


def test_auto_reports_what_it_chose_and_why(shapes):
    with Project(shapes) as p:
        tight = p.train(method="auto", device="cpu", options={"budget": 1, "search_backbones": False})
        info = tight.params["auto"]
        assert tight.params["chosen"] in ("svm", "linear") and info["budget_s"] == 1
        assert any(s.startswith("adaptive+svm") for s in info["skipped"]) and "budget" in info["reason"]
        _check_learned(p, tight, "auto")

        roomy = p.train(method="auto", device="cpu", epochs=2,
                        options={**FAST, "budget": 900, "search_backbones": False})
        info = roomy.params["auto"]
        assert [c["method"] for c in info["candidates"]] == ["svm", "linear", "adaptive+svm"]
        assert roomy.params["chosen"] in ("svm", "linear", "adaptive+svm") and "held-out top-1" in info["reason"]
        _check_learned(p, roomy, "auto")
        assert p.models()[-1]["chosen"] == roomy.params["chosen"]


@pytest.mark.parametrize("method", list(METHODS))  # the classify task; tags: tests/test_tags.py
def test_cancel_stops_every_method_and_stores_nothing(shapes, trained, method, tmp_path):
    (tmp_path / "map.json").write_text('{"circle": ["ping-pong ball"]}')
    extra = {"ensemble": {"models": [trained["svm"], trained["linear"]]}, "double": {"intermediate": str(shapes)},
             "baseline": {"mapping": str(tmp_path / "map.json")}, "auto": {"budget": 60, "search_backbones": False}}
    options = {**FAST, **extra.get(method, {})}
    stop = threading.Event()
    stages = []

    def progress(done, total, stage):
        stages.append(stage)
        stop.set()  # the first report: cancel at once

    with Project(shapes) as p:
        before, files = _n_models(p), _files(p)
        with pytest.raises(Cancelled):
            p.train(method=method, device="cpu", epochs=2, options=options, progress=progress, cancel=stop)
        assert _n_models(p) == before and stages
        assert _files(p) == files  # no checkpoint or classifier file left behind


def test_cancel_mid_epoch_stops_within_a_batch(shapes):
    stop = threading.Event()
    batches = []

    def progress(done, total, stage):
        if stage.startswith("fine-tuning epoch"):
            batches.append(time.perf_counter())
            if len(batches) == 2:
                stop.set()

    with Project(shapes) as p:
        before, files = _n_models(p), _files(p)
        with pytest.raises(Cancelled):
            p.train(method="finetune", device="cpu", epochs=50, options=FAST, progress=progress, cancel=stop)
        assert len(batches) == 2  # the next batch never started
        assert _n_models(p) == before and _files(p) == files
        stages = []
        stop.clear()

        def late(done, total, stage):  # cancel while the trained network scores the images
            stages.append(stage)
            if stage.startswith("features of the trained network"):
                stop.set()

        with pytest.raises(Cancelled):
            p.train(method="adaptive", device="cpu", epochs=1, then_svm=True, options=FAST, progress=late,
                    cancel=stop)
        assert _n_models(p) == before and _files(p) == files


def test_layer_plans_and_schedules():
    model = build_network("efficientnet_lite0", 4, pretrained=False)
    names = [g.name for g in layer_plan(model, "finetune")]
    assert names[0] == "stem" and names[-2:] == ["head conv", "classifier"] and len(names) == 10
    assert [g.lr for g in layer_plan(model, "finetune")][-1] == 3e-3
    adaptive = {g.name: g for g in layer_plan(model, "adaptive", {"low_groups": 2, "high_lr": 2e-2})}
    assert adaptive["stage1"].reinit and adaptive["stage1"].lr == 2e-2 and adaptive["classifier"].lr == 2e-2
    assert not adaptive["stage2"].reinit and adaptive["stage2"].lr == 1e-4 and not adaptive["head conv"].reinit
    assert all(g.reinit for g in layer_plan(model, "finetune", {"scratch": True}))
    custom = layer_plan(model, "adaptive", {"group_lrs": [0.0] + [1e-3] * 9})
    assert custom[0].frozen and custom[1].lr == 1e-3
    with pytest.raises(ModelError, match="10 values"):
        layer_plan(model, "adaptive", {"group_lrs": [1e-3]})
    cosine = lr_factor(FineTuneConfig(epochs=4, warmup=0.0), steps_per_epoch=10)
    assert cosine(0) == pytest.approx(1.0) and cosine(20) == pytest.approx(0.505) and cosine(40) < 0.02
    step = lr_factor(FineTuneConfig(epochs=6, schedule="step", warmup=0.0), steps_per_epoch=10)
    assert step(0) == 1.0 and step(25) == pytest.approx(0.1) and step(45) == pytest.approx(0.01)


def test_macro_f1_and_average_precision():
    cm = np.array([[3, 1], [0, 0]])  # class b never occurs: its F1 does not count
    assert macro_f1(cm) == pytest.approx(6 / 7)
    out = evaluate_ranked({1: 10, 2: 10, 3: 20}, {1: [10, 20], 2: [20, 10], 3: [20, 10]}, [10, 20],
                          {10: "a", 20: "b"})
    assert out["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(average_precision([0, 0], [0.3, 0.2]))


def test_cli_trains_compares_and_evaluates(shapes, trained, capsys):
    assert cli_main(["train", str(shapes), "--method", "linear", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "linear" and out["metrics"]["top1"] >= CHANCE_MARGIN
    assert cli_main(["evaluate", str(shapes), "--model", str(out["model"]), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["model"] == out["model"] and {"top1", "top5", "macro_f1", "confusion"} <= set(ev)
    assert cli_main(["models", str(shapes), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert out["model"] in [m["id"] for m in table] and all("top1" in m for m in table)
    assert cli_main(["models", str(shapes)]) == 0
    assert "linear" in capsys.readouterr().out
    assert cli_main(["train", str(shapes), "--method", "ensemble", "--models", "1"]) == 2
    assert "at least two model ids" in capsys.readouterr().err


def _scene(rng: random.Random, kinds, size: int = 160):
    """Several shapes in the cells of a 2x2 grid: an image whose tags are the shapes it shows."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    for kind, (cx, cy) in zip(kinds, rng.sample([(0, 0), (1, 0), (0, 1), (1, 1)], len(kinds)), strict=False):
        r = rng.randint(18, 30)
        x, y = cx * 80 + 40 + rng.randint(-8, 8), cy * 80 + 40 + rng.randint(-8, 8)
        colour = tuple(rng.randint(0, 200) for _ in range(3))
        paint_shape(d, kind, x, y, r, colour)
    return img


def test_multilabel_tags_learn_with_sigmoid_bce_and_per_tag_thresholds(tmp_path):
    tags = ("circle", "square", "triangle")
    rng = random.Random(0)
    items, Y = [], []
    for n in range(48):
        kinds = [k for k in tags if rng.random() < 0.5] or [rng.choice(tags)]
        path = tmp_path / f"{n}.png"
        _scene(rng, kinds).save(path)
        items.append((str(path), f"sha{n}"))
        Y.append([k in kinds for k in tags])
    Y = np.array(Y, dtype=np.float32)
    runtime = select_runtime("cpu")
    X, ok = extract_features(items, runtime=runtime)
    head = TagHead().fit(X[:32], Y[:32], tags)
    scores = head.predict_proba(X[32:])
    report = evaluate_tags(Y[32:], scores, head.thresholds_, tags)
    assert report["map"] >= 0.85, report  # a constant scorer gets the tag frequency, about 0.6
    assert set(report["per_tag"]["circle"]) == {"ap", "precision", "recall", "f1", "n"}
    head.save(tmp_path / "tags.npz")
    assert np.allclose(TagHead.load(tmp_path / "tags.npz").predict_proba(X[32:]), scores)

    cfg = FineTuneConfig(epochs=3, image_size=96, batch_size=8)
    model, result = finetune_tags("efficientnet_lite0", list(zip([p for p, _ in items[:28]], Y[:28], strict=True)),
                                  list(zip([p for p, _ in items[28:32]], Y[28:32], strict=True)), cfg, runtime)
    assert result.curves[-1]["train_loss"] < result.curves[0]["train_loss"] + 0.05
    feats, _ = network_features(model, items[32:], runtime, backbone="efficientnet_lite0", image_size=96)
    net_scores = head_scores(model, feats, multilabel=True)
    assert net_scores.shape == (16, 3) and not np.allclose(net_scores.sum(1), 1.0)  # sigmoid, not softmax
    assert evaluate_tags(Y[32:], net_scores, best_thresholds(Y[28:32], net_scores[:4]), tags)["map"] >= 0.75


def test_best_thresholds_maximise_f1_per_tag():
    Y = np.array([[1, 0], [1, 0], [0, 0], [0, 1]])
    S = np.array([[0.9, 0.2], [0.6, 0.1], [0.4, 0.3], [0.1, 0.8]])
    t = best_thresholds(Y, S)
    assert 0.4 < t[0] <= 0.6 and 0.3 < t[1] <= 0.8
