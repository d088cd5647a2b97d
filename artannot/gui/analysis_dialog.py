"""Model analysis (Gonthier et al.): compare two models layer by layer, per-class accuracy, training curves."""

from __future__ import annotations

import json
import math
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from artannot.errors import ModelError
from artannot.gui.insights import (
    ID_ROLE,
    IMAGENET,
    Insights,
    ModelCombo,
    ThumbnailLoader,
    ask_png_path,
    save_widget_png,
)
from artannot.ml.analysis import class_entropy, overlap_ratio, top_activating

INIT = -2  # model B's combo data for "model A at its initialization" (rebuilt from its seed and layer plan)
CURVE_COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7")
SHOWN_TOP = 10  # thumbnails shown of each model's top images


def _compare_job(path: Path, a: int | None, b: int | None, max_images: int, progress, cancel: threading.Event):
    """Worker: layer activations of both models on the same images, CKA and mean top-100 overlap per layer, and
    the mean l2 distance between their kernels. Each network is loaded once and serves both measures.
    b == INIT: model A at its initialization (analysis.initial_network), as `artannot analysis --against init`."""
    from artannot.ml.analysis import (
        cka_by_layer,
        initial_network,
        kernel_distance_by_layer,
        model_activations,
        top_overlap_by_layer,
    )
    from artannot.ml.saliency import model_source
    from artannot.project import Project

    with Project(path) as p:
        net_a = model_source(p.conn, a).load_network()
        if b == INIT:
            if a is None:
                raise ModelError("pick a fine-tuned model as A to compare it with its initialization")
            net_b = initial_network(p.conn, a)
        else:
            net_b = model_source(p.conn, b).load_network()
        acts_a, ids = model_activations(p.conn, p.cache_dir, a, max_images=max_images, net=net_a,
                                        progress=progress, cancel=cancel)
        acts_b, ids_b = model_activations(p.conn, p.cache_dir, a if b == INIT else b, max_images=max_images,
                                          net=net_b, progress=progress, cancel=cancel,
                                          variant="init" if b == INIT else "")
        if b == INIT:
            acts_b.description = f"{acts_a.description} at initialization"
    if not np.array_equal(ids, ids_b):
        raise RuntimeError("the two models were measured on different images")
    names, cka = cka_by_layer(acts_a, acts_b)
    layers, absolute, relative = kernel_distance_by_layer(net_a, net_b)  # none for other architectures
    return {"a": acts_a, "b": acts_b, "ids": ids, "layers": names, "cka": cka,
            "overlap": top_overlap_by_layer(acts_a, acts_b, 100) if acts_a.names == acts_b.names else None,
            "kernels": {"layers": layers, "l2": absolute, "relative": relative} if layers else None}


def _styled(plot: pg.PlotWidget) -> pg.PlotWidget:
    """Dark axis text and legend labels on the white background (pyqtgraph's defaults suit dark ones)."""
    for name in ("left", "bottom"):
        plot.getAxis(name).setTextPen("#37474f")
        plot.getAxis(name).setPen("#90a4ae")
    title = plot.plotItem.titleLabel.text
    if title:
        plot.setTitle(title, color="#37474f")
    legend = plot.plotItem.legend
    if legend is not None:
        legend.setLabelTextColor("#263238")
        legend.setBrush(pg.mkBrush(255, 255, 255, 220))
    return plot


def _fmt(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:.2f}"


def _thumb_strip() -> QListWidget:
    strip = QListWidget()
    strip.setViewMode(QListView.ViewMode.IconMode)
    strip.setFlow(QListView.Flow.LeftToRight)
    strip.setWrapping(False)
    strip.setMovement(QListView.Movement.Static)
    strip.setIconSize(QSize(88, 88))
    strip.setGridSize(QSize(96, 112))
    strip.setFixedHeight(128)
    return strip


