"""Reproduce a published experiment on your own project: run a recipe's trainings and compare them.

    python training/train.py training/configs/lagunas_garces.json curated.artannot --mapping map.json \
        --noisy noisy.artannot

A recipe (JSON) lists runs; each is an `artannot train` (same code: Project.train) with a method, backbone,
epochs and options. Option values starting with "@" refer to the command line (@mapping, @intermediate,
@noisy) or to the model an earlier run of the recipe produced (@optimized -> its model id; a run made in
another project -> `OTHER.artannot#ID`, which `from_model` accepts). A run with "project": "@noisy" trains in
that other project (the large noisy set a network adapts on); "without_project": "main" runs it in the main
project when the other one is not given, else it is skipped. A run with "backbones": [...] repeats for each
backbone whose weights are installed. At the end the runs are listed side by side with the paper's figures
and the paper's expected ordering is checked per backbone; an expected run that did not run makes the
script fail (exit status 2) with the reason.
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

REFS = ("mapping", "intermediate", "noisy")  # command-line values a recipe may refer to as "@name"
METRICS = ("top1", "top3", "top5", "map")  # what a paper figure may give


def skip(run: dict, reason: str, backbone: str | None = None) -> dict:
    """A run that did not run, and why."""
    return {"run": run["name"], "base": run.get("base", run["name"]), "backbone": backbone or run.get("backbone"),
            "reason": reason}


def expand(runs: list[dict], default_backbone: str, override: str | None) -> tuple[list[dict], list[dict]]:
    """One entry per (run, backbone); runs over backbones without weights are listed as skipped."""
    out, skipped = [], []
    for run in runs:
        backbones = [override] if override else run.get("backbones") or [run.get("backbone", default_backbone)]
        for b in backbones:
            if not weights_available(b):
                skipped.append(skip(run, f"{b} weights not installed", b))
                continue
            name = run["name"] if len(backbones) == 1 else f"{run['name']}/{b}"
            out.append({**run, "name": name, "base": run["name"], "backbone": b})
    return out, skipped


def resolve(value, refs: dict[str, str | None], done: dict[str, int | str], backbone: str | None = None):
    """Replace "@name" by a command-line value or an earlier run's model (None when unavailable).

    For a run repeated over backbones, "@name" means the same backbone's run of that name first.
    """
    if isinstance(value, list):
        return [resolve(v, refs, done, backbone) for v in value]
    if not (isinstance(value, str) and value.startswith("@")):
        return value
    key = value[1:]
    if key in refs:
        return refs[key]
    if backbone is not None and f"{key}/{backbone}" in done:
        return done[f"{key}/{backbone}"]
    return done.get(key)


def paper_figures(paper: dict | None, backbone: str, table: str | None) -> dict:
    """The paper's figures for one run: `paper` may be keyed by table (e.g. material / type), then by backbone."""
    paper = paper or {}
    if table and isinstance(paper.get(table), dict):
        paper = paper[table]
    if isinstance(paper.get(backbone), dict):
        paper = paper[backbone]
    return {k: float(v) for k, v in paper.items() if k in METRICS and isinstance(v, int | float)}


def ordering(expected: list[str], rows: list[dict], skipped: list[dict], only: list[str] | None) -> list[dict]:
    """The paper's expected ordering (ascending top-1) per backbone, with the runs it needs that are missing.

    Runs are matched by their recipe name (a run repeated over backbones is named `name/backbone`). A run
    trained in another project is evaluated on that project's test split, so it is left out of the
    comparison (listed in `elsewhere`), not counted missing.
    """
    wanted = [r for r in expected if not only or r in only]
    backbones = list(dict.fromkeys(row["backbone"] for row in rows if row["base"] in wanted))
    if not backbones and wanted:
        backbones = [None]
    checks = []
    for b in backbones:
        here = {row["base"]: row for row in rows if row["backbone"] == b and row["base"] in wanted}
        compared = [r for r in wanted if r in here and not here[r]["elsewhere"]]
        missing = []
        for r in wanted:
            if r not in here:
                why = [s["reason"] for s in skipped if s["base"] == r and (b is None or s["backbone"] == b)]
                missing.append(f"{r}{f' on {b}' if b else ''} ({why[0] if why else 'not run'})")
        top1 = [here[r]["top1"] or 0.0 for r in compared]
        holds = all(a <= c for a, c in zip(top1, top1[1:], strict=False)) if len(compared) > 1 else None
        checks.append({"backbone": b, "order": compared, "top1": top1, "holds": holds, "missing": missing,
                       "elsewhere": [r for r in wanted if r in here and here[r]["elsewhere"]]})
    return checks


def _pct(value: float | None) -> str:
    return f"{value:.1%}" if value is not None else "-"


