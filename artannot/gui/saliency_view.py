"""Where the model looks in the current image: Grad-CAM or VisualBackProp over the picture, with opacity."""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QPixmap, QResizeEvent, QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from artannot.gui.insights import Insights, ModelCombo, array_to_qimage, ask_png_path

COLORMAPS = ("jet", "inferno", "viridis", "grey")  # ml/saliency.py's tables (not imported here: it loads torch)

METHODS = (("Grad-CAM", "gradcam"), ("VisualBackProp", "vbp"))
HELP = {
    "gradcam": "Grad-CAM: where the evidence for the class lies (gradient-weighted last feature maps).",
    "vbp": "VisualBackProp: what the network's layers respond to, multiplied down from deep to shallow.",
}


def _saliency_job(explainers: dict, path: Path, image_id: int, method: str, model_id: int | None,
                  class_index: int | None, _progress, _cancel: threading.Event):
    """Worker: load (or reuse) the model's explainer and explain one project image."""
    from artannot.data.images import load_image
    from artannot.ml.device import select_runtime
    from artannot.ml.saliency import SALIENCY_SIDE, explain, load_explainer, model_source
    from artannot.project import Project
    from artannot.store import repo

    with Project(path) as p:
        key = (str(path), model_id)
        explainer = explainers.get(key)
        if explainer is None:
            explainer = load_explainer(p.conn, model_source(p.conn, model_id))
            explainers.clear()  # one network in memory at a time
            explainers[key] = explainer
        picture = load_image(repo.image_path(p.conn, image_id), max_side=SALIENCY_SIDE)
    result = explain(explainer, picture, method=method, class_index=class_index,
                     device=select_runtime("auto").device)
    return image_id, model_id, result, list(explainer.class_names)


class _FitPicture(QLabel):
    """A pixmap scaled to fit, aspect kept."""

    def __init__(self):
        super().__init__()
        self._pixmap: QPixmap | None = None
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(220, 220)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setStyleSheet("background: #fafafa; border: 1px solid #cfd8dc; color: #78909c;")

    def sizeHint(self) -> QSize:
        return QSize(380, 380)

    def set_picture(self, pixmap: QPixmap | None, text: str = "") -> None:
        self._pixmap = pixmap
        if pixmap is None:
            self.setPixmap(QPixmap())
            self.setText(text)
        else:
            self.setText("")
            self._rescale()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._rescale()

    def _rescale(self) -> None:
        if self._pixmap is not None:
            self.setPixmap(self._pixmap.scaled(self.contentsRect().size(), Qt.AspectRatioMode.KeepAspectRatio,
                                               Qt.TransformationMode.SmoothTransformation))