class AnalysisDialog(QDialog):
    """Compare models (CKA, top activating images, overlap, class entropy); per-class bars; training curves."""

    def __init__(self, insights: Insights, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Model analysis — ArtAnnot")
        self.insights = insights
        self.result: dict | None = None
        self.thumbs = ThumbnailLoader(insights, size=160)
        self.thumbs.loaded.connect(self._on_thumb)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_compare(), "Compare models")
        self.tabs.addTab(self._build_per_class(), "Per-class accuracy")
        self.tabs.addTab(self._build_curves(), "Training curves")
        self.export_button = QPushButton("Export PNG…")
        self.export_button.clicked.connect(self._ask_export)
        bottom = QHBoxLayout()
        bottom.addStretch(1)
        bottom.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs, 1)
        layout.addLayout(bottom)
        self.resize(1400, 900)
        insights.models_changed.connect(self.refresh_models)
        insights.project_changed.connect(self._forget)

    # ---- compare ------------------------------------------------------------------------------------
    def _build_compare(self) -> QWidget:
        page = QWidget()
        self.model_a, self.model_b = ModelCombo(), ModelCombo()
        self.sample_box = QSpinBox()
        self.sample_box.setRange(20, 1_000_000)
        self.sample_box.setValue(500)
        self.sample_box.setSingleStep(100)
        self.sample_box.setToolTip("Images sampled from the collection (activations are cached)")
        self.compare_button = QPushButton("Compare")
        self.compare_button.clicked.connect(self.compare)
        self.progress = QProgressBar()
        self.progress.hide()
        self.cka_plot = pg.PlotWidget(background="w", title="Linear CKA between the two models, layer by layer")
        self.cka_plot.setYRange(0, 1.05)
        self.cka_plot.showGrid(y=True, alpha=0.3)
        self.cka_plot.addLegend(offset=(-10, 10))
        self.cka_plot.setLabel("left", "similarity")
        _styled(self.cka_plot)
        self.layer_box = QComboBox()
        self.channel_box = QSpinBox()
        self.channel_box.setRange(0, 0)
        self.top_box = QSpinBox()
        self.top_box.setRange(5, 1000)
        self.top_box.setValue(100)
        self.top_box.setPrefix("top ")
        self.changed_button = QPushButton("Most changed channel")
        self.changed_button.setToolTip("The channel of this layer whose top images changed most between A and B")
        self.channel_info = QLabel("")
        self.channel_info.setWordWrap(True)
        self.strip_a, self.strip_b = _thumb_strip(), _thumb_strip()
        self.label_a, self.label_b = QLabel("Model A"), QLabel("Model B")
        self.summary = QLabel("Pick two models (e.g. ImageNet and a fine-tuned one) and press Compare.")
        self.summary.setWordWrap(True)
        for w in (self.layer_box, self.channel_box, self.top_box):
            (w.currentIndexChanged if isinstance(w, QComboBox) else w.valueChanged).connect(self.show_channel)
        self.changed_button.clicked.connect(self.pick_most_changed)
        self.strip_a.itemClicked.connect(self._open)
        self.strip_b.itemClicked.connect(self._open)

        controls = QHBoxLayout()
        for text, w in (("Model A", self.model_a), ("Model B", self.model_b), ("Images", self.sample_box)):
            controls.addWidget(QLabel(text))
            controls.addWidget(w, 2 if isinstance(w, ModelCombo) else 0)
        controls.addWidget(self.compare_button)
        controls.addWidget(self.progress)
        channel = QHBoxLayout()
        channel.addWidget(QLabel("Layer"))
        channel.addWidget(self.layer_box, 1)
        channel.addWidget(QLabel("Channel"))
        channel.addWidget(self.channel_box)
        channel.addWidget(self.top_box)
        channel.addWidget(self.changed_button)
        grid = QGridLayout()
        grid.addWidget(self.label_a, 0, 0)
        grid.addWidget(self.strip_a, 1, 0)
        grid.addWidget(self.label_b, 2, 0)
        grid.addWidget(self.strip_b, 3, 0)
        layout = QVBoxLayout(page)
        layout.addLayout(controls)
        layout.addWidget(self.summary)
        layout.addWidget(self.cka_plot, 1)
        layout.addLayout(channel)
        layout.addWidget(self.channel_info)
        layout.addLayout(grid)
        return page

    def compare(self) -> None:
        """Measure both models on a sample of the collection in the background."""
        path = self.insights.project_path()
        if path is None:
            return
        a, b = self.model_a.model_id(), self.model_b.model_id()
        self.compare_button.setEnabled(False)
        self.progress.setRange(0, 0)
        self.progress.show()
        self.summary.setText("Measuring layer activations…")
        self.job = self.insights.run_job("model analysis",
                                         partial(_compare_job, path, a, b, self.sample_box.value()),
                                         lambda r: self.set_result(r, a, b), self._on_progress, self._on_end)

    def _on_progress(self, stage: str, done: int, total: int, _eta: float) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(min(done, total))
        self.summary.setText(f"{stage} {done:,}/{total:,}")

    def _on_end(self) -> None:
        self.compare_button.setEnabled(True)
        self.progress.hide()

    def set_result(self, result: dict, a: int | None = None, b: int | None = None) -> None:
        """Show a comparison (from the job, or given by tests)."""
        self.result = result
        conn = self.insights.conn()
        self.labels = (self.insights.point_attributes(result["ids"], None)["label"] if conn is not None
                       else np.full(len(result["ids"]), -1))
        self.cka_plot.clear()
        layers, x = result["layers"], np.arange(len(result["layers"]))
        self.cka_plot.plot(x, result["cka"], pen=pg.mkPen("#4e79a7", width=2.5), symbol="o", symbolSize=9,
                           symbolBrush="#4e79a7", name="linear CKA of GAP features")
        if result.get("overlap") is not None:
            self.cka_plot.plot(x, result["overlap"], pen=pg.mkPen("#e15759", width=2, style=Qt.PenStyle.DashLine),
                               symbol="s", symbolSize=7, symbolBrush="#e15759",
                               name="mean top-100 overlap of channels")
        kernels = result.get("kernels")
        if kernels:  # plotted at the CKA layers of the same name
            pos = {n: k for k, n in enumerate(layers)}
            pts = [(pos[n], v) for n, v in zip(kernels["layers"], kernels["relative"], strict=True) if n in pos]
            if pts:
                xs, ys = zip(*pts, strict=True)
                self.cka_plot.plot(list(xs), list(ys), pen=pg.mkPen("#59a14f", width=2, style=Qt.PenStyle.DotLine),
                                   symbol="t", symbolSize=8, symbolBrush="#59a14f",
                                   name="kernel change: mean ‖W_A − W_B‖_F / ‖W_A‖_F per convolution")
        self.cka_plot.getAxis("bottom").setTicks([list(zip(x.tolist(), layers, strict=True))])
        self.cka_plot.setXRange(-0.5, len(layers) - 0.5)
        self.label_a.setText(f"A — {result['a'].description}: top images of the channel")
        self.label_b.setText(f"B — {result['b'].description}: top images of the channel")
        cka_txt = ", ".join(f"{n} {v:.2f}" for n, v in zip(layers, result["cka"], strict=True))
        text = f"{len(result['ids']):,} images. CKA: {cka_txt}"
        if kernels:
            text += "<br>Mean l2 distance between kernels: " + ", ".join(
                f"{n} {v:.3g}" for n, v in zip(kernels["layers"], kernels["l2"], strict=True))
            text += " (‖W_A − W_B‖_F of each convolution, averaged over the layer group)"
        self.summary.setText(text)
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        shared = [n for n in result["a"].names if n in result["b"].names
                  and result["a"][n].shape == result["b"][n].shape]
        self.layer_box.addItems(shared)
        self.layer_box.setCurrentIndex(max(0, len(shared) - 2))
        self.layer_box.blockSignals(False)
        self.show_channel()

    def _arrays(self):
        name = self.layer_box.currentText()
        if self.result is None or not name:
            return None, None
        return self.result["a"][name], self.result["b"][name]

    def show_channel(self) -> None:
        """Top-N images of the chosen channel for both models, their overlap and class entropies."""
        A, B = self._arrays()
        if A is None:
            return
        self.channel_box.blockSignals(True)
        self.channel_box.setMaximum(A.shape[1] - 1)
        self.channel_box.blockSignals(False)
        c, n = self.channel_box.value(), self.top_box.value()
        top_a, top_b = top_activating(A, c, n), top_activating(B, c, n)
        labels = self.labels
        n_classes = max(2, len(self.insights.classes()))
        ent_a = class_entropy([int(v) if v >= 0 else None for v in labels[top_a]], n_classes)
        ent_b = class_entropy([int(v) if v >= 0 else None for v in labels[top_b]], n_classes)
        ratio = overlap_ratio(top_a, top_b)
        self.channel_info.setText(
            f"<b>{self.layer_box.currentText()}, channel {c}</b> of {A.shape[1]}: top-{len(top_a)} overlap "
            f"A∩B = <b>{ratio:.2f}</b> · normalized class entropy of the top images: A {_fmt(ent_a)}, "
            f"B {_fmt(ent_b)} (0 = one class, 1 = all classes alike)")
        ids = self.result["ids"]
        self._fill(self.strip_a, [int(ids[k]) for k in top_a[:SHOWN_TOP]], A[top_a[:SHOWN_TOP], c])
        self._fill(self.strip_b, [int(ids[k]) for k in top_b[:SHOWN_TOP]], B[top_b[:SHOWN_TOP], c])

    def pick_most_changed(self) -> None:
        """Jump to the channel whose top-N set overlaps least between the two models."""
        A, B = self._arrays()
        if A is None:
            return
        n = min(self.top_box.value(), len(A))
        ta, tb = np.argpartition(-A, n - 1, axis=0)[:n], np.argpartition(-B, n - 1, axis=0)[:n]
        ratios = [len(set(ta[:, c].tolist()) & set(tb[:, c].tolist())) for c in range(A.shape[1])]
        self.channel_box.setValue(int(np.argmin(ratios)))

    def _fill(self, strip: QListWidget, ids: list[int], values: np.ndarray) -> None:
        strip.clear()
        for image_id, v in zip(ids, values.tolist(), strict=True):
            item = QListWidgetItem(f"{v:.2f}")
            item.setData(ID_ROLE, image_id)
            pixmap = self.thumbs.pixmap(image_id)
            if pixmap is not None:
                item.setIcon(QIcon(pixmap))
            strip.addItem(item)

    def _on_thumb(self, image_id: int) -> None:
        pixmap = self.thumbs.pixmap(image_id)
        if pixmap is None:
            return
        for strip in (self.strip_a, self.strip_b):
            for i in range(strip.count()):
                if strip.item(i).data(ID_ROLE) == image_id:
                    strip.item(i).setIcon(QIcon(pixmap))

    def _open(self, item: QListWidgetItem) -> None:
        image_id = int(item.data(ID_ROLE))
        self.insights.select_in_grid([image_id], current=image_id)

    # ---- per class ----------------------------------------------------------------------------------
    def _build_per_class(self) -> QWidget:
        page = QWidget()
        self.class_model = ModelCombo()
        self.class_model.currentIndexChanged.connect(self.show_per_class)
        self.class_plot = pg.PlotWidget(background="w")
        self.class_plot.showGrid(x=True, alpha=0.3)
        self.class_plot.setLabel("bottom", "accuracy on the test split")
        _styled(self.class_plot)
        self.class_info = QLabel("")
        top = QHBoxLayout()
        top.addWidget(QLabel("Model"))
        top.addWidget(self.class_model, 1)
        layout = QVBoxLayout(page)
        layout.addLayout(top)
        layout.addWidget(self.class_plot, 1)
        layout.addWidget(self.class_info)
        return page

    def show_per_class(self) -> None:
        """Horizontal bars of each class's top-1 (dark) and top-5 (light) accuracy for the chosen model."""
        from artannot.ml.analysis import per_class_scores

        self.class_plot.clear()
        conn, model_id = self.insights.conn(), self.class_model.model_id()
        if conn is None or model_id is None:
            self.class_info.setText("Train a model to see its per-class accuracy")
            return
        scores = per_class_scores(conn, model_id)
        self.class_plot.setLabel("bottom", "accuracy on the test split")
        if not scores and self._show_per_tag(conn, model_id):
            return
        if not scores:
            self.class_info.setText("This model has no test scores (no labelled test split when it was trained)")
            return
        names = list(scores)[::-1]
        y = np.arange(len(names))
        top5 = [scores[n].get("top5", 0.0) for n in names]
        top1 = [scores[n].get("top1", 0.0) for n in names]
        self.class_plot.addItem(pg.BarGraphItem(x0=0, y=y, height=0.8, width=top5, brush="#aec7e8", pen=None))
        self.class_plot.addItem(pg.BarGraphItem(x0=0, y=y, height=0.5, width=top1, brush="#1f77b4", pen=None))
        for yy, n in zip(y, names, strict=True):
            text = pg.TextItem(f"{scores[n].get('top1', 0):.0%} · n={scores[n].get('n', 0)}", color="#263238",
                               anchor=(0, 0.5))
            text.setPos(min(1.0, scores[n].get("top5", 0.0)) + 0.01, float(yy))
            self.class_plot.addItem(text)
        self.class_plot.getAxis("left").setTicks([list(zip(y.tolist(), names, strict=True))])
        self.class_plot.setXRange(0, 1.25)
        self.class_plot.setYRange(-0.6, len(names) - 0.4)
        self.class_info.setText("Dark: top-1 · light: top-5 · n = test images of the class")

    def _show_per_tag(self, conn, model_id: int) -> bool:
        """A tag model's average precision (dark) and F1 at its threshold (light) per tag; False if none."""
        from artannot.store import repo

        metrics = json.loads(repo.get_model(conn, model_id)["metrics"] or "{}")
        per = {t: m for t, m in metrics.get("per_tag", {}).items() if m.get("ap") is not None}
        if not per:
            return False
        names = sorted(per, key=lambda t: per[t]["ap"])
        y = np.arange(len(names))
        self.class_plot.addItem(pg.BarGraphItem(x0=0, y=y, height=0.8, width=[per[t]["ap"] for t in names],
                                                brush="#aec7e8", pen=None))
        self.class_plot.addItem(pg.BarGraphItem(x0=0, y=y, height=0.5, width=[per[t]["f1"] for t in names],
                                                brush="#1f77b4", pen=None))
        for yy, t in zip(y, names, strict=True):
            text = pg.TextItem(f"AP {per[t]['ap']:.0%} · n={per[t]['n']}", color="#263238", anchor=(0, 0.5))
            text.setPos(min(1.0, max(per[t]["ap"], per[t]["f1"])) + 0.01, float(yy))
            self.class_plot.addItem(text)
        self.class_plot.getAxis("left").setTicks([list(zip(y.tolist(), names, strict=True))])
        self.class_plot.setXRange(0, 1.3)
        self.class_plot.setYRange(-0.6, len(names) - 0.4)
        self.class_plot.setLabel("bottom", "average precision (light) and F1 (dark) on the test split")
        self.class_info.setText(f"Tag model: mAP {metrics['map']:.0%} on {metrics.get('n', 0)} tagged test images"
                                " · light: average precision · dark: F1 at the tag's threshold")
        return True

    # ---- curves -------------------------------------------------------------------------------------
    def _build_curves(self) -> QWidget:
        page = QWidget()
        self.loss_plot = pg.PlotWidget(background="w", title="Loss per epoch (solid: train, dashed: validation)")
        self.acc_plot = pg.PlotWidget(background="w", title="Top-1 per epoch (solid: train, dashed: validation)")
        for p, corner in ((self.loss_plot, (-10, 10)), (self.acc_plot, (-10, -10))):
            p.showGrid(x=True, y=True, alpha=0.3)
            p.setLabel("bottom", "epoch")
            p.addLegend(offset=corner)  # loss falls, accuracy rises: keep the legend off the lines
            _styled(p)
        self.curves_info = QLabel("")
        self.curves_info.setWordWrap(True)
        layout = QVBoxLayout(page)
        row = QHBoxLayout()
        row.addWidget(self.loss_plot)
        row.addWidget(self.acc_plot)
        layout.addLayout(row, 1)
        layout.addWidget(self.curves_info)
        return page

    def show_curves(self) -> None:
        """Training curves of every stored model that has them (fine-tuned networks)."""
        from artannot.ml.analysis import training_curves

        self.loss_plot.clear()
        self.acc_plot.clear()
        for p in (self.loss_plot, self.acc_plot):
            if p.plotItem.legend is not None:
                p.plotItem.legend.clear()
        conn = self.insights.conn()
        curves = training_curves(conn) if conn is not None else {}
        for n, (model_id, rows) in enumerate(curves.items()):
            colour = CURVE_COLOURS[n % len(CURVE_COLOURS)]
            epochs = [r.get("epoch", k + 1) for k, r in enumerate(rows)]
            for key, plot, style, label in (("train_loss", self.loss_plot, Qt.PenStyle.SolidLine, "train"),
                                            ("val_loss", self.loss_plot, Qt.PenStyle.DashLine, "val"),
                                            ("train_top1", self.acc_plot, Qt.PenStyle.SolidLine, "train"),
                                            ("val_top1", self.acc_plot, Qt.PenStyle.DashLine, "val")):
                pts = [(e, r[key]) for e, r in zip(epochs, rows, strict=True) if r.get(key) is not None]
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    plot.plot(xs, ys, pen=pg.mkPen(colour, width=2, style=style), symbol="o", symbolSize=5,
                              symbolBrush=colour, name=f"model {model_id} {label}")
        models = self.insights.models()
        without = [str(m["id"]) for m in models if m["id"] not in curves]
        text = f"{len(curves)} model(s) with curves."
        if without:
            which = f"Model {without[0]} has" if len(without) == 1 else f"Models {', '.join(without)} have"
            text += (f" {which} none: features + classifier models are fitted in one step (their"
                     " cross-validated top-1 is in the Evaluate dialog).")
        self.curves_info.setText(text)

    # ---- common -------------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        """Re-read the stored models into every model chooser and redraw the stored-metrics tabs."""
        models = self.insights.models()
        self.model_a.set_models(models)
        was_init = self.model_b.chosen and self.model_b.currentData() == INIT
        self.model_b.set_models(models)
        self.model_b.addItem("Model A at its initialization (seed and layer plan)", INIT)
        if was_init:
            self.model_b.setCurrentIndex(self.model_b.count() - 1)
        if self.model_a.findData(IMAGENET) >= 0 and self.model_a.currentData() != IMAGENET and \
                self.result is None:
            self.model_a.setCurrentIndex(self.model_a.findData(IMAGENET))  # ImageNet vs the newest model
        self.class_model.set_models(models, allow_imagenet=False)
        self.show_per_class()
        self.show_curves()

    def _forget(self) -> None:
        self.result = None
        self.cka_plot.clear()
        self.strip_a.clear()
        self.strip_b.clear()
        self.thumbs.clear()

    def export_png(self, path: str | Path) -> Path:
        """The current tab as shown, to a PNG."""
        return save_widget_png(self.tabs.currentWidget(), path)

    def _ask_export(self) -> None:
        name = ("model-comparison", "per-class-accuracy", "training-curves")[self.tabs.currentIndex()]
        path = ask_png_path(self, f"{name}.png")
        if path:
            self.insights.status(f"Saved {self.export_png(path)}")

