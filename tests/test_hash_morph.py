"""Illustration2Vec's hash codes (a tag model's sigmoid outputs >= 0.5), Hamming neighbours and morphing on the
Hamming graph: `artannot similar` / `artannot morph` and the app's similar-images strip, on real tagged scenes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from artannot import cli
from artannot.ml.embedding import collection_codes, hamming_knn, hash_codes, neighbourhood
from artannot.project import Project
from artannot.store import tags as tag_store
from tests.shapes import SHAPES, paint_shape


def _scene(rng: random.Random, kinds, size: int = 128) -> Image.Image:
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    for kind, (cx, cy) in zip(kinds, rng.sample([(0, 0), (1, 0), (0, 1), (1, 1)], len(kinds)), strict=False):
        paint_shape(d, kind, cx * 64 + 32, cy * 64 + 32, rng.randint(14, 24),
                    tuple(rng.randint(0, 200) for _ in range(3)))
    return img


@pytest.fixture(scope="module")
def tagged(tmp_path_factory) -> tuple[Path, int]:
    """32 tagged scenes and a tag model (sigmoid head on ImageNet features)."""
    root = tmp_path_factory.mktemp("hash")
    rng = random.Random(7)
    truth = {}
    for n in range(32):
        kinds = [k for k in SHAPES if rng.random() < 0.5] or [rng.choice(SHAPES)]
        _scene(rng, kinds).save(root / f"h{n:02d}.png")
        truth[f"h{n:02d}.png"] = kinds
    path = root / "hash.artannot"
    with Project.create(path) as p:
        p.import_folder(root, labels_from="none", split="train")
        ids = {Path(r.path).name: r.id for r in p.images()}
        for kind in SHAPES:
            p.add_tags([ids[name] for name, kinds in truth.items() if kind in kinds], [kind])
        model = p.train(method="tags", device="cpu").model_id
    return path, model


def _bits(conn, model: int, ids) -> np.ndarray:
    """Each image's tag bits read straight from the stored tag predictions: score >= 0.5."""
    tag_ids = json.loads(conn.execute("SELECT classes FROM models WHERE id = ?", (model,)).fetchone()[0])
    scores = tag_store.tag_scores(conn, model, list(ids))
    return np.array([[any(t == tag and s >= 0.5 for tag, _, s, _ in scores.get(int(i), [])) for t in tag_ids]
                     for i in ids], dtype=bool)


def test_codes_are_the_tag_models_sigmoid_outputs_over_one_half(tagged):
    path, model = tagged
    with Project(path) as p:
        ids = [r.id for r in p.images()]
        codes = collection_codes(p.conn, ids, np.ones((len(ids), 4)))
        expected = _bits(p.conn, model, ids)
    assert codes.method == "tags" and codes.tag_model == model and codes.bits == 3
    assert np.array_equal(np.unpackbits(codes.codes, axis=1)[:, :3].astype(bool), expected)
    assert expected.any(0).all() and not expected.all(0).any()  # every bit varies over the collection
    assert "sigmoid outputs >= 0.5" in codes.description
    P = np.array([[0.2, 0.5, 0.49, 0.9]])
    assert np.unpackbits(hash_codes(P, "probability"), axis=1)[0, :4].tolist() == [0, 1, 0, 1]


def test_without_a_tag_model_the_median_rule_is_the_fallback_and_says_so(tmp_path):
    for k in range(6):
        Image.new("RGB", (48, 48), (40 * k, 255 - 40 * k, 90)).save(tmp_path / f"c{k}.png")
    with Project.create(tmp_path / "plain.artannot") as p:
        p.import_folder(tmp_path, labels_from="none", split="train")
        feats = np.random.default_rng(0).normal(size=(6, 16))
        codes = collection_codes(p.conn, [r.id for r in p.images()], feats)
        assert codes.method == "median" and codes.bits == 16 and "no tag model" in codes.description
        assert np.array_equal(codes.codes, hash_codes(feats, "median"))


