"""Opening and scrolling a 100k-image project in the app, offscreen: open time, scrolling fps, memory, queries.

The project is generated quickly: rows go straight into SQLite (fake hashes, so every image gets its own
thumbnail cache entry), and the files are symlinks to a few real tiny images, so thumbnails really decode.
Every image has a rule label (20 classes), a fake model has top-5 predictions and suspect scores for all.

Measured, on QT_QPA_PLATFORM=offscreen:
  open_s        MainWindow.open_project until the first grid paint (file checks, id query, counts, first
                layout batch)
  reopen_s      the same once the file's integrity check (once per process and file state) is done
  layout_done_after_open_s, layout_longest_turn_ms   the rest of the layout, run between events
  reopen_single_pass_baseline_s   reopen with QListView's default layout (every row before the first paint)
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
sys.path.insert(0, str(REPO / "bench"))

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


def generate(path: Path, n: int, shared: bool = False) -> dict:
    """A project of n images (symlinks to 16 real demo images, or with `shared` no files at all and 16 cached
    thumbnails they share), labels, a model with predictions and suspects."""
    from artannot.gui.thumbnail_delegate import CACHE_PX
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
    rels, hashes = [], []
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        d = root / f"d{k // 1000:04d}"
        rel = f"d{k // 1000:04d}/img_{k:07d}.png"
        if not shared:
            if k % 1000 == 0:
                d.mkdir(parents=True, exist_ok=True)
            os.symlink(demo[k % len(demo)], root / rel)
        rels.append(rel)
    files_s = time.perf_counter() - start
    if shared:  # no files: every row carries one of 16 real images' hashes, whose thumbnails are cached
        import hashlib

        from artannot.data.images import save_thumbnail_cached

        hashes = [hashlib.sha256(f.read_bytes()).hexdigest() for f in demo]
    rng = np.random.default_rng(0)
    with Project.create(path) as p:
        conn = p.conn
        for f, h in zip(demo, hashes if shared else [], strict=False):
            save_thumbnail_cached(f, h, p.cache_dir, size=CACHE_PX)
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
                ((k + 1, src, rels[k], hashes[k % len(hashes)] if shared else f"{k + 1:064x}", *sizes[k % len(sizes)],
                  str(splits[k]), stamp)
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


def query_cases(model: int, cls: int) -> dict:
    """Every filter of the filter bar with its preset's sort, every sort over all images, search, combinations."""
    from artannot.store.queries import ImageQuery as Q

    return {
        "all": Q(model_id=model),
        "class": Q(class_ids=(cls,), model_id=model),
        "class_by_confidence": Q(class_ids=(cls,), sort="confidence", model_id=model),
        "unlabelled": Q(unlabelled=True, model_id=model),
        "source_rule": Q(sources=("rule",), model_id=model),
        "source_human": Q(sources=("human",), model_id=model),
        "disagree_by_confidence": Q(disagree=True, sort="confidence", model_id=model),
        "suspects_by_rank": Q(flagged=True, sort="suspect", model_id=model),
        "split_test": Q(splits=("test",), model_id=model),
        "untagged": Q(untagged=True, model_id=model),
        "search_keystroke": Q(text="img_0123", model_id=model),
        "search_2_chars": Q(text="_9", model_id=model),
        "sort_name": Q(sort="name", model_id=model),
        "sort_confidence": Q(sort="confidence", model_id=model),
        "sort_confidence_low_first": Q(sort="confidence_asc", model_id=model),
        "sort_suspect": Q(sort="suspect", model_id=model),
        "sort_proposal": Q(sort="proposal", model_id=model),
        "split_test_by_suspect": Q(splits=("test",), sort="suspect", model_id=model),
        "source_rule_by_confidence": Q(sources=("rule",), sort="confidence", model_id=model),
        "confusion_cell": Q(class_ids=(cls,), pred_class_ids=(cls + 1,), splits=("test",),
                            sources=("human", "folder", "rule", "import"), model_id=model),
    }


def best_ms(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 1), out


def measure_queries(conn, model: int, cls: int, repeat: int) -> dict:
    """Each query as the grid runs it now beside the same query as it was (bench/legacy_queries.py), on the
    same database in the same run; the best of `repeat` runs each."""
    import legacy_queries

    from artannot.store import queries

    timings: dict = {}
    for label, q in query_cases(model, cls).items():
        before, old = best_ms(lambda q=q: legacy_queries.image_ids(conn, q), repeat)
        after, new = best_ms(lambda q=q: queries.image_ids(conn, q), repeat)
        same = sorted(old.tolist()) == sorted(new.tolist())
        if q.sort != "confidence_asc":  # low first now reverses ties too (the old order kept ids ascending)
            same = same and old.tolist() == new.tolist()
        timings[label] = {"before_ms": before, "after_ms": after, "rows": len(new), "same_answer": same}
    before, _ = best_ms(lambda: legacy_queries.disagree_count(conn, model), repeat)
    after, _ = best_ms(lambda: queries.summary(conn, model), repeat)
    timings["summary"] = {"before_ms_disagree_count_alone": before, "after_ms": after}
    before, old = best_ms(lambda: legacy_queries.class_counts(conn), repeat)
    after, new = best_ms(lambda: queries.class_counts(conn), repeat)
    timings["class_counts"] = {"before_ms": before, "after_ms": after, "same_answer": old == new}
    return timings


