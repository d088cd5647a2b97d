"""Opening and scrolling a 100k-image project in the app, offscreen: open time, scrolling fps, memory, queries.

The project is generated quickly: rows go straight into SQLite (fake hashes, so every image gets its own
thumbnail cache entry), and the files are symlinks to a few real tiny images, so thumbnails really decode.
Every image has a rule label (20 classes), a fake model has top-5 predictions and suspect scores for all.

Measured, on QT_QPA_PLATFORM=offscreen:
  open_s        MainWindow.open_project until the first grid paint (file checks, id query, counts, layout)
  reopen_s      the same once the file's integrity check (once per process and file state) is done
  scroll_fps    frames per second of scroll-by-a-row + synchronous repaint, thumbnails decoding meanwhile
  jump_fps      the same, jumping a page (several rows) per frame
  worst_frame_ms the slowest frame of both
  rss_mb        resident memory after opening and after scrolling
  queries       one filter/sort/search/count query each, as the filter bar runs them; label keystrokes
Usage: QT_QPA_PLATFORM=offscreen python bench/grid_scale.py [--images 100000] [--frames 300] [--project P]
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

N_CLASSES = 20


def rss_mb() -> float:
    """Resident memory now (Linux /proc), else the peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(path: Path, n: int) -> dict:
    """A project of n images (symlinks to 16 real demo images), labels, a model with predictions and suspects."""
    from artannot.project import Project
    from artannot.store import queries, repo
    from artannot.store.db import now, write
    from artannot.store.labels import new_event

    start = time.perf_counter()
    root = path.parent / "images"
    demo = sorted((REPO / "artannot" / "resources" / "demo").rglob("*.png"))[:16]
    sizes = []
    from PIL import Image

    for f in demo:
        with Image.open(f) as im:
            sizes.append(im.size)
    rels = []
    for k in range(n):
        d = root / f"d{k // 1000:03d}"
        if k % 1000 == 0:
            d.mkdir(parents=True, exist_ok=True)
        rel = f"d{k // 1000:03d}/img_{k:06d}.png"
        os.symlink(demo[k % len(demo)], root / rel)
        rels.append(rel)
    files_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    with Project.create(path) as p:
        conn = p.conn
        src = repo.ensure_source(conn, root)
        names = [f"class_{c:02d}" for c in range(N_CLASSES)]
        ids_by_name = repo.ensure_classes(conn, names)
        class_ids = [ids_by_name[c] for c in names]
        stamp = now()
        splits = np.where(rng.random(n) < 0.8, "train", "test")
        with write(conn):
            conn.executemany(
                "INSERT INTO images(id, source_id, path, sha256, width, height, split, added_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ((k + 1, src, rels[k], f"{k + 1:064x}", *sizes[k % len(sizes)], str(splits[k]), stamp)
                 for k in range(n)))
            event = new_event(conn, "label", "rule", "bench labels")
            truth = rng.integers(0, N_CLASSES, n)
            labelled = rng.random(n) < 0.9
            conn.executemany(
                "INSERT INTO labels(image_id, class_id, source, event_id, active, created_at) VALUES (?, ?, 'rule', ?, 1, ?)",
                ((k + 1, class_ids[truth[k]], event, stamp) for k in range(n) if labelled[k]))
            model = repo.add_model(conn, backbone="fake", method="svm", classes=class_ids, params={})
            # A model that is right about 85 % of the time: its guess gets most of the mass on the label
            scores = rng.dirichlet(np.ones(N_CLASSES) * 0.2, n)
            right = rng.random(n) < 0.85
            scores[np.flatnonzero(right), truth[right]] += 1.5
            scores /= scores.sum(1, keepdims=True)
            top = np.argsort(-scores, axis=1)[:, :5]
            conn.executemany(
                "INSERT INTO predictions(model_id, image_id, rank, class_id, score) VALUES (?, ?, ?, ?, ?)",
                ((model, k + 1, r + 1, class_ids[top[k, r]], float(scores[k, top[k, r]]))
                 for k in range(n) for r in range(5)))
            from artannot.ml.classify.suspects import score_labels

            lab = np.flatnonzero(labelled)
            res = score_labels(scores[lab], truth[lab])
            ranks = res.ranks()
            queries.write_suspects(conn, model, (
                (int(lab[j] + 1), float(res.score[j]), int(ranks[j]), int(res.flagged[j]), 1,
                 class_ids[truth[lab[j]]], class_ids[res.suggested[j]]) for j in range(len(lab))))
    return {"images": n, "generate_s": round(time.perf_counter() - start, 2), "symlinks_s": round(files_s, 2),
            "project_mb": round(path.stat().st_size / 2**20, 1)}


