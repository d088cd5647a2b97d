"""Sharded extraction and prediction on CPU: torchrun starts 2 gloo processes running training/ddp_infer.py,
and what process 0 merges into the project equals what one process computes; fine-tuning reads the same
decode cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from artannot.ml.classify.methods import score_model
from artannot.ml.decode_cache import decode_cache_for
from artannot.ml.device import select_runtime
from artannot.ml.features import FeatureCache, extract_features
from artannot.ml.finetune import FineTuneConfig, build_network, fit, layer_plan
from artannot.project import Project
from artannot.store import repo
from tests.shapes import make_shape_collection

REPO = Path(__file__).resolve().parents[1]
BACKBONE = "efficientnet_lite0"


@pytest.mark.slow
def test_two_processes_extract_and_predict_like_one(tmp_path):
    make_shape_collection(tmp_path / "images", per_class=4, seed=4)
    project = tmp_path / "infer.artannot"
    runtime = select_runtime("cpu")
    with Project.create(project) as p:
        p.import_folder(tmp_path / "images", labels_from="folder", split="auto")
        (tmp_path / "images" / "circle" / "circle_003.png").write_bytes(b"\x89PNG\r\n\x1a\n damaged since")
        model_id = p.train(method="svm", backbone=BACKBONE).model_id
        everything = repo.all_images(p.conn)
        items = [(path, sha) for _, path, sha in everything]
        # the single-process reference: features of every image, nothing cached or read from a cache
        ref, ref_ok = extract_features(items, backbone=BACKBONE, cache=None, runtime=runtime, decode_cache=None)
        p.conn.execute("DELETE FROM predictions WHERE model_id = ?", (model_id,))
        cache_path, cache_dir = p.feature_cache_path, p.cache_dir
    for suffix in ("", "-wal", "-shm"):  # extraction starts from an empty feature cache
        Path(f"{cache_path}{suffix}").unlink(missing_ok=True)
    assert len(items) == 12 and not ref_ok.all()  # the broken file stays unreadable

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "training" / "ddp_infer.py"), str(project), "--extract", "--predict", "--model", str(model_id),
         "--backbone", BACKBONE, "--batch-size", "4", "--device", "cpu", "--backend", "gloo", "--num-workers", "0"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout  # process 0 alone merges and reports
    report = lines[0]
    assert report["world_size"] == 2
    assert report["extract"]["images"] == len(items) and report["extract"]["unreadable"] == 1
    assert len(report["extract"]["seconds_per_process"]) == 2
    assert not (cache_dir / "shards").exists() or not any((cache_dir / "shards").iterdir())

    # features: the merged cache holds every readable image's vector, equal to the one-process ones
    cache = FeatureCache(cache_path)
    try:
        got = cache.get_many(BACKBONE, [sha for _, sha in items])
    finally:
        cache.close()
    assert set(got) == {sha for (_, sha), good in zip(items, ref_ok, strict=True) if good}
    merged = np.stack([got[sha] for (_, sha), good in zip(items, ref_ok, strict=True) if good])
    np.testing.assert_allclose(merged, ref[ref_ok], rtol=2e-3, atol=2e-3)  # the cache keeps float16
    # each image was decoded once into the shared decode cache, by one of the processes
    entries = list((cache_dir / "decoded").rglob("*.npy"))
    assert len(entries) == int(ref_ok.sum())

    # predictions: written by process 0, the same top-1 and scores as one process scoring every image
    with Project(project) as p:
        stored = {i: repo.top_predictions(p.conn, model_id, i) for i, _, _ in everything}
        proba, class_ids, ok = score_model(p.conn, p.cache_dir, repo.get_model(p.conn, model_id), items, runtime)
        names = repo.class_names(p.conn)
    assert report["predict"]["predicted"] == int(ok.sum()) == int(ref_ok.sum())
    for (image_id, _, _), row, good in zip(everything, proba, ok, strict=True):
        if not good:
            assert stored[image_id] == []
            continue
        top = int(np.argmax(row))
        assert stored[image_id][0][0] == names[class_ids[top]]
        assert stored[image_id][0][1] == pytest.approx(float(row[top]), abs=1e-6)
        assert len(stored[image_id]) == min(5, len(class_ids))


def test_fine_tuning_reads_the_decode_cache_and_trains_alike(tmp_path):
    make_shape_collection(tmp_path / "images", per_class=4, seed=6)
    paths = sorted(str(p) for p in (tmp_path / "images").rglob("*.png"))
    classes = sorted({Path(p).parent.name for p in paths})
    samples = [(p, classes.index(Path(p).parent.name)) for p in paths]
    runtime = select_runtime("cpu")
    cfg = FineTuneConfig(epochs=1, batch_size=4, image_size=64, num_workers=0)
    cache = decode_cache_for(tmp_path / "cache")

    def run():
        torch.manual_seed(0)
        model = build_network(BACKBONE, len(classes))
        result = fit(model, samples[:9], samples[9:], cfg, runtime, layer_plan(model, "finetune"), backbone=BACKBONE,
                     decode_cache=cache)
        return model, result

    _, first = run()
    assert cache.misses > 0
    shrunk = list((tmp_path / "cache").rglob("shrunk-*/*/*.npy"))
    evals = list((tmp_path / "cache").rglob("eval-*/*/*.npy"))
    assert (len(shrunk), len(evals)) == (9, 3)  # train images kept whole, val images as the eval crop
    misses = cache.misses
    model, second = run()
    assert cache.misses == misses  # the second run decodes nothing
    assert first.curves[0]["train_loss"] == pytest.approx(second.curves[0]["train_loss"], rel=1e-4)
    assert np.isfinite(second.curves[0]["val_loss"])
