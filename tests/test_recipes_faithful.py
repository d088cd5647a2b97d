"""The seed recipes do what their papers did: layer plans, the published baseline, cross-project roles,
ordering checks that run and fail loudly, InceptionV1 in the registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from artannot.data.images import load_image
from artannot.errors import ModelError
from artannot.ml.backbones import build_transform, get_spec, load_backbone, weights_available
from artannot.ml.classify.methods import baseline_evaluation
from artannot.ml.finetune import FineTuneConfig
from artannot.ml.networks import build_network, group_names, layer_plan, plan_modules, weight_layers
from artannot.project import Project
from artannot.store import repo
from artannot.store.labels import TRAINABLE_SOURCES
from training import train as recipe_runner

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"
FAST = {"image_size": 96, "batch_size": 8}


def _recipe(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text(encoding="utf-8"))


def _run(recipe: dict, name: str) -> dict:
    return next(r for r in recipe["runs"] if r["name"] == name)


# -- Lagunas & Garces: adaptive layer-based optimization as published ------------------------------------------


def test_lagunas_recipe_reinitializes_layers_1_to_10_and_the_fc_layers_of_vgg19():
    """conv1_1 ... conv4_2 and fc6-fc8 restart at lr 1e-2, conv4_3 ... conv5_4 keep ImageNet weights at 1e-4,
    plain SGD momentum 0.9, plain cross-entropy, no warm-up, no crops: the recipe's own options."""
    options = _run(_recipe("lagunas_garces"), "optimized")["options"]
    with torch.device("meta"):  # torchvision's VGG19 structure, no weights file (and no 143M random weights)
        model = build_network("vgg19", 23, pretrained=False)
    plan = layer_plan(model, "adaptive", options)
    convs = [f"conv{b}_{i}" for b, n in enumerate((2, 2, 4, 4, 4), start=1) for i in range(1, n + 1)]
    assert [p.name for p in plan] == [*convs, "fc6", "fc7", "fc8"]
    restarted = [p.name for p in plan if p.reinit]
    assert restarted == [*convs[:10], "fc6", "fc7", "fc8"] and convs[9] == "conv4_2"
    assert {p.lr for p in plan if p.reinit} == {1e-2}
    assert [p.lr for p in plan if not p.reinit] == [1e-4] * 6 and not any(p.frozen for p in plan)
    # the plan's entries are the network's real layers, in order
    modules = plan_modules(model, plan)
    assert all(isinstance(m[0], torch.nn.Conv2d) for m in modules[:16])
    assert all(isinstance(m[0], torch.nn.Linear) for m in modules[16:])
    assert modules[0][0] is model.stages[0][0] and modules[9][0].out_channels == 512
    assert modules[18][0] is model.classifier[-1] and modules[18][0].out_features == 23
    cfg = FineTuneConfig.from_options(options, epochs=55)
    assert (cfg.optimizer, cfg.momentum, cfg.nesterov, cfg.label_smoothing, cfg.warmup, cfg.augment) == \
        ("sgd", 0.9, False, 0, 0, False)
    # the app's own adaptive default stays the small-set one: only the lowest group restarts
    default = layer_plan(model, "adaptive")
    assert [p.name for p in default if p.reinit] == ["stage0", "fc layers", "classifier"]
    with pytest.raises(ModelError, match="between 0 and 16"):
        layer_plan(model, "adaptive", {"low_layers": 17})


def test_single_layers_cover_every_parameter_of_other_backbones():
    lite = build_network("efficientnet_lite0", 4, pretrained=False)
    layers = weight_layers(lite)
    assert [n for n, _, _ in layers][:2] == ["stem", "stage1.conv1"] and layers[-1][0] == "classifier"
    owned = [id(q) for _, _, m in layers for q in m.parameters()]
    assert sorted(owned) == sorted(id(q) for q in lite.parameters())  # each once, none left out
    plan = layer_plan(lite, "adaptive", {"low_layers": 3})
    assert [p.reinit for p in plan[:4]] == [True, True, True, False] and plan[-1].reinit
    assert all(p.unit == "layer" for p in plan) and len(plan) == len(layers)


