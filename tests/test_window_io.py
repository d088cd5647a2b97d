"""Everything from the window: File ▸ Import… with every label source, its report, and the screenshots."""

from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtWidgets import QDialogButtonBox

from artannot.gui.import_dialog import LABEL_SOURCES, ImportDialog, ImportReportDialog
from artannot.project import Project
from tests.conftest import show_main_window
from tests.shapes import make_shape_collection

SHOTS = Path("/tmp/shots")


def _empty_project(tmp_path: Path) -> Path:
    path = tmp_path / "empty.artannot"
    Project.create(path).close()
    return path


def test_import_dialog_offers_every_cli_label_source(qtbot, tmp_path):
    d = ImportDialog(start_dir=tmp_path)
    qtbot.addWidget(d)
    assert [s[0] for s in LABEL_SOURCES] == ["folder", "filename", "none", "csv", "coco", "voc", "yolo", "labelme"]
    assert [d.split.itemData(i) for i in range(d.split.count())] == ["auto", "train", "test"]
    d.folder.setText(str(tmp_path))
    d.source.setCurrentIndex(d.source.findData("coco"))
    assert "label" in d.problem().lower()
    d.label_file.setText(str(tmp_path / "ann.json"))
    assert d.problem() is None
    assert d.options()["labels_from"] == f"coco:{tmp_path / 'ann.json'}"


def test_import_from_the_window_keeps_unsorted_unlabelled_and_reports(qtbot, tmp_path):
    root = make_shape_collection(tmp_path / "art", per_class=2, kinds=("circle", "square", "unsorted"))
    (root / "broken.png").write_bytes(b"not a png")
    w = show_main_window(qtbot, _empty_project(tmp_path))
    dialog = w.ask_import()
    assert dialog.unlabelled.text().startswith("unsorted")
    dialog.folder.setText(str(root))
    dialog.split.setCurrentIndex(dialog.split.findData("train"))
    with qtbot.waitSignal(w.import_finished, timeout=30_000) as blocker:
        dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()
    report = blocker.args[0]
    assert report.added == 6 and report.labelled == 4 and len(report.failed) == 1
    assert sorted(c.name for c in w.project.classes()) == ["circle", "square"]
    assert {r.split for r in w.project.images()} == {"train"}
    shown = w.import_report
    assert isinstance(shown, ImportReportDialog) and shown.isVisible()
    assert shown.counts["Added"] == 6 and shown.counts["Skipped"] == 1
    assert "broken.png" in shown.notes.toPlainText()
    qtbot.wait(50)
    assert shown.isVisible()  # stays until dismissed
    SHOTS.mkdir(exist_ok=True)
    shown.grab().save(str(SHOTS / "import_report.png"))
    w.close()


def test_import_with_typed_multi_word_classes(qtbot, tmp_path):
    shapes = make_shape_collection(tmp_path / "art", per_class=1, kinds=("circle",))
    src = tmp_path / "flat"
    src.mkdir()
    one = next((shapes / "circle").iterdir())
    shutil.copy(one, src / "hot_dog_03.png")
    shutil.copy(one, src / "violin_and_hot_dog.png")
    w = show_main_window(qtbot, _empty_project(tmp_path))
    dialog = w.ask_import()
    dialog.folder.setText(str(src))
    dialog.source.setCurrentIndex(dialog.source.findData("filename"))
    dialog.classes.setPlainText("hot dog: frankfurter\nviolin: fiddle")
    assert dialog.vocabulary_row.isVisibleTo(dialog) and not dialog.unlabelled.isVisibleTo(dialog)
    SHOTS.mkdir(exist_ok=True)
    dialog.grab().save(str(SHOTS / "import_dialog.png"))
    with qtbot.waitSignal(w.import_finished, timeout=30_000) as blocker:
        dialog.accept()
    report = blocker.args[0]
    assert report.labelled == 1 and len(report.ambiguous) == 1
    labels = {Path(r.path).name: r.class_id for r in w.project.images()}
    hot_dog = w.project.class_id("hot dog")
    assert labels == {"hot_dog_03.png": hot_dog, "violin_and_hot_dog.png": None}
    w.close()


def test_export_dialog_writes_every_format_in_the_worker(qtbot, tmp_path, small):
    from artannot.gui.export_dialog import FORMATS

    assert [f for f, _, _ in FORMATS] == ["imagefolder", "csv", "coco", "voc", "yolo", "labelme", "predictions",
                                           "predictions-json"]
    _, path = small
    w = show_main_window(qtbot, path)
    assert w.start_dir() == str(path.parent)  # file dialogs open in the project's folder
    dialog = w.ask_export()
    SHOTS.mkdir(exist_ok=True)
    dialog.grab().save(str(SHOTS / "export_dialog.png"))
    dialog.reject()  # a window-modal dialog left open keeps the next test's window from being activated
    for fmt in ("csv", "coco", "imagefolder"):
        dialog = w.ask_export()
        dialog.format.setCurrentIndex(dialog.format.findData(fmt))
        out = tmp_path / f"out-{fmt}" if fmt == "imagefolder" else Path(dialog.out.text())
        assert str(out).startswith(str(path.parent))
        dialog.out.setText(str(out))
        with qtbot.waitSignal(w.export_finished, timeout=30_000) as blocker:
            dialog.accept()
        assert blocker.args[0] == 4
        assert out.exists()
        assert "Exported 4 images" in w.export_summary.text()
        qtbot.waitUntil(lambda: not w.jobs.busy, timeout=5000)
        w.export_summary.close()
    w.close()


def test_an_empty_project_says_what_to_do(qtbot, tmp_path):
    w = show_main_window(qtbot, _empty_project(tmp_path))
    assert w.empty_hint.isVisible() and "Ctrl+I" in w.empty_hint.text()
    SHOTS.mkdir(exist_ok=True)
    w.grab().save(str(SHOTS / "empty.png"))
    w.close()


def test_recent_projects_come_back_from_settings(qtbot, tmp_path, small):
    from PySide6.QtCore import QSettings

    from artannot.gui.main_window import MainWindow

    _, path = small
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings)
    qtbot.addWidget(w)
    empty = _empty_project(tmp_path)
    assert w.open_project(path) and w.open_project(empty)
    assert w.recent_projects() == [str(empty.resolve()), str(path.resolve())]
    w.fill_recent_menu()
    assert [a.text() for a in w.recent_menu.actions()] == [empty.name, path.name]
    w.recent_menu.actions()[1].trigger()
    assert w.project.path.resolve() == path.resolve()
    w.set_project(None)


def test_import_dialog_passes_the_thumbnails_choice(qtbot, tmp_path):
    d = ImportDialog(start_dir=tmp_path)
    qtbot.addWidget(d)
    d.folder.setText(str(tmp_path))
    assert d.options()["thumbnails"] is True  # made during the import by default
    d.thumbnails.setChecked(False)
    assert d.options()["thumbnails"] is False
