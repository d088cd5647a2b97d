"""ONNX export: one graph from a 0..1 image tensor to probabilities, checked with onnxruntime against ArtAnnot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[dev]')")

FAST = {"image_size": 96, "batch_size": 8}


def _agreement(project_path: Path, out: Path, model_id: int | None = None) -> tuple[float, float, int, dict]:
    """(share of same top-1, max |p_onnx - p_artannot|, images, sidecar) of an exported model on every image."""
    import torch

    from artannot.ml.classify.methods import score_model
    from artannot.ml.device import Runtime
    from artannot.ml.onnx_export import preprocess
    from artannot.project import Project
    from artannot.store import repo

    with Project(project_path) as p:
        onnx_path, json_path = p.export_onnx(out, model_id=model_id)
        row = repo.get_model(p.conn, model_id if model_id is not None else p.active_model_id())
        images = repo.all_images(p.conn)
        items = [(path, sha) for _, path, sha in images]
        # ArtAnnot's own scores in fp32 from freshly computed features (the cache keeps float16 vectors)
        for f in p.cache_dir.glob("features.sqlite*"):
            f.unlink()
        ref, _, ok = score_model(p.conn, p.cache_dir, row, items, Runtime(torch.device("cpu"), None, False))
    sidecar = json.loads(json_path.read_text())
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = np.stack([preprocess(path, sidecar) for path, _ in items])
    got = np.concatenate([session.run(None, {"image": x[i:i + 16]})[0] for i in range(0, len(x), 16)])
    assert got.shape == ref.shape and ok.all()
    same = float((got.argmax(1) == ref.argmax(1)).mean())
    return same, float(np.abs(got - ref).max()), len(items), sidecar


def test_linear_probe_exports_as_one_graph_that_onnxruntime_agrees_with(demo_project, tmp_path, capsys):
    from artannot.cli import main
    from artannot.project import Project

    with Project(demo_project) as p:
        p.train(method="linear", device="cpu")
    assert main(["export", str(demo_project), str(tmp_path / "out"), "--format", "onnx"]) == 0
    assert "model.onnx" in capsys.readouterr().out
    same, diff, n, sidecar = _agreement(demo_project, tmp_path / "out2")
    print(f"linear: same top-1 {same:.2%}, max prob diff {diff:.2e} on {n} images")
    assert same >= 0.995 and diff < 1e-4
    assert sidecar["classes"] and sidecar["input_size"] == 224 and sidecar["output"] == "softmax"
    assert sidecar["normalization"]["mean"] == [0.5, 0.5, 0.5] and sidecar["preprocessing"]["resize"] == 256
    assert "top1" in sidecar["metrics"] and sidecar["artannot_version"]


def test_svm_and_knn_export_through_as_torch(demo_project, tmp_path):
    """A one-vs-one SVM (votes + squashed margins) and auto's k-NN candidate: one graph each, in agreement."""
    from artannot.project import Project

    with Project(demo_project) as p:
        svm = p.train(method="svm", device="cpu", options={"kernels": ["rbf"], "Cs": [1.0], "schemes": ["ovo"]})
        assert svm.params["scheme"] == "ovo"
    same, diff, n, _ = _agreement(demo_project, tmp_path / "out", svm.model_id)
    print(f"svm (one-vs-one): same top-1 {same:.2%}, max prob diff {diff:.2e} on {n} images")
    assert same >= 0.995 and diff < 1e-4
    with Project(demo_project) as p:
        knn = p.train(method="auto", device="cpu", options={"candidates": ["knn"], "search_backbones": False,
                                                            "adaptive": False})
        assert knn.params["chosen"] == "knn" and knn.params["predictor"]["classifier"] == "knn"
        assert [c["method"] for c in knn.params["auto"]["candidates"]] == ["knn"]
    same, diff, n, sidecar = _agreement(demo_project, tmp_path / "out_knn", knn.model_id)
    print(f"knn: same top-1 {same:.2%}, max prob diff {diff:.2e} on {n} images")
    assert same >= 0.995 and diff < 1e-4 and "knn" in sidecar["model"]


@pytest.mark.slow
def test_finetuned_network_exports_and_onnxruntime_agrees(demo_project, tmp_path):
    from artannot.project import Project

    with Project(demo_project) as p:
        p.train(method="finetune", device="cpu", epochs=3, options=FAST)
    same, diff, n, sidecar = _agreement(demo_project, tmp_path / "out")
    print(f"finetune: same top-1 {same:.2%}, max prob diff {diff:.2e} on {n} images")
    assert same >= 0.995 and diff < 1e-4
    assert sidecar["input_size"] == 96 and sidecar["preprocessing"]["resize"] == round(96 * 256 / 224)


def test_export_errors_are_one_line(demo_project, tmp_path, capsys):
    from artannot.cli import main

    assert main(["export", str(demo_project), str(tmp_path / "o"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("artannot: error:") and "\n" not in err


def test_file_export_model_runs_in_the_worker_and_says_where(qtbot, demo_project, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from artannot.project import Project
    from tests.conftest import show_main_window

    with Project(demo_project) as p:
        p.train(method="linear", device="cpu")
    w = show_main_window(qtbot, demo_project)
    out = tmp_path / "exported"
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(out))
    assert w.export_model_action.isEnabled()
    with qtbot.waitSignal(w.runner.model_exported, timeout=120_000) as blocker:
        w.export_model_action.trigger()
    assert Path(blocker.args[0][0]) == out / "model.onnx" and (out / "model.json").is_file()
    assert "Exported the model" in w.statusBar().currentMessage()
    w.close()


def test_tag_model_exports_with_sigmoid_outputs_and_thresholds(demo_project, tmp_path):
    import torch

    from artannot.cli import main
    from artannot.ml.device import Runtime
    from artannot.ml.features import extract_features
    from artannot.ml.onnx_export import preprocess
    from artannot.ml.tags.multilabel import TagHead
    from artannot.project import Project
    from artannot.store import repo

    assert main(["tag", str(demo_project), *map(str, range(1, 21)), "--add", "warm"]) == 0
    assert main(["tag", str(demo_project), *map(str, range(10, 31)), "--add", "round"]) == 0
    with Project(demo_project) as p:
        result = p.train(method="tags", device="cpu")
        onnx_path, json_path = p.export_onnx(tmp_path / "out", model_id=result.model_id)
        items = [(path, sha) for _, path, sha in repo.all_images(p.conn)]
    sidecar = json.loads(json_path.read_text())
    assert sidecar["output"] == "sigmoid" and set(sidecar["tags"]) == {"warm", "round"}
    assert len(sidecar["thresholds"]) == 2
    feats, _ = extract_features(items, runtime=Runtime(torch.device("cpu"), None, False))
    ref = TagHead.load(result.params["predictor"]["path"]).predict_proba(feats)
    x = np.stack([preprocess(path, sidecar) for path, _ in items])
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert np.abs(got - ref).max() < 1e-4
