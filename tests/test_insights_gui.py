"""The insight views driven like a curator would: lasso on the map -> grid selection -> one key relabels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from artannot.gui.insights import IMAGENET, FeatureSet, install_insight_views
from artannot.ml.analysis import LayerActivations
from artannot.ml.embedding import Embedding
from artannot.store import repo
from tests.conftest import DEMO_CLASSES, PER_CLASS

SHOTS = Path("/tmp/artannot_shots")
N_IMAGES = len(DEMO_CLASSES) * PER_CLASS
LEFT = Qt.MouseButton.LeftButton


def labels(project) -> dict[int, tuple[int | None, str]]:
    """image id -> (class id, source) of every current label."""
    return {r[0]: (r[1], r[2]) for r in project.conn.execute(
        "SELECT image_id, class_id, source FROM labels WHERE active = 1")}


def clustered_map(project) -> tuple[Embedding, dict[int, list[int]]]:
    """A map where each class is a tight cluster on a circle (what a good t-SNE looks like)."""
    ids, xy, by_class = [], [], {}
    rng = np.random.default_rng(0)
    for image_id, (class_id, _) in sorted(labels(project).items()):
        k = class_id % 5
        centre = 10 * np.array([np.cos(2 * np.pi * k / 5), np.sin(2 * np.pi * k / 5)])
        ids.append(image_id)
        xy.append(centre + rng.normal(scale=0.8, size=2))
        by_class.setdefault(class_id, []).append(image_id)
    emb = Embedding(np.array(ids, np.int64), np.array(xy, np.float32), "test", "given", "test map")
    return emb, by_class


def _viewport_point(tsne, x: float, y: float) -> QPoint:
    scene = tsne.view.mapViewToScene(QPointF(x, y))
    return tsne.plot.mapFromScene(scene)


def drag(tsne, points_xy, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    """A real left-button drag through these map coordinates (press, moves with the button held, release)."""
    vp = tsne.plot.viewport()
    pts = [QPointF(_viewport_point(tsne, x, y)) for x, y in points_xy]

    def send(kind, p, buttons):
        ev = QMouseEvent(kind, p, vp.mapToGlobal(p), LEFT, buttons, modifiers)
        QApplication.sendEvent(vp, ev)

    send(QEvent.Type.MouseButtonPress, pts[0], LEFT)
    for p in pts[1:]:
        QTest.qWait(15)  # pyqtgraph drops mouse moves that come faster than its rate limit (100 Hz)
        send(QEvent.Type.MouseMove, p, LEFT)
    QTest.qWait(15)
    send(QEvent.Type.MouseButtonRelease, pts[-1], Qt.MouseButton.NoButton)


def test_views_are_reachable_from_the_menus(window):
    views = window.insights
    menus = {a.text().replace("&", ""): a.menu() for a in window.menuBar().actions() if a.menu()}
    view_texts = [a.text() for a in menus["View"].actions()]
    assert {"Saliency", "Collection map", "Similar images"} <= set(view_texts)
    model_texts = {a.text().replace("&", "") for a in menus["Model"].actions()}
    assert {"Explain current image (saliency)", "Collection map (t-SNE)", "More like this",
            "Morph between two selected images", "Analyse models…"} <= model_texts
    install_insight_views(window)  # idempotent
    assert window.insights is views
    assert views.map_dock.isHidden() and views.saliency_dock.isHidden()


def test_lasso_on_the_map_selects_in_the_grid_and_one_key_relabels(qtbot, window):
    p, views = window.project, window.insights
    views.map_dock.show()
    views.map_dock.raise_()
    window.resizeDocks([views.map_dock], [700], Qt.Orientation.Horizontal)
    tsne = views.map
    emb, by_class = clustered_map(p)
    tsne.set_embedding(emb)
    qtbot.wait(50)
    fish = p.class_id("fish")
    target = next(c for c in p.classes() if c.id != fish and c.hotkey)
    k = fish % 5
    cx, cy = 10 * np.cos(2 * np.pi * k / 5), 10 * np.sin(2 * np.pi * k / 5)
    ring = [(cx + 4 * np.cos(a), cy + 4 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 24)]
    tsne.mode_buttons["lasso"].click()
    assert tsne.view.mode == "lasso"
    with qtbot.waitSignal(tsne.selection_made, timeout=5000) as got:
        drag(tsne, ring)
    assert sorted(got.args[0]) == sorted(by_class[fish])
    assert sorted(window.grid.selected_ids()) == sorted(by_class[fish])
    assert len(tsne.selected) == PER_CLASS
    SHOTS.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(SHOTS / "insights_map_lasso.png"))

    qtbot.keyClick(tsne.plot, target.hotkey)  # the class key, pressed on the map
    now = labels(p)
    assert all(now[i] == (target.id, "human") for i in by_class[fish])
    qtbot.waitUntil(lambda: (tsne.attributes["label"][tsne.selected] == target.id).all(), timeout=3000)
    assert tsne.legend.text().count(target.name) == 1


def test_rectangle_adds_with_shift_and_click_opens_the_image(qtbot, window):
    p, views = window.project, window.insights
    views.show_map()
    tsne = views.map
    emb, by_class = clustered_map(p)
    tsne.set_embedding(emb)
    ids = sorted(by_class)
    centres = {c: 10 * np.array([np.cos(2 * np.pi * (c % 5) / 5), np.sin(2 * np.pi * (c % 5) / 5)]) for c in ids}
    tsne.set_mode("rect")
    a, b = centres[ids[0]], centres[ids[1]]
    drag(tsne, [(a[0] - 4, a[1] - 4), (a[0], a[1]), (a[0] + 4, a[1] + 4)])
    assert sorted(window.grid.selected_ids()) == sorted(by_class[ids[0]])
    drag(tsne, [(b[0] - 4, b[1] - 4), (b[0] + 4, b[1] + 4)], Qt.KeyboardModifier.ShiftModifier)
    assert sorted(window.grid.selected_ids()) == sorted(by_class[ids[0]] + by_class[ids[1]])

    tsne.set_mode("pan")
    row = 7
    image_id = int(emb.image_ids[row])
    point = _viewport_point(tsne, *map(float, emb.xy[row]))
    qtbot.mouseClick(tsne.plot.viewport(), LEFT, pos=point)
    assert window.grid.current_row().id == image_id
    assert window.grid.selected_ids() == [image_id]
    ring = tsne.current_item.getData()
    assert np.allclose([ring[0][0], ring[1][0]], emb.xy[row])

    tsne.hover_image(image_id)
    assert tsne.card.isVisible() and Path(repo.image_path(p.conn, image_id)).name in tsne.card.text.text()
    qtbot.waitUntil(lambda: tsne.card.picture.pixmap() is not None and not tsne.card.picture.pixmap().isNull(),
                    timeout=10_000)


def test_colour_by_prediction_and_suspect_score_and_exports(qtbot, window, tmp_path):
    tsne = window.insights.map
    emb, _ = clustered_map(window.project)
    tsne.set_embedding(emb)
    for k in range(tsne.colour_box.count()):
        tsne.colour_box.setCurrentIndex(k)
        assert sum(len(item.data) for item in tsne._items) == len(emb.image_ids)
    png = tsne.export_png(tmp_path / "map.png")
    assert png.stat().st_size > 1000
    rows = tsne.export_csv(tmp_path / "map.csv").read_text().splitlines()
    assert rows[0] == "image_id,x,y,label,prediction,suspect" and len(rows) == N_IMAGES + 1


def test_saliency_view_follows_the_current_image(qtbot, window, tmp_path):
    views = window.insights
    sal = views.saliency
    window.grid.select_rows([3])
    image_id = window.grid.current_row().id
    views.show_saliency()
    assert sal.model_box.currentData() == IMAGENET  # no trained model yet: the ImageNet backbone
    qtbot.waitUntil(lambda: sal.result is not None and sal.result_image_id == image_id, timeout=60_000)
    assert sal.result.method == "gradcam" and sal.picture.pixmap() is not None
    assert sal.class_box.count() == 1001  # "Predicted class" + the 1000 ImageNet classes
    first = sal.picture.pixmap().toImage()
    sal.opacity.setValue(90)
    assert sal.picture.pixmap().toImage() != first
    sal.method_box.setCurrentIndex(1)
    qtbot.waitUntil(lambda: sal.result.method == "vbp", timeout=60_000)
    views.saliency_dock.raise_()
    window.grab().save(str(SHOTS / "insights_saliency.png"))
    out = sal.export_png(tmp_path / "sal.png")
    assert out.stat().st_size > 1000


def _inject_features(window) -> tuple[FeatureSet, dict[int, int]]:
    """Features where each class is a cluster: neighbours of an image are its classmates."""
    rows = labels(window.project)
    ids = np.array(sorted(rows), np.int64)
    rng = np.random.default_rng(1)
    classes = sorted({c for c, _ in rows.values()})
    centres = np.abs(rng.normal(size=(len(classes), 64))) * 2
    feats = np.stack([centres[classes.index(rows[i][0])] + 0.3 * rng.random(64) for i in ids])
    fs = FeatureSet(ids, feats.astype(np.float32), "injected features")
    window.insights.insights.features[None] = fs  # the ImageNet entry of the model chooser
    return fs, {int(i): rows[int(i)][0] for i in ids}


def test_more_like_this_and_morphing_strip(qtbot, window):
    views = window.insights
    fs, cls = _inject_features(window)
    strip = views.similar
    views.similar_dock.show()
    first = int(fs.ids[0])
    strip.k_box.setValue(5)
    strip.more_like_this(first)
    assert strip.kind == "similar" and strip.shown[0] == first and len(strip.shown) == 6
    assert all(cls[i] == cls[first] for i in strip.shown[1:])
    strip.mode_box.setCurrentIndex(1)  # Hamming distance on hash codes
    strip.more_like_this(first)
    assert sum(cls[i] == cls[first] for i in strip.shown[1:]) >= 4
    other = next(int(i) for i in fs.ids if cls[int(i)] != cls[first])
    window.grid.select_ids([first, other]) if hasattr(window.grid, "select_ids") else None
    strip.morph_selected([first, other])
    qtbot.waitUntil(lambda: strip.kind == "morph", timeout=20_000)
    assert strip.shown[0] == first and strip.shown[-1] == other
    assert strip.strip.count() == len(strip.shown)
    strip.strip.itemClicked.emit(strip.strip.item(1))
    assert window.grid.current_row().id == strip.shown[1]
    strip.thumbs.wait()
    window.grab().save(str(SHOTS / "insights_morph.png"))
    assert strip.export_png(SHOTS / "insights_morph_strip.png").exists()


def test_analysis_dialog_compare_per_class_and_curves(qtbot, window, tmp_path):
    p = window.project
    rows = labels(p)
    ids = np.array(sorted(rows), np.int64)
    rng = np.random.default_rng(0)
    a_feat = rng.normal(size=(len(ids), 16))
    acts_a = LayerActivations(["stage1", "features"], [rng.normal(size=(len(ids), 8)), a_feat],
                              np.ones(len(ids), bool), "A")
    acts_b = LayerActivations(["stage1", "features"], [acts_a.arrays[0] * 2, rng.normal(size=(len(ids), 16))],
                              np.ones(len(ids), bool), "B")
    from artannot.ml.analysis import cka_by_layer, top_overlap_by_layer

    names, cka = cka_by_layer(acts_a, acts_b)
    classes = [c.id for c in p.classes()]
    m = repo.add_model(p.conn, backbone="efficientnet_lite0", method="finetune", classes=classes, params={})
    repo.update_model(p.conn, m, metrics={
        "per_class": {c.name: {"top1": 0.5, "top5": 0.9, "n": 3} for c in p.classes()},
        "curves": [{"epoch": e, "train_loss": 2 / e, "val_loss": 2.2 / e, "train_top1": 0.3 * e,
                    "val_top1": 0.25 * e} for e in (1, 2, 3)]})
    dialog = window.insights.show_analysis()
    dialog.set_result({"a": acts_a, "b": acts_b, "ids": ids, "layers": names, "cka": cka,
                       "overlap": top_overlap_by_layer(acts_a, acts_b, 10),
                       "kernels": {"layers": ["stage1"], "l2": [0.25], "relative": [0.5]}})
    assert "Mean l2 distance between kernels: stage1 0.25" in dialog.summary.text()
    assert len(dialog.cka_plot.getPlotItem().listDataItems()) == 3  # CKA, overlap, kernel change
    assert cka[0] == pytest.approx(1.0) and cka[1] < 0.6
    assert [dialog.layer_box.itemText(i) for i in range(dialog.layer_box.count())] == ["stage1", "features"]
    dialog.layer_box.setCurrentIndex(0)
    dialog.top_box.setValue(10)
    assert "overlap A∩B = <b>1.00</b>" in dialog.channel_info.text()  # stage1 of B is A's times two
    assert dialog.strip_a.count() == 10
    dialog.pick_most_changed()
    assert dialog.export_png(tmp_path / "cmp.png").stat().st_size > 1000
    dialog.refresh_models()
    dialog.tabs.setCurrentIndex(1)
    assert dialog.class_model.model_id() == m and len(dialog.class_plot.getPlotItem().items) > 2
    dialog.tabs.setCurrentIndex(2)
    assert "1 model(s) with curves" in dialog.curves_info.text()
    assert dialog.export_png(tmp_path / "curves.png").exists()
    dialog.close()


@pytest.mark.slow
def test_map_and_neighbours_computed_in_the_worker(qtbot, window):
    """End to end on real features: the map job, then "more like this" from the same cached features."""
    views = window.insights
    views.show_map()
    tsne = views.map
    qtbot.waitUntil(lambda: tsne.embedding is not None, timeout=240_000)
    assert len(tsne.embedding.image_ids) == N_IMAGES and tsne.embedding.engine in ("openTSNE", "scikit-learn")
    # the job's result arrives before its end signal: the bar hides and Compute comes back right after
    qtbot.waitUntil(lambda: not tsne.progress.isVisible() and tsne.compute_button.isEnabled(), timeout=10_000)
    first = int(tsne.embedding.image_ids[0])
    views.similar_dock.show()
    views.similar.more_like_this(first)
    qtbot.waitUntil(lambda: views.similar.kind == "similar", timeout=120_000)
    assert views.similar.shown[0] == first and len(views.similar.shown) == 13
    tsne.compute()  # same images, same model: served from the cache
    qtbot.waitUntil(lambda: tsne.embedding.cached, timeout=60_000)


def test_per_tag_precision_of_a_tag_model(qtbot, window):
    from artannot.gui.train_dialog import TrainDialog
    from artannot.gui.train_panel import describe_metrics

    p = window.project
    per_tag = {"red": {"ap": 0.9, "f1": 0.8, "precision": 0.8, "recall": 0.8, "n": 4},
               "blue": {"ap": 0.5, "f1": 0.4, "precision": 0.5, "recall": 0.33, "n": 3},
               "gold": {"ap": None, "f1": 0.0, "precision": 0.0, "recall": 0.0, "n": 0}}
    metrics = {"map": 0.7, "n": 8, "per_tag": per_tag, "oof_map": 0.6}
    m = repo.add_model(p.conn, backbone="efficientnet_lite0", method="tags", classes=[], params={})
    repo.update_model(p.conn, m, metrics=metrics)
    assert describe_metrics(m, metrics) == f"tag model {m}: test mAP 70% (8 tagged images)"
    dialog = window.insights.show_analysis()
    dialog.refresh_models()
    dialog.tabs.setCurrentIndex(1)
    k = dialog.class_model.findData(m)
    assert "mAP 70%" in dialog.class_model.itemText(k)
    dialog.class_model.setCurrentIndex(k)
    dialog.show_per_class()
    assert "mAP 70% on 8 tagged test images" in dialog.class_info.text()
    ticks = [name for _, name in dialog.class_plot.getAxis("left")._tickLevels[0]]
    assert ticks == ["blue", "red"]  # tags without test positives have no AP and no bar
    dialog.close()
    train = TrainDialog(window, models=p.models(), method="tags")
    qtbot.addWidget(train)
    assert train.options()["method"] == "tags" and "sigmoid" in train.about.text()


def test_lasso_on_many_points_answers_exactly_as_casting_every_point():
    """The map's lasso decides most of 50k points by a grid of cells; the answer is the plain ray cast's,
    for round lassos, spiky ones and ones that cross themselves."""
    from artannot.gui.tsne_map import EXACT_BELOW, _crossings, points_in_polygon

    rng = np.random.default_rng(1)
    xy = rng.normal(size=(50_000, 2)).astype(np.float32)
    candidates = []
    for trial in range(12):
        n = int(rng.integers(3, 250))
        if trial % 3 == 0:  # crossing itself
            poly = rng.uniform(-2, 2, size=(n, 2))
        else:  # a star: spikes thinner than a cell
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radii = rng.uniform(0.1, 2.5, n)
            poly = np.c_[radii * np.cos(angles), radii * np.sin(angles)]
        lo, hi = poly.min(0), poly.max(0)
        candidates.append(int(((xy >= lo) & (xy <= hi)).all(1).sum()))
        fast = points_in_polygon(xy, poly)
        plain = _crossings(xy[:, 0].astype(np.float64), xy[:, 1].astype(np.float64), poly)
        assert np.array_equal(fast, plain), trial
    assert sum(c >= EXACT_BELOW for c in candidates) >= 8  # most lassos took the grid path
