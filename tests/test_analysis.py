"""Model analysis maths: linear CKA, maximally activating images, overlap ratio, class entropy, stored metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from artannot.ml import analysis as A
from artannot.ml.analysis import (
    cka_by_layer,
    class_entropy,
    layer_activations,
    linear_cka,
    model_activations,
    overlap_ratio,
    per_class_scores,
    top_activating,
    top_overlap_by_layer,
    training_curves,
)
from artannot.ml.backbones import get_spec, load_backbone
from tests.conftest import DEMO, DEMO_CLASSES


def test_cka_is_one_for_the_same_representation_up_to_rotation_and_scale():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 30))
    Q, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(X, 3.0 * X @ Q + 5.0) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(X, rng.normal(size=(100, 30))) < 0.4
    wide = rng.normal(size=(20, 500))  # more features than examples: the Gram-matrix form
    assert linear_cka(wide, wide) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(wide, wide[:, :250]) == pytest.approx(
        np.linalg.norm((wide[:, :250] - wide[:, :250].mean(0)).T @ (wide - wide.mean(0))) ** 2
        / (np.linalg.norm((wide - wide.mean(0)).T @ (wide - wide.mean(0)))
           * np.linalg.norm((wide[:, :250] - wide[:, :250].mean(0)).T @ (wide[:, :250] - wide[:, :250].mean(0)))),
        rel=1e-9)
    with pytest.raises(ValueError):
        linear_cka(X, X[:50])


def test_top_activating_images_and_their_overlap():
    acts = np.array([[0.1, 5.0], [0.9, 1.0], [0.5, 3.0], [0.7, 0.0], [0.2, 4.0]])
    assert top_activating(acts, 0, 3).tolist() == [1, 3, 2]
    assert top_activating(acts, 1, 2).tolist() == [0, 4]
    assert top_activating(acts, 1, 99).tolist() == [0, 4, 2, 1, 3]
    assert overlap_ratio([1, 3, 2], [2, 1, 0]) == pytest.approx(2 / 3)
    assert overlap_ratio([1, 2], [3, 4]) == 0.0


def test_normalized_class_entropy():
    assert class_entropy([4, 4, 4, None], n_classes=5) == 0.0
    assert class_entropy([0, 1, 2, 3, 4] * 3, n_classes=5) == pytest.approx(1.0)
    assert 0.0 < class_entropy([0, 0, 0, 1], n_classes=2) < 1.0
    assert math.isnan(class_entropy([None, None]))


def _demo_paths(n_per_class: int = 3) -> list[str]:
    out = []
    for label in DEMO_CLASSES:
        out += sorted(str(p) for p in (DEMO / label).glob("*.png"))[:n_per_class]
    return out


@pytest.fixture(scope="module")
def imagenet_acts():
    net = load_backbone("efficientnet_lite0")
    return layer_activations(net, get_spec("efficientnet_lite0"), _demo_paths(), batch_size=16)


def test_cka_of_a_model_with_itself_is_one_and_with_a_random_model_lower(imagenet_acts):
    acts = imagenet_acts
    assert acts.names == ["stem", *[f"stage{i}" for i in range(1, 8)], "head conv", "features"]
    assert acts["features"].shape == (15, 1280) and acts.ok.all()
    names, same = cka_by_layer(acts, acts)
    assert names == acts.names and np.allclose(same, 1.0)
    torch.manual_seed(0)
    rnd = load_backbone("efficientnet_lite0")
    for m in rnd.modules():  # every layer re-drawn: conv/linear weights and BN statistics
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    random_acts = layer_activations(rnd, get_spec("efficientnet_lite0"), _demo_paths(), batch_size=16)
    _, vs_random = cka_by_layer(acts, random_acts)
    assert all(v < 1.0 - 1e-3 for v in vs_random)
    assert np.mean(vs_random[-4:]) < 0.85, vs_random  # deep layers: random features share little
    overlap_self = top_overlap_by_layer(acts, acts, 5)
    assert np.allclose(overlap_self, 1.0)
    assert np.mean(top_overlap_by_layer(acts, random_acts, 5)[-3:]) < 0.8


def test_model_activations_are_cached(demo_project, monkeypatch):
    from artannot.project import Project

    with Project(demo_project) as p:
        acts, ids = model_activations(p.conn, p.cache_dir, None, max_images=12)
        assert len(ids) == 12 and len(acts["features"]) == 12
        monkeypatch.setattr(A, "layer_activations", lambda *a, **k: pytest.fail("recomputed"))
        again, ids2 = model_activations(p.conn, p.cache_dir, None, max_images=12)
        assert np.array_equal(ids, ids2) and again.names == acts.names
        assert np.allclose(again["stage4"], acts["stage4"], atol=1e-5)


def test_per_class_scores_and_training_curves_from_stored_metrics(demo_project):
    from artannot.project import Project
    from artannot.store import repo

    with Project(demo_project) as p:
        classes = [c.id for c in p.classes()]
        model = repo.add_model(p.conn, backbone="efficientnet_lite0", method="finetune", classes=classes, params={})
        metrics = {"per_class": {"fish": {"top1": 0.5, "top5": 1.0, "n": 2}},
                   "curves": [{"epoch": 1, "train_loss": 1.2, "val_loss": 1.4, "train_top1": 0.5},
                              {"epoch": 2, "train_loss": 0.8, "val_loss": 1.1, "train_top1": 0.7}]}
        repo.update_model(p.conn, model, metrics=metrics)
        plain = repo.add_model(p.conn, backbone="efficientnet_lite0", method="svm", classes=classes, params={})
        assert per_class_scores(p.conn, model)["fish"]["top1"] == 0.5
        curves = training_curves(p.conn)
        assert list(curves) == [model] and curves[model][1]["val_loss"] == 1.1
        assert plain not in curves


def test_paths_exist():
    assert all(Path(p).exists() for p in _demo_paths())


def test_mean_l2_distance_between_kernels_per_layer_group():
    from artannot.ml.networks import build_network, reinitialize

    a = build_network("efficientnet_lite0", 3)
    b = build_network("efficientnet_lite0", 3)
    b.classifier.load_state_dict(a.classifier.state_dict())  # the same new head on both
    names, l2, rel = A.kernel_distance_by_layer(a, b)
    assert names[:2] == ["stem", "stage1"] and names[-1] == "classifier" and max(l2) == 0.0
    reinitialize(b.stem)  # what adaptive layer-based optimization does to the lowest layers
    with torch.no_grad():
        b.blocks[3][0]._project_conv.weight.mul_(1.1)  # a fine-tuned-like nudge in stage 4
    names, l2, rel = A.kernel_distance_by_layer(a, b)
    by = dict(zip(names, rel, strict=True))
    assert by["stem"] > 0.8 and by["stage4"] == pytest.approx(0.1 * _share(a.blocks[3]), rel=1e-4)
    assert by["stage1"] == 0.0 and by["head conv"] == 0.0 and dict(zip(names, l2, strict=True))["stem"] > 0
    c = build_network("efficientnet_lite0", 5)  # another number of classes: the classifier is not compared
    assert "classifier" not in A.kernel_distance_by_layer(a, c)[0]


def _share(group) -> float:
    """The share of one layer in its group's figure: the mean over the group's convolutions (Gonthier et al.)."""
    return 1 / len([w for n, w in group.named_parameters() if n.endswith("weight") and w.dim() in (2, 4)])


def test_compare_job_measures_cka_overlap_and_kernel_change(demo_project):
    """What Analysis ▸ Compare runs in the worker: ImageNet against a network with a new stem."""
    import threading

    from artannot.gui.analysis_dialog import _compare_job
    from artannot.ml.networks import build_network, reinitialize, save_network
    from artannot.project import Project
    from artannot.store import repo

    with Project(demo_project) as p:
        torch.manual_seed(0)
        net = build_network("efficientnet_lite0", 5)
        reinitialize(net.stem)
        ckpt = p.cache_dir / "models" / "stemless.pt"
        save_network(net, ckpt, {"backbone": "efficientnet_lite0", "n_outputs": 5, "class_ids": [1, 2, 3, 4, 5],
                                 "image_size": None, "method": "adaptive", "run": "stemless"})
        model = repo.add_model(p.conn, backbone="efficientnet_lite0", method="adaptive", classes=[1, 2, 3, 4, 5],
                               params={"predictor": {"kind": "network", "path": str(ckpt)}})
    out = _compare_job(demo_project, None, model, 16, None, threading.Event())
    kernels = dict(zip(out["kernels"]["layers"], out["kernels"]["relative"], strict=True))
    assert kernels["stem"] > 0.8 and kernels["stage3"] == 0.0 and "classifier" not in kernels
    assert len(out["ids"]) == 16 and out["layers"][0] == "stem" and out["layers"][-1] == "features"
    assert all(-1e-6 <= v <= 1 + 1e-6 for v in out["cka"]) and len(out["overlap"]) == len(out["layers"])
