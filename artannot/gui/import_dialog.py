"""File ▸ Import…: one dialog for every label source the CLI has, and the report that follows an import.

The dialog only gathers options (`options()`: Project.import_folder's keyword arguments plus the folder); the
window runs the import in the worker (job_runner.py) and shows ImportReportDialog when it is done.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

# (data, text, what the label field holds: "" none, "file" or "dir")
LABEL_SOURCES = (
    ("folder", "Sub-folder names", ""),
    ("filename", "File-name words (vocabulary)", ""),
    ("none", "No labels", ""),
    ("csv", "CSV file (path, label, …)", "file"),
    ("coco", "COCO JSON", "file"),
    ("voc", "Pascal VOC folder (XML)", "dir"),
    ("yolo", "YOLO folder (txt + classes)", "dir"),
    ("labelme", "labelme folder (JSON)", "dir"),
)
SPLITS = (("auto", "auto (80/20 by class)"), ("train", "all train"), ("test", "all test"))
DEFAULT_UNLABELLED = "unsorted, unlabelled, unknown"


def _browse_row(edit: QLineEdit, pick) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(edit, 1)
    button = QPushButton("Browse…")
    button.clicked.connect(pick)
    layout.addWidget(button)
    return row


class ImportDialog(QDialog):
    """Folder, label source (with its file or vocabulary), split and the sub-folders that carry no label."""

    def __init__(self, parent: QWidget | None = None, start_dir: str | Path = ""):
        super().__init__(parent)
        self.setWindowTitle("Import images")
        self.start_dir = str(start_dir)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("the folder of images to add")
        self.source = QComboBox()
        for data, text, _ in LABEL_SOURCES:
            self.source.addItem(text, data)
        self.label_file = QLineEdit()
        self.label_file.setPlaceholderText("the label file or folder")
        self.vocabulary = QLineEdit()
        self.vocabulary.setPlaceholderText("optional: a file of `class: synonym, synonym` lines")
        self.classes = QPlainTextEdit()
        self.classes.setPlaceholderText("or type them, one class a line:\nhot dog: frankfurter, wiener\nviolin: fiddle")
        self.classes.setFixedHeight(80)
        self.unlabelled = QLineEdit(DEFAULT_UNLABELLED)
        self.unlabelled.setToolTip("Sub-folders whose name is not a class: their images come in unlabelled")
        self.split = QComboBox()
        for data, text in SPLITS:
            self.split.addItem(text, data)
        self.thumbnails = QCheckBox("Make the grid's thumbnails now (slower import, instant scrolling)")
        self.thumbnails.setChecked(True)
        self.error = QLabel("")
        self.error.setStyleSheet("color: #c62828;")
        self.error.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Folder", _browse_row(self.folder, self._pick_folder))
        form.addRow("Labels from", self.source)
        self.label_row = _browse_row(self.label_file, self._pick_label_file)
        form.addRow("Label file", self.label_row)
        self.vocabulary_row = _browse_row(self.vocabulary, self._pick_vocabulary)
        form.addRow("Vocabulary", self.vocabulary_row)
        form.addRow("", self.classes)
        form.addRow("Unlabelled sub-folders", self.unlabelled)
        form.addRow("Split", self.split)
        form.addRow("", self.thumbnails)
        self.form = form
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Import")
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.source.currentIndexChanged.connect(self._update)
        self._update()
        self.resize(560, self.sizeHint().height())

    def _kind(self) -> str:
        return next(k for d, _, k in LABEL_SOURCES if d == self.source.currentData())

    def _update(self) -> None:
        data = self.source.currentData()
        self.form.setRowVisible(self.label_row, bool(self._kind()))
        for widget in (self.vocabulary_row, self.classes):
            self.form.setRowVisible(widget, data == "filename")
        self.form.setRowVisible(self.unlabelled, data == "folder")
        self.vocabulary.setPlaceholderText("optional: a file of `class: synonym, synonym` lines"
                                           if data == "filename" else "")

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of images", self.folder.text() or self.start_dir)
        if path:
            self.folder.setText(path)

    def _pick_label_file(self) -> None:
        start = self.folder.text() or self.start_dir
        if self._kind() == "dir":
            path = QFileDialog.getExistingDirectory(self, "Folder of label files", start)
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Label file", start)
        if path:
            self.label_file.setText(path)

    def _pick_vocabulary(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Vocabulary", self.start_dir, "Text files (*.txt);;All (*)")
        if path:
            self.vocabulary.setText(path)

    def problem(self) -> str | None:
        """Why the options cannot start an import (one line), or None."""
        folder = self.folder.text().strip()
        if not folder or not Path(folder).expanduser().is_dir():
            return "Choose the folder of images to import."
        if self._kind() and not self.label_file.text().strip():
            return f"Choose the {self.source.currentText()} that holds the labels."
        vocab = self.vocabulary.text().strip()
        if self.source.currentData() == "filename" and vocab and not Path(vocab).expanduser().is_file():
            return f"No vocabulary file at {vocab}."
        return None

    def _accept(self) -> None:
        problem = self.problem()
        if problem:
            self.error.setText(problem)
            return
        self.accept()

    def options(self) -> dict:
        """src, labels_from, split, vocabulary (a file), vocabulary_text (typed lines), unlabelled_folders,
        thumbnails."""
        data = self.source.currentData()
        labels_from = f"{data}:{self.label_file.text().strip()}" if self._kind() else data
        return {
            "src": self.folder.text().strip(),
            "labels_from": labels_from,
            "split": self.split.currentData(),
            "vocabulary": (self.vocabulary.text().strip() or None) if data == "filename" else None,
            "vocabulary_text": self.classes.toPlainText().strip() if data == "filename" else "",
            "unlabelled_folders": [n.strip() for n in self.unlabelled.text().split(",") if n.strip()]
            if data == "folder" else [],
            "thumbnails": self.thumbnails.isChecked(),
        }


class ImportReportDialog(QDialog):
    """What an import did: counts, then every skipped or questionable file with its reason. Stays until closed."""

    def __init__(self, report, folder: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Import report")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setAttribute(Qt.WidgetAttribute.WA_ShowWithoutActivating)  # the class keys keep labelling
        rows = [("Found", report.found), ("Added", report.added), ("Labelled", report.labelled),
                ("Unlabelled", report.unlabelled), ("Already in the project", report.already_known),
                ("Skipped", len(report.failed)), ("Ambiguous file names", len(getattr(report, "ambiguous", []))),
                ("Duplicate content", report.duplicates)]
        if report.boxes:
            rows.append(("Boxes", report.boxes))
        if report.new_classes:
            rows.append(("New classes", len(report.new_classes)))
        self.counts = {name: n for name, n in rows}
        title = QLabel(f"<b>{Path(folder).name or folder}</b>"
                       + (" — cancelled, what was imported so far is kept" if report.cancelled else ""))
        form = QFormLayout()
        for name, n in rows:
            form.addRow(name, QLabel(f"{n:,}"))
        self.notes = QPlainTextEdit("\n".join(report.notes()) or "Nothing was skipped.")
        self.notes.setReadOnly(True)
        self.notes.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addLayout(form)
        layout.addWidget(QLabel("Skipped and questionable files"))
        layout.addWidget(self.notes, 1)
        layout.addWidget(buttons)
        self.resize(620, 460)