def measure(path: Path, frames: int) -> dict:
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from artannot.gui.main_window import MainWindow
    from artannot.store import queries

    out: dict = {"rss_mb_before": round(rss_mb(), 1)}
    w = MainWindow()
    w.resize(1400, 900)
    w.show()
    app.processEvents()
    start = time.perf_counter()
    assert w.open_project(path), w.last_error
    w.grid.viewport().repaint()
    app.processEvents()
    out["open_s"] = round(time.perf_counter() - start, 3)
    out["rows_in_grid"] = w.thumbnails.rowCount()
    w.set_project(None)
    start = time.perf_counter()  # again: the file's integrity was checked once this process (store/db.py)
    assert w.open_project(path), w.last_error
    w.grid.viewport().repaint()
    app.processEvents()
    out["reopen_s"] = round(time.perf_counter() - start, 3)
    out["rss_mb_open"] = round(rss_mb(), 1)

    bar = w.grid.verticalScrollBar()
    results = {}
    worst = 0.0
    for name, step in (("scroll_fps", w.grid.verticalScrollBar().singleStep() * 4),
                       ("jump_fps", w.grid.viewport().height())):
        t0 = time.perf_counter()
        for _ in range(frames):
            f0 = time.perf_counter()
            bar.setValue(bar.value() + step)
            w.grid.viewport().repaint()
            app.processEvents()  # thumbnails decoded meanwhile arrive and repaint
            worst = max(worst, time.perf_counter() - f0)
        results[name] = round(frames / (time.perf_counter() - t0), 1)
    out.update(results)
    out["worst_frame_ms"] = round(worst * 1000, 1)
    out["scrolled_to_row"] = w.grid.indexAt(w.grid.viewport().rect().center()).row()
    out["thumbnails"] = w.thumbnails.load_stats()
    out["rss_mb_scrolled"] = round(rss_mb(), 1)

    conn, model = w.project.conn, w._model_id
    cls = w._classes[3].id
    timings = {}
    for label, q in (
        ("all", queries.ImageQuery(model_id=model)),
        ("class", queries.ImageQuery(class_ids=(cls,), model_id=model)),
        ("class_sorted_by_confidence", queries.ImageQuery(class_ids=(cls,), sort="confidence", model_id=model)),
        ("unlabelled", queries.ImageQuery(unlabelled=True, model_id=model)),
        ("source_rule", queries.ImageQuery(sources=("rule",), model_id=model)),
        ("disagree", queries.ImageQuery(disagree=True, sort="confidence", model_id=model)),
        ("suspects", queries.ImageQuery(flagged=True, sort="suspect", model_id=model)),
        ("split_test", queries.ImageQuery(splits=("test",), model_id=model)),
        ("search_keystroke", queries.ImageQuery(text="img_0123", model_id=model)),
        ("search_2_chars", queries.ImageQuery(text="_9", model_id=model)),
    ):
        t0 = time.perf_counter()
        n = len(queries.image_ids(conn, q))
        timings[label] = {"ms": round((time.perf_counter() - t0) * 1000, 1), "rows": n}
    t0 = time.perf_counter()
    queries.class_counts(conn)
    timings["class_counts"] = {"ms": round((time.perf_counter() - t0) * 1000, 1)}
    t0 = time.perf_counter()
    queries.summary(conn, model)
    timings["summary"] = {"ms": round((time.perf_counter() - t0) * 1000, 1)}
    w.grid.setFocus()
    w.grid.select_rows([out["scrolled_to_row"]])
    keys = []
    for k in range(30):  # a curator labelling one image per key; the focus moves on after each
        t0 = time.perf_counter()
        w._on_hotkey(str(1 + k % 9))
        app.processEvents()
        keys.append((time.perf_counter() - t0) * 1000)
    timings["label_keystroke"] = {"p50_ms": round(float(np.median(keys)), 1), "max_ms": round(max(keys), 1)}
    t0 = time.perf_counter()
    w.grid.select_rows(range(0, 5000))
    w._on_hotkey("4")
    timings["relabel_5000_selected"] = {"ms": round((time.perf_counter() - t0) * 1000, 1)}
    t0 = time.perf_counter()
    w.undo()
    timings["undo_that"] = {"ms": round((time.perf_counter() - t0) * 1000, 1)}
    t0 = time.perf_counter()
    w.filter_box.setCurrentIndex(w.filter_box.findData("suspects"))
    app.processEvents()
    timings["filter_to_suspects_in_window"] = {"ms": round((time.perf_counter() - t0) * 1000, 1),
                                               "rows": w.thumbnails.rowCount()}
    out["queries"] = timings
    w.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--project", help="reuse (or create) the generated project here")
    args = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = None
    if args.project:
        path = Path(args.project)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="artannot_bench_")
        path = Path(tmp.name) / "big.artannot"
    report = {"cpu_count": os.cpu_count()}
    if not path.exists():
        report["generated"] = generate(path, args.images)
    report.update(measure(path, args.frames))
    print(json.dumps(report, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