def test_similar_by_hamming_and_cosine_from_the_cli(tagged, capsys):
    path, model = tagged
    with Project(path) as p:
        ids = [r.id for r in p.images()]
        bits = dict(zip(ids, _bits(p.conn, model, ids), strict=True))
    first = ids[0]
    assert cli.main(["similar", str(path), str(first), "--hamming", "--k", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metric"] == "hamming" and out["codes"] == "tags" and len(out["neighbours"]) == 5
    dists = [n["distance"] for n in out["neighbours"]]
    assert dists == sorted(dists) and first not in [n["image"] for n in out["neighbours"]]
    for n in out["neighbours"]:  # the distance is the number of tags the two images' codes disagree on
        assert n["distance"] == int((bits[first] != bits[n["image"]]).sum())
    best = min(int((bits[first] != bits[i]).sum()) for i in ids if i != first)
    assert dists[0] == best
    assert cli.main(["similar", str(path), str(first), "--k", "3", "--json"]) == 0
    cos = json.loads(capsys.readouterr().out)
    sims = [n["similarity"] for n in cos["neighbours"]]
    assert cos["metric"] == "cosine" and len(sims) == 3 and sims == sorted(sims, reverse=True) and sims[0] <= 1.0
    assert cli.main(["similar", str(path), str(first), "--hamming"]) == 0
    assert "bits" in capsys.readouterr().out


def test_morph_walks_the_hamming_graph_and_writes_a_strip(tagged, capsys, tmp_path):
    path, model = tagged
    with Project(path) as p:
        ids = [r.id for r in p.images()]
        bits = dict(zip(ids, _bits(p.conn, model, ids), strict=True))
        hood = neighbourhood(p.conn, p.cache_dir, hamming=True)
    a = ids[0]
    b = max(ids, key=lambda i: int((bits[a] != bits[i]).sum()))  # the image whose tags differ most
    out_png = tmp_path / "strip.png"
    assert cli.main(["morph", str(path), str(a), str(b), "--hamming", "--k", "4", "--out", str(out_png),
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    steps = [s["image"] for s in out["path"]]
    assert steps[0] == a and steps[-1] == b and out["metric"] == "hamming" and len(set(steps)) == len(steps)
    k = out["k"]  # 4, or more when ties split the graph of 3-bit codes into groups of equal codes
    assert k >= 4
    knn = {i: set(hood.ids[hamming_knn(hood.codes.codes, [hood.row(i)], k)[0][0]].tolist()) for i in steps}
    for x, y in zip(steps, steps[1:], strict=False):  # every step is an edge of the top-k Hamming graph
        assert y in knn[x] or x in knn[y], (x, y)
    with Image.open(out_png) as im:
        assert im.width == 10 + len(steps) * 170 and im.height > 160
    assert cli.main(["morph", str(path), str(a), str(b), "--hamming", "--k", "4", "--steps", "1", "--json"]) == 0
    short = json.loads(capsys.readouterr().out)["path"]
    assert len(short) <= 3 and short[0]["image"] == a and short[-1]["image"] == b
    assert cli.main(["morph", str(path), str(a), str(b), "--json"]) == 0  # cosine on ImageNet features
    assert json.loads(capsys.readouterr().out)["metric"] == "cosine"


def test_similar_and_morph_errors_are_one_line(tagged, capsys):
    path, _ = tagged
    for argv, words in ((["similar", str(path), "nowhere.png"], "neither an image id nor the path"),
                        (["similar", str(path), "1", "--k", "0", "--hamming"], "--k must be at least 1"),
                        (["morph", str(path), "1", "2"], "--out strip.png, or --json"),
                        (["morph", str(path), "1", "2", "--out", "strip.jpg"], "must name a .png file")):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("artannot: error:") and words in err and "\n" not in err, err


def test_the_apps_hamming_mode_uses_the_tag_codes(qtbot, tagged):
    from artannot.gui.insights import FeatureSet
    from tests.conftest import show_main_window

    path, model = tagged
    window = show_main_window(qtbot, path)
    try:
        p = window.project
        ids = np.array([r.id for r in p.images()], np.int64)
        bits = dict(zip(ids.tolist(), _bits(p.conn, model, ids), strict=True))
        fs = FeatureSet(ids, np.random.default_rng(0).normal(size=(len(ids), 32)).astype(np.float32), "features")
        window.insights.insights.features[model] = fs  # the tag model is the chooser's newest model
        strip = window.insights.similar
        assert strip.model_box.model_id() == model
        strip.mode_box.setCurrentIndex(strip.mode_box.findData("hamming"))
        strip.k_box.setValue(4)
        first = int(ids[0])
        strip.more_like_this(first)
        assert strip.kind == "similar" and len(strip.shown) == 5
        for image_id, item in zip(strip.shown[1:], [strip.strip.item(i) for i in range(1, 5)], strict=True):
            d = int((bits[first] != bits[image_id]).sum())
            assert item.text().startswith(f"{d} of 3 bits"), item.text()
        assert "sigmoid outputs >= 0.5" in strip.info.text()
        b = max(ids.tolist(), key=lambda i: int((bits[first] != bits[i]).sum()))
        strip.morph_selected([first, b])
        qtbot.waitUntil(lambda: strip.kind == "morph", timeout=20_000)
        assert strip.shown[0] == first and strip.shown[-1] == b and "Hamming" in strip.info.text()
    finally:
        window.close()
