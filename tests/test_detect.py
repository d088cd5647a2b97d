"""Detection: both methods trained on generated scenes (shapes pasted on clutter) in a real project, measured
with pycocotools against boxes at random positions, proposals, box suspects, the CLI contract, cancel."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from artannot.errors import Cancelled, ModelError
from artannot.project import Project
from artannot.store import boxes as B
from artannot.store import proposals as P
from artannot.store import repo
from tests.shapes import paint_shape

KINDS = ("circle", "square")


def clutter(rng: random.Random, w: int, h: int) -> Image.Image:
    """A busy background: a pale tint, thin lines and small grey specks (nothing shaped like an object)."""
    img = Image.new("RGB", (w, h), tuple(rng.randint(200, 255) for _ in range(3)))
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(6, 12)):
        colour = tuple(rng.randint(120, 230) for _ in range(3))
        d.line([(rng.randint(0, w), rng.randint(0, h)), (rng.randint(0, w), rng.randint(0, h))], fill=colour,
               width=rng.randint(1, 2))
    for _ in range(rng.randint(10, 30)):
        x, y = rng.randint(0, w), rng.randint(0, h)
        d.point([(x, y), (x + 1, y)], fill=tuple(rng.randint(100, 200) for _ in range(3)))
    return img


def make_scenes(root: Path, n: int = 32, seed: int = 0) -> dict[str, list[tuple[str, float, float, float, float]]]:
    """n scenes of 160-256 px with 1-3 circles or squares each (every eighth image has none); file -> boxes."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    truth = {}
    for k in range(n):
        w, h = rng.randint(160, 256), rng.randint(160, 256)
        img = clutter(rng, w, h)
        d = ImageDraw.Draw(img)
        boxes: list[tuple[str, float, float, float, float]] = []
        for _ in range(0 if k % 8 == 7 else rng.randint(1, 3)):
            for _try in range(20):
                r = rng.randint(14, 30)
                cx, cy = rng.randint(r, w - r), rng.randint(r, h - r)
                box = (cx - r, cy - r, 2 * r + 1, 2 * r + 1)
                if all(P.iou(box, b[1:]) == 0 for b in boxes):
                    kind = rng.choice(KINDS)
                    paint_shape(d, kind, cx, cy, r, tuple(rng.randint(0, 90) for _ in range(3)))
                    boxes.append((kind, *box))
                    break
        name = f"scene_{k:03d}.png"
        img.save(root / name)
        truth[name] = boxes
    return truth


def build_project(tmp_path: Path, n: int = 32, test_every: int = 4, seed: int = 0) -> Path:
    """A project of generated scenes with their boxes; every test_every-th image in the test split."""
    root = tmp_path / "scenes"
    truth = make_scenes(root, n, seed)
    path = tmp_path / "det.artannot"
    with Project.create(path) as p:
        p.import_folder(root, labels_from="none", split="train")
        ids = repo.ensure_classes(p.conn, KINDS)
        by_name = {Path(im.path).name: im.id for im in p.images()}
        rows = [(by_name[name], ids[kind], x, y, w, h) for name, boxes in truth.items() for kind, x, y, w, h in boxes]
        B.add_boxes(p.conn, rows, "import")
        test = [by_name[name] for k, name in enumerate(sorted(truth)) if k % test_every == 0]
        p.set_split(test, "test")
    return path


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return build_project(tmp_path_factory.mktemp("det"))


def random_baseline(p: Project, seed: int = 0) -> dict:
    """COCOeval figures of boxes at random positions (sizes and classes drawn like the training boxes)."""
    from artannot.ml.detect.data import TRAIN_SPLITS, box_images
    from artannot.ml.detect.evaluate import coco_map

    rng = np.random.default_rng(seed)
    train = [b for im in box_images(p.conn, TRAIN_SPLITS) for b in im.boxes]
    test = box_images(p.conn, ("test",))
    dets = []
    for im in test:
        for _ in range(20):
            c, _, _, w, h = train[rng.integers(len(train))]
            dets.append((im.image_id, c, rng.uniform(0, im.width - w), rng.uniform(0, im.height - h), w, h,
                         float(rng.random())))
    ids = sorted({b[0] for b in train})
    names = repo.class_names(p.conn)
    return coco_map(test, dets, ids, [names[c] for c in ids])


def test_patches_finds_shapes_and_proposes_without_duplicates(scenes):
    with Project(scenes) as p:
        result = p.train(method="patches", device="cpu")
        m = result.metrics
        base = random_baseline(p)
        assert base["map50"] < 0.1
        assert m["map50"] > max(0.5, 5 * base["map50"]), (m, base)
        assert set(m["per_class"]) == set(KINDS) and all(v["n"] > 0 for v in m["per_class"].values())
        row = repo.get_model(p.conn, result.model_id)
        params = json.loads(row["params"])
        assert params["task"] == "detect" and not Path(params["predictor"]["path"]).is_absolute()
        # evaluate gives the stored figures again, through the task registry
        again = p.evaluate(result.model_id)
        assert again["map50"] == pytest.approx(m["map50"], abs=1e-6) and again["n"] == m["n"]
        # the detector is chosen apart from the class model
        assert p.active_model_id() is None and p.detector_model_id() == result.model_id
        # proposals over every image, boxed or not: never over a drawn box
        everything = [im.id for im in p.images()]
        out = p.propose_boxes(everything, min_score=0.2, device="cpu")
        assert out["model"] == result.model_id and out["images"] == len(everything)
        for image_id in everything:
            drawn = [(b.x, b.y, b.w, b.h) for b in B.boxes_for(p.conn, image_id)]
            for prop in P.proposals_for(p.conn, image_id):
                assert all(P.iou((prop.x, prop.y, prop.w, prop.h), d) < P.DUPLICATE_IOU for d in drawn)
        suspects = p.box_suspects(min_score=0.5)
        assert {s["kind"] for s in suspects} <= {"missing", "doubtful", "class"}
        doubtful = sum(s["kind"] == "doubtful" for s in suspects)
        assert doubtful < 0.5 * sum(len(v) for v in B.boxes_by_image(p.conn).values())


