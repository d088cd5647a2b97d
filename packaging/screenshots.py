"""Render the README's screenshot: the main window on the demo collection after one-click training.

Usage: QT_QPA_PLATFORM=offscreen python packaging/screenshots.py [--out docs/main_window.png]
Builds a throwaway demo project, trains the default model through the window's own Train action,
selects an image the model disagrees with, and saves the window as a PNG.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]


def _wait(app, condition, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the window did not get there in time")
        app.processEvents()
        time.sleep(0.02)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "main_window.png"))
    ap.add_argument("--size", default="1400x900")
    args = ap.parse_args()

    from PySide6.QtWidgets import QApplication

    from artannot.gui.main_window import MainWindow
    from artannot.project import Project

    tmp = Path(tempfile.mkdtemp(prefix="artannot-shot-"))
    project = tmp / "demo.artannot"
    with Project.create(project) as p:
        p.import_folder(REPO / "resources" / "demo", labels_from="folder", split="auto")

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow()
    width, height = (int(v) for v in args.size.split("x"))
    window.resize(width, height)
    window.show()
    assert window.open_project(project), window.last_error
    done: list[object] = []
    window.training_finished.connect(done.append)
    window.job_failed.connect(lambda msg: done.append(RuntimeError(msg)))
    window.start_training()
    _wait(app, lambda: done, timeout=900)
    if isinstance(done[0], Exception):
        raise done[0]
    rows = [r for r in window.project.images() if r.disagrees]
    if rows:
        window.grid.select_ids([rows[0].id], current=rows[0].id)
    model = window.thumbnails
    _wait(app, lambda: all(model.thumbnail_state(r) != "loading" for r in range(min(12, model.rowCount()))), 60)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.05)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    window.grab().save(args.out)
    print(f"saved {args.out}")
    window.confirm_close = lambda: True
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
