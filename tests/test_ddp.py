"""The multi-GPU path on CPU: torchrun starts 2 gloo processes running the app's own training code (DDP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from artannot.project import Project
from tests.shapes import make_shape_collection

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_processes_train_one_model(tmp_path):
    make_shape_collection(tmp_path / "images", per_class=8, seed=3)
    project = tmp_path / "ddp.artannot"
    with Project.create(project) as p:
        p.import_folder(tmp_path / "images", labels_from="folder", split="auto")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "training" / "ddp.py"), str(project), "--method", "finetune", "--epochs", "1",
         "--image-size", "64", "--batch-size", "4", "--device", "cpu", "--backend", "gloo"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout  # process 0 alone stores and reports
    report = lines[0]
    assert report["world_size"] == 2 and len(report["curves"]) == 1
    with Project(project) as p:
        models = p.models()
        assert [m["method"] for m in models] == ["finetune"]
        row = p.conn.execute("SELECT params FROM models").fetchone()
        network = json.loads(row[0])["network"]
        assert network["world_size"] == 2 and network["epochs_run"] == 1
        assert all(r.pred_class_id is not None for r in p.images())
