"""`auto`, the one-click default: pick method and backbone by accuracy within a time budget, and say why.

1. SVM, linear probe (and k-NN where classes are tiny) on ImageNet features of the requested backbone,
   then of every other backbone whose weights are installed while the estimated extraction time fits;
   every candidate is ranked by a nested-CV estimate its own settings never saw.
2. Adaptive layer-based optimization + SVM on the best backbone, when a GPU is present or the measured
   training speed leaves at least two epochs within the budget. It trains on 80 % of the train split;
   both candidates are then scored on the same held-out 20 % (SVMs fitted on the 80 %), and the better
   one is kept (ties go to the SVM: cheaper and steadier).
The stored model's params say what was tried, how long it took, what was skipped and why.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter

import numpy as np
import torch

from artannot.errors import ModelError
from artannot.ml.backbones import list_backbones, load_backbone, weights_available
from artannot.ml.classify.classifiers import SVMClassifier
from artannot.ml.classify.estimate import nested_estimate
from artannot.ml.classify.knn import KNNClassifier
from artannot.ml.classify.linear import LinearProbe
from artannot.ml.classify.methods import (
    DEFAULT_BUDGET_S,
    DEFAULT_EPOCHS,
    fit_network,
    labelled_outcome,
    network_outcome,
    run_name,
    split_validation,
)
from artannot.ml.classify.training import Outcome, labelled_xy
from artannot.ml.device import Runtime
from artannot.ml.networks import build_network, network_features, sized_spec
from artannot.ml.task import Context, TrainRequest

MIN_EPOCHS = 2
TAIL_MARGIN_S = 10.0  # SVM fits and storing after the last epoch


def probe_speed(backbone: str, runtime: Runtime, image_size: int | None = None, *, train: bool,
                batch: int = 8) -> float:
    """Images per second of the backbone on this runtime (forward, or forward + backward), measured."""
    spec = sized_spec(backbone, image_size)
    model = runtime.prepare(load_backbone(backbone)).train(train)
    x = runtime.batch(torch.randn(batch, 3, spec.input_size, spec.input_size))

    def step() -> None:
        with torch.set_grad_enabled(train), runtime.autocast():
            out = model(x)
        if train:
            out.float().logsumexp(1).mean().backward()
            model.zero_grad(set_to_none=True)

    step()  # the first call pays for allocation and kernel selection
    times = []
    for _ in range(3):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return batch / max(sorted(times)[1], 1e-6)  # the median: steady under a busy machine's hiccups


def _uncached(ctx: Context, backbone: str) -> int:
    cache = ctx.feature_cache()
    try:
        hashes = [sha for _, sha in ctx.data.items]
        return len(set(hashes) - set(cache.get_many(backbone, hashes)))
    finally:
        cache.close()


def _held_out_top1(ctx: Context, feats: np.ndarray, ok: np.ndarray, fit_rows, val_rows) -> float:
    """Top-1 on val_rows of an SVM fitted on fit_rows."""
    X, y = labelled_xy(ctx.data, feats, ok, fit_rows)
    Xv, yv = labelled_xy(ctx.data, feats, ok, val_rows)
    clf = SVMClassifier().fit(X, y, cancel=ctx.cancel)
    return float((clf.classes_[clf.decision_function(Xv).argmax(1)] == yv).mean())


CLASSIFIERS = {"svm": lambda: SVMClassifier(repeats=1), "linear": lambda: LinearProbe(repeats=1),
               "knn": lambda: KNNClassifier(repeats=1)}
TINY_CLASS = 12  # k-NN is a candidate when the median class holds at most this many labelled train images


def default_kinds(data) -> list[str]:
    """The classifier candidates on features: svm and linear, and k-NN where classes are tiny."""
    counts = sorted(Counter(c for *_, c in data.train).values())
    tiny = bool(counts) and float(np.median(counts)) <= TINY_CLASS
    return ["svm", "linear"] + (["knn"] if tiny else [])


class OverallProgress:
    """One bar for the whole run: "candidate 2 of 5 · features 120/289 · about 40 s left overall"."""

    def __init__(self, progress, total: int):
        self.progress, self.total, self.index, self.t0 = progress, max(total, 1), 0, time.monotonic()

    def next(self) -> None:
        self.index = min(self.index + 1, self.total)

    def __call__(self, done: int, total: int, stage: str) -> None:
        if self.progress is None:
            return
        frac = (self.index - 1 + (done / total if total else 0.0)) / self.total
        frac = min(max(frac, 0.0), 1.0)
        spent = time.monotonic() - self.t0
        eta = f" · about {spent / frac - spent:.0f} s left overall" if frac > 0.02 else ""
        self.progress(int(1000 * frac), 1000,
                      f"candidate {max(self.index, 1)} of {self.total} · {stage}{eta}")


def run_auto(ctx: Context, req: TrainRequest) -> Outcome | None:
    """Estimate the candidates the budget allows on data their choice never saw, fit the best, say why."""
    budget = float(req.options.get("budget") or DEFAULT_BUDGET_S)
    end = ctx.clock + budget

    def left() -> float:
        return end - time.monotonic()

    names = [req.backbone]
    if req.options.get("search_backbones", True):
        names += [b for b in list_backbones() if b != req.backbone and weights_available(b)]
    label_sets = ["all"] + (["curated"] if ctx.data.has_curated() else [])
    if req.options.get("labels"):
        label_sets = [req.options["labels"]]
    wanted = req.options.get("candidates") or default_kinds(ctx.data)
    kinds = [k for k in CLASSIFIERS if k in wanted]
    plan = [(b, kind, labels) for b in names for kind in kinds for labels in label_sets]
    adaptive_on = bool(req.options.get("adaptive", True))
    bar = OverallProgress(ctx.progress, len(plan) + (1 if adaptive_on else 0))
    ctx = dataclasses.replace(ctx, progress=bar)
    human = np.array([i in ctx.data.human for i, *_ in ctx.data.train]) if "curated" in label_sets else None
    candidates: list[dict] = []
    skipped: list[str] = []
    features: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    last_cost: dict[str, float] = {}
    for b, kind, labels in plan:
        ctx.check()
        bar.next()
        name = f"{kind} on {b} ({labels} labels)"
        if b not in features:
            if b != req.backbone:
                todo = _uncached(ctx, b)
                est = todo / probe_speed(b, ctx.runtime, train=False) + 3.0 if todo else 3.0
                if est > 0.5 * left():
                    skipped.append(f"{kind} on {b} (features ≈{est:.0f} s, {max(left(), 0):.0f} s left)")
                    features[b] = None
                    continue
            features[b] = ctx.imagenet_features(b)
        if features[b] is None:
            continue
        cost = last_cost.get(kind, 0.0)
        if candidates and (cost > left() or left() <= 0):
            skipped.append(f"{name} (≈{cost:.0f} s, {max(left(), 0):.0f} s of the budget left)")
            continue
        t = time.monotonic()
        X, y = _train_xy(ctx, *features[b])
        bar(0, 1, f"{name}: estimating on held-out folds")
        est = nested_estimate(CLASSIFIERS[kind], X, y, human=human, labels=labels, cancel=ctx.cancel)
        last_cost[kind] = time.monotonic() - t
        candidates.append({"method": kind, "backbone": b, "labels": labels,
                           "estimate": None if est is None else est["top1"],
                           "std": None if est is None else est["std"], "estimate_detail": est,
                           "seconds": round(last_cost[kind], 1), "chosen": False})
    if not candidates:
        raise ModelError("auto could not try any candidate within the budget; raise the budget")
    best = max(candidates, key=lambda c: (c["estimate"] if c["estimate"] is not None else -1.0))
    b = best["backbone"]
    reason = (f"{best['method']} on {b} with {best['labels']} labels: best honest estimate"
              + (f" ({best['estimate']:.1%} ± {best['std']:.1%}, nested cv on "
                 f"{best['estimate_detail']['on']}-labelled images)" if best["estimate"] is not None else ""))
    chosen_kind, chosen = best["method"], best

    fit_rows, val_rows = split_validation(ctx.data, 0.2)
    gpu = ctx.runtime.device.type == "cuda"
    image_size = req.options.get("image_size")
    why_not, adaptive = None, None
    if adaptive_on:
        bar.next()
    if not adaptive_on:
        why_not = "turned off"
    elif not val_rows:
        why_not = "too few labelled images for a held-out comparison"
    else:
        ctx.check()
        rate = probe_speed(b, ctx.runtime, image_size, train=True)
        epoch_s = len(fit_rows) / rate + len(val_rows) / (3 * rate)
        tail_s = len(ctx.data.items) / (3 * rate) + TAIL_MARGIN_S
        affordable = int((left() - tail_s) // epoch_s)
        wanted = req.epochs or DEFAULT_EPOCHS["adaptive"]
        if gpu or affordable >= MIN_EPOCHS:
            epochs = max(min(wanted, affordable), MIN_EPOCHS)
            result = _try_adaptive(ctx, req, b, epochs, end - tail_s, fit_rows, val_rows)
            svm_val = _held_out_top1(ctx, *features[b], fit_rows, val_rows)
            adaptive = {"method": "adaptive+svm", "backbone": b, "labels": "all",
                        "estimate": result["val_top1"], "std": None, "svm_val_top1": svm_val,
                        "estimate_detail": {"top1": result["val_top1"], "std": 0.0, "folds": [result["val_top1"]],
                                            "kind": "held-out", "n": len(val_rows), "on": "all"},
                        "epochs": result["epochs"], "seconds": result["seconds"], "chosen": False}
            candidates.append(adaptive)
            duel = (f"held-out top-1 {result['val_top1']:.1%} vs {svm_val:.1%} for svm on the same"
                    f" {len(val_rows)} images")
            if result["val_top1"] > svm_val:
                chosen_kind, chosen, reason = "adaptive+svm", adaptive, f"adaptive+svm on {b}: {duel}"
            else:
                reason += f"; adaptive+svm not better ({duel})"
                adaptive = None
        else:
            why_not = (f"2 epochs need ≈{MIN_EPOCHS * epoch_s + tail_s:.0f} s at {rate:.1f} images/s,"
                       f" {max(left(), 0):.0f} s of the {budget:.0f} s budget left")
    if why_not:
        skipped.append(f"adaptive+svm ({why_not})")
    if adaptive is not None:
        final = result["finish"]()
    else:
        sub = dataclasses.replace(req, method=chosen_kind, backbone=b,
                                  options={**req.options, "labels": chosen["labels"]})
        final = labelled_outcome(ctx, sub, chosen_kind, *features[b], {"backbone": b}, "auto")
    if final is None:
        return None  # another process of a torchrun job
    chosen["chosen"] = True
    final.extra_metrics["estimate"] = chosen["estimate_detail"]
    for c in candidates:
        c.pop("estimate_detail", None)
    used = time.monotonic() - ctx.clock
    if skipped:
        reason += "; skipped: " + "; ".join(skipped)
    final.method = "auto"
    final.params.update(chosen=chosen_kind, summary=f"auto → {chosen_kind} on {b}", auto={
        "budget_s": budget, "used_s": round(used, 1), "candidates": candidates, "skipped": skipped,
        "chosen": chosen_kind, "backbone": b, "labels": chosen["labels"], "reason": reason})
    return final


def _train_xy(ctx: Context, feats: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of every labelled train image (rows in data.train order, unreadable ones dropped)."""
    row = {image_id: k for k, (image_id, _, _) in enumerate(ctx.data.everything)}
    missing = [i for i, *_ in ctx.data.train if i not in row or not ok[row[i]]]
    if missing:
        raise ModelError(f"{len(missing)} labelled images could not be read; re-import or remove them")
    return labelled_xy(ctx.data, feats, ok)


