"""The CLI contract, end to end in real processes, on a temporary copy of a few demo images."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "artannot" / "resources" / "demo"


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "artannot", *args], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("artannot: error: "), proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "collection"
    for label in ("dinosaurs", "roadsigns", "smilies"):
        (root / label).mkdir(parents=True)
        for f in sorted((DEMO / label).glob("*.png"))[:10]:
            shutil.copy(f, root / label / f.name)
    return root


@pytest.mark.slow
def test_cli_curation_loop(collection, tmp_path):
    project = str(tmp_path / "demo.artannot")
    assert "created" in run("init", project).stdout
    out = run("import", project, str(collection), "--labels-from", "folder", "--split", "auto").stdout
    assert "30 added" in out and "30 labelled" in out

    trained = json.loads(run("train", project, "--method", "svm", "--device", "cpu", "--json").stdout)
    assert trained["model"] == 1 and trained["params"]["kernel"] in ("rbf", "sigmoid", "linear")

    ev = json.loads(run("evaluate", project, "--json").stdout)
    assert set(ev) >= {"top1", "top5", "n", "per_class", "confusion"}
    assert ev["n"] == 6 and 0.0 <= ev["top5"] <= 1.0 and ev["top1"] >= 0.5  # chance is 1/3
    assert set(ev["per_class"]) == {"dinosaurs", "roadsigns", "smilies"}
    assert all(set(v) == {"top1", "top5", "n"} for v in ev["per_class"].values())
    assert len(ev["confusion"]) == 3 and sum(map(sum, ev["confusion"])) == 6

    preds = tmp_path / "preds.csv"
    run("predict", project, "--out", str(preds))
    rows = list(csv.DictReader(preds.open(encoding="utf-8")))
    assert len(rows) == 30 and rows[0]["class1"] in {"dinosaurs", "roadsigns", "smilies"}
    single = run("predict", project, str(collection / "smilies")).stdout.splitlines()
    assert single[0].startswith("path,class1,score1") and len(single) == 11

    run("export", project, str(tmp_path / "labels.csv"), "--format", "csv")
    labels = list(csv.DictReader((tmp_path / "labels.csv").open(encoding="utf-8")))
    assert {r["label_source"] for r in labels} == {"rule"} and len(labels) == 30
    run("export", project, str(tmp_path / "p.csv"), "--format", "predictions")
    run("export", project, str(tmp_path / "folder"), "--format", "imagefolder")
    exported = sorted(p.relative_to(tmp_path / "folder").parts[:2] for p in (tmp_path / "folder").rglob("*.png"))
    assert len(exported) == 30 and exported.count(("test", "smilies")) == 2
    one_line_error(run("export", project, str(tmp_path / "folder"), "--format", "imagefolder", ok=False),
                   "not empty")


def test_cli_bad_input_gives_one_line_and_nonzero_exit(tmp_path, collection):
    missing = str(tmp_path / "missing.artannot")
    one_line_error(run("import", missing, str(collection), ok=False), "no project", "artannot init")
    project = str(tmp_path / "p.artannot")
    run("init", project)
    one_line_error(run("init", project, ok=False), "already exists")
    one_line_error(run("import", project, str(tmp_path / "nowhere"), ok=False), "not a folder")
    one_line_error(run("import", project, str(collection), "--labels-from", "magic", ok=False), "labels-from")
    one_line_error(run("evaluate", project, ok=False), "no trained model")
    one_line_error(run("train", project, "--device", "cpu", ok=False), "two classes")
    one_line_error(run("train", project, "--method", "quantum", ok=False), "quantum")
    junk = tmp_path / "junk.artannot"
    junk.write_bytes(b"not a database" * 64)
    one_line_error(run("evaluate", str(junk), ok=False))
    assert run("export", project, "x", "--format", "pdf", ok=False).returncode == 2  # argparse's own message
