"""Latency of a curator's label edits (p50/p99/max), alone and while training reads and writes the project.

One thread makes `--edits` one-image label edits through its own Project, each committed at once, as the
app does on a hotkey. Loads: 'thread' trains again and again in another thread of the same process (how the
app trained before); 'child' in a child process supervised by a thread of this one (worker/child.py: how
the app trains now); 'process' runs `artannot train` again and again from a terminal.
`--gui` measures key to screen instead: the real main window (offscreen), a hotkey relabels the selected
image and the grid repaints, while the window itself trains (its job runner, in its thread or its child). Training reads labels and the feature cache and writes a model with its predictions. Features
are computed once up front, so the load is the SVM search plus the project writes, repeated. Edits are
paced (`--pause-ms` between them, far faster than hotkeys) so that they span whole training runs.
Usage: python bench/edit_latency.py [--images 300] [--edits 10000] [--pause-ms 1] [--load none,thread,child,process]
       QT_QPA_PLATFORM=offscreen python bench/edit_latency.py --gui [--edits 300] [--load none,thread,child]
Prints JSON; "errors" counts any exception an edit raised (a 'database is locked' would be one).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from artannot.project import Project

REPO = Path(__file__).resolve().parents[1]


def make_collection(root: Path, n: int) -> None:
    """n small shape images in three class folders (importable by --labels-from folder)."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(0)
    shapes = ("circle", "square", "triangle")
    for k in range(n):
        kind = shapes[k % 3]
        (root / kind).mkdir(parents=True, exist_ok=True)
        img = Image.new("RGB", (64, 64), "white")
        d = ImageDraw.Draw(img)
        r, cx, cy = rng.randint(10, 20), rng.randint(20, 44), rng.randint(20, 44)
        box = [cx - r, cy - r, cx + r, cy + r]
        colour = tuple(rng.randint(0, 200) for _ in range(3))
        if kind == "circle":
            d.ellipse(box, fill=colour)
        elif kind == "square":
            d.rectangle(box, fill=colour)
        else:
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        img.save(root / kind / f"{kind}_{k:05d}.png")


def edit_many(path: Path, n: int, pause: float, window: bool = True) -> tuple[list[float], list[str]]:
    """n one-image edits, each a real change, on a connection opened as the window opens it (exclusive: WAL
    checkpoints in a thread of their own) or, window=False, a plain one (SQLite's checkpoint every ~1000 pages
    inside a commit: the baseline); returns latencies (s) and error messages."""
    latencies, errors = [], []
    with Project(path, exclusive=window) as p:
        ids = [r.id for r in p.images()][:90]
        classes = [c.id for c in p.classes()]
        for j in range(n):
            t0 = time.perf_counter()
            try:
                p.set_label([ids[j % len(ids)]], classes[(j // len(ids)) % len(classes)])
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - t0)
            time.sleep(pause)
    return latencies, errors


def summary(latencies: list[float], errors: list[str], seconds: float, **extra) -> dict:
    ms = np.array(latencies) * 1000.0
    return {"edits": len(latencies), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 1),
            "wall_s": round(seconds, 1), "errors": len(errors),
            "first_errors": errors[:3], **extra}


def under_load(path: Path, n: int, pause: float, load: str, device: str) -> dict:
    """Edits while training runs over and over, in a thread or in another process."""
    stop = threading.Event()
    runs, failures = [], []

    def train_forever() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                if load == "thread":
                    with Project(path) as p:
                        p.train(method="svm", device=device)
                elif load == "child":  # what the window does: a thread supervising a child process
                    from artannot.worker.child import run_in_child

                    run_in_child("artannot.worker.child:train_project", (str(path), {"method": "svm", "device": device}),
                                 name="training", keep=True)  # warm between runs, as in the app
                else:
                    cmd = ["train", str(path), "--method", "svm", "--device", device]
                    proc = subprocess.run([sys.executable, "-m", "artannot", *cmd], cwd=REPO, capture_output=True,
                                          text=True)
                    if proc.returncode != 0:
                        failures.append(proc.stderr.strip()[-300:])
                        return
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                return
            runs.append(time.perf_counter() - t0)

    trainer = threading.Thread(target=train_forever, daemon=True)
    trainer.start()
    t0 = time.perf_counter()
    latencies, errors = edit_many(path, n, pause)
    seconds = time.perf_counter() - t0
    stop.set()
    trainer.join()
    return summary(latencies, errors, seconds, trainings_done=len(runs),
                   training_s=round(float(np.mean(runs)), 1) if runs else None, training_errors=failures[:3])


def key_to_screen(path: Path, n: int, pause: float, load: str, device: str) -> dict:
    """Hotkey to repainted grid in the real window, n times, while the window trains (load thread/child) or not."""
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from artannot.gui.job_runner import TRAIN_TARGET
    from artannot.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    failures: list[str] = []
    w = MainWindow()
    w.confirm_close = lambda: True
    w.show_error = lambda message: failures.append(message)
    w.resize(1400, 900)
    w.show()
    app.processEvents()
    assert w.open_project(path), w.last_error
    w.runner.train_target = None if load == "thread" else TRAIN_TARGET
    runs = [0]
    w.runner.training_finished.connect(lambda _r: runs.__setitem__(0, runs[0] + 1))

    def keep_training() -> None:
        if load != "none" and not w.jobs.busy:
            w.start_training(options={"method": "svm", "device": device})

    latencies = []
    t_start = time.perf_counter()
    for j in range(n):
        keep_training()
        until = time.perf_counter() + pause
        while time.perf_counter() < until:  # the window lives on between keys: progress, results, repaints
            app.processEvents()
            time.sleep(0.001)
        w.grid.select_rows([j % 30])
        t0 = time.perf_counter()
        w._on_hotkey(str(1 + j % 3))
        w.grid.viewport().repaint()  # what the curator sees: the tile repainted with its new label
        latencies.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - t_start
    w.cancel_job()
    while w.jobs.busy:
        app.processEvents()
        time.sleep(0.01)
    w.close()
    return summary(latencies, [], seconds, trainings_done=runs[0], training_errors=failures[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--edits", type=int, default=10_000)
    ap.add_argument("--pause-ms", type=float, default=1.0)
    ap.add_argument("--load", default="plain,none,thread,child,process",
                    help="comma-separated: plain (no window connection: the baseline), none, thread, child, process")
    ap.add_argument("--gui", action="store_true", help="key to screen in the real window instead")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    out: dict = {"images": args.images, "edits": args.edits, "pause_ms": args.pause_ms, "device": args.device}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_collection(root / "images", args.images)
        path = root / "bench.artannot"
        with Project.create(path) as p:
            p.import_folder(root / "images", labels_from="folder", split="auto")
            t0 = time.perf_counter()
            p.train(method="svm", device=args.device)  # computes and caches every image's features once
            out["first_training_s"] = round(time.perf_counter() - t0, 1)
        for load in args.load.split(","):
            if args.gui:
                out[key := f"key_to_screen_{load}"] = key_to_screen(path, args.edits, args.pause_ms / 1000, load,
                                                                    args.device)
            elif load in ("none", "plain"):  # plain: SQLite's own checkpoints, the baseline
                t0 = time.perf_counter()
                latencies, errors = edit_many(path, args.edits, args.pause_ms / 1000, window=load == "none")
                out[key := "alone" if load == "none" else "alone_plain_connection"] = summary(
                    latencies, errors, time.perf_counter() - t0)
            else:
                out[key := f"with_training_{load}"] = under_load(path, args.edits, args.pause_ms / 1000, load,
                                                                 args.device)
            print(json.dumps({key: out[key]}), file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
