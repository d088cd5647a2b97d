"""Multi-label fine-tuning reachable from the CLI: `train --method tags --finetune` (and double, with
--intermediate), stored and evaluated like every tag model, on real generated scenes and the bundled
EfficientNet-Lite0 (96 px, 2 epochs)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from artannot import cli
from artannot.ml.networks import load_network, network_features
from artannot.ml.tags.finetune import same_scores
from artannot.ml.tags.multilabel import TagHead
from artannot.project import Project
from artannot.store import tags as tag_store
from tests.shapes import SHAPES, make_shape_collection, paint_shape

FAST = ["--epochs", "2", "--image-size", "96", "--batch-size", "8", "--device", "cpu"]


def _scene(rng: random.Random, kinds, size: int = 128) -> Image.Image:
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    for kind, (cx, cy) in zip(kinds, rng.sample([(0, 0), (1, 0), (0, 1), (1, 1)], len(kinds)), strict=False):
        colour = tuple(rng.randint(0, 200) for _ in range(3))
        paint_shape(d, kind, cx * 64 + 32 + rng.randint(-6, 6), cy * 64 + 32 + rng.randint(-6, 6),
                    rng.randint(14, 24), colour)
    return img


@pytest.fixture
def scenes(tmp_path: Path) -> Path:
    """40 scenes, tagged with the shapes they show; 10 of them in the test split."""
    torch.set_num_threads(1)
    root = tmp_path / "scenes"
    root.mkdir()
    rng = random.Random(5)
    truth = {}
    for n in range(40):
        kinds = [k for k in SHAPES if rng.random() < 0.5] or [rng.choice(SHAPES)]
        _scene(rng, kinds).save(root / f"s{n:02d}.png")
        truth[f"s{n:02d}.png"] = kinds
    path = tmp_path / "scenes.artannot"
    with Project.create(path) as p:
        p.import_folder(root, labels_from="none", split="train")
        ids = {Path(r.path).name: r.id for r in p.images()}
        p.set_split([ids[f"s{n:02d}.png"] for n in range(30, 40)], "test")
        for kind in SHAPES:
            p.add_tags([ids[name] for name, kinds in truth.items() if kind in kinds], [kind])
    return path


def _train(capsys, argv) -> dict:
    assert cli.main(["train", *argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_tags_finetune_trains_the_network_and_stores_a_tag_model(scenes, capsys):
    out = _train(capsys, [str(scenes), "--method", "tags", "--finetune", *FAST])
    model, params, metrics = out["model"], out["params"], out["metrics"]
    assert out["method"] == "tags" and params["finetune"] is True
    assert params["network"]["recipe"] == "finetune" and params["network"]["epochs_run"] == 2
    assert params["network"]["n_val"] >= 1 and len(metrics["curves"]) == 2  # held-out images chose thresholds
    assert "fine-tuned efficientnet_lite0 with a sigmoid head" in params["summary"]
    features = params["predictor"]["features"]
    assert params["predictor"]["kind"] == "tags" and "network" in features
    # the stored head is the network's own sigmoid layer: the same probabilities on the network's features
    net, meta = load_network(features["network"])
    assert meta["method"] == "tags" and meta["n_outputs"] == 3 and "seed" in meta
    head = TagHead.load(params["predictor"]["path"])
    with Project(scenes) as p:
        items = [(r.path, r.sha256) for r in p.images()]
    feats, _ = network_features(net, items, _cpu(), backbone="efficientnet_lite0", image_size=96)
    assert same_scores(net, head, feats)
    # evaluated like every tag model, from the stored predictions
    assert cli.main(["evaluate", str(scenes), "--model", str(model), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["method"] == "tags" and ev["n"] == 10 and ev["map"] == pytest.approx(metrics["map"])
    with Project(scenes) as p:
        truth = tag_store.tagged_images(p.conn, "test")
        tag_ids = json.loads(p.conn.execute("SELECT classes FROM models WHERE id = ?", (model,)).fetchone()[0])
    Y = np.array([[t in tags for t in tag_ids] for tags in truth.values()])
    assert metrics["map"] > Y.mean() + 0.1, (metrics["map"], Y.mean())  # a constant scorer gets about the frequency
    # and its network is one `analysis` can look into, against ImageNet
    assert cli.main(["analysis", str(scenes), "--model", str(model), "--top", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == model and report["n_images"] == 10


def _cpu():
    from artannot.ml.device import select_runtime

    return select_runtime("cpu")


@pytest.mark.slow
def test_option_finetune_and_a_frozen_reinitialized_stem_come_back_exactly_at_init(scenes, capsys):
    lrs = json.dumps([0.0] + [1e-3] * 9)  # adaptive: stem re-initialized (seeded), then never trained
    out = _train(capsys, [str(scenes), "--method", "tags", "--option", "finetune=true", "--option", "recipe=adaptive",
                          "--option", f"group_lrs={lrs}", *FAST])
    assert out["params"]["network"]["recipe"] == "adaptive" and out["params"]["network"]["plan"][0]["reinit"]
    assert cli.main(["analysis", str(scenes), "--model", str(out["model"]), "--against", "init", "--top", "3",
                     "--json"]) == 0
    rows = {r["layer"]: r for r in json.loads(capsys.readouterr().out)["per_layer"]}
    assert rows["stem"]["kernel_l2"] == 0.0 and rows["stem"]["cka"] == pytest.approx(1.0, abs=1e-6)
    assert rows["stage2"]["kernel_l2"] > 0.0 and rows["classifier"]["kernel_l2"] > 0.0


@pytest.mark.slow
def test_double_finetuning_of_tags_through_an_intermediate_project(scenes, capsys, tmp_path):
    root = make_shape_collection(tmp_path / "inter", per_class=6, kinds=("circle", "square"))
    other = tmp_path / "inter.artannot"
    with Project.create(other) as p:
        p.import_folder(root, split="train")
    out = _train(capsys, [str(scenes), "--method", "tags", "--finetune", "--intermediate", str(other), *FAST])
    network = out["params"]["network"]
    assert network["recipe"] == "double" and network["intermediate"] == str(other.resolve())
    assert network["intermediate_classes"] == 2 and len(network["intermediate_curves"]) == 2
    assert "double fine-tuned" in out["params"]["summary"] and out["metrics"]["n"] == 10
    assert cli.main(["analysis", str(scenes), "--model", str(out["model"]), "--against", "init"]) == 2
    assert "double fine-tuned" in capsys.readouterr().err


def test_tags_finetune_errors_are_one_line(scenes, capsys, tmp_path):
    for extra, words in ((["--option", "recipe=sideways"], "recipe=finetune | adaptive | frozen"),
                         (["--intermediate", str(tmp_path / "nowhere.artannot")], "no such project file")):
        assert cli.main(["train", str(scenes), "--method", "tags", "--finetune", *extra, *FAST]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("artannot: error:") and words in err and "\n" not in err, err
    with Project(scenes) as p:
        assert tag_store.latest_tag_model_id(p.conn) is None  # nothing stored
