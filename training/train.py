"""Reproduce a published experiment on your own project: run a recipe's trainings and compare them.

    python training/train.py training/configs/lagunas_garces.json my.artannot --mapping my_imagenet_map.json

A recipe (JSON) lists runs; each is an `artannot train` (same code: Project.train) with a method, backbone,
epochs and options. Option values starting with "@" refer to the command line (@mapping, @intermediate)
or to the model an earlier run of the recipe produced (@optimized -> its model id). A run with
"backbones": [...] repeats for each backbone whose weights are installed. At the end the runs are listed
side by side with the paper's figures and whether the paper's expected ordering holds on your data.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from artannot.cli import ProgressBar  # noqa: E402
from artannot.errors import ArtAnnotError  # noqa: E402
from artannot.ml.backbones import weights_available  # noqa: E402
from artannot.project import Project  # noqa: E402


def expand(runs: list[dict], default_backbone: str, override: str | None) -> tuple[list[dict], list[str]]:
    """One entry per (run, backbone); runs over backbones without weights are listed as skipped."""
    out, skipped = [], []
    for run in runs:
        backbones = [override] if override else run.get("backbones") or [run.get("backbone", default_backbone)]
        for b in backbones:
            if not weights_available(b):
                skipped.append(f"{run['name']} on {b}: weights not installed")
                continue
            name = run["name"] if len(backbones) == 1 else f"{run['name']}/{b}"
            out.append({**run, "name": name, "base": run["name"], "backbone": b})
    return out, skipped


def resolve(value, refs: dict[str, str | None], done: dict[str, int]):
    """Replace "@name" by a command-line value or an earlier run's model id (None when unavailable)."""
    if isinstance(value, list):
        return [resolve(v, refs, done) for v in value]
    if not (isinstance(value, str) and value.startswith("@")):
        return value
    key = value[1:]
    if key in refs:
        return refs[key]
    return done.get(key)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe", help="a JSON recipe from training/configs/")
    ap.add_argument("project")
    ap.add_argument("--backbone", help="use this backbone for every run (e.g. when VGG19 is not installed)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, help="override every run's epochs (quick trials)")
    ap.add_argument("--mapping", help="ImageNet mapping file for baseline runs")
    ap.add_argument("--intermediate", help="intermediate project for double fine-tuning runs")
    ap.add_argument("--only", nargs="*", help="run only these run names")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    recipe = json.loads(Path(args.recipe).read_text(encoding="utf-8"))
    runs, skipped = expand(recipe["runs"], recipe.get("backbone", "efficientnet_lite0"), args.backbone)
    refs = {"mapping": args.mapping, "intermediate": args.intermediate}
    done: dict[str, int] = {}
    rows = []
    with Project(args.project) as project:
        for run in runs:
            if args.only and run["name"] not in args.only and run["base"] not in args.only:
                continue
            options = {k: resolve(v, refs, done) for k, v in run.get("options", {}).items()}
            missing = [k for k, v in options.items() if v is None or (isinstance(v, list) and None in v)]
            if missing:
                skipped.append(f"{run['name']}: needs {', '.join(missing)}")
                continue
            print(f"== {run['name']}: {run['method']} on {run['backbone']}", file=sys.stderr)
            bar = ProgressBar(enabled=None if not args.json else False)
            t = time.perf_counter()
            try:
                result = project.train(method=run["method"], backbone=run["backbone"],
                                       epochs=args.epochs or run.get("epochs"), device=args.device,
                                       then_svm=run.get("then_svm", False), options=options, progress=bar)
            except ArtAnnotError as exc:
                bar.close()
                skipped.append(f"{run['name']}: {exc}")
                continue
            bar.close()
            done[run["name"]] = result.model_id
            done.setdefault(run["base"], result.model_id)  # "@base" means its first backbone's model
            m = result.metrics
            rows.append({"run": run["name"], "method": run["method"], "backbone": run["backbone"],
                         "model": result.model_id, "top1": m.get("top1"), "top5": m.get("top5"),
                         "macro_f1": m.get("macro_f1"), "map": m.get("map"), "seconds": round(time.perf_counter() - t, 1),
                         "paper": run.get("paper"), "summary": result.params.get("summary")})
    order = [r for r in recipe.get("expected_order", []) if any(row["run"] == r for row in rows)]
    top1 = {row["run"]: row["top1"] or 0.0 for row in rows}
    holds = all(top1[a] <= top1[b] for a, b in zip(order, order[1:], strict=False)) if len(order) > 1 else None
    report = {"recipe": recipe.get("name"), "paper": recipe.get("paper"), "runs": rows, "skipped": skipped,
              "expected_order": order, "order_holds": holds}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{recipe.get('name')}: {recipe.get('paper', '')}")
    print(f"{'run':<26} {'model':>5} {'top-1':>7} {'top-5':>7} {'F1':>7} {'mAP':>7} {'paper':>15} {'time':>7}")
    for r in rows:
        paper = r["paper"] or {}
        ref = f"{paper['top1']:.1%}/{paper['top5']:.1%}" if "top1" in paper and "top5" in paper else ""
        tags = f"{r['map']:7.1%}" if r["map"] is not None else f"{'-':>7}"  # tag models: mAP, no top-k
        print(f"{r['run']:<26} {r['model']:>5} {r['top1'] or 0:7.1%} {r['top5'] or 0:7.1%} {r['macro_f1'] or 0:7.1%}"
              f" {tags} {ref:>15} {r['seconds']:6.0f}s")
    for s in skipped:
        print(f"skipped {s}")
    if holds is not None:
        print(f"expected ordering {' < '.join(order)}: {'holds' if holds else 'does not hold'} on this project")
    return 0


if __name__ == "__main__":
    sys.exit(main())
