"""A strip of images: "more like this" (cosine or Hamming neighbours) and semantic morphing between two images.

Hamming mode uses Illustration2Vec's hash codes: a tag model's sigmoid outputs thresholded at 0.5 (the chosen
model when it is a tag model, else the newest one), or without any tag model the median rule on the features;
morphing then walks the Hamming neighbour graph. The CLI's `similar` and `morph` use the same functions.
"""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from artannot.gui.insights import (
    ID_ROLE,
    FeatureSet,
    Insights,
    ModelCombo,
    ThumbnailLoader,
    ask_png_path,
    save_widget_png,
)

MODES = (("Cosine on features", "cosine"), ("Hamming on hash codes (tag model)", "hamming"))
ICON = 128
MORPH_K = 6  # neighbours per image in the morphing graph: fewer make longer, smoother paths


def _morph_job(fs: FeatureSet, start: int, end: int, k: int, _progress, cancel: threading.Event, codes=None,
               graph=None):
    """Worker: the neighbour graph (cosine on features, or Hamming on `codes`; built once, then reused) and the
    shortest path between two rows."""
    from artannot.ml.embedding import hamming_graph, knn_graph, morph_path

    if codes is None:
        graph = graph if graph is not None else knn_graph(fs.unit, k, cancel=cancel)
        return graph, morph_path(fs.unit, start, end, k, graph=graph)
    graph = graph if graph is not None else hamming_graph(codes.codes, k, codes.bits, cancel=cancel)
    return graph, morph_path(codes.codes, start, end, k, graph=graph, metric="hamming")


