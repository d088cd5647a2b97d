"""File ▸ Export…: every format the CLI writes, into a file or folder chosen here; the window runs it in the worker."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

# (format, text, suffix of the file it writes; "" a folder)
FORMATS = (
    ("imagefolder", "ImageFolder (copies into split/class/ folders)", ""),
    ("csv", "CSV labels", ".csv"),
    ("coco", "COCO JSON", ".json"),
    ("voc", "Pascal VOC (XML per image)", ""),
    ("yolo", "YOLO (txt per image + classes)", ""),
    ("labelme", "labelme (JSON per image)", ""),
    ("predictions", "Predictions CSV (active model, top-5)", ".csv"),
    ("predictions-json", "Predictions JSON (active model, top-5)", ".json"),
)


class ExportDialog(QDialog):
    """Format and where to write it; `options()` gives (out, fmt)."""

    def __init__(self, parent: QWidget | None = None, start_dir: str | Path = "", stem: str = "export"):
        super().__init__(parent)
        self.setWindowTitle("Export")
        self.start_dir, self.stem = Path(start_dir), stem
        self.format = QComboBox()
        for fmt, text, _ in FORMATS:
            self.format.addItem(text, fmt)
        self.out = QLineEdit()
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._pick)
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.out, 1)
        layout.addWidget(browse)
        self.hint = QLabel("")
        self.hint.setStyleSheet("color: #546e7a;")
        self.hint.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Format", self.format)
        form.addRow("Write to", row)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        outer = QVBoxLayout(self)
        outer.addLayout(form)
        outer.addWidget(self.hint)
        outer.addWidget(buttons)
        self.format.currentIndexChanged.connect(self._update)
        self._update()
        self.resize(560, self.sizeHint().height())

    def _suffix(self) -> str:
        return next(s for f, _, s in FORMATS if f == self.format.currentData())

    def _update(self) -> None:
        fmt, suffix = self.format.currentData(), self._suffix()
        default = self.start_dir / (f"{self.stem}-{fmt}{suffix}")
        old = self.out.text()
        if not old or old.startswith(str(self.start_dir / self.stem)):
            self.out.setText(str(default))
        self.hint.setText("A new or empty folder." if not suffix else f"A {suffix} file (replaced if it exists).")

    def _pick(self) -> None:
        if self._suffix():
            path, _ = QFileDialog.getSaveFileName(self, "Export to", self.out.text(), f"*{self._suffix()}")
        else:
            path = QFileDialog.getExistingDirectory(self, "Export into an empty folder", str(self.start_dir))
        if path:
            self.out.setText(path)

    def _accept(self) -> None:
        if not self.out.text().strip():
            self.hint.setText("Choose where to write the export.")
            return
        self.accept()

    def options(self) -> tuple[str, str]:
        """(where to write, format)."""
        return self.out.text().strip(), self.format.currentData()
