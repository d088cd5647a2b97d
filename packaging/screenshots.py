"""Render the README's screenshots: the main window on the demo collection, its Tags dock, box proposals.

Usage: QT_QPA_PLATFORM=offscreen python packaging/screenshots.py [--shot main|tags|proposals] [--out FILE.png]
  main (default): trains an SVM through the window's own training job, selects an image the
        model disagrees with and saves the window as docs/main_window.png.
  tags: also imports artannot/resources/demo/tags.csv and trains a tag model (`--method tags`) after the class model
        (it reuses the cached features), selects an image the tag model has suggestions for, and saves the
        right-hand column (the image and its Tags dock) as docs/tags_panel.png.
  proposals: the box demo (artannot demo --boxes); trains a detector through the window ([--epochs N]), proposes
        boxes on every image without boxes, shows Show: Box proposals with the best proposal of the image with
        the most selected, and saves the window as docs/proposals.png.
Builds a throwaway demo project each time.
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
DEMO = REPO / "artannot" / "resources" / "demo"
OUTS = {"main": "main_window.png", "tags": "tags_panel.png", "proposals": "proposals.png"}
TAGS_EXAMPLE = "pattern-triangles-byzantine-2.png"  # shown when its tag model has a suggestion over threshold


def _wait(app, condition, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the window did not get there in time")
        app.processEvents()
        time.sleep(0.02)


def _settle(app, window) -> None:
    """Let the first thumbnails and the current image load."""
    model = window.thumbnails
    _wait(app, lambda: all(model.thumbnail_state(r) != "loading" for r in range(min(4, model.rowCount()))), 60)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.05)


def _train(app, window, options: dict | None = None) -> None:
    """Train through the window, as the Train button does, and wait for the grid to show it."""
    done: list[object] = []
    window.training_finished.connect(done.append)
    window.job_failed.connect(lambda msg: done.append(RuntimeError(msg)))
    window.start_training(options=options)
    _wait(app, lambda: done, timeout=900)
    if isinstance(done[0], Exception):
        raise done[0]


SHOT_MODEL = {"method": "svm"}  # the one-click `auto` may pick another backbone in its budget: keep shots steady


def _shot_main(app, window, out: Path) -> None:
    _train(app, window, SHOT_MODEL)
    rows = [r for r in window.project.images() if r.disagrees]
    if rows:
        window.grid.select_ids([rows[0].id], current=rows[0].id)
    _settle(app, window)
    window.grab().save(str(out))


def _shot_tags(app, window, out: Path) -> None:
    _train(app, window, SHOT_MODEL)
    _train(app, window, {"method": "tags"})
    project = window.project

    def interest(image_id: int) -> tuple[int, int]:
        """Some tags, some suggestions over threshold and a few below: the panel at work."""
        carried = set(project.image_tags([image_id]).get(image_id, []))
        new = [(p, over) for t, p, over in project.tag_suggestions(image_id) if t not in carried]
        sure = sum(1 for p, o in new if o and p >= 0.5)
        maybe = sum(1 for p, o in new if not o and p >= 0.1)
        return (3 * min(sure, 2) + min(len(carried), 3) + min(maybe, 2), -image_id)

    rows = project.images()
    best = max((r.id for r in rows), key=interest)
    preferred = [r.id for r in rows if Path(r.path).name == TAGS_EXAMPLE]  # the model finds the red the
    if preferred and interest(preferred[0])[0] >= 3:                          # colour rule missed
        best = preferred[0]
    window.grid.select_ids([best], current=best)
    window.tag_edits.refresh_tags()
    _settle(app, window)
    column = window.image_dock.geometry().united(window.tags_dock.geometry())
    window.grab(column).save(str(out))


def _shot_proposals(app, window, out: Path, options: dict) -> None:
    """The box demo: a detector trained through the window, proposals on every image without boxes, the grid
    on Show: Box proposals and the image with the most proposals shown, its best one selected."""
    if window.detector_id() is None:
        _train(app, window, options)
    done: list[object] = []
    window.runner.queue.idle.connect(lambda: done.append(True))
    window.propose_actions[2].trigger()  # every image without boxes
    _wait(app, lambda: done, timeout=900)
    conn = window.project.conn
    counts = conn.execute("SELECT image_id, COUNT(*) FROM proposals WHERE state = 'open' AND score >= 0.5"
                          " GROUP BY image_id ORDER BY COUNT(*) DESC, MAX(score) DESC").fetchall()
    window.show_preset("proposals")
    if counts:
        window.grid.select_ids([counts[0][0]], current=counts[0][0])
    _settle(app, window)
    editor = window.viewer.editor
    if editor.proposals():
        editor.select_box(-editor.proposals()[0])
    _settle(app, window)
    window.grab().save(str(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shot", choices=sorted(OUTS), default="main")
    ap.add_argument("--out", help="PNG to write (default docs/main_window.png or docs/tags_panel.png)")
    ap.add_argument("--size", default="1400x900")
    ap.add_argument("--epochs", type=int, default=None, help="proposals: the detector's epochs (default: its own)")
    ap.add_argument("--project", help="proposals: a box-demo project to reuse (its detector is not retrained)")
    args = ap.parse_args()
    out = Path(args.out or REPO / "docs" / OUTS[args.shot])

    from PySide6.QtWidgets import QApplication

    from artannot.gui.main_window import MainWindow
    from artannot.project import Project

    tmp = Path(tempfile.mkdtemp(prefix="artannot-shot-"))
    project = tmp / "demo.artannot"
    if args.shot == "proposals":
        from artannot.demo import write_box_demo

        project = Path(args.project) if args.project else write_box_demo(tmp)
    else:
        with Project.create(project) as p:
            p.import_folder(DEMO, labels_from="folder", split="auto")
            if args.shot == "tags":
                p.import_folder(DEMO, labels_from=f"csv:{DEMO / 'tags.csv'}")

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow()
    width, height = (int(v) for v in args.size.split("x"))
    window.resize(width, height)
    window.show()
    assert window.open_project(project), window.last_error
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.shot == "proposals":
        _shot_proposals(app, window, out, {"method": "detector", "epochs": args.epochs})
    else:
        (_shot_tags if args.shot == "tags" else _shot_main)(app, window, out)
    print(f"saved {out}")
    window.confirm_close = lambda: True
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
