"""Evaluate's confusion matrix filters the grid (as FiftyOne does): a cell click shows exactly the test images
it counted, the Show box names them, and another Show entry brings the collection back."""

from __future__ import annotations

from PySide6.QtCore import Qt


def test_a_confusion_cell_shows_the_images_it_counts(qtbot, window):
    window.project.train(method="svm", device="cpu")
    window.reload()
    dialog = window.show_evaluation()
    qtbot.addWidget(dialog)
    matrix, names = dialog.result["confusion"], dialog.result["classes"]
    cells = [(r, c) for r, row in enumerate(matrix) for c, n in enumerate(row) if n]
    off = [(r, c) for r, c in cells if r != c]
    r, c = (off or cells)[0]
    table = dialog.confusion
    rect = table.visualItemRect(table.item(r, c))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    rows = window.thumbnails.rows()
    assert len(rows) == matrix[r][c] > 0
    by_name = {cl.name: cl.id for cl in window.project.classes()}
    assert all(row.split == "test" and row.class_id == by_name[names[r]] and row.pred_class_id == by_name[names[c]]
               for row in rows)
    assert window.filter_box.currentText() == f"Test: {names[r]} predicted {names[c]}"
    assert "predicts as" in window.statusBar().currentMessage()
    # labelling in that view keeps the view; choosing All images brings every image back
    window.grid.select_rows([0])
    qtbot.keyClick(window.grid, next(cl for cl in window.project.classes() if cl.name == names[c]).hotkey)
    assert window.filter_box.currentText().startswith("Test:")
    window.filter_box.setCurrentIndex(window.filter_box.findData("all"))
    assert window.thumbnails.rowCount() == len(window.project.images())


def test_the_suspect_line_says_whose_scores_it_uses_and_never_blames_a_missing_label():
    from artannot.gui.image_viewer import label_html, prediction_title
    from artannot.store.queries import GridRow
    from artannot.store.repo import ClassInfo

    fish = ClassInfo(1, "fish", "#1565c0", "1", 3)
    row = GridRow(7, "/x/a.png", "", 10, 10, "train", 1, "folder", 2, 0.99, suspect=0.81, suspect_rank=2,
                  flagged=True, suggested_id=2)
    text = label_html(row, fish, "dinosaurs")
    assert "never saw this image" in text and "more likely <b>dinosaurs</b>" in text and "final model" in text
    assert "Suspect" not in label_html(row, None, "dinosaurs")  # unlabelled: no label to call wrong
    assert prediction_title(row, 4, 5) == "Model 4 (final model): top 5"
