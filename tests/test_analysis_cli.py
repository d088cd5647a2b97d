"""`artannot analysis`: a fine-tuned network against ImageNet, its own initialization and another model, on the
test split of a real project with the bundled EfficientNet-Lite0 (tiny images, one epoch)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from artannot import cli
from artannot.errors import ModelError
from artannot.ml import analysis as A
from artannot.ml.networks import build_network, reinitialize
from artannot.ml.tags.finetune import network_head
from artannot.project import Project

FAST = {"image_size": 96, "batch_size": 8, "num_workers": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_subset):
    """A demo project with a fine-tuned network (2 epochs at 96 px) and an SVM on ImageNet features."""
    path = tmp_path_factory.mktemp("analysis") / "demo.artannot"
    torch.set_num_threads(1)
    with Project.create(path) as p:
        p.import_folder(demo_subset, labels_from="folder", split="auto")
        finetune = p.train(method="finetune", device="cpu", epochs=2, options=FAST).model_id
        svm = p.train(method="svm", device="cpu").model_id
    return path, finetune, svm


def _json(capsys, argv) -> dict:
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_analysis_against_init_and_imagenet(trained, capsys, tmp_path):
    path, finetune, _ = trained
    out = _json(capsys, ["analysis", str(path), "--model", str(finetune), "--against", "init", "--top", "3",
                         "--json", "--out", str(tmp_path / "plots")])
    rows = {r["layer"]: r for r in out["per_layer"]}
    assert out["against"] == "init" and out["split"] == "test" and out["n_images"] == 10 and out["top"] == 3
    assert rows["classifier"]["kernel_l2"] > 0 and rows["stage3"]["kernel_l2"] > 0  # trained: moved
    assert all(0.0 <= r["entropy_a"] <= 1.0 for r in out["per_layer"] if r["entropy_a"] is not None)
    assert 0.0 < rows["features"]["cka"] <= 1.0 and 0.0 <= rows["stage7"]["overlap"] <= 1.0
    assert set(out["plots"]) == {str(tmp_path / "plots" / n) for n in
                                 ("cka.png", "entropy.png", "kernels.png", "analysis.json")}
    with Image.open(tmp_path / "plots" / "cka.png") as im:
        assert im.size == (1200, 640) and len(np.unique(np.asarray(im.convert("L")))) > 5  # drawn, not blank
    assert json.loads((tmp_path / "plots" / "analysis.json").read_text())["model"] == finetune

    net = _json(capsys, ["analysis", str(path), "--json", "--top", "3"])  # defaults: newest network, ImageNet
    by = {r["layer"]: r for r in net["per_layer"]}
    assert net["model"] == finetune and net["against"] == "imagenet"
    # the body started from ImageNet: against its initialization it moved exactly as far as from ImageNet
    for layer in ("stem", "stage3", "head conv"):
        assert by[layer]["kernel_l2"] == pytest.approx(rows[layer]["kernel_l2"], rel=1e-9)
        assert by[layer]["cka"] == pytest.approx(rows[layer]["cka"], abs=1e-6)
    assert "classifier" not in by  # 5 classes vs ImageNet's 1000: not comparable
    assert net["mean_kernel_l2"] > 0 and "||W_A - W_B||_F" in net["kernel_definition"]
    assert cli.main(["analysis", str(path), "--top", "3"]) == 0  # the table
    text = capsys.readouterr().out
    assert "stem" in text and "mean l2 distance between kernels" in text and "note:" not in text
    assert out["note"] is None
    assert cli.main(["analysis", str(path)]) == 0  # top 100 of 10 test images: every channel keeps them all
    assert "note: the top-100 set of every channel is the whole split" in capsys.readouterr().out


@pytest.mark.slow
def test_initial_network_is_the_seeded_start_of_training(trained):
    from artannot.ml.saliency import model_source

    path, finetune, _ = trained
    with Project(path) as p:
        init = A.initial_network(p.conn, finetune)
        net = model_source(p.conn, finetune).load_network()
        seed = json.loads(p.conn.execute("SELECT params FROM models WHERE id = ?", (finetune,)).fetchone()[0]
                          )["network"]["config"]["seed"]
    imagenet = build_network("efficientnet_lite0", 5)
    assert all(torch.equal(a, b) for a, b in zip(imagenet.blocks.parameters(), init.blocks.parameters(), strict=True))
    wrong = build_network("efficientnet_lite0", 5)
    torch.manual_seed(seed + 1)  # the same plan from another seed: another new head
    reinitialize(wrong.layer_groups()[-1])
    # the trained head is its seeded start plus what training moved: correlated with it, not with another draw
    head = [network_head(g).weight.detach().flatten().double() for g in (net, init, wrong)]
    corr_init = float(torch.corrcoef(torch.stack([head[0], head[1]]))[0, 1])
    corr_wrong = float(torch.corrcoef(torch.stack([head[0], head[2]]))[0, 1])
    assert corr_init > 0.2 and abs(corr_wrong) < 0.1, (corr_init, corr_wrong)
    assert A.kernel_distance_by_layer(net, init)[1][-1] > 0
    with Project(path) as p:
        again = A.initial_network(p.conn, finetune)
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), init.parameters(), strict=True))


def test_kernel_distance_is_the_frobenius_norm_per_convolution():
    a, b = build_network("efficientnet_lite0", 3), build_network("efficientnet_lite0", 3)
    b.load_state_dict(a.state_dict())
    conv = b.blocks[3][0]._project_conv.weight
    with torch.no_grad():
        delta = torch.randn_like(conv) * 0.01
        conv.add_(delta)
    names, l2, rel = A.kernel_distance_by_layer(a, b)
    by = dict(zip(names, l2, strict=True))
    n_layers = len([w for n, w in a.blocks[3].named_parameters() if n.endswith("weight") and w.dim() in (2, 4)])
    assert by["stage4"] == pytest.approx(float(delta.double().norm()) / n_layers, rel=1e-5)
    assert by["stage3"] == 0.0 and by["stem"] == 0.0
    n_convs = sum(1 for g in a.layer_groups() for n, w in g.named_parameters() if n.endswith("weight") and w.dim() == 4)
    assert A.mean_kernel_distance(a, b) == pytest.approx(float(delta.double().norm()) / n_convs, rel=1e-5)


@pytest.mark.slow
def test_analysis_errors_are_one_line(trained, capsys, tmp_path):
    path, finetune, svm = trained
    for argv, words in (
            (["--model", str(svm)], "no fine-tuned network"),
            (["--model", str(finetune), "--against", "sideways"], "--against takes imagenet, init or a model id"),
            (["--model", str(finetune), "--against", str(svm)], "no fine-tuned network"),
            (["--model", "999"], "no model with id 999"),
            (["--model", str(finetune), "--split", "val"], "no images in the val split"),
            (["--model", str(svm), "--against", "init"], "no fine-tuned network")):
        assert cli.main(["analysis", str(path), *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("artannot: error:") and words in err and "\n" not in err, err
    with Project.create(tmp_path / "empty.artannot"):
        pass
    assert cli.main(["analysis", str(tmp_path / "empty.artannot")]) == 2
    assert "no fine-tuned network in this project" in capsys.readouterr().err


@pytest.mark.slow
def test_double_models_have_no_recorded_start(trained):
    path, finetune, _ = trained
    with Project(path) as p:
        params = json.loads(p.conn.execute("SELECT params FROM models WHERE id = ?", (finetune,)).fetchone()[0])
        params["network"]["intermediate"] = "/elsewhere/rasta.artannot"
        from artannot.store import repo

        fake = repo.add_model(p.conn, backbone="efficientnet_lite0", method="double", classes=[1, 2], params=params)
        try:
            with pytest.raises(ModelError, match="double fine-tuned"):
                A.initial_network(p.conn, fake)
        finally:
            _forget(p, fake)  # the module's project keeps its one network (other tests pick the newest)
        assert np.isfinite(A.mean_kernel_distance(build_network("efficientnet_lite0", 2),
                                                  build_network("efficientnet_lite0", 2)))


@pytest.mark.slow
def test_the_analysis_dialogs_job_compares_a_model_with_its_initialization(trained):
    import threading

    from artannot.gui.analysis_dialog import INIT, _compare_job

    path, finetune, _ = trained
    out = _compare_job(path, finetune, INIT, 12, None, threading.Event())
    with Project(path) as p:
        init = A.initial_network(p.conn, finetune)
        from artannot.ml.saliency import model_source

        net = model_source(p.conn, finetune).load_network()
    names, l2, _ = A.kernel_distance_by_layer(net, init)
    assert out["kernels"]["layers"] == names and out["kernels"]["l2"] == pytest.approx(l2)
    assert "at initialization" in out["b"].description and len(out["ids"]) == 12
    with pytest.raises(ModelError, match="pick a fine-tuned model as A"):
        _compare_job(path, None, INIT, 12, None, threading.Event())


@pytest.mark.slow
def test_a_head_on_another_models_network_starts_where_that_network_started(trained):
    from artannot.store import repo

    path, finetune, _ = trained
    with Project(path) as p:
        own = A.initial_network(p.conn, finetune)
        params = {"predictor": {"kind": "tags", "path": "head.npz", "features": {"model": finetune}}}
        head = repo.add_model(p.conn, backbone="efficientnet_lite0", method="tags", classes=[], params=params)
        bare = repo.add_model(p.conn, backbone="efficientnet_lite0", method="finetune", classes=[], params={})
        try:
            again = A.initial_network(p.conn, head)
            with pytest.raises(ModelError, match="did not record how its network was initialized"):
                A.initial_network(p.conn, bare)
        finally:
            _forget(p, head, bare)
    assert all(torch.equal(a, b) for a, b in zip(own.parameters(), again.parameters(), strict=True))


def _forget(p, *model_ids: int) -> None:
    """Drop model rows a test added by hand (their files belong to the real model: left alone)."""
    from artannot.store.db import write

    with write(p.conn):
        p.conn.executemany("DELETE FROM models WHERE id = ?", [(m,) for m in model_ids])