def plain_scroll(n: int, frames: int, size, step_px: int) -> dict:
    """The baseline: a plain QListView in icon mode (Qt's own delegate: icon and file name) over a minimal
    lazy model of n rows sharing one pixmap, the same cell size, window size and scroll steps."""
    from PySide6.QtCore import QAbstractListModel, QModelIndex, QSize, Qt
    from PySide6.QtGui import QColor, QPixmap
    from PySide6.QtWidgets import QApplication, QListView

    from artannot.gui.thumbnail_delegate import CELL, THUMB_PX

    class Plain(QAbstractListModel):
        def __init__(self):
            super().__init__()
            self.pixmap = QPixmap(THUMB_PX, THUMB_PX)
            self.pixmap.fill(QColor("#90a4ae"))

        def rowCount(self, parent=QModelIndex()):  # noqa: B008
            return 0 if parent.isValid() else n

        def data(self, index, role=Qt.ItemDataRole.DisplayRole):
            if role == Qt.ItemDataRole.DisplayRole:
                return f"img_{index.row():07d}.png"
            if role == Qt.ItemDataRole.DecorationRole:
                return self.pixmap
            return None

    app = QApplication.instance()
    view = QListView()
    view.setViewMode(QListView.ViewMode.IconMode)
    view.setUniformItemSizes(True)
    view.setGridSize(CELL)
    view.setIconSize(QSize(THUMB_PX, THUMB_PX))
    view.setResizeMode(QListView.ResizeMode.Adjust)
    view.setMovement(QListView.Movement.Static)
    model = Plain()
    view.setModel(model)
    view.resize(size)
    view.show()
    app.processEvents()
    bar = view.verticalScrollBar()
    out = {}
    for name, step in (("scroll_fps", step_px), ("jump_fps", view.viewport().height())):
        t0 = time.perf_counter()
        for _ in range(frames):
            bar.setValue(bar.value() + step)
            view.viewport().repaint()
            app.processEvents()
        out[name] = round(frames / (time.perf_counter() - t0), 1)
    view.close()
    return out


def finish_layout(app, grid) -> dict:
    """Run the event loop until the grid has laid out its last row (it does so in batches between events):
    seconds that took, and the longest event-loop turn meanwhile (how long a key could wait)."""
    last = grid.model().index(grid.model().rowCount() - 1, 0)
    start, longest, turns = time.perf_counter(), 0.0, 0
    while not grid.visualRect(last).isValid() and time.perf_counter() - start < 120:
        t0 = time.perf_counter()
        app.processEvents()
        longest, turns = max(longest, time.perf_counter() - t0), turns + 1
    return {"layout_done_after_open_s": round(time.perf_counter() - start, 3),
            "layout_longest_turn_ms": round(longest * 1000, 1), "layout_turns": turns}


def measure(path: Path, frames: int, repeat: int = 3) -> dict:
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from artannot.gui.main_window import MainWindow

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
    reopen = [time.perf_counter() - start]
    out.update(finish_layout(app, w.grid))
    out["rss_mb_open"] = round(rss_mb(), 1)
    modes = {"batched": w.grid.layoutMode(), "single_pass": w.grid.LayoutMode.SinglePass}
    times: dict[str, list[float]] = {"batched": reopen, "single_pass": []}
    for k in range(2 * repeat):  # alternating, best of each: the baseline is QListView's default layout mode
        name = ("single_pass", "batched")[k % 2]
        w.grid.setLayoutMode(modes[name])
        w.set_project(None)
        start = time.perf_counter()
        assert w.open_project(path), w.last_error
        w.grid.viewport().repaint()
        app.processEvents()
        times[name].append(time.perf_counter() - start)
        finish_layout(app, w.grid)
    out["reopen_s"] = round(min(times["batched"]), 3)
    out["reopen_single_pass_baseline_s"] = round(min(times["single_pass"]), 3)

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
    out["plain_qlistview_baseline"] = plain_scroll(w.thumbnails.rowCount(), frames, w.grid.viewport().size(),
                                                   w.grid.verticalScrollBar().singleStep() * 4)
    out["scrolled_to_row"] = w.grid.indexAt(w.grid.viewport().rect().center()).row()
    out["thumbnails"] = w.thumbnails.load_stats()
    out["rss_mb_scrolled"] = round(rss_mb(), 1)

    conn, model = w.project.conn, w._model_id
    out["queries"] = timings = measure_queries(conn, model, w._classes[3].id, repeat)
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
    t0 = time.perf_counter()
    w.filter_box.setCurrentIndex(w.filter_box.findData("all"))  # every image again: query, reset, first batch
    w.grid.viewport().repaint()
    app.processEvents()
    timings["filter_back_to_all_in_window"] = {"ms": round((time.perf_counter() - t0) * 1000, 1),
                                               "rows": w.thumbnails.rowCount(),
                                               **finish_layout(app, w.grid)}
    w.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", "--n", type=int, default=100_000)
    ap.add_argument("--shared-thumbnails", action="store_true",
                    help="no image files: rows share 16 cached thumbnails (the default past 200k images)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per query (the best counts)")
    ap.add_argument("--queries-only", action="store_true", help="no window: the filter and sort queries alone")
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
        report["generated"] = generate(path, args.images, args.shared_thumbnails or args.images > 200_000)
    if args.queries_only:
        from artannot.project import Project
        from artannot.store.models import active_model_id

        t0 = time.perf_counter()
        with Project(path) as p:
            report["open_project_s"] = round(time.perf_counter() - t0, 2)
            cls = p.classes()[3].id
            report["queries"] = measure_queries(p.conn, active_model_id(p.conn), cls, args.repeat)
        report["rss_mb"] = round(rss_mb(), 1)
    else:
        report.update(measure(path, args.frames, args.repeat))
    print(json.dumps(report, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
