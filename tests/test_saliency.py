"""Saliency sanity: maps sit on the object, change when the weights are randomized, and SVM heads are exact."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image, ImageDraw

from artannot.data.images import load_image
from artannot.errors import ModelError
from artannot.ml.backbones import _wrap_resnet, _wrap_vgg, get_spec, load_backbone
from artannot.ml.classify.classifiers import SVMClassifier
from artannot.ml.saliency import (
    ModelSource,
    SVMHead,
    colorize,
    explain,
    load_explainer,
    overlay,
    prepare_image,
    stage_outputs,
)
from tests.conftest import DEMO
from tests.shapes import paint_shape

IMAGENET = ModelSource(None, "efficientnet_lite0", "efficientnet_lite0", "imagenet", description="ImageNet")


def one_object(seed: int, kind: str | None = None, size: int = 224) -> tuple[Image.Image, np.ndarray]:
    """A coloured shape on a white page, and a mask of the shape's box (a little wider than the shape)."""
    rng = random.Random(seed)
    kind = kind or rng.choice(["circle", "square", "triangle"])
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    r = rng.randint(size // 8, size // 6)
    cx, cy = rng.randint(r + 5, size - r - 5), rng.randint(r + 5, size - r - 5)
    colour = tuple(rng.randint(0, 200) for _ in range(3))
    paint_shape(d, kind, cx, cy, r, colour)
    mask = np.zeros((size, size), dtype=bool)
    m = int(r * 1.6)
    mask[max(0, cy - m): cy + m, max(0, cx - m): cx + m] = True
    return img, mask


def mass_on(heat: np.ndarray, mask: np.ndarray) -> float:
    return float(heat[mask].sum() / max(heat.sum(), 1e-12))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from artannot.project import Project

    p = Project.create(tmp_path_factory.mktemp("sal") / "s.artannot")
    yield p
    p.close()


@pytest.fixture(scope="module")
def imagenet(project):
    return load_explainer(project.conn, IMAGENET)


def randomized(project):
    """The same network with every layer re-drawn (Adebayo et al.'s cascading randomization, all at once)."""
    torch.manual_seed(0)
    net = load_backbone("efficientnet_lite0")
    for m in net.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return load_explainer(project.conn, IMAGENET, net=net)


def test_visualbackprop_mass_sits_on_the_object(imagenet):
    for seed in range(3):
        img, mask = one_object(seed)
        s = explain(imagenet, img, method="vbp")
        assert s.heatmap.shape == (224, 224) and s.heatmap.dtype == np.float32
        assert s.heatmap.min() >= 0.0 and s.heatmap.max() == pytest.approx(1.0)
        assert mass_on(s.heatmap, mask) > 0.9, (seed, mask.mean())


def test_gradcam_mass_is_denser_on_the_object_than_elsewhere(imagenet):
    for seed in range(3):
        img, mask = one_object(seed)
        s = explain(imagenet, img, method="gradcam")
        assert mass_on(s.heatmap, mask) > 1.5 * mask.mean(), seed
        assert s.class_name == imagenet.class_names[s.class_index] and 0 < s.score <= 1


def test_maps_change_when_the_weights_are_randomized(project, imagenet):
    rnd = randomized(project)
    pictures = [load_image(sorted((DEMO / "fish").glob("*.png"))[0]), one_object(0)[0]]
    for picture in pictures:
        for method in ("vbp", "gradcam"):
            a = explain(imagenet, picture, method=method)
            b = explain(rnd, picture, method=method, class_index=a.class_index)
            if b.heatmap.std() == 0:
                continue  # a flat map (no positive evidence left) has changed completely
            r = np.corrcoef(a.heatmap.ravel(), b.heatmap.ravel())[0, 1]
            assert r < 0.5, (method, r)


@pytest.mark.parametrize("kernel", ["rbf", "sigmoid", "linear"])
def test_svm_head_in_torch_is_the_stored_decision_function(kernel):
    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(60, 24))) + np.repeat(np.eye(3, 24) * 3, 20, axis=0)
    y = np.repeat([5, 7, 9], 20)
    clf = SVMClassifier(kernels=(kernel,), Cs=(1.0,), gamma_scales=(1.0,), gammas=()).fit(X, y)
    head = SVMHead(clf)
    f = torch.tensor(X[:7], dtype=torch.float32, requires_grad=True)
    out = head(f)
    assert np.allclose(out.detach().numpy(), clf.decision_function(X[:7]), atol=1e-5)
    (g,) = torch.autograd.grad(out[:, 1].sum(), f)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    two = SVMClassifier(kernels=(kernel,), Cs=(1.0,), gamma_scales=(1.0,), gammas=()).fit(X[:40], y[:40])
    assert np.allclose(SVMHead(two)(torch.tensor(X[:5])).detach().numpy(), two.decision_function(X[:5]),
                       atol=1e-5)


