"""`auto`, the one-click default: pick method and backbone by accuracy within a time budget, and say why.

1. SVM on ImageNet features of the requested backbone, then of every other backbone whose weights are
   installed while the estimated extraction time fits; backbones are compared by the SVM's
   cross-validated top-1.
2. Adaptive layer-based optimization + SVM on the best backbone, when a GPU is present or the measured
   training speed leaves at least two epochs within the budget. It trains on 80 % of the train split;
   both candidates are then scored on the same held-out 20 % (SVMs fitted on the 80 %), and the better
   one is kept (ties go to the SVM: cheaper and steadier).
The stored model's params say what was tried, how long it took, what was skipped and why.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from artannot.ml.backbones import list_backbones, load_backbone, weights_available
from artannot.ml.classifiers import SVMClassifier
from artannot.ml.device import Runtime
from artannot.ml.methods import (
    DEFAULT_BUDGET_S,
    DEFAULT_EPOCHS,
    Context,
    TrainRequest,
    _classifier_outcome,
    _fit_network,
    _network_outcome,
    discard_files,
    run_name,
    split_validation,
)
from artannot.ml.networks import build_network, network_features, sized_spec
from artannot.ml.training import Outcome, labelled_xy

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


def run_auto(ctx: Context, req: TrainRequest) -> Outcome | None:
    """Train the candidates the budget allows and keep the most accurate."""
    svm: dict[str, Outcome] = {}
    try:
        return _run_auto(ctx, req, svm)
    except BaseException:  # cancelled: the candidates' classifier files belong to no model
        for out in svm.values():
            discard_files(out)
        raise


def _run_auto(ctx: Context, req: TrainRequest, svm: dict[str, Outcome]) -> Outcome | None:
    budget = float(req.options.get("budget") or DEFAULT_BUDGET_S)
    end = ctx.clock + budget

    def left() -> float:
        return end - time.monotonic()

    names = [req.backbone]
    if req.options.get("search_backbones", True):
        names += [b for b in list_backbones() if b != req.backbone and weights_available(b)]
    candidates: list[dict] = []
    skipped: list[str] = []
    for i, b in enumerate(names):
        ctx.check()
        if i > 0:
            todo = _uncached(ctx, b)
            est = todo / probe_speed(b, ctx.runtime, train=False) + 3.0 if todo else 3.0
            if est > 0.5 * left():
                skipped.append(f"svm on {b} (≈{est:.0f} s, {max(left(), 0):.0f} s left)")
                continue
        t = time.monotonic()
        feats, ok = ctx.imagenet_features(b)
        sub = dataclasses.replace(req, method="svm", backbone=b)
        svm[b] = _classifier_outcome(ctx, sub, "svm", feats, ok, {"backbone": b}, "auto")
        candidates.append({"method": "svm", "backbone": b, "cv_top1": svm[b].extra_metrics["cv_top1"] or 0.0,
                           "seconds": round(time.monotonic() - t, 1)})
    best_svm = max((c for c in candidates), key=lambda c: c["cv_top1"])  # first wins ties: cheaper
    b = best_svm["backbone"]
    others = [c for c in candidates if c is not best_svm]
    reason = f"svm on {b}: best cross-validated top-1 ({best_svm['cv_top1']:.1%})" + (
        "" if not others else " vs " + ", ".join(f"{c['backbone']} {c['cv_top1']:.1%}" for c in others))
    chosen, final = "svm", svm[b]

    fit_rows, val_rows = split_validation(ctx.data, 0.2)
    gpu = ctx.runtime.device.type == "cuda"
    image_size = req.options.get("image_size")
    why_not = None
    if not req.options.get("adaptive", True):
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
            svm_val = _held_out_top1(ctx, *ctx.imagenet_features(b), fit_rows, val_rows)
            candidates.append({"method": "adaptive+svm", "backbone": b, "val_top1": result["val_top1"],
                               "svm_val_top1": svm_val, "epochs": result["epochs"], "seconds": result["seconds"]})
            duel = (f"held-out top-1 {result['val_top1']:.1%} vs {svm_val:.1%} for svm on the same"
                    f" {len(val_rows)} images")
            if result["val_top1"] > svm_val:
                chosen, reason = "adaptive+svm", f"adaptive+svm on {b}: {duel}"
                final = result["finish"]()
            else:
                reason += f"; adaptive+svm not better ({duel})"
        else:
            why_not = (f"2 epochs need ≈{MIN_EPOCHS * epoch_s + tail_s:.0f} s at {rate:.1f} images/s,"
                       f" {max(left(), 0):.0f} s of the {budget:.0f} s budget left")
    if why_not:
        skipped.append(f"adaptive+svm ({why_not})")
    if final is None:
        return None  # another process of a torchrun job
    for out in svm.values():  # classifier files of the candidates that lost
        if out is not final and out.checkpoint:
            Path(out.checkpoint).unlink(missing_ok=True)
    used = time.monotonic() - ctx.clock
    if skipped:
        reason += "; skipped: " + "; ".join(skipped)
    final.method = "auto"
    final.params.update(chosen=chosen, summary=f"auto → {chosen} on {b}", auto={
        "budget_s": budget, "used_s": round(used, 1), "candidates": candidates, "skipped": skipped,
        "chosen": chosen, "backbone": b, "reason": reason})
    return final


def _try_adaptive(ctx: Context, req: TrainRequest, backbone: str, epochs: int, deadline: float,
                  fit_rows, val_rows) -> dict:
    """Adaptive fine-tuning on fit_rows; held-out top-1 of an SVM on its features; how to finish it."""
    t = time.monotonic()
    class_ids = ctx.data.class_ids
    sub = dataclasses.replace(req, method="adaptive", backbone=backbone, epochs=epochs, then_svm=True)
    model = build_network(backbone, len(class_ids), weights_path=req.options.get("weights_path"))
    result, cfg = _fit_network(ctx, sub, "adaptive", model, class_ids, fit_rows, val_rows,
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
        return _network_outcome(ctx, sub, "auto", model, cfg, result, class_ids, extra, run=run)

    return {"val_top1": val_top1, "epochs": len(result.curves), "seconds": round(time.monotonic() - t, 1),
            "finish": finish}
