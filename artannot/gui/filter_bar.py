"""The bar above the grid: which images to show (class, source, split, suspects...), their order, a search box."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QLineEdit, QWidget

from artannot.store.queries import SORTS, ImageQuery
from artannot.store.repo import ClassInfo

PRESETS = (  # (data, text, the sort it starts with)
    ("all", "All images", "id"),
    ("unlabelled", "Unlabelled", "id"),
    ("disagree", "Model disagrees (most confident first)", "confidence"),
    ("suspects", "Suspects (most likely wrong first)", "suspect"),
    ("proposals", "Box proposals to review (least certain first)", "proposal"),
    ("box_suspects", "Box suspects (missing, doubtful, other class)", "id"),
)
SOURCES = (("", "any source"), ("human", "H · by you"), ("folder", "F · folder"), ("rule", "R · rule"),
           ("import", "I · import"), ("model", "M · model"))  # the letters are the thumbnails' marks
TAG_CHOICES = (("", "any tags"), ("none", "no tags"))
SPLIT_NAMES = (("", "any split"), ("train", "train"), ("val", "val"), ("test", "test"), ("none", "no split"))
CONFUSION_SOURCES = ("human", "folder", "rule", "import")  # the labels Evaluate scores against (not model guesses)
SEARCH_DELAY_MS = 200  # typing pauses this long before the grid re-queries


class _Combo(QComboBox):
    """Its contents' width when there is room; narrower (text elided) in a small window, which never grows."""

    def minimumSizeHint(self) -> QSize:
        hint = super().minimumSizeHint()
        return QSize(min(hint.width(), 90), hint.height())


def _combo(items: Sequence[tuple[str, str]], tip: str) -> QComboBox:
    box = _Combo()
    for data, text in items:
        box.addItem(text, data)
    box.setToolTip(tip)
    box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
    return box