class SimilarStrip(QWidget):
    """The similar-images dock: neighbours of the current image, or a morphing path between two."""

    def __init__(self, insights: Insights, parent: QWidget | None = None):
        super().__init__(parent)
        self.insights = insights
        self.thumbs = ThumbnailLoader(insights, size=160)
        self.shown: list[int] = []  # image ids in the strip
        self._hamming_graphs: dict = {}  # (feature set, hash codes) -> Hamming neighbour graph
        self.kind = ""  # "similar" | "morph"
        self.model_box = ModelCombo()
        self.model_box.setMinimumContentsLength(16)
        self.mode_box = QComboBox()
        for text, key in MODES:
            self.mode_box.addItem(text, key)
        self.k_box = QSpinBox()
        self.k_box.setRange(1, 200)
        self.k_box.setValue(12)
        self.k_box.setPrefix("k = ")
        self.like_button = QPushButton("More like this")
        self.like_button.setToolTip("Nearest images to the grid's current image")
        self.morph_button = QPushButton("Morph 2 selected")
        self.morph_button.setToolTip("Shortest path through similar images between the two selected images")
        self.export_button = QPushButton("PNG…")
        self.info = QLabel("Select an image and press More like this, or select two and press Morph")
        self.info.setStyleSheet("color: #546e7a;")
        self.strip = QListWidget()
        self.strip.setViewMode(QListView.ViewMode.IconMode)
        self.strip.setFlow(QListView.Flow.LeftToRight)
        self.strip.setWrapping(False)
        self.strip.setMovement(QListView.Movement.Static)
        self.strip.setIconSize(QSize(ICON, ICON))
        self.strip.setGridSize(QSize(ICON + 22, ICON + 44))
        self.strip.setMinimumHeight(ICON + 64)
        self.strip.setWordWrap(True)
        self.strip.setHorizontalScrollMode(QListView.ScrollMode.ScrollPerPixel)

        top = QHBoxLayout()
        top.addWidget(self.model_box, 2)
        top.addWidget(self.mode_box, 1)
        top.addWidget(self.k_box)
        top.addWidget(self.like_button)
        top.addWidget(self.morph_button)
        top.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.strip, 1)
        layout.addWidget(self.info)

        self.like_button.clicked.connect(lambda: self.more_like_this())
        self.morph_button.clicked.connect(lambda: self.morph_selected())
        self.export_button.clicked.connect(self._ask_export)
        self.strip.itemClicked.connect(self._open)
        self.thumbs.loaded.connect(self._on_thumb)
        insights.models_changed.connect(lambda: self.model_box.set_models(self.insights.models()))
        insights.project_changed.connect(self.clear)
        self.model_box.set_models(insights.models())

    # ---- requests -----------------------------------------------------------------------------------
    def more_like_this(self, image_id: int | None = None) -> None:
        """Show the k images nearest to an image (default: the grid's current one)."""
        image_id = image_id if image_id is not None else self.insights.current_image_id()
        if image_id is None:
            self.info.setText("Select an image in the grid first")
            return
        self.info.setText("Reading features…")
        self.insights.with_features(self.model_box.model_id(), lambda fs: self._neighbours(fs, int(image_id)))

    def _neighbours(self, fs: FeatureSet, image_id: int) -> None:
        from artannot.ml.embedding import cosine_knn, hamming_knn

        row = fs.row(image_id)
        if row is None:
            self.info.setText("This image has no features (it could not be read)")
            return
        k = self.k_box.value()
        how = fs.description
        if self.mode_box.currentData() == "hamming":
            codes = self._codes(fs)
            idx, dist = hamming_knn(codes.codes, [row], k)
            captions = [f"{int(d)} of {codes.bits} bits" for d in dist[0]]
            how = f"{codes.description} · {fs.description}" if codes.method == "median" else codes.description
        else:
            idx, sims = cosine_knn(fs.unit, [row], k, normalized=True)
            captions = [f"cosine {s:.2f}" for s in sims[0]]
        ids = [image_id] + [int(fs.ids[j]) for j in idx[0]]
        self.show_images(ids, ["this image", *captions], "similar")
        self.info.setText(f"{len(ids) - 1} nearest images by {self.mode_box.currentText().lower()} · {how}")

    def morph_selected(self, ids: list[int] | None = None) -> None:
        """Semantic morphing between the two selected images (or the two given ids)."""
        ids = ids if ids is not None else self.insights.selected_ids()
        if len(ids) != 2:
            self.info.setText("Select exactly two images in the grid (Ctrl+click) to morph between them")
            return
        self.info.setText("Building the neighbour graph…")
        self.insights.with_features(self.model_box.model_id(), lambda fs: self._morph(fs, int(ids[0]), int(ids[1])))

    def _morph(self, fs: FeatureSet, a: int, b: int) -> None:
        ra, rb = fs.row(a), fs.row(b)
        if ra is None or rb is None:
            self.info.setText("One of the two images has no features (it could not be read)")
            return
        k = MORPH_K
        codes = self._codes(fs) if self.mode_box.currentData() == "hamming" else None
        key = None if codes is None else (codes.method, codes.tag_model)
        graph = fs.graph if codes is None else self._hamming_graphs.get((id(fs), key))
        what = "cosine" if codes is None else f"Hamming ({codes.description})"

        def done(result) -> None:
            graph, path = result
            if codes is None:
                fs.graph = graph
            else:
                self._hamming_graphs[(id(fs), key)] = graph
            ids = [int(fs.ids[j]) for j in path]
            captions = ["start"] + [f"step {n}" for n in range(1, len(ids) - 1)] + ["end"]
            self.show_images(ids, captions if len(ids) > 1 else ["start = end"], "morph")
            self.info.setText(f"Morphing in {len(ids) - 1} steps on the top-{k} {what} neighbour graph · "
                              f"{fs.description}")

        self.insights.run_quick("morphing", partial(_morph_job, fs, ra, rb, k, codes=codes, graph=graph), done,
                                self.info.setText)

    def _codes(self, fs: FeatureSet):
        """The hash codes of a feature set: the chosen tag model's, else the newest tag model's, else median."""
        model_id = self.model_box.model_id()
        is_tags = model_id is not None and any(m["id"] == model_id and m.get("method") == "tags"
                                               for m in self.insights.models())
        return fs.hash_codes(self.insights.conn(), model_id if is_tags else None)

    # ---- the strip ----------------------------------------------------------------------------------
    def show_images(self, ids: list[int], captions: list[str], kind: str) -> None:
        """Fill the strip with these images, captions under them."""
        self.strip.clear()
        self.shown, self.kind = list(ids), kind
        files = self.insights.image_files(ids)
        for image_id, caption in zip(ids, captions, strict=True):
            name = Path(files[image_id][0]).name if image_id in files else str(image_id)
            item = QListWidgetItem(f"{caption}\n{name}")
            item.setData(ID_ROLE, image_id)
            item.setToolTip(files[image_id][0] if image_id in files else "")
            item.setTextAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
            pixmap = self.thumbs.pixmap(image_id)
            if pixmap is not None:
                item.setIcon(QIcon(_square(pixmap)))
            self.strip.addItem(item)

    def _on_thumb(self, image_id: int) -> None:
        pixmap = self.thumbs.pixmap(image_id)
        if pixmap is None:
            return
        for i in range(self.strip.count()):
            item = self.strip.item(i)
            if item.data(ID_ROLE) == image_id:
                item.setIcon(QIcon(_square(pixmap)))

    def _open(self, item: QListWidgetItem) -> None:
        image_id = int(item.data(ID_ROLE))
        if not self.insights.select_in_grid([image_id], current=image_id):
            self.insights.status("That image is hidden by the grid's filter")

    def clear(self) -> None:
        self.strip.clear()
        self.shown, self.kind = [], ""
        self._hamming_graphs.clear()
        self.thumbs.clear()

    # ---- export -------------------------------------------------------------------------------------
    def export_png(self, path: str | Path) -> Path:
        return save_widget_png(self, path)

    def _ask_export(self) -> None:
        path = ask_png_path(self, f"{self.kind or 'similar'}-strip.png")
        if path:
            self.insights.status(f"Saved {self.export_png(path)}")


def _square(pixmap: QPixmap) -> QPixmap:
    """A thumbnail centred on a white square, so the strip's icons line up."""
    from PySide6.QtGui import QColor, QPainter

    side = max(pixmap.width(), pixmap.height(), 1)
    out = QPixmap(side, side)
    out.fill(QColor("white"))
    p = QPainter(out)
    p.drawPixmap((side - pixmap.width()) // 2, (side - pixmap.height()) // 2, pixmap)
    p.end()
    return out

