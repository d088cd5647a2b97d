"""Model ▸ Predict folder… in the real window: a folder outside the project scored in the worker, each file's
guesses shown, and the CSV saved is the one `artannot predict FOLDER --out F` writes."""

from __future__ import annotations

import shutil

from PIL import Image

from artannot.cli import main as cli_main
from artannot.gui.predict_dialog import predict_folder


def test_predict_folder_shows_guesses_and_saves_the_cli_csv(qtbot, window, demo_project, demo_subset, tmp_path):
    assert predict_folder(window, tmp_path) is None
    assert "No model yet" in window.last_error
    window.project.train(method="svm", device="cpu")
    window.reload()
    src = tmp_path / "outside"
    src.mkdir()
    for k, path in enumerate(sorted(demo_subset.rglob("*.png"))[:6]):
        shutil.copy(path, src / f"{k}_{path.name}")
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    Image.new("RGB", (40, 30), "red").save(src / "red.jpg")
    assert window.predict_action.isEnabled()
    with qtbot.waitSignal(window.runner.queue.idle, timeout=120_000):
        assert predict_folder(window, src) is not None
    dialog = window.predictions_dialog  # deleted on close
    assert dialog.table.rowCount() == 8
    cells = {dialog.table.item(r, 0).text(): dialog.table.item(r, 1).text() for r in range(8)}
    names = {c.name for c in window.project.classes()}
    assert cells["broken.png"] == "could not be read"
    assert all(v in names for k, v in cells.items() if k != "broken.png")
    assert "scored 7 images" in dialog.summary.text() and "1 could not be read" in dialog.summary.text()
    assert dialog.save(tmp_path / "gui.csv") and "Saved 8 rows" in dialog.saved.text()
    dialog.close()
    window.set_project(None)  # the CLI opens the project itself
    assert cli_main(["predict", str(demo_project), str(src), "--out", str(tmp_path / "cli.csv")]) == 0
    assert (tmp_path / "gui.csv").read_text() == (tmp_path / "cli.csv").read_text()