def test_gradcam_of_a_features_svm_sits_on_the_object(project, tmp_path):
    """Grad-CAM through an rbf SVM trained on ImageNet features of shapes: the evidence is the shape."""
    net = load_backbone("efficientnet_lite0")
    spec = get_spec("efficientnet_lite0")
    kinds = ("circle", "square", "triangle")
    train = [(one_object(100 + 10 * k + j, kind)[0], k) for k, kind in enumerate(kinds) for j in range(6)]
    with torch.no_grad():
        X = torch.cat([prepare_image(img, spec)[1] for img, _ in train])
        feats = stage_outputs(net, X)[1].numpy()
    clf = SVMClassifier(kernels=("rbf",), Cs=(10.0,), gamma_scales=(1.0,), gammas=()).fit(feats, [c for _, c in train])
    clf.save(tmp_path / "svm.npz")
    source = ModelSource(1, "efficientnet_lite0", "efficientnet_lite0", "svm", head_path=str(tmp_path / "svm.npz"),
                         class_ids=(0, 1, 2), description="shapes SVM")
    explainer = load_explainer(project.conn, source, net=net)
    masses, areas = [], []
    for seed in range(6):
        img, mask = one_object(500 + seed, kinds[seed % 3])
        s = explain(explainer, img, method="gradcam")
        masses.append(mass_on(s.heatmap, mask))
        areas.append(mask.mean())
    assert np.mean(masses) > 2 * np.mean(areas), (masses, areas)


def small_vgg() -> torchvision.models.VGG:
    """A VGG with VGG's layout (5 conv blocks, fc6/fc7/fc8) but narrow layers, so it builds in milliseconds."""
    features = torchvision.models.vgg.make_layers([16, "M", 32, "M", 32, "M", 64, "M", 64, "M"])
    with torch.device("meta"):  # VGG's own 4096-wide classifier is replaced below: never allocate it
        net = torchvision.models.VGG(features, init_weights=False)
    net.classifier = torch.nn.Sequential(torch.nn.Linear(64 * 7 * 7, 128), torch.nn.ReLU(True), torch.nn.Dropout(),
                                         torch.nn.Linear(128, 128), torch.nn.ReLU(True), torch.nn.Dropout(),
                                         torch.nn.Linear(128, 1000))
    return net


def test_torchvision_backbones_are_explained_too(project):
    """ResNet (pooled last stage) and VGG (fc7 features) adapters, with random weights: shapes and ranges."""
    torch.manual_seed(0)
    img = one_object(3)[0].resize((256, 200))
    for wrap, make in ((_wrap_resnet, lambda: torchvision.models.resnet18(weights=None)), (_wrap_vgg, small_vgg)):
        net = wrap(make()).eval()
        source = ModelSource(None, "resnet50", "resnet50", "imagenet", description=wrap.__name__)
        explainer = load_explainer(project.conn, source, net=net)
        for method in ("gradcam", "vbp"):
            s = explain(explainer, img, method=method, class_index=3)
            assert s.image.size == (287, 224)  # the whole image, shorter side at the input size
            assert s.heatmap.shape == (224, 287) and np.isfinite(s.heatmap).all()
            assert s.class_index == 3 and len(s.top) == 5