@pytest.mark.slow
def test_a_per_layer_plan_trains_as_planned(demo_subset):
    """A real fine-tuning loop with low_layers: the restarted layers move far from ImageNet, the others barely."""
    from artannot.ml.device import select_runtime
    from artannot.ml.finetune import fit

    torch.manual_seed(0)
    classes = sorted(d.name for d in demo_subset.iterdir())
    samples = [(str(f), k) for k, c in enumerate(classes) for f in sorted((demo_subset / c).iterdir())[:3]]
    imagenet = build_network("efficientnet_lite0", len(classes))
    model = build_network("efficientnet_lite0", len(classes))
    model.load_state_dict(imagenet.state_dict())
    plan = layer_plan(model, "adaptive", {"low_layers": 2, "low_lr": 1e-7})
    cfg = FineTuneConfig(epochs=1, batch_size=8, image_size=64, optimizer="sgd", augment=False, warmup=0.0,
                         num_workers=0)
    result = fit(model, samples, None, cfg, select_runtime("cpu"), plan, backbone="efficientnet_lite0")
    assert [g["reinit"] for g in result.plan[:3]] == [True, True, False] and result.plan[0]["unit"] == "layer"
    before = dict(imagenet.named_parameters())
    moved = {name: float((q.detach() - before[name].detach()).abs().max()) for name, q in model.named_parameters()}
    restarted = [n for n in moved if n.startswith(("_conv_stem", "_blocks.0._depthwise_conv")) and n.endswith("weight")]
    kept = [n for n in moved if n.startswith("_blocks.5.") and n.endswith("weight")]
    assert len(restarted) == 2 and all(moved[n] > 1e-2 for n in restarted), {n: moved[n] for n in restarted}
    assert kept and max(moved[n] for n in kept) < 1e-4


# -- Lagunas & Garces: the baseline counted over the 1000 ImageNet classes ---------------------------------------


@pytest.fixture(scope="module")
def imagenet_three(tmp_path_factory, demo_subset) -> Path:
    """fish, dinosaurs and roadsigns of the bundled demo (8 clip-art images each), 5 of each in the test split."""
    root = tmp_path_factory.mktemp("imagenet3")
    for label in ("fish", "dinosaurs", "roadsigns"):
        shutil.copytree(demo_subset / label, root / "images" / label)
    path = root / "three.artannot"
    with Project.create(path) as p:
        p.import_folder(root / "images", labels_from="folder", split="train")
        by_class: dict[int, list[int]] = {}
        for image_id, _, _, c in repo.labelled_images(p.conn, "train", TRAINABLE_SOURCES):
            by_class.setdefault(c, []).append(image_id)
        p.set_split([i for ids in by_class.values() for i in sorted(ids)[:5]], "test")
    return path


MAPPING = {"fish": ["goldfish", "tench", "puffer", "lionfish", "anemone fish", "great white shark"],
           "dinosaurs": ["triceratops"], "roadsigns": ["street sign", "traffic light"]}


@pytest.mark.slow
def test_baseline_counts_top_k_over_the_1000_imagenet_classes(imagenet_three, tmp_path):
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps(MAPPING))
    with Project(imagenet_three) as p:
        paper = p.train(method="baseline", device="cpu", options={"mapping": str(mapping)})
        renorm = p.train(method="baseline", device="cpu", options={"mapping": str(mapping),
                                                                   "baseline": "renormalized"})
        with pytest.raises(ModelError, match="imagenet or renormalized"):
            p.train(method="baseline", device="cpu", options={"mapping": str(mapping), "baseline": "mass"})
        names = {c.id: c.name for c in p.classes()}
        labelled = repo.labelled_images(p.conn, "test", TRAINABLE_SOURCES)
        test = [(path, names[c]) for _, path, _, c in labelled]
        truth = {i: c for i, _, _, c in labelled}
        again = baseline_evaluation(repo.get_model(p.conn, paper.model_id), truth, names)  # for `evaluate`
        assert again is not None and (again["top1"], again["top5"]) == (paper.metrics["top1"], paper.metrics["top5"])
        assert baseline_evaluation(repo.get_model(p.conn, renorm.model_id), truth, names) is None
        shown = p.evaluate(paper.model_id)  # what `artannot evaluate` and the Evaluate dialog report
        assert (shown["top1"], shown["top5"]) == (paper.metrics["top1"], paper.metrics["top5"])
        assert "1000" in shown["topk_rule"]
    # the plain computation: the ImageNet network on each test image, fp32, top-k over its 1000 categories
    categories = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    net, tf = load_backbone("efficientnet_lite0"), build_transform(get_spec("efficientnet_lite0"))
    hits = np.zeros(2)
    with torch.no_grad():
        for path, name in test:
            image = load_image(path)  # the app's decoding (transparent clip art on white)
            top = torch.topk(net(tf(image)[None])[0], 5).indices.tolist()
            ours = {k for k, c in enumerate(categories) if c in MAPPING[name]}
            hits += [top[0] in ours, bool(ours & set(top))]
    expected = hits / len(test)
    m = paper.metrics
    assert m["n"] == len(test) == 15
    assert (m["top1"], m["top5"]) == pytest.approx(tuple(expected)), (m["top1"], m["top5"], expected)
    assert paper.params["predictor"]["variant"] == "imagenet" and "1000" in m["topk_rule"]
    # ranking only the mapped classes (or renormalising their mass) can only count more hits
    assert m["ranked"]["top1"] >= m["top1"] and renorm.metrics["top1"] >= m["top1"]
    assert renorm.metrics["top1"] > m["top1"] or m["ranked"]["top1"] > m["top1"], "the rules should differ here"
    assert sum(v["n"] for v in m["per_class"].values()) == len(test)


