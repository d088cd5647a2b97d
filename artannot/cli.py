"""Command-line front end over the same services the GUI uses (the contract in DESIGN.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from artannot import __version__
from artannot.errors import ArtAnnotError


class ProgressBar:
    """A one-line progress bar on stderr with rate and ETA (quiet when stderr is not a terminal)."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.stage = None
        self.start = time.perf_counter()
        self.last = 0.0

    def __call__(self, done: int, total: int, stage: str) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if stage != self.stage:
            if self.stage is not None:
                sys.stderr.write("\n")
            self.stage, self.start = stage, now
        elif now - self.last < 0.1 and done < total:
            return
        self.last = now
        frac = done / total if total else 1.0
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r{stage:<28} [{bar:<30}] {done}/{total}  ETA {eta:5.0f}s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.stage is not None:
            sys.stderr.write("\n")


def _open(path: str):
    from artannot.project import Project

    return Project(path)


def cmd_init(args) -> int:
    from artannot.project import Project

    Project.create(args.project).close()
    print(f"created {args.project}")
    return 0


def cmd_import(args) -> int:
    mode = args.labels_from
    if mode.split(":", 1)[0] in ("csv", "coco", "voc", "yolo"):
        raise ArtAnnotError(f"--labels-from {mode.split(':', 1)[0]} is not supported yet; use folder, filename or none")
    bar = ProgressBar()
    with _open(args.project) as project:
        report = project.import_folder(args.src, labels_from=mode, split=args.split,
                                       vocabulary=args.vocabulary, progress=bar)
    bar.close()
    for rel, reason in report.failed:
        print(f"skipped {rel}: {reason}", file=sys.stderr)
    for rel in report.missing:
        print(f"missing {rel}: known to the project but no longer on disk", file=sys.stderr)
    print(report.summary())
    return 0


def cmd_train(args) -> int:
    bar = ProgressBar(enabled=None if not args.json else False)
    with _open(args.project) as project:
        result = project.train(method=args.method, backbone=args.backbone, device=args.device,
                               epochs=args.epochs, progress=bar)
    bar.close()
    if args.json:
        print(json.dumps({"model": result.model_id, "metrics": result.metrics, "params": result.params}))
    else:
        m = result.metrics
        acc = f"test top-1 {m['top1']:.1%}, top-5 {m['top5']:.1%} on {m['n']} images" if m.get("n") else "no test split"
        print(f"model {result.model_id}: {acc}; {result.params.get('kernel')} SVM C={result.params.get('C')}"
              f" ({result.seconds:.1f}s)")
    return 0


def cmd_evaluate(args) -> int:
    with _open(args.project) as project:
        result = project.evaluate(args.model, split=args.split)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"model {result['model']} on {result['n']} {args.split} images: "
          f"top-1 {result['top1']:.1%}  top-5 {result['top5']:.1%}")
    width = max((len(k) for k in result["per_class"]), default=5)
    for name, m in result["per_class"].items():
        print(f"  {name:<{width}}  top-1 {m['top1']:6.1%}  top-5 {m['top5']:6.1%}  n={m['n']}")
    return 0


def cmd_predict(args) -> int:
    import csv

    from artannot.data.export import write_csv
    from artannot.data.importer import scan_images

    bar = ProgressBar()
    with _open(args.project) as project:
        if args.src:
            src = Path(args.src)
            paths = [src] if src.is_file() else list(scan_images(src)) if src.is_dir() else None
            if paths is None:
                raise ArtAnnotError(f"{src} is neither an image nor a folder")
            results = project.predict_files(paths, progress=bar)
        else:
            model = project.latest_model_id()
            if model is None:
                raise ArtAnnotError("no trained model yet: run `artannot train` first")
            from artannot.store import repo

            results = [(r.path, repo.top_predictions(project.conn, model, r.id)) for r in project.images()]
    bar.close()
    header = ["path"] + [f"{k}{i}" for i in range(1, 6) for k in ("class", "score")]
    rows = [[path, *(x for name, score in preds for x in (name, f"{score:.4f}"))] for path, preds in results]
    if args.out:
        write_csv(Path(args.out), header, rows)
    else:
        csv.writer(sys.stdout, lineterminator="\n").writerows([header, *rows])
    return 0


def cmd_export(args) -> int:
    bar = ProgressBar()
    with _open(args.project) as project:
        n = project.export(args.out, args.format, progress=bar)
    bar.close()
    print(f"exported {n} images to {args.out} ({args.format})")
    return 0


def cmd_gui(args) -> int:
    from artannot.gui.app import run_gui

    return run_gui(getattr(args, "project", None))


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree for every command."""
    p = argparse.ArgumentParser(prog="artannot", description="Curate art collections and train models on them.")
    p.add_argument("--version", action="version", version=f"artannot {__version__}")
    sub = p.add_subparsers(dest="command")

    s = sub.add_parser("init", help="create an empty project file")
    s.add_argument("project")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("import", help="add a folder of images to a project")
    s.add_argument("project")
    s.add_argument("src")
    s.add_argument("--labels-from", default="folder", help="folder | filename | none")
    s.add_argument("--split", default="auto", choices=["train", "test", "auto"])
    s.add_argument("--vocabulary", help="class names for --labels-from filename, one per line")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("train", help="train a model on the curated labels")
    s.add_argument("project")
    s.add_argument("--method", default="svm")
    s.add_argument("--backbone", default="efficientnet_lite0")
    s.add_argument("--epochs", type=int)
    s.add_argument("--device", default="auto")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="top-1/top-5 of a model on a split")
    s.add_argument("project")
    s.add_argument("--model", type=int)
    s.add_argument("--split", default="test", choices=["train", "val", "test"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("predict", help="top-5 predictions as CSV, for the project or a folder")
    s.add_argument("project")
    s.add_argument("src", nargs="?")
    s.add_argument("--out")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("export", help="write the curated set or predictions")
    s.add_argument("project")
    s.add_argument("out")
    s.add_argument("--format", required=True, choices=["imagefolder", "csv", "predictions"])
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("gui", help="open the app (the default)")
    s.add_argument("project", nargs="?")
    s.set_defaults(func=cmd_gui)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run a command; errors become one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    if args.command is None:
        return cmd_gui(args)
    try:
        return args.func(args)
    except ArtAnnotError as exc:
        print(f"artannot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("artannot: interrupted; everything committed so far is kept", file=sys.stderr)
        return 130