def test_fine_tuned_checkpoints_are_explained_and_their_features_keyed(project):
    """A fine-tuned network (plain state dict under the project's models folder), alone and under an SVM."""
    from artannot.ml.embedding import model_features
    from artannot.ml.networks import build_network, save_network
    from artannot.ml.saliency import model_source
    from artannot.store import repo

    classes = [repo.ensure_classes(project.conn, [n])[n] for n in ("circle", "square")]
    net = build_network("efficientnet_lite0", 2)
    path = project.cache_dir / "models" / "finetune-efficientnet_lite0-test.pt"
    path.parent.mkdir(exist_ok=True)
    save_network(net, path, {"backbone": "efficientnet_lite0", "n_outputs": 2, "class_ids": classes,
                             "image_size": 160, "method": "finetune", "run": "finetune-efficientnet_lite0-test"})
    model = repo.add_model(project.conn, backbone="efficientnet_lite0", method="finetune", classes=classes,
                           params={"predictor": {"kind": "network", "path": str(path)}})
    source = model_source(project.conn, model)
    assert (source.head, source.feature_key, source.image_size) == ("network", "finetune-efficientnet_lite0-test", 160)
    assert source.spec().input_size == 160
    explainer = load_explainer(project.conn, source)
    assert explainer.class_names == ["circle", "square"]
    s = explain(explainer, one_object(1)[0], method="gradcam")
    assert s.heatmap.shape == (160, 160) and s.class_name in ("circle", "square")

    rng = np.random.default_rng(0)
    clf = SVMClassifier(kernels=("sigmoid",), Cs=(1.0,), gamma_scales=(1.0,), gammas=()).fit(
        rng.normal(size=(20, 1280)), np.repeat(classes, 10))
    clf.save(project.cache_dir / "models" / "svm-test.npz")
    stacked = repo.add_model(project.conn, backbone="efficientnet_lite0", method="finetune", classes=classes, params={
        "predictor": {"kind": "classifier", "classifier": "svm", "path": str(project.cache_dir / "models" / "svm-test.npz"),
                      "features": {"network": str(path), "key": "finetune-efficientnet_lite0-test", "image_size": 160}}})
    source = model_source(project.conn, stacked)
    assert source.head == "svm" and source.fine_tuned and source.feature_key == "finetune-efficientnet_lite0-test"
    s = explain(load_explainer(project.conn, source), one_object(2)[0], method="gradcam")
    assert np.isfinite(s.heatmap).all() and len(s.top) == 2
    picture = project.cache_dir / "one.png"
    one_object(2)[0].save(picture)
    feats, ok, _ = model_features(project.conn, project.cache_dir, stacked, [(str(picture), "abc")])
    assert ok.all() and feats.shape == (1, 1280)
    from artannot.ml.features import FeatureCache

    cache = FeatureCache(project.feature_cache_path)
    try:  # cached under the run's key, never the backbone's
        assert cache.get_many("finetune-efficientnet_lite0-test", ["abc"]) and not cache.get_many(
            "efficientnet_lite0", ["abc"])
    finally:
        cache.close()


def test_overlay_colours_and_opacity():
    img = Image.new("RGB", (40, 30), (255, 255, 255))
    heat = np.zeros((15, 20), np.float32)
    heat[:, 10:] = 1.0
    out = np.asarray(overlay(img, heat, alpha=1.0, cmap="grey"))
    assert out.shape == (30, 40, 3) and out[0, 0].tolist() == [0, 0, 0] and out[0, -1].tolist() == [255, 255, 255]
    assert np.asarray(overlay(img, heat, alpha=0.0)).min() == 255
    assert colorize(np.array([[0.0, 1.0]]), "jet").tolist() == [[[0, 0, 127], [127, 0, 0]]]
    with pytest.raises(ModelError):
        colorize(heat, "rainbow-unicorn")


def test_ensembles_and_bad_methods_are_refused(project, imagenet):
    from artannot.ml.saliency import model_source
    from artannot.store import repo

    model = repo.add_model(project.conn, backbone="efficientnet_lite0", method="ensemble", classes=[1, 2],
                           params={"predictor": {"kind": "ensemble", "members": [3, 4]}})
    with pytest.raises(ModelError, match="ensemble"):
        model_source(project.conn, model)
    with pytest.raises(ModelError, match="no model with id"):
        model_source(project.conn, 999)
    with pytest.raises(ModelError, match="method"):
        explain(imagenet, one_object(0)[0], method="lime")


@pytest.mark.slow
def test_cli_saliency_writes_an_overlay_png(tmp_path, demo_project):
    out = tmp_path / "s.png"
    cmd = [sys.executable, "-m", "artannot", "saliency", str(demo_project), "1", "--out", str(out),
           "--method", "vbp", "--device", "cpu"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "VisualBackProp" in run.stdout and "ImageNet efficientnet_lite0" in run.stdout
    with Image.open(out) as im:
        assert im.format == "PNG" and min(im.size) > 32
    bad = subprocess.run(cmd[:5] + ["99999", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no image with id 99999" in bad.stderr