# -- cross-project roles: a network adapted in another project, an SVM fitted here ------------------------------


@pytest.mark.slow
def test_recipe_fits_an_svm_here_on_a_network_adapted_in_another_project(demo_project, imagenet_three, tmp_path):
    recipe = {"name": "roles", "backbone": "efficientnet_lite0", "runs": [
        {"name": "net", "method": "adaptive", "epochs": 1, "then_svm": True, "project": "@noisy",
         "options": {"image_size": 64, "batch_size": 8}},
        {"name": "svm", "method": "svm", "options": {"from_model": "@net", "labels": "all", "kernels": ["rbf"],
                                                      "Cs": [1]}}],
        "expected_order": ["net", "svm"]}
    path = tmp_path / "roles.json"
    path.write_text(json.dumps(recipe))
    out = tmp_path / "out.txt"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = recipe_runner.main([str(path), str(imagenet_three), "--noisy", str(demo_project), "--device", "cpu",
                                 "--json"])
    out.write_text(buf.getvalue())
    report = json.loads(buf.getvalue())
    assert rc == 0, report
    net, svm = report["runs"]
    assert net["elsewhere"] and Path(net["project"]) == demo_project.resolve() and not svm["elsewhere"]
    check = report["ordering"][0]
    assert check["elsewhere"] == ["net"] and check["missing"] == []  # evaluated elsewhere: not compared
    with Project(imagenet_three) as p:
        row = next(m for m in p.models() if m["id"] == svm["model"])
        assert row is not None
        source = p.conn.execute("SELECT params FROM models WHERE id = ?", (svm["model"],)).fetchone()[0]
        features = json.loads(source)["predictor"]["features"]
        assert features["model"] == f"{demo_project.resolve()}#{net['model']}"
        scored = p.predict_files([next((p.path.parent / "images" / "fish").iterdir())], model_id=svm["model"])
        assert scored and scored[0][1]
        with pytest.raises(ModelError, match="no model 999"):
            p.train(method="svm", device="cpu", options={"from_model": f"{demo_project}#999"})
        with pytest.raises(ModelError, match="model id or PROJECT"):
            p.train(method="svm", device="cpu", options={"from_model": "latest"})


# -- ordering checks that run, and fail loudly ---------------------------------------------------------------------


def test_sabatelli_ordering_matches_runs_renamed_per_backbone():
    recipe = _recipe("sabatelli")
    assert recipe["expected_order"] == ["off-the-shelf", "fine-tuned"]
    runs = [dict(r, backbones=["efficientnet_lite0", "efficientnet_lite1"]) for r in recipe["runs"][:2]]
    expanded, skipped = recipe_runner.expand(runs, "vgg19", None)
    assert not skipped and [r["name"] for r in expanded] == [
        "off-the-shelf/efficientnet_lite0", "off-the-shelf/efficientnet_lite1",
        "fine-tuned/efficientnet_lite0", "fine-tuned/efficientnet_lite1"]
    top1 = {"off-the-shelf/efficientnet_lite0": 0.5, "fine-tuned/efficientnet_lite0": 0.7,
            "off-the-shelf/efficientnet_lite1": 0.6, "fine-tuned/efficientnet_lite1": 0.4}
    rows = [{"base": r["base"], "backbone": r["backbone"], "top1": top1[r["name"]], "elsewhere": False}
            for r in expanded]
    checks = recipe_runner.ordering(recipe["expected_order"], rows, skipped, None)
    assert [(c["backbone"], c["holds"], c["missing"]) for c in checks] == [
        ("efficientnet_lite0", True, []), ("efficientnet_lite1", False, [])]
    # one backbone's fine-tuning did not run: that check names the run and the reason
    gone = recipe_runner.skip(expanded[3], "out of memory")
    checks = recipe_runner.ordering(recipe["expected_order"], rows[:3], [gone], None)
    assert checks[1]["missing"] == ["fine-tuned on efficientnet_lite1 (out of memory)"]
    # the paper's figures per table and backbone
    off = _run(recipe, "off-the-shelf")["paper"]
    assert recipe_runner.paper_figures(off, "vgg19", "material") == {"top1": 0.9212}
    assert recipe_runner.paper_figures(off, "resnet50", "type") == {"top1": 0.7123}
    assert recipe_runner.paper_figures(_run(_recipe("gonthier"), "ensemble")["paper"], "inception_v1", None) == \
        {"top1": 0.5876, "top3": 0.8399, "top5": 0.9223}