def print_report(report: dict) -> None:
    print(f"{report['recipe']}: {report['paper']}")
    if report.get("table"):
        print(f"paper figures: {report['table']}")
    print(f"{'run':<28} {'model':>7} {'top-1':>7} {'paper':>7} {'top-5':>7} {'paper':>7} {'F1':>7} {'mAP':>7}"
          f" {'time':>7}")
    for r in report["runs"]:
        paper = r["paper"]
        model = str(r["model"]) if not r["elsewhere"] else f"{r['model']}*"
        print(f"{r['run']:<28} {model:>7} {_pct(r['top1']):>7} {_pct(paper.get('top1')):>7} {_pct(r['top5']):>7}"
              f" {_pct(paper.get('top5')):>7} {_pct(r['macro_f1']):>7} {_pct(r['map']):>7} {r['seconds']:6.0f}s")
        for key in ("top3", "map"):
            if key in paper:
                print(f"{'':<28} paper {key}: {paper[key]:.1%}")
        if r["elsewhere"]:
            print(f"{'':<28} * trained and evaluated in {r['project']}")
        if r.get("note"):
            print(f"{'':<28} {r['note']}")
    for s in report["skipped"]:
        print(f"skipped {s}")
    for c in report["ordering"]:
        on = f" on {c['backbone']}" if c["backbone"] else ""
        if c["missing"]:
            print(f"ordering check{on} FAILED: expected run(s) missing: {'; '.join(c['missing'])}")
        if c["holds"] is not None:
            figures = " < ".join(f"{r} {v:.1%}" for r, v in zip(c["order"], c["top1"], strict=True))
            what = "paper's claim" if c.get("optional") else "expected ordering"
            print(f"{what}{on}: {figures}: {'holds' if c['holds'] else 'does NOT hold'} on this project")
        if c["elsewhere"]:
            print(f"  left out of the comparison (evaluated in another project): {', '.join(c['elsewhere'])}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe", help="a JSON recipe from training/configs/")
    ap.add_argument("project")
    ap.add_argument("--backbone", help="use this backbone for every run (e.g. when VGG19 is not installed)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, help="override every run's epochs (quick trials)")
    ap.add_argument("--mapping", help="ImageNet mapping file for baseline runs")
    ap.add_argument("--intermediate", help="intermediate project (double fine-tuning, θ̂ networks)")
    ap.add_argument("--noisy", help="the large noisy project a network adapts on (Lagunas & Garces)")
    ap.add_argument("--table", help="which of the paper's tables to compare with (e.g. material, type)")
    ap.add_argument("--only", nargs="*", help="run only these run names")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    recipe = json.loads(Path(args.recipe).read_text(encoding="utf-8"))
    runs, skipped = expand(recipe["runs"], recipe.get("backbone", "efficientnet_lite0"), args.backbone)
    refs = {k: getattr(args, k) for k in REFS}
    table = args.table or recipe.get("paper_table")
    done: dict[str, int | str] = {}
    rows = []
    main_path = Path(args.project).expanduser().resolve()
    opened: dict[Path, Project] = {}
    try:
        opened[main_path] = Project(main_path)
        for run in runs:
            if args.only and run["name"] not in args.only and run["base"] not in args.only:
                continue
            where = main_path
            if run.get("project"):
                other = resolve(run["project"], refs, done)
                if other:
                    where = Path(other).expanduser().resolve()
                elif run.get("without_project") != "main":
                    skipped.append(skip(run, f"needs --{run['project'][1:]} (another project)"))
                    continue
            options = {k: resolve(v, refs, done, run["backbone"]) for k, v in run.get("options", {}).items()}
            missing = [k for k, v in options.items() if v is None or (isinstance(v, list) and None in v)]
            if missing:
                skipped.append(skip(run, f"needs {', '.join(missing)}"))
                continue
            print(f"== {run['name']}: {run['method']} on {run['backbone']}"
                  f"{f' in {where}' if where != main_path else ''}", file=sys.stderr)
            bar = ProgressBar(enabled=None if not args.json else False)
            t = time.perf_counter()
            try:
                if where not in opened:
                    opened[where] = Project(where)
                result = opened[where].train(method=run["method"], backbone=run["backbone"],
                                             epochs=args.epochs or run.get("epochs"), device=args.device,
                                             then_svm=run.get("then_svm", False), options=options, progress=bar)
            except ArtAnnotError as exc:
                bar.close()
                skipped.append(skip(run, str(exc)))
                continue
            bar.close()
            ref = result.model_id if where == main_path else f"{where}#{result.model_id}"
            done[run["name"]] = ref
            done.setdefault(run["base"], ref)  # "@base" means its first backbone's model
            m = result.metrics
            note = run.get("note")
            if run.get("project") and where == main_path:
                note = f"ran in this project (no --{run['project'][1:]}): {run.get('fallback_note', 'not as published')}"
            rows.append({"run": run["name"], "base": run["base"], "method": run["method"], "backbone": run["backbone"],
                         "model": result.model_id, "project": str(where), "elsewhere": where != main_path,
                         "top1": m.get("top1"), "top5": m.get("top5"), "macro_f1": m.get("macro_f1"),
                         "map": m.get("map"), "seconds": round(time.perf_counter() - t, 1),
                         "paper": paper_figures(run.get("paper"), run["backbone"], table),
                         "summary": result.params.get("summary"), "note": note})
    finally:
        for project in opened.values():
            project.close()
    checks = ordering(recipe.get("expected_order", []), rows, skipped, args.only)
    failed = [m for c in checks for m in c["missing"]]
    for order in recipe.get("optional_orders", []):  # checked where all of their runs ran, never failing
        checks += [dict(c, missing=[], optional=True) for c in ordering(order, rows, skipped, args.only)
                   if not c["missing"]]
    required = [c["holds"] for c in checks if not c.get("optional") and c["holds"] is not None]
    report = {"recipe": recipe.get("name"), "paper": recipe.get("paper"), "table": table, "runs": rows,
              "skipped": [f"{s['run']}: {s['reason']}" for s in skipped], "skipped_runs": skipped,
              "ordering": checks, "order_holds": all(required) if required else None,
              "expected_order": checks[0]["order"] if checks else [], "ok": not failed}
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    if failed:
        print(f"error: the ordering check needs runs that did not run: {'; '.join(failed)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