class SaliencyView(QWidget):
    """The saliency dock: method, class, model, opacity and colours; follows the grid's current image."""

    def __init__(self, insights: Insights, parent: QWidget | None = None):
        super().__init__(parent)
        self.insights = insights
        self.result = None  # the last SaliencyMap
        self.result_image_id: int | None = None
        self._class_names: list[str] = []
        self._names_model: int | None | str = "unset"
        self.method_box = QComboBox()
        for text, key in METHODS:
            self.method_box.addItem(text, key)
        self.class_box = QComboBox()
        self.class_box.addItem("Predicted class", None)
        self.class_box.setMinimumContentsLength(14)
        self.model_box = ModelCombo()
        self.model_box.setMinimumContentsLength(18)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.cmap_box = QComboBox()
        self.cmap_box.addItems(list(COLORMAPS))
        self.cmap_box.setCurrentText("jet")
        self.export_button = QPushButton("Export PNG…")
        self.picture = _FitPicture()
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.busy = QLabel("")
        self.busy.setStyleSheet("color: #78909c;")

        form = QFormLayout()
        form.addRow("Model", self.model_box)
        row = QHBoxLayout()
        row.addWidget(self.method_box, 1)
        row.addWidget(self.class_box, 2)
        form.addRow("Method", row)
        row2 = QHBoxLayout()
        row2.addWidget(self.opacity, 2)
        row2.addWidget(self.cmap_box, 1)
        row2.addWidget(self.export_button)
        form.addRow("Opacity", row2)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.picture, 1)
        layout.addWidget(self.caption)
        layout.addWidget(self.busy)

        self._timer = QTimer(self, singleShot=True, interval=120)
        self._timer.timeout.connect(self._request)
        self.method_box.currentIndexChanged.connect(self.refresh)
        self.class_box.currentIndexChanged.connect(self.refresh)
        self.model_box.currentIndexChanged.connect(self._on_model_changed)
        self.opacity.valueChanged.connect(self._render)
        self.cmap_box.currentIndexChanged.connect(self._render)
        self.export_button.clicked.connect(self._ask_export)
        insights.current_changed.connect(lambda _id: self.refresh())
        insights.models_changed.connect(self._reload_models)
        insights.project_changed.connect(self._clear)
        self._reload_models()

    # ---- requests -----------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Recompute for the current image (soon, once; only while the view is visible)."""
        if self.isVisible():
            self._timer.start()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.refresh()

    @property
    def method(self) -> str:
        return self.method_box.currentData()

    def _request(self) -> None:
        image_id = self.insights.current_image_id()
        path = self.insights.project_path()
        if image_id is None or path is None:
            self.picture.set_picture(None, "Select an image in the grid")
            return
        model_id = self.model_box.model_id()
        class_index = self.class_box.currentData() if self._names_model == model_id else None
        self.busy.setText("computing…")
        fn = partial(_saliency_job, self.insights.explainers, path, image_id, self.method, model_id, class_index)
        self.job = self.insights.run_quick("saliency", fn, self.set_result, self._on_failed)

    def set_result(self, payload) -> None:
        """Show a worker's result (image id, model id, SaliencyMap, class names)."""
        image_id, model_id, result, names = payload
        self.busy.setText("")
        self.result, self.result_image_id = result, image_id
        if self._names_model != model_id or names != self._class_names:
            self._set_class_names(names, model_id)
        self.caption.setText(f"<b>{result.title}</b><br>{HELP[result.method]}<br>Top: "
                             + ", ".join(f"{n} {p:.0%}" for n, p in result.top))
        self._render()

    def _on_failed(self, message: str) -> None:
        self.busy.setText("")
        self.picture.set_picture(None, message)

    def _set_class_names(self, names: list[str], model_id: int | None) -> None:
        keep = self.class_box.currentText()
        self.class_box.blockSignals(True)
        self.class_box.clear()
        self.class_box.addItem("Predicted class", None)
        for k, name in enumerate(names):
            self.class_box.addItem(name, k)
        k = self.class_box.findText(keep) if self._names_model == model_id else 0
        self.class_box.setCurrentIndex(max(0, k))
        self.class_box.blockSignals(False)
        self._class_names, self._names_model = names, model_id

    def _on_model_changed(self) -> None:
        self.class_box.blockSignals(True)
        self.class_box.setCurrentIndex(0)
        self.class_box.blockSignals(False)
        self.refresh()

    def _reload_models(self) -> None:
        self.model_box.set_models(self.insights.models())

    def _clear(self) -> None:
        self.result = None
        self._names_model = "unset"
        self.caption.setText("")
        self.picture.set_picture(None, "")

    # ---- drawing and export ---------------------------------------------------------------------------
    def overlay_image(self):
        """The current overlay as a PIL image (None before the first result)."""
        if self.result is None:
            return None
        from artannot.ml.saliency import overlay

        return overlay(self.result.image, self.result.heatmap, self.opacity.value() / 100.0,
                       self.cmap_box.currentText())

    def _render(self) -> None:
        import numpy as np

        picture = self.overlay_image()
        if picture is not None:
            self.picture.set_picture(QPixmap.fromImage(array_to_qimage(np.asarray(picture))))

    def export_png(self, path: str | Path) -> Path:
        """Write the overlay (at the resolution it was computed) to a PNG."""
        picture = self.overlay_image()
        if picture is None:
            raise ValueError("no saliency map to export yet")
        path = Path(path).with_suffix(".png")
        picture.save(path, format="PNG")
        return path

    def _ask_export(self) -> None:
        if self.result is None:
            self.insights.status("Nothing to export yet: select an image first")
            return
        path = ask_png_path(self, f"saliency-{self.result_image_id}-{self.result.method}.png")
        if path:
            self.insights.status(f"Saved {self.export_png(path)}")
