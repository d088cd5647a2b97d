"""The Train dialog: method, backbone, epochs, device, (for auto) the time budget and (for network and detector
methods) style-transfer augmentation of a training run.

`TrainDialog(...).options()` returns the keyword arguments of `Project.train` (method, backbone, epochs,
device, then_svm, options, augment), so the caller runs `project.train(**dialog.options(), progress=..., cancel=...)`.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from artannot.errors import ArtAnnotError, ModelError
from artannot.gui.train_panel import DEFAULT_BUDGET_MIN  # one default for the button and the dialog
from artannot.ml.backbones import get_spec, list_backbones
from artannot.ml.style import AUGMENTED_METHODS, MAX_K
from artannot.ml.task import parse_options

# (method, label, what it does) in the order the menu shows them; auto is the one-click default.
METHODS: tuple[tuple[str, str, str], ...] = (
    ("auto", "Automatic (recommended)",
     "Tries an SVM on deep features, then adaptive fine-tuning + SVM if the time budget allows, and keeps the"
     " more accurate one. The result says what it chose and why."),
    ("svm", "SVM on deep features", "Fast: an SVM (kernel, C and gamma chosen by cross-validation) on the"
     " backbone's ImageNet features. Usually the best choice for small collections."),
    ("linear", "Linear probe on deep features", "A logistic-regression classifier on the ImageNet features."),
    ("finetune", "Fine-tune the whole network", "Trains every layer with augmentation and early stopping."
     " Best with many images per class; slow without a GPU."),
    ("adaptive", "Adaptive layer-based fine-tuning", "Lagunas & Garces: re-initializes the lowest layers and"
     " the head (learning rate 1e-2), trains the middle slowly (1e-4). Pair it with an SVM on its features."),
    ("frozen", "Fine-tune with frozen lower layers", "Keeps the lower half of the network as on ImageNet and"
     " trains the rest."),
    ("double", "Double fine-tuning", "Fine-tunes on another project first (a larger art collection), then on"
     " this one."),
    ("ensemble", "Ensemble of trained models", "Averages the scores of models you already trained."),
    ("baseline", "ImageNet baseline (no training)", "Uses the ImageNet classifier as is, with a file mapping"
     " ImageNet categories to your classes."),
    ("tags", "Tag model (multi-label)", "Learns the images' tags (several per image) with a sigmoid head on deep"
     " features, a threshold per tag and mAP per tag. Its suggestions appear in the Tags panel."),
    ("detector", "Box detector (Faster R-CNN)", "Learns to find the boxes you drew: Faster R-CNN on a feature"
     " pyramid over the backbone, evaluated by COCO mAP on the test split. Needs 8 boxes or more."),
    ("patches", "Box detector, few boxes (patches)", "A cold start for a handful of boxes: deep features of the"
     " boxes against background regions, scored over windows of every image. Needs 2 boxes per class."),
    ("detect-auto", "Box detector, automatic", "Fits both box detectors on part of your boxes, keeps the one"
     " with the better box mAP on the rest (patches alone under 8 boxes), then trains it on every box."),
)
NETWORK_METHODS = ("finetune", "adaptive", "frozen", "double")
LABELLED_METHODS = ("auto", "svm", "linear", *NETWORK_METHODS)  # a classifier stage that can use curated labels
LABEL_CHOICES = ((None, "Automatic: confirmed labels when there are enough"), ("all", "Every label"),
                 ("curated", "Only labels a curator confirmed"))


def weights_problem(backbone: str) -> str | None:
    """Why a backbone cannot be used here (its weights file is missing), or None when it can."""
    try:
        get_spec(backbone).locate(None)
    except ModelError as exc:
        return str(exc)
    return None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class TrainDialog(QDialog):
    """Choose how to train; OK stays disabled until the chosen method has what it needs."""

    def __init__(self, parent: QWidget | None = None, *, models: Sequence[dict] = (), method: str = "auto",
                 backbone: str = "efficientnet_lite0"):
        super().__init__(parent)
        self.setWindowTitle("Train a model")
        self.method = QComboBox()
        for key, label, text in METHODS:
            self.method.addItem(label, key)
            self.method.setItemData(self.method.count() - 1, text, Qt.ItemDataRole.ToolTipRole)
        self.about = QLabel()
        self.about.setWordWrap(True)
        self.about.setStyleSheet("color: #546e7a")

        self.backbone = QComboBox()
        items: QStandardItemModel = self.backbone.model()
        for name in list_backbones():
            self.backbone.addItem(name, name)
            problem = weights_problem(name)
            item = items.item(self.backbone.count() - 1)
            if problem:
                item.setEnabled(False)
                item.setToolTip(problem)
            else:
                item.setToolTip(get_spec(name).feature_layer)

        self.epochs = QSpinBox()
        self.epochs.setRange(0, 500)
        self.epochs.setSpecialValueText("default")  # 0: the method's own default
        self.device = QComboBox()
        for key, label in (("auto", "Automatic"), ("cpu", "CPU"), ("cuda", "GPU (CUDA)")):
            self.device.addItem(label, key)
        if not cuda_available():
            gpu = self.device.model().item(2)
            gpu.setEnabled(False)
            gpu.setToolTip("No CUDA GPU is visible to this computer")
        self.budget = QSpinBox()
        self.budget.setRange(1, 24 * 60)
        self.budget.setValue(DEFAULT_BUDGET_MIN)
        self.budget.setSuffix(" min")
        self.budget.setToolTip("Automatic stops trying candidates when this time is up")
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(0.0, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setSpecialValueText("default")
        self.lr.setToolTip("Learning rate of the pretrained layers (the method's default when left at 'default')")
        self.then_svm = QCheckBox("Then an SVM on the trained network's features")
        self.labels = QComboBox()
        for key, label in LABEL_CHOICES:
            self.labels.addItem(label, key)
        self.labels.setToolTip("Which training labels the classifier (or the SVM after a network) is fitted on:"
                               " every label (folders, file-name rules, imports, models, curators) or only those"
                               " a curator set or accepted")
        self.tags_finetune = QCheckBox("Fine-tune the network on the tags (slow without a GPU)")
        self.tags_finetune.setToolTip("Train the network itself with a sigmoid head on the tags, instead of a head on"
                                      " fixed ImageNet features; with an intermediate project: double fine-tuning")
        self.tags_finetune.toggled.connect(self._update)
        self.extra = QLineEdit()
        self.extra.setPlaceholderText("KEY=VALUE … (e.g. low_layers=10 ensemble=1 scale=false)")
        self.extra.setToolTip("Method options, as `artannot train --option KEY=VALUE` takes them (see docs/methods.md)")
        self.extra.textChanged.connect(self._update)
        self.style = QCheckBox("Style-transfer augmentation")
        self.style.setToolTip("Before training, make stylized copies of each training image in the collection's"
                              " own styles (one per cluster of similar styles) and train on them too, with the"
                              " original's label and boxes. Copies are cached, never added as images.")
        self.style_copies = QSpinBox()
        self.style_copies.setRange(1, MAX_K)
        self.style_copies.setValue(1)
        self.style_copies.setSuffix(" per image")
        self.style_copies.setToolTip("Stylized copies of each training image")
        self.style.toggled.connect(self.style_copies.setEnabled)
        self.style_copies.setEnabled(False)
        self.intermediate = QLineEdit()
        self.intermediate.setPlaceholderText("project to fine-tune on first (.artannot)")
        browse_inter = QPushButton("Browse…")
        browse_inter.clicked.connect(self._browse_intermediate)
        self.mapping = QLineEdit()
        self.mapping.setPlaceholderText("class → ImageNet categories (JSON or CSV)")
        browse_map = QPushButton("Browse…")
        browse_map.clicked.connect(self._browse_mapping)
        self.members = QListWidget()
        for m in models:
            top1 = f"{m['top1']:.0%}" if isinstance(m.get("top1"), (int, float)) else "-"
            item = QListWidgetItem(f"model {m['id']}: {m['method']} · {m['backbone']} · top-1 {top1}")
            item.setData(Qt.ItemDataRole.UserRole, m["id"])
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked)
            self.members.addItem(item)
        self.members.setMaximumHeight(110)

        form = QFormLayout()
        form.addRow("Method", self.method)
        form.addRow("", self.about)
        form.addRow("Backbone", self.backbone)
        form.addRow("Epochs", self.epochs)
        form.addRow("Device", self.device)
        form.addRow("Time budget", self.budget)
        form.addRow("Learning rate", self.lr)
        form.addRow("", self.then_svm)
        form.addRow("", self.tags_finetune)
        form.addRow("Labels", self.labels)
        form.addRow("Augment", _row(self.style, self.style_copies))
        form.addRow("Intermediate", _row(self.intermediate, browse_inter))
        form.addRow("Mapping file", _row(self.mapping, browse_map))
        form.addRow("Models", self.members)
        form.addRow("Options", self.extra)
        self.form = form
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Train")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.buttons)

        for signal in (self.method.currentIndexChanged, self.backbone.currentIndexChanged,
                       self.intermediate.textChanged, self.mapping.textChanged, self.members.itemChanged):
            signal.connect(self._update)
        self.method.setCurrentIndex(max(0, self.method.findData(method)))
        self._select_backbone(backbone)
        self._update()

    # -- state -------------------------------------------------------------------------------------------------

    def _select_backbone(self, name: str) -> None:
        """The named backbone if usable, else the first usable one."""
        items = self.backbone.model()
        usable = [i for i in range(self.backbone.count()) if items.item(i).isEnabled()]
        wanted = self.backbone.findData(name)
        self.backbone.setCurrentIndex(wanted if wanted in usable else (usable[0] if usable else 0))

    def _checked_models(self) -> list[int]:
        return [self.members.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.members.count())
                if self.members.item(i).checkState() == Qt.CheckState.Checked]

    def _update(self) -> None:
        """Show the fields the chosen method uses, and enable Train once it has what it needs."""
        method = self.method.currentData()
        self.about.setText(next(text for key, _, text in METHODS if key == method))
        network = method in NETWORK_METHODS or (method == "tags" and self.tags_finetune.isChecked())
        uses_backbone = method != "ensemble"
        visible = {self.backbone: uses_backbone, self.epochs: network or method == "auto",
                   self.device: True, self.budget: method == "auto",
                   self.lr: network, self.then_svm: method in NETWORK_METHODS,
                   self.intermediate.parentWidget(): method == "double" or (method == "tags" and network),
                   self.tags_finetune: method == "tags", self.labels: method in LABELLED_METHODS,
                   self.mapping.parentWidget(): method == "baseline", self.members: method == "ensemble",
                   self.style.parentWidget(): method in AUGMENTED_METHODS}
        for widget, shown in visible.items():
            self.form.setRowVisible(widget, shown)
        problem = self.missing()
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(problem is None)
        ok.setToolTip(problem or "")

    def missing(self) -> str | None:
        """What the chosen method still needs, or None when Train can start."""
        method = self.method.currentData()
        if method != "ensemble" and not self.backbone.model().item(self.backbone.currentIndex()).isEnabled():
            return weights_problem(self.backbone.currentData())
        if method == "double" and not self.intermediate.text().strip():
            return "Choose the project to fine-tune on first"
        if method == "baseline" and not self.mapping.text().strip():
            return "Choose a file mapping ImageNet categories to your classes"
        if method == "ensemble" and len(self._checked_models()) < 2:
            return "Tick at least two trained models"
        try:
            self.extra_options()
        except ArtAnnotError as exc:
            return f"Options: {exc}".replace("--option takes", "each option is")
        return None

    def extra_options(self) -> dict:
        """The Options field's KEY=VALUE items (raises ArtAnnotError on a malformed one)."""
        return parse_options(self.extra.text().split())

    def options(self) -> dict:
        """Keyword arguments for Project.train (without progress and cancel)."""
        method = self.method.currentData()
        options: dict = self.extra_options()
        if method in LABELLED_METHODS and self.labels.currentData():
            options["labels"] = self.labels.currentData()
        if method == "tags" and self.tags_finetune.isChecked():
            options["finetune"] = True
            if self.intermediate.text().strip():
                options["intermediate"] = self.intermediate.text().strip()
        if method == "auto":
            options["budget"] = float(self.budget.value() * 60)
        if (method in NETWORK_METHODS or options.get("finetune")) and self.lr.value() > 0:
            options["low_lr" if method == "adaptive" else "lr"] = float(self.lr.value())
        if method == "double":
            options["intermediate"] = self.intermediate.text().strip()
        if method == "baseline":
            options["mapping"] = self.mapping.text().strip()
        if method == "ensemble":
            options["models"] = self._checked_models()
        out = {"method": method, "backbone": self.backbone.currentData(),
               "epochs": self.epochs.value() or None, "device": self.device.currentData(),
               "then_svm": method in NETWORK_METHODS and self.then_svm.isChecked(), "options": options}
        if augment := self.augment():
            out["augment"] = augment
        return out

    def augment(self) -> str | None:
        """The `augment` of the run: "style:K" when the switch is on and the method reads the copies."""
        if self.method.currentData() in AUGMENTED_METHODS and self.style.isChecked():
            return f"style:{self.style_copies.value()}"
        return None

    # -- file pickers ------------------------------------------------------------------------------------------

    def _browse_intermediate(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Intermediate project", "", "ArtAnnot projects (*.artannot)")
        if path:
            self.intermediate.setText(path)

    def _browse_mapping(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "ImageNet mapping", "", "Mappings (*.json *.csv *.txt)")
        if path:
            self.mapping.setText(path)


def _row(*widgets: QWidget) -> QWidget:
    """Widgets side by side in one form row."""
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        layout.addWidget(w, stretch=1 if isinstance(w, QLineEdit) else 0)
    return box