class FilterBar(QWidget):
    """Filter, sort and search controls; `query()` turns them into an ImageQuery."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.show_box = _combo([(d, t) for d, t, _ in PRESETS], "Which images the grid shows")
        self.show_box.setMinimumWidth(150)
        self.source_box = _combo(SOURCES, "Who set the label (the mark on each thumbnail)")
        for i, tip in enumerate(("", "set by you", "from the folder name", "from a file-name rule", "imported",
                                 "the model's guess, accepted")):
            self.source_box.setItemData(i, tip or None, Qt.ItemDataRole.ToolTipRole)
        self.split_box = _combo(SPLIT_NAMES, "Train / val / test split")
        self.tag_box = _combo(TAG_CHOICES, "Images carrying a tag (or none)")
        self.sort_box = _combo(list(SORTS.items()), "Order of the grid (and of the review queue)")
        self.search = QLineEdit()
        self.search.setPlaceholderText("Find file name…  (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.setMinimumWidth(110)
        self.count = QLabel("")
        self.count.setStyleSheet("color: #546e7a; padding-left: 6px;")
        self._timer = QTimer(self, singleShot=True, interval=SEARCH_DELAY_MS)
        self._timer.timeout.connect(self.changed)
        self._quiet = False
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 3, 6, 3)
        for text, widget in (("Show", self.show_box), ("Label by", self.source_box), ("Split", self.split_box),
                             ("Tag", self.tag_box), ("Sort", self.sort_box)):
            label = QLabel(text)
            label.setStyleSheet("color: #455a64;")
            layout.addWidget(label)
            layout.addWidget(widget)
            layout.addSpacing(6)
        layout.addWidget(self.search, 1)
        layout.addWidget(self.count)
        self.show_box.currentIndexChanged.connect(self._on_preset)
        for box in (self.source_box, self.split_box, self.tag_box, self.sort_box):
            box.currentIndexChanged.connect(self._emit)
        self.search.textChanged.connect(lambda _t: self._timer.start())
        self.search.returnPressed.connect(self._search_now)

    # ---- content ----------------------------------------------------------------------------------
    def set_classes(self, classes: Sequence[ClassInfo]) -> None:
        """Offer one 'Class: name' entry per class, keeping the current choice when it still exists."""
        keep = self.show_box.currentData()
        self._quiet = True  # rebuilding must not re-query per item
        self.show_box.blockSignals(True)
        cell = self._drop_confusion()
        while self.show_box.count() > len(PRESETS):
            self.show_box.removeItem(len(PRESETS))
        if cell is not None:
            self.show_box.addItem(*cell)
        for c in classes:
            self.show_box.addItem(f"Class: {c.name}", f"class:{c.id}")
        k = self.show_box.findData(keep)
        self.show_box.setCurrentIndex(max(0, k))
        self.show_box.blockSignals(False)
        self._quiet = False
        if k < 0 and keep not in (None, "all"):
            self._emit()

    def show_confusion(self, true_id: int, pred_id: int, text: str) -> None:
        """Show the test images of one confusion-matrix cell (true class, predicted class) as a Show entry of
        its own, until another is chosen."""
        self._quiet = True
        self._drop_confusion()
        self.show_box.insertItem(len(PRESETS), text, f"confusion:{true_id}:{pred_id}")
        self.split_box.setCurrentIndex(0)
        self.show_box.setCurrentIndex(len(PRESETS))
        self._quiet = False
        self._emit()

    def _drop_confusion(self) -> tuple[str, str] | None:
        """Remove the confusion-cell entry, if any; returns its (text, data)."""
        for k in range(len(PRESETS), self.show_box.count()):
            data = str(self.show_box.itemData(k) or "")
            if data.startswith("confusion:"):
                text = self.show_box.itemText(k)
                self.show_box.removeItem(k)
                return text, data
        return None

    def set_tags(self, tags: Sequence[tuple[int, str]]) -> None:
        """Offer one entry per tag (id, name), keeping the current choice when it still exists."""
        keep = self.tag_box.currentData()
        self.tag_box.blockSignals(True)
        while self.tag_box.count() > len(TAG_CHOICES):
            self.tag_box.removeItem(len(TAG_CHOICES))
        for tag_id, name in tags:
            self.tag_box.addItem(name, f"tag:{tag_id}")
        k = self.tag_box.findData(keep)
        self.tag_box.setCurrentIndex(max(0, k))
        self.tag_box.blockSignals(False)
        if k < 0 and keep:
            self._emit()

    def query(self, model_id: int | None, detector_id: int | None = None, min_proposal: float = 0.0) -> ImageQuery:
        """The images and order the controls ask for, against a model (None: no model yet), a detector (box
        suspects) and the proposal threshold."""
        preset = self.show_box.currentData() or "all"
        source, split = self.source_box.currentData(), self.split_box.currentData()
        tag = self.tag_box.currentData() or ""
        if preset.startswith("confusion:"):  # one cell of Evaluate's confusion matrix: what it counted
            true, pred = (int(v) for v in preset.split(":")[1:3])
            return ImageQuery(class_ids=(true,), pred_class_ids=(pred,), splits=("test",),
                              sources=CONFUSION_SOURCES, text=self.search.text(),
                              sort=self.sort_box.currentData() or "id", model_id=model_id)
        return ImageQuery(
            tag_ids=(int(tag.split(":", 1)[1]),) if tag.startswith("tag:") else (),
            untagged=tag == "none",
            class_ids=(int(preset.split(":", 1)[1]),) if preset.startswith("class:") else (),
            unlabelled=preset == "unlabelled",
            disagree=preset == "disagree",
            flagged=preset == "suspects",
            proposals=preset == "proposals",
            min_proposal=min_proposal,
            box_suspects=preset == "box_suspects",
            detector_id=detector_id,
            sources=(source,) if source else (),
            splits=(split,) if split else (),
            text=self.search.text(),
            sort=self.sort_box.currentData() or "id",
            model_id=model_id,
        )

    def describe(self) -> str:
        """A few words for the status bar and the review header: 'Class: fish · set by you'."""
        parts = [self.show_box.currentText()]
        parts += [b.currentText() for b in (self.source_box, self.split_box) if b.currentData()]
        if self.tag_box.currentData():
            parts.append(f"tag {self.tag_box.currentText()}" if self.tag_box.currentData() != "none" else "no tags")
        if self.search.text().strip():
            parts.append(f"“{self.search.text().strip()}”")
        return " · ".join(parts)

    def set_count(self, shown: int, total: int) -> None:
        """'1,234 of 100,000 shown'."""
        self.count.setText(f"{shown:,} shown" if shown == total else f"{shown:,} of {total:,} shown")

    def reset(self) -> None:
        """Every image, in import order (a new project)."""
        self.set_state({})

    # ---- session ----------------------------------------------------------------------------------
    def state(self) -> dict:
        """The controls as plain data (saved with the window's session)."""
        return {"show": self.show_box.currentData(), "source": self.source_box.currentData(),
                "split": self.split_box.currentData(), "tag": self.tag_box.currentData(),
                "sort": self.sort_box.currentData(),
                "text": self.search.text()}

    def set_state(self, state: dict) -> None:
        """Restore controls saved by state(); unknown values fall back to the defaults. Emits changed once."""
        self._quiet = True
        for box, key in ((self.show_box, "show"), (self.source_box, "source"), (self.split_box, "split"),
                         (self.tag_box, "tag"), (self.sort_box, "sort")):
            box.blockSignals(True)
            box.setCurrentIndex(max(0, box.findData(state.get(key))))
            box.blockSignals(False)
        self.search.blockSignals(True)
        self.search.setText(str(state.get("text") or ""))
        self.search.blockSignals(False)
        self._quiet = False
        self._emit()

    # ---- signals ----------------------------------------------------------------------------------
    def _on_preset(self) -> None:
        preset = self.show_box.currentData() or "all"
        sort = next((s for d, _, s in PRESETS if d == preset), "id")
        self.sort_box.blockSignals(True)
        self.sort_box.setCurrentIndex(max(0, self.sort_box.findData(sort)))
        self.sort_box.blockSignals(False)
        self._emit()

    def _search_now(self) -> None:
        self._timer.stop()
        self.changed.emit()

    def _emit(self) -> None:
        if not self._quiet:
            self._timer.stop()
            self.changed.emit()

    def focus_search(self) -> None:
        """Put the cursor in the search box, its text selected."""
        self.search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search.selectAll()