def _try_adaptive(ctx: Context, req: TrainRequest, backbone: str, epochs: int, deadline: float,
                  fit_rows, val_rows) -> dict:
    """Adaptive fine-tuning on fit_rows; held-out top-1 of an SVM on its features; how to finish it."""
    t = time.monotonic()
    class_ids = ctx.data.class_ids
    sub = dataclasses.replace(req, method="adaptive", backbone=backbone, epochs=epochs, then_svm=True)
    model = build_network(backbone, len(class_ids), weights_path=req.options.get("weights_path"))
    result, cfg = fit_network(ctx, sub, "adaptive", model, class_ids, fit_rows, val_rows,
                               ctx.staged("auto: adaptive: "), deadline=deadline)
    feats, ok = network_features(model, ctx.data.items, ctx.runtime, backbone=backbone, image_size=cfg.image_size,
                                 batch_size=cfg.batch_size, progress=ctx.progress, cancel=ctx.cancel)
    val_top1 = _held_out_top1(ctx, feats, ok, fit_rows, val_rows)

    def finish() -> Outcome | None:
        """Keep this network: cache its features under its own name, then store it like `adaptive`."""
        run = run_name("auto", backbone)
        cache = ctx.feature_cache()
        try:  # cached only now, so a losing candidate leaves nothing in the cache
            cache.put_many(run, {sha: feats[r] for r, (_, sha) in enumerate(ctx.data.items) if ok[r]})
        finally:
            cache.close()
        extra = {"n_fit": len(fit_rows), "n_val": len(val_rows)}
        return network_outcome(ctx, sub, "auto", model, cfg, result, class_ids, extra, run=run)

    return {"val_top1": val_top1, "epochs": len(result.curves), "seconds": round(time.monotonic() - t, 1),
            "finish": finish}
