"""The insight commands of the CLI: `analysis` (what fine-tuning changed, Gonthier et al.), `similar` and `morph`
(Illustration2Vec's "more like this" and semantic morphing), over the same functions the app's views use."""

from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path

from artannot.errors import ArtAnnotError


def _project(path: str):
    from artannot.project import Project

    return Project(path)


def _quiet_bar(enabled: bool):
    from artannot.cli import ProgressBar

    return ProgressBar(enabled=None if enabled else False)


def image_ref(project, ref: str) -> int:
    """A project image id from an id or a path (absolute, or relative to the working folder)."""
    rows = project.images()
    if ref.isdigit() and int(ref) in {r.id for r in rows}:
        return int(ref)
    want = str(Path(ref).expanduser().resolve())
    for r in rows:
        if str(Path(r.path).resolve()) == want:
            return int(r.id)
    raise ArtAnnotError(f"{ref} is neither an image id nor the path of an image in this project")


def _write_png(picture, out: str) -> None:
    from artannot.store.files import atomic_write_bytes

    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    atomic_write_bytes(Path(out), buf.getvalue())


def _f(v, fmt: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def cmd_analysis(args) -> int:
    from artannot.ml.analysis_report import compare, write_plots

    bar = _quiet_bar(not args.json)
    with _project(args.project) as project:
        report = compare(project.conn, project.cache_dir, args.model, args.against, split=args.split, top=args.top,
                         max_images=args.max_images, progress=bar)
    bar.close()
    if args.out:
        report["plots"] = [str(p) for p in write_plots(report, args.out)]
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['a']} vs {report['b']} on {report['n_images']} {report['split']}"
          f" images; overlap and entropy over each channel's top {report['top']} images")
    print(f"  {'layer':<12} {'CKA':>6} {'overlap':>8} {'entropy A':>10} {'entropy B':>10} {'kernel l2':>10}"
          f" {'relative':>9}")
    for r in report["per_layer"]:
        print(f"  {r['layer']:<12} {_f(r['cka']):>6} {_f(r['overlap']):>8} {_f(r['entropy_a']):>10}"
              f" {_f(r['entropy_b']):>10} {_f(r['kernel_l2'], '.4g'):>10} {_f(r['kernel_relative']):>9}")
    print(f"mean CKA {_f(report['mean_cka'])}; mean l2 distance between kernels {_f(report['mean_kernel_l2'], '.4g')}"
          f" ({report['kernel_definition']})")
    if report.get("note"):
        print(f"note: {report['note']}")
    if args.out:
        print(f"plots -> {args.out}")
    return 0


def cmd_similar(args) -> int:
    from artannot.ml.embedding import nearest, neighbourhood

    bar = _quiet_bar(not args.json)
    with _project(args.project) as project:
        image_id = image_ref(project, args.image)
        hood = neighbourhood(project.conn, project.cache_dir, hamming=args.hamming, model_id=args.model,
                             progress=bar)
        found = nearest(hood, image_id, args.k)
    bar.close()
    if args.json:
        print(json.dumps({"image": image_id, "metric": hood.metric, "codes": hood.codes.method if hood.codes else None,
                          "source": hood.description, "neighbours": found}))
        return 0
    print(f"{len(found)} images nearest to image {image_id} by {hood.metric} · {hood.description}")
    for n in found:
        how = f"{n['distance']:>4} bits" if "distance" in n else f"cos {n['similarity']:.3f}"
        print(f"  {n['image']:>6}  {how}  {n['path']}")
    return 0


def cmd_morph(args) -> int:
    from artannot.ml.embedding import draw_strip, morph, neighbourhood

    if args.out and not args.out.lower().endswith(".png"):
        raise ArtAnnotError(f"--out must name a .png file, not {args.out}")
    if not args.out and not args.json:
        raise ArtAnnotError("say where the strip goes: --out strip.png, or --json for the path")
    bar = _quiet_bar(not args.json)
    with _project(args.project) as project:
        a, b = image_ref(project, args.image_a), image_ref(project, args.image_b)
        hood = neighbourhood(project.conn, project.cache_dir, hamming=args.hamming, model_id=args.model,
                             progress=bar)
        path, k = morph(hood, a, b, args.k, args.steps)
    bar.close()
    files = [hood.paths[i] for i in path]
    if args.out:
        captions = ["start"] + [f"step {n}" for n in range(1, len(path) - 1)] + (["end"] if len(path) > 1 else [])
        captions = [f"{c}\n{Path(f).name}" for c, f in zip(captions, files, strict=True)]
        title = f"Morphing on the top-{k} {hood.metric} neighbour graph · {hood.description}"
        _write_png(draw_strip(files, captions, title=title), args.out)
    if args.json:
        print(json.dumps({"start": a, "end": b, "metric": hood.metric, "k": k, "source": hood.description,
                          "path": [{"image": i, "path": f} for i, f in zip(path, files, strict=True)],
                          "out": args.out}))
    else:
        print(f"{len(path) - 1} steps from image {a} to image {b} on the top-{k} {hood.metric} graph -> {args.out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register analysis, similar and morph on the CLI's subparsers."""
    s = sub.add_parser("analysis", help="what fine-tuning changed in a network, layer by layer on the test split:"
                                        " CKA, top-100 overlap, class entropy, kernel l2 (Gonthier et al.)")
    s.add_argument("project")
    s.add_argument("--model", type=int, help="the fine-tuned model (default: the newest with a network)")
    s.add_argument("--against", default="imagenet", metavar="ID|imagenet|init",
                   help="compare with another model, the pretrained backbone (default) or the model's own"
                        " initialization")
    s.add_argument("--split", default="test", choices=["train", "val", "test"])
    s.add_argument("--top", type=int, default=100, help="maximally activating images per channel (default 100)")
    s.add_argument("--max-images", type=int, help="at most this many images of the split (a seeded sample)")
    s.add_argument("--out", metavar="DIR", help="write cka.png, entropy.png, kernels.png and analysis.json here")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_analysis)

    s = sub.add_parser("similar", help="the images nearest to one: cosine on a model's features, or Hamming on"
                                       " hash codes (a tag model's sigmoid outputs >= 0.5)")
    s.add_argument("project")
    s.add_argument("image", help="an image id or path")
    s.add_argument("--k", type=int, default=10, help="how many neighbours (default 10)")
    s.add_argument("--hamming", action="store_true", help="Hamming distance on hash codes instead of cosine")
    s.add_argument("--model", type=int, help="model whose features (or tag codes) to use (default: ImageNet"
                                             " features; the newest tag model's codes)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_similar)

    s = sub.add_parser("morph", help="semantic morphing: the shortest path of similar images between two")
    s.add_argument("project")
    s.add_argument("image_a", metavar="IMAGE_A")
    s.add_argument("image_b", metavar="IMAGE_B")
    s.add_argument("--steps", type=int, help="at most this many images between the two (evenly spaced on the path)")
    s.add_argument("--k", type=int, default=6, help="neighbours per image in the graph (default 6)")
    s.add_argument("--hamming", action="store_true", help="the Hamming neighbour graph of hash codes")
    s.add_argument("--model", type=int, help="model whose features (or tag codes) to use")
    s.add_argument("--out", help="PNG strip to write")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_morph)