def test_no_boxes_and_too_few_boxes_are_refused(tmp_path):
    root = tmp_path / "plain"
    make_scenes(root, 4)
    with Project.create(tmp_path / "p.artannot") as p:
        p.import_folder(root, labels_from="none")
        with pytest.raises(ModelError, match="draw some boxes"):
            p.train(method="detector", device="cpu")
        circle = repo.ensure_classes(p.conn, ["circle"])["circle"]
        B.add_boxes(p.conn, [(p.images()[0].id, circle, 10, 10, 30, 30)])
        with pytest.raises(ModelError, match="at least 8 boxes") as err:
            p.train(method="detector", device="cpu")
        assert "\n" not in str(err.value)
        with pytest.raises(ModelError, match="at least 2 boxes"):
            p.train(method="patches", device="cpu")
        with pytest.raises(ModelError, match="no detector yet"):
            p.propose_boxes()


def test_cancel_leaves_no_model_and_no_files(scenes):
    cancel = threading.Event()

    def progress(done, total, stage):
        if "training detector" in stage:
            cancel.set()

    with Project(scenes) as p:
        before = {f.name for f in (p.cache_dir / "models").glob("*")} if (p.cache_dir / "models").exists() else set()
        n_models = len(p.models())
        with pytest.raises(Cancelled):
            p.train(method="detector", epochs=1, device="cpu", options={"min_size": 192}, progress=progress,
                    cancel=cancel)
        assert len(p.models()) == n_models
        after = {f.name for f in (p.cache_dir / "models").glob("*")} if (p.cache_dir / "models").exists() else set()
        assert after == before


@pytest.mark.slow
def test_detector_end_to_end_and_cli_contract(scenes, tmp_path, capsys):
    from artannot.cli import main

    with Project(scenes) as p:
        base = random_baseline(p)
        result = p.train(method="detector", epochs=8, device="cpu", options={"min_size": 256, "max_size": 384})
        m = result.metrics
        assert m["map50"] > max(0.3, 4 * base["map50"]), (m, base)
        assert len(m["curves"]) == 8 and m["curves"][-1]["train_loss"] < m["curves"][0]["train_loss"]
        ckpt = Path(p.models()[-1]["checkpoint"])
        assert ckpt.suffix == ".pt" and ckpt.with_suffix(".json").is_file()
        model_id = result.model_id
    capsys.readouterr()
    assert main(["evaluate", str(scenes), "--boxes", "--model", str(model_id), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"map", "map50", "map75", "n", "per_class", "model", "split"} <= set(out)
    assert out["model"] == model_id and out["split"] == "test"
    assert set(next(iter(out["per_class"].values()))) >= {"ap", "ap50", "n"}
    dets = tmp_path / "dets.json"
    assert main(["detect", str(scenes), "--out", str(dets), "--threshold", "0.3", "--model", str(model_id)]) == 0
    results = json.loads(dets.read_text())
    assert results and {"image", "category", "bbox", "score"} <= set(results[0])
    assert all(r["score"] >= 0.3 and len(r["bbox"]) == 4 and r["category"] in KINDS for r in results)
    capsys.readouterr()
    assert main(["propose", str(scenes), "--threshold", "0.3", "--model", str(model_id), "--json"]) == 0
    proposed = json.loads(capsys.readouterr().out)
    assert proposed["model"] == model_id and proposed["images"] >= 0


def test_pooling_the_deep_map_through_cell_weights_equals_roi_align():
    import torch
    from torchvision.ops import roi_align

    from artannot.ml.detect.patches import roi_align_few_cells

    g = torch.Generator().manual_seed(0)
    for channels, (h, w), output in ((1280, (9, 13), (1, 1)), (64, (9, 13), (2, 2)), (40, (5, 6), (2, 2))):
        feature = torch.rand(1, channels, h, w, generator=g)
        xy = torch.rand(50, 2, generator=g) * torch.tensor([w * 16.0, h * 16.0])
        rois = torch.cat([torch.zeros(50, 1), xy, xy + 8 + torch.rand(50, 2, generator=g) * 200], 1)
        want = roi_align(feature, rois, output, spatial_scale=1 / 32, sampling_ratio=-1, aligned=True).flatten(1)
        assert torch.allclose(roi_align_few_cells(feature, rois, output, 1 / 32), want, atol=1e-5)
