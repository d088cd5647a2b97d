"""Command-line front end over the same services the GUI uses (the contract in DESIGN.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from artannot import __version__
from artannot.errors import ArtAnnotError
from artannot.ml import tasks


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
    bar = ProgressBar()
    with _open(args.project) as project:
        report = project.import_folder(args.src, labels_from=args.labels_from, split=args.split,
                                       vocabulary=args.vocabulary, progress=bar, thumbnails=not args.no_thumbnails)
    bar.close()
    for line in report.notes():
        print(line, file=sys.stderr)
    print(report.summary())
    return 0


def train_options(args) -> dict:
    """The method options a `train` command line sets (--option KEY=VALUE values are read as JSON if they can be)."""
    from artannot.ml.task import parse_options

    options = parse_options(args.option or [])
    named = {"intermediate": args.intermediate, "models": args.models, "mapping": args.mapping,
             "budget": args.budget, "batch_size": args.batch_size, "image_size": args.image_size,
             "labels": args.labels}
    options.update({k: v for k, v in named.items() if v is not None})
    if getattr(args, "finetune", False):  # tags: fine-tune the network on the tags (with --intermediate: double)
        options["finetune"] = True
    if args.lr is not None:  # the pretrained layers' LR: adaptive calls it low_lr (its new layers use high_lr)
        options["low_lr" if args.method == "adaptive" else "lr"] = args.lr
    return options


def cmd_train(args) -> int:
    bar = ProgressBar(enabled=None if not args.json else False)
    with _open(args.project) as project:
        result = project.train(method=args.method, backbone=args.backbone, epochs=args.epochs, device=args.device,
                               then_svm=args.then_svm, options=train_options(args), augment=args.augment,
                               progress=bar)
    bar.close()
    if args.json:
        print(json.dumps({"model": result.model_id, "method": result.method, "metrics": result.metrics,
                          "params": result.params}))
    elif result.params.get("task") == "detect":
        m = result.metrics
        acc = (f"test box mAP {m['map']:.3f} (AP50 {m['map50']:.3f}, AP75 {m['map75']:.3f}) on {m['n']} images"
               if m.get("map") is not None else "no boxes in the test split to measure box mAP on")
        print(f"model {result.model_id}: {acc}; {result.params['summary']} ({result.seconds:.1f}s)")
        if result.params.get("skipped_classes"):
            print(f"not learned (fewer than 2 training boxes): {', '.join(result.params['skipped_classes'])}")
    elif result.method == "tags":
        m = result.metrics
        acc = f"test mAP {m['map']:.1%} on {m['n']} tagged images" if m.get("n") else "no tagged test images"
        print(f"model {result.model_id}: {acc}; {result.params['summary']} ({result.seconds:.1f}s)")
        if result.params.get("skipped_tags"):
            print(f"not learned (fewer than 2 tagged training images, or on every one): "
                  f"{', '.join(result.params['skipped_tags'])}")
    else:
        m = result.metrics
        acc = f"test top-1 {m['top1']:.1%}, top-5 {m['top5']:.1%} on {m['n']} images" if m.get("n") else "no test split"
        print(f"model {result.model_id}: {acc}; {result.params.get('summary', result.method)} ({result.seconds:.1f}s)")
        est = m.get("estimate") or {}
        if est.get("top1") is not None:
            print(f"estimate ({est['kind']}, data the choice never saw for nested cv): top-1 {est['top1']:.1%}"
                  f" ± {est['std']:.1%} over {len(est['folds'])} folds")
        if "auto" in result.params:
            print(f"auto chose {result.params['auto']['reason']}")
    return 0


def cmd_classes(args) -> int:
    from artannot.store import classes as class_store

    with _open(args.project) as project:
        conn = project.conn
        by_name = {c.name: c.id for c in class_store.visible_classes(conn)}
        for name, negative in [(n, True) for n in args.negative or []] + [(n, False) for n in args.ordinary or []]:
            if name not in by_name:
                raise ArtAnnotError(f"no class named {name!r} in this project")
            class_store.set_negative(conn, by_name[name], negative)
        negative_ids = class_store.negative_class_ids(conn)
        rows = [{"id": c.id, "name": c.name, "images": c.count, "key": c.hotkey, "negative": c.id in negative_ids}
                for c in class_store.visible_classes(conn)]
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        print(f"{r['name']:<32} {r['images']:>7} images  key {r['key'] or '-':<3}"
              + ("  negative (never a guess)" if r["negative"] else ""))
    return 0


def cmd_models(args) -> int:
    with _open(args.project) as project:
        if args.activate is not None or args.delete is not None:
            from artannot.store import models as model_store

            if args.delete is not None:
                removed = model_store.delete_model(project.conn, project.cache_dir, args.delete)
                print(f"deleted model {args.delete} and {len(removed)} of its files")
            if args.activate is not None:
                model_store.set_active_model(project.conn, None if args.activate == 0 else args.activate)
                print(f"active model: {model_store.active_model_id(project.conn)}"
                      + (" (the best by honest estimate)" if args.activate == 0 else ""))
            return 0
        models = project.models()
    if args.json:
        print(json.dumps(models))
        return 0
    if not models:
        print("no trained model yet: run `artannot train` first")
        return 0
    print("* = the active model (its predictions, suspects and marks are what the grid shows);"
          " estimate = top-1 on data its choice never saw (nested cv) or its own cv")

    def pct(v) -> str:
        return f"{v:6.1%}" if isinstance(v, (int, float)) else "     -"

    def estimate(m) -> str:
        if m.get("estimate") is None:
            return "         -     "
        return f"{m['estimate']:6.1%} ± {m['estimate_std'] or 0:4.1%}"[:15].ljust(15)

    print(f"   {'id':>4}  {'method':<20} {'backbone':<20} {'estimate ± sd':<15} {'top-1':>6} {'top-5':>6} {'F1':>6}"
          f" {'mAP':>6} {'n':>5} {'epochs':>6} {'time':>7}  created")
    for m in models:
        method = m["method"] + (f" ({m['chosen']})" if m.get("chosen") else "")
        secs = f"{m['seconds']:6.0f}s" if m.get("seconds") is not None else "      -"
        mark = " * " if m.get("active") else "   "
        print(f"{mark}{m['id']:>4}  {method:<20} {m['backbone']:<20} {estimate(m)} {pct(m['top1'])} {pct(m['top5'])}"
              f" {pct(m['macro_f1'])} {pct(m.get('map'))} {m['n'] or 0:>5} {m['epochs'] or '-':>6} {secs}"
              f"  {m['created_at'][:16]}")
    return 0


def cmd_evaluate(args) -> int:
    with _open(args.project) as project:
        model = args.model
        if args.boxes or (model is None and project.active_model_id() is None
                          and project.detector_model_id() is not None):  # only detectors: evaluate one
            model = project.detector(model)["id"]  # the detector the project would propose with
        result = project.evaluate(model, split=args.split)
    if args.json:
        print(json.dumps(result))
        return 0
    if "map50" in result:
        def ap(v) -> str:
            return f"{v:.3f}" if v is not None else "-"

        print(f"detector {result['model']} on {result['n']} {args.split} images: box mAP {ap(result['map'])}"
              f"  AP50 {ap(result['map50'])}  AP75 {ap(result['map75'])}")
        width = max((len(k) for k in result["per_class"]), default=5)
        for name, m in result["per_class"].items():
            print(f"  {name:<{width}}  AP {ap(m['ap'])}  AP50 {ap(m['ap50'])}  n={m['n']}")
        return 0
    if result.get("method") == "tags":
        print(f"tag model {result['model']} on {result['n']} tagged {args.split} images: mAP {result['map']:.1%}")
        width = max((len(k) for k in result["per_tag"]), default=5)
        for name, m in result["per_tag"].items():
            ap = f"{m['ap']:6.1%}" if m["ap"] is not None else "     -"  # no positive in the split: no AP
            print(f"  {name:<{width}}  AP {ap}  precision {m['precision']:6.1%}  recall {m['recall']:6.1%}"
                  f"  n={m['n']}")
        return 0
    print(f"model {result['model']} on {result['n']} {args.split} images: "
          f"top-1 {result['top1']:.1%}  top-5 {result['top5']:.1%}")
    width = max((len(k) for k in result["per_class"]), default=5)
    for name, m in result["per_class"].items():
        print(f"  {name:<{width}}  top-1 {m['top1']:6.1%}  top-5 {m['top5']:6.1%}  n={m['n']}")
    return 0


def _image_ids(project, refs: list[str]) -> list[int]:
    """Project image ids from ids or paths (absolute, or as the project stores them under their folder)."""
    rows = project.images()
    by_path = {str(Path(r.path).resolve()): r.id for r in rows}
    ids, known = [], {r.id for r in rows}
    for ref in refs:
        if ref.isdigit() and int(ref) in known:
            ids.append(int(ref))
            continue
        hit = by_path.get(str(Path(ref).expanduser().resolve()))
        if hit is None:
            raise ArtAnnotError(f"{ref} is neither an image id nor the path of an image in this project")
        ids.append(hit)
    return ids


def cmd_tag(args) -> int:
    if not args.add and not args.remove:
        raise ArtAnnotError("say what to do: --add TAG[,TAG] and/or --remove TAG[,TAG]")
    split = [t for t in (args.add or "").split(",") if t.strip()], [t for t in (args.remove or "").split(",") if t.strip()]
    with _open(args.project) as project:
        ids = _image_ids(project, args.images)
        changed = [project.add_tags(ids, split[0]) if split[0] else None,
                   project.remove_tags(ids, split[1]) if split[1] else None]
    n, s = len(ids), "s" if len(ids) != 1 else ""
    print(f"changed the tags of {n} image{s} (Ctrl+Z in the app undoes it)" if any(changed)
          else f"nothing to change on {n} image{s}")
    return 0


def cmd_tags(args) -> int:
    from artannot.store import tags as tag_store

    with _open(args.project) as project:
        if args.from_filenames:
            event, n = project.tags_from_filenames(args.from_filenames)
            print(f"{n} image{'s' if n != 1 else ''} matched the vocabulary; "
                  + ("tags set (Ctrl+Z in the app undoes it)" if event is not None else "nothing to change"))
            return 0
        if args.rename or args.delete:
            if args.image is not None:
                raise ArtAnnotError("--rename and --delete act on every image: leave out IMAGE")
            event = (project.rename_tag(*args.rename) if args.rename else project.delete_tag(args.delete))
            print("done (Ctrl+Z in the app undoes it)" if event is not None else "nothing to change")
            return 0
        if args.image is None:
            counts = project.tags()
            if args.json:
                print(json.dumps([{"tag": t, "images": n} for t, n in counts]))
            elif not counts:
                print("no tags yet: tag images in the app, with `artannot tag`, or import a CSV with a tags column")
            else:
                width = max(len(t) for t, _ in counts)
                print("\n".join(f"{t:<{width}}  {n}" for t, n in counts))
            return 0
        image_id = _image_ids(project, [args.image])[0]
        tags = project.image_tags([image_id]).get(image_id, [])
        sources = tag_store.tag_sources_for(project.conn, image_id)
        guesses = project.tag_suggestions(image_id, model_id=args.model)
    if args.json:
        print(json.dumps({"image": image_id, "tags": [{"tag": t, "source": sources[t]} for t in tags],
                          "model": [{"tag": t, "score": s, "over_threshold": o} for t, s, o in guesses]}))
        return 0
    print(f"image {image_id}: {', '.join(f'{t} ({sources[t]})' for t in tags) or 'no tags'}")
    if guesses:
        print("tag model: " + ", ".join(f"{t} {s:.2f}{'*' if o else ''}" for t, s, o in guesses[:12])
              + "   (* over the tag's threshold)")
    return 0


def cmd_predict(args) -> int:
    import csv

    from artannot.data.export import prediction_table, write_csv

    bar = ProgressBar()
    with _open(args.project) as project:
        results = project.predict_source(args.src or None, progress=bar)
    bar.close()
    header, rows = prediction_table(results)
    if args.out:
        write_csv(Path(args.out), header, rows)
    else:
        from artannot.data.formats import csv_rows

        csv.writer(sys.stdout, lineterminator="\n").writerows(csv_rows([header, *rows]))  # formulas neutralised
    return 0


def cmd_detect(args) -> int:
    from artannot.data.importer import scan_images

    bar = ProgressBar()
    with _open(args.project) as project:
        paths = None
        if args.src:
            src = Path(args.src)
            paths = [src] if src.is_file() else list(scan_images(src)) if src.is_dir() else None
            if paths is None:
                raise ArtAnnotError(f"{src} is neither an image nor a folder")
        results = project.detect_files(paths, model_id=args.model, threshold=args.threshold, device=args.device,
                                       progress=bar)
    bar.close()
    text = json.dumps(results, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        print(f"{len(results)} detections on {len({r['image'] for r in results})} images -> {args.out}")
    else:
        print(text)
    return 0


def cmd_propose(args) -> int:
    bar = ProgressBar(enabled=None if not args.json else False)
    with _open(args.project) as project:
        ids = _image_ids(project, args.images) if args.images else (
            [r.id for r in project.images()] if args.all else None)
        out = project.propose_boxes(ids, model_id=args.model, min_score=args.threshold, device=args.device,
                                    progress=bar)
    bar.close()
    if args.json:
        print(json.dumps(out))
    else:
        print(f"detector {out['model']}: {out['proposals']} proposals on {out['images']} images to review")
    return 0


def cmd_suspects(args) -> int:
    with _open(args.project) as project:
        found = project.suspects(args.top, model_id=args.model)
    if args.json:
        print(json.dumps([s.as_dict() for s in found]))
        return 0
    if not found:
        print("no labelled image was scored by this model (train on labelled images first)")
        return 0
    print(f"{'rank':>5} {'score':>5}  {'label':<16} {'model says':<16} path")
    for s in found:
        mark = "!" if s.flagged else " "
        note = "" if s.reliable else "  (scored by a model trained on it)"
        print(f"{s.rank:>5} {s.score:5.2f}{mark} {s.label or '-':<16} {s.suggested or '-':<16} {s.path}{note}")
    return 0


def cmd_saliency(args) -> int:
    import numpy as np
    from PIL import Image

    from artannot.data.images import load_image
    from artannot.ml.saliency import overlay

    if not args.out.lower().endswith(".png"):
        raise ArtAnnotError(f"--out must name a .png file, not {args.out}")
    image = Path(args.image)
    target: int | Path = int(args.image) if args.image.isdigit() and not image.exists() else image
    with _open(args.project) as project:
        result = project.saliency(target, method=args.method, model_id=args.model, class_name=args.class_name,
                                  device=args.device)
        path = target if isinstance(target, Path) else _image_path(project, target)
    original = load_image(path, max_side=1024)  # a huge scan shrinks on load
    original.thumbnail((1024, 1024))
    heat = Image.fromarray(result.heatmap, mode="F").resize(original.size, Image.Resampling.BILINEAR)
    picture = overlay(original, np.asarray(heat), args.alpha, args.colormap)
    _save_png(picture, args.out)
    top = ", ".join(f"{name} {p:.0%}" for name, p in result.top[:3])
    print(f"{result.title}; top: {top} -> {args.out}")
    return 0


def _image_path(project, image_id: int) -> Path:
    from artannot.store import repo

    return repo.image_path(project.conn, image_id)


def _save_png(picture, out: str) -> None:
    import io

    from artannot.store.files import atomic_write_bytes

    if not out.lower().endswith(".png"):
        raise ArtAnnotError(f"--out must name a .png file, not {out}")
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    atomic_write_bytes(Path(out), buf.getvalue())


def cmd_embed(args) -> int:
    from artannot.ml.embedding import draw_map
    from artannot.store import repo

    if not args.out.lower().endswith((".png", ".csv")):
        raise ArtAnnotError(f"--out must name a .png or .csv file, not {args.out}")
    bar = ProgressBar()
    with _open(args.project) as project:
        emb = project.embedding(model_id=args.model, progress=bar)
        rows = {r.id: r for r in project.images()}
        classes = project.classes()
        names = repo.class_names(project.conn)
    bar.close()
    colour = {c.id: c.color for c in classes}
    picked = [rows[i] for i in emb.image_ids.tolist()]
    if args.out.lower().endswith(".csv"):
        from artannot.data.export import write_csv

        write_csv(Path(args.out), ["image_id", "x", "y", "label", "prediction", "path"],
                  [[r.id, f"{x:.5f}", f"{y:.5f}", names.get(r.class_id, ""), names.get(r.pred_class_id, ""), r.path]
                   for r, (x, y) in zip(picked, emb.xy.tolist(), strict=True)])
    else:
        key = "pred_class_id" if args.color == "prediction" else "class_id"
        dots = [colour.get(getattr(r, key), "#b0bec5") for r in picked]
        legend = [(c.name, c.color) for c in classes] + [("unlabelled", "#b0bec5")]
        title = f"t-SNE of {len(picked):,} images, coloured by {args.color} - {emb.description}"
        _save_png(draw_map(emb.xy, dots, legend, title=title), args.out)
    source = "cache" if emb.cached else emb.engine
    print(f"mapped {len(picked):,} images ({source}, {emb.seconds:.1f}s) -> {args.out}")
    return 0


def cmd_export(args) -> int:
    if args.format == "onnx":
        with _open(args.project) as project:
            onnx_path, json_path = project.export_onnx(args.out, model_id=args.model)
        print(f"exported model to {onnx_path} (sidecar {json_path.name})")
        return 0
    bar = ProgressBar()
    with _open(args.project) as project:
        n = project.export(args.out, args.format, progress=bar)
    bar.close()
    print(f"exported {n} images to {args.out} ({args.format})")
    return 0


def cmd_demo(args) -> int:
    from artannot.demo import write_box_demo, write_demo

    bar = ProgressBar()
    path = (write_box_demo if args.boxes else write_demo)(args.dir, progress=bar)
    bar.close()
    what = "the bundled box demo: instruments to detect" if args.boxes else "the bundled demo collection"
    print(f"created {path} ({what}); open it with: artannot gui {path}")
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
    s.add_argument("--labels-from", default="folder",
                   help="folder | filename | none | csv:FILE | coco:FILE | voc:DIR | yolo:DIR | labelme:DIR")
    s.add_argument("--split", default="auto", choices=["train", "test", "auto"])
    s.add_argument("--vocabulary", help="class names for --labels-from filename, one per line")
    s.add_argument("--no-thumbnails", action="store_true",
                   help="do not make the grid's thumbnails during the import (the grid makes them when shown)")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("train", help="train a model on the curated labels")
    s.add_argument("project")
    s.add_argument("--method", default="svm", metavar="|".join(tasks.methods()),
                   help="; ".join(f"{m}: {d}" for m, d in tasks.methods().items())
                        + " (--option from_model=ID for a fine-tuned network's features)")
    s.add_argument("--backbone", default="efficientnet_lite0")
    s.add_argument("--epochs", type=int)
    s.add_argument("--device", default="auto")
    s.add_argument("--then-svm", action="store_true", help="after training a network, an SVM on its features")
    s.add_argument("--intermediate", metavar="PROJECT", help="double: the project to fine-tune on first")
    s.add_argument("--models", metavar="ID,ID", help="ensemble: the models to average")
    s.add_argument("--mapping", metavar="FILE", help="baseline: project class -> ImageNet categories (JSON/CSV)")
    s.add_argument("--budget", type=float, metavar="SECONDS", help="auto: time budget (default 120)")
    s.add_argument("--labels", choices=("all", "curated"),
                   help="which train labels the classifier stage uses: every trainable label, or only human-"
                        "confirmed ones (adaptive --then-svm and auto default to curated when there are enough)")
    s.add_argument("--lr", type=float, help="learning rate of the pretrained layers")
    s.add_argument("--batch-size", type=int)
    s.add_argument("--image-size", type=int, help="train and predict at this input side (default: the backbone's)")
    s.add_argument("--finetune", action="store_true",
                   help="tags: fine-tune the network on the tags with a sigmoid head (with --intermediate: double"
                        " fine-tuning) instead of a head on frozen features")
    s.add_argument("--augment", metavar="style[:K]",
                   help="style-transfer augmentation: K (default 1) copies of each training image in styles of"
                        " the collection (DBSCAN on Gram-matrix style features), cached, never imported;"
                        " network and detector methods")
    s.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="any method setting, e.g. high_lr=0.01, low_groups=2, freeze=4, schedule=step, patience=5")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("classes", help="the project's classes with counts; mark one negative (e.g. 'no instrument':"
                                       " learnt, never shown as a guess)")
    s.add_argument("project")
    s.add_argument("--negative", action="append", metavar="CLASS", help="mark this class negative (undoable)")
    s.add_argument("--ordinary", action="append", metavar="CLASS", help="make a negative class ordinary again")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_classes)

    s = sub.add_parser("models", help="the project's trained models side by side; make one active or delete one")
    s.add_argument("project")
    s.add_argument("--json", action="store_true")
    s.add_argument("--activate", type=int, metavar="ID",
                   help="make this model the active one (0: back to the best by honest estimate)")
    s.add_argument("--delete", type=int, metavar="ID", help="delete this model, its predictions and its files")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("evaluate", help="top-1/top-5 of a model on a split (--boxes: a detector's box mAP)")
    s.add_argument("project")
    s.add_argument("--model", type=int)
    s.add_argument("--boxes", action="store_true",
                   help="evaluate a detector (default: the best by box mAP) on the split's boxes with COCOeval")
    s.add_argument("--split", default="test", choices=["train", "val", "test"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("detect", help="a detector's boxes on the project's images or a folder, as COCO results")
    s.add_argument("project")
    s.add_argument("src", nargs="?", help="an image or folder (default: every project image)")
    s.add_argument("--out", help="write the JSON list here (default: stdout)")
    s.add_argument("--threshold", type=float, default=0.3, help="smallest score kept (default 0.3)")
    s.add_argument("--model", type=int, help="the detector (default: the best by box mAP)")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_detect)

    s = sub.add_parser("propose", help="store a detector's boxes as proposals to review (default: on every"
                                       " image without boxes)")
    s.add_argument("project")
    s.add_argument("images", nargs="*", help="image ids or paths (default: every image without boxes)")
    s.add_argument("--all", action="store_true", help="every image, boxed ones too (feeds box suspects)")
    s.add_argument("--threshold", type=float, default=0.05, help="smallest score stored (default 0.05)")
    s.add_argument("--model", type=int, help="the detector (default: the best by box mAP)")
    s.add_argument("--device", default="auto")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_propose)

    s = sub.add_parser("tag", help="add or remove tags on images (one undoable edit each)")
    s.add_argument("project")
    s.add_argument("images", nargs="+", metavar="IMAGE", help="image ids or paths")
    s.add_argument("--add", metavar="TAG[,TAG]")
    s.add_argument("--remove", metavar="TAG[,TAG]")
    s.set_defaults(func=cmd_tag)

    s = sub.add_parser("tags", help="the project's tags with counts, or one image's tags and tag-model scores;"
                                    " --rename/--delete a tag everywhere")
    s.add_argument("project")
    s.add_argument("image", nargs="?", help="an image id or path")
    s.add_argument("--model", type=int, help="tag model id (default: the newest)")
    s.add_argument("--rename", nargs=2, metavar=("OLD", "NEW"),
                   help="rename a tag on every image (to an existing tag's name: merge into it)")
    s.add_argument("--delete", metavar="TAG", help="take a tag off every image")
    s.add_argument("--from-filenames", metavar="VOCABULARY",
                   help="noisy tags from file-name tokens matched to a vocabulary file (`tag: synonym, ...` lines)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_tags)

    s = sub.add_parser("predict", help="top-5 predictions as CSV, for the project or a folder")
    s.add_argument("project")
    s.add_argument("src", nargs="?")
    s.add_argument("--out")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("suspects", help="images whose label is most likely wrong, by the latest model")
    s.add_argument("project")
    s.add_argument("--top", type=int, default=50, help="how many to list (default 50)")
    s.add_argument("--model", type=int, help="model id (default: the latest)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_suspects)

    s = sub.add_parser("export", help="write the curated set or predictions")
    s.add_argument("project")
    s.add_argument("out")
    s.add_argument("--format", required=True, choices=["imagefolder", "csv", "coco", "voc", "yolo", "labelme",
                                                       "predictions", "predictions-json", "onnx"])
    s.add_argument("--model", type=int, help="onnx: the model to export (default: the newest)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("saliency", help="where a model looks in one image (Grad-CAM or VisualBackProp), as a PNG")
    s.add_argument("project")
    s.add_argument("image", help="an image file, or the id of a project image")
    s.add_argument("--out", required=True, help="PNG file to write")
    s.add_argument("--method", default="gradcam", choices=["gradcam", "vbp"])
    s.add_argument("--model", type=int, help="stored model id (default: the newest; none trained: ImageNet)")
    s.add_argument("--class", dest="class_name", help="class to explain (default: the predicted one)")
    s.add_argument("--alpha", type=float, default=0.5, help="opacity of the heat map, 0..1")
    s.add_argument("--colormap", default="jet", choices=["jet", "inferno", "viridis", "grey"])
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_saliency)

    s = sub.add_parser("embed", help="t-SNE map of the collection in a model's feature space, as PNG or CSV")
    s.add_argument("project")
    s.add_argument("--out", required=True, help="PNG picture or CSV (image_id, x, y, label, prediction, path)")
    s.add_argument("--model", type=int, help="stored model id (default: the newest; none trained: ImageNet)")
    s.add_argument("--color", default="label", choices=["label", "prediction"])
    s.set_defaults(func=cmd_embed)

    from artannot.cli_insights import add_commands as add_insight_commands

    add_insight_commands(sub)  # analysis, similar, morph

    s = sub.add_parser("demo", help="write DIR/demo.artannot: the bundled demo collection, labelled and tagged")
    s.add_argument("dir")
    s.add_argument("--boxes", action="store_true",
                   help="write DIR/boxes-demo.artannot instead: scenes with musical instruments boxed, to"
                        " train --method detector or patches on")
    s.set_defaults(func=cmd_demo)

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