@pytest.mark.slow
def test_recipe_fails_loudly_when_an_expected_run_is_missing(demo_project, capsys):
    """The real Lagunas recipe without --mapping: the baseline cannot run, so its ordering check fails."""
    rc = recipe_runner.main([str(CONFIGS / "lagunas_garces.json"), str(demo_project), "--backbone",
                             "efficientnet_lite0", "--device", "cpu", "--only", "baseline", "baseline+svm"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert "ordering check on efficientnet_lite0 FAILED" in out and "baseline on efficientnet_lite0 (needs mapping)" in out
    assert "error: the ordering check needs runs that did not run: baseline" in err
    assert "baseline+svm" in out and "62.0%" in out  # ours beside the paper's figure


def test_every_recipe_has_paper_figures_and_an_ordering_of_its_runs():
    for name in ("lagunas_garces", "sabatelli", "gonthier"):
        recipe = _recipe(name)
        names = {r["name"] for r in recipe["runs"]}
        assert set(recipe["expected_order"]) <= names, name
        assert all(recipe_runner.paper_figures(_run(recipe, r)["paper"], "vgg19", recipe.get("paper_table"))
                   or recipe_runner.paper_figures(_run(recipe, r)["paper"], "inception_v1", None)
                   for r in recipe["expected_order"]), name
    svm = _run(_recipe("lagunas_garces"), "optimized+svm")["options"]
    assert (svm["kernels"], svm["Cs"], svm["gammas"], svm["gamma_scales"], svm["scale"]) == \
        (["sigmoid"], [10], [0.0001], [], False)


# -- Gonthier: InceptionV1 and the training modes ---------------------------------------------------------------


def test_inception_v1_needs_its_local_weights_file(tmp_path):
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        assert not weights_available("inception_v1")
        with pytest.raises(ModelError) as info:
            load_backbone("inception_v1")
        message = str(info.value)
        assert "googlenet-1378be20.pth" in message and str(tmp_path / "checkpoints") in message
        assert "\n" not in message
        net = torchvision.models.googlenet(weights=None, aux_logits=True, transform_input=False,
                                           init_weights=False).eval()
        (tmp_path / "checkpoints").mkdir()
        torch.save(net.state_dict(), tmp_path / "checkpoints" / "googlenet-1378be20.pth")
        model = load_backbone("inception_v1")
    finally:
        torch.hub.set_dir(previous)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert model.forward_features(x).shape == (1, 1024)
        torch.testing.assert_close(model(x), net(x))  # the same network, aux classifiers left out
    assert get_spec("inception_v1").mean == (0.5, 0.5, 0.5)  # what transform_input=True computed


def test_gonthier_modes_end_from_scratch_and_augmentation():
    recipe = _recipe("gonthier")
    assert recipe["backbone"] == "inception_v1"
    model = build_network("inception_v1", 25, pretrained=False)
    assert group_names(model)[-3:] == ["mixed5a", "mixed5b", "classifier"]
    end = layer_plan(model, "finetune", _run(recipe, "end-from-scratch")["options"])
    assert [p.name for p in end if p.reinit] == ["mixed5a", "mixed5b", "classifier"]
    assert all(p.lr > 0 for p in end)
    assert all(p.reinit for p in layer_plan(model, "finetune", _run(recipe, "from-scratch")["options"]))
    cfg = FineTuneConfig.from_options(_run(recipe, "all-layers-no-augment")["options"])
    assert cfg.augment is False and cfg.optimizer == "sgd" and cfg.nesterov is False
    assert FineTuneConfig.from_options(_run(recipe, "all-layers")["options"]).augment is True
    with pytest.raises(ModelError, match="scratch_top"):
        layer_plan(model, "finetune", {"scratch_top": 11})
