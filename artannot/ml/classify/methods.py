"""Training methods: one function per method with a common signature, a registry, and `auto`.

Every method is `fn(ctx: Context, req: TrainRequest) -> Outcome | None` (None only on the non-zero ranks of
a torchrun job); `train()` runs one and stores its outcome through training.store_outcome. How a stored
model scores new images is recorded in its params as a "predictor" (features + classifier file, network
checkpoint, ensemble members or ImageNet mapping), which `score_model` follows.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from artannot.errors import ModelError
from artannot.ml.backbones import load_backbone
from artannot.ml.classify.classifiers import SVMClassifier
from artannot.ml.classify.linear import LinearProbe
from artannot.ml.classify.suspects import out_of_fold_scores
from artannot.ml.classify.training import Outcome, TrainData, gather, labelled_xy, store_outcome
from artannot.ml.decode_cache import decode_cache_for
from artannot.ml.device import Runtime, select_runtime
from artannot.ml.features import FeatureCache, extract_features
from artannot.ml.finetune import FineTuneConfig, FitResult, dist_info, fit
from artannot.ml.networks import (
    DEFAULTS,
    build_network,
    head_scores,
    layer_plan,
    load_network,
    network_features,
    replace_head,
    save_network,
)
from artannot.ml.task import Context, Progress, TrainRequest, TrainResult
from artannot.store.model_files import model_predictor

Images = list[tuple[int, str, str, int]]
DEFAULT_EPOCHS = {"finetune": 8, "adaptive": 10, "frozen": 8, "double": 6}
DEFAULT_BUDGET_S = 120.0  # the one-click budget, beside the Train button and in the Train dialog


Method = Callable[[Context, TrainRequest], Outcome | None]
REGISTRY: dict[str, Method] = {}


def _register(name: str) -> Callable[[Method], Method]:
    def deco(fn: Method) -> Method:
        REGISTRY[name] = fn
        return fn
    return deco


def train_classify(conn: sqlite3.Connection, cache_dir: Path, req: TrainRequest, *, device: str = "auto",
                   progress: Progress | None = None, cancel: threading.Event | None = None) -> TrainResult | None:
    """Run a classification method on the project's labelled train split and store the model with its
    predictions (the classify task's `train`)."""
    fn = REGISTRY.get(req.method)
    if fn is None:
        raise ModelError(f"unknown classification method {req.method!r}; choose one of: {', '.join(REGISTRY)}")
    if req.epochs is not None and req.epochs < 1:
        raise ModelError("--epochs must be at least 1")
    ctx = Context(conn, Path(cache_dir), gather(conn), select_runtime(device), progress, cancel)
    outcome = fn(ctx, req)
    if outcome is None:
        return None
    outcome.params.setdefault("runtime", ctx.runtime.describe)
    try:
        return store_outcome(conn, ctx.data, outcome, started=ctx.started, progress=progress, cancel=cancel)
    except BaseException:
        discard_files(outcome)  # cancelled or failed: no model row, so no files either
        raise


def discard_files(outcome: Outcome) -> None:
    """Delete the files a run wrote (its classifier, its network and sidecar), never another model's."""
    paths = {outcome.checkpoint, outcome.params.get("predictor", {}).get("path")}
    for path in filter(None, paths):
        Path(path).unlink(missing_ok=True)
        if path.endswith(".pt"):
            Path(path).with_suffix(".json").unlink(missing_ok=True)


# -- classifiers on features ------------------------------------------------------------------------------


def _make_classifier(kind: str, options: dict):
    if kind == "svm":
        kw = {k: tuple(options[k]) for k in ("kernels", "Cs", "schemes") if options.get(k)}
        for k in ("gammas", "gamma_scales"):  # absolute gammas; relative to gamma="scale" ([] = none)
            if k in options:
                kw[k] = tuple(float(g) for g in options[k])
        if "ensemble" in options:  # how many of the CV's best settings are averaged (1: the best alone)
            kw["ensemble"] = int(options["ensemble"])
        if "scale" in options:  # false: raw features, no standardisation (as Lagunas & Garces)
            kw["scale"] = str(options["scale"]).lower() not in ("0", "false", "no", "off")
        return SVMClassifier(**kw)
    if kind == "linear":
        return LinearProbe(**({"Cs": tuple(options["Cs"])} if options.get("Cs") else {}))
    if kind == "knn":
        from artannot.ml.classify.knn import KNNClassifier

        return KNNClassifier(**({"ks": tuple(int(k) for k in options["ks"])} if options.get("ks") else {}))
    raise ModelError(f"unknown classifier {kind!r}")


def _classifier_class(kind: str):
    """The class that loads a stored classifier of this kind."""
    if kind == "knn":
        from artannot.ml.classify.knn import KNNClassifier

        return KNNClassifier
    if kind in ("svm", "linear"):
        return SVMClassifier if kind == "svm" else LinearProbe
    raise ModelError(f"unknown classifier {kind!r} (made by a newer ArtAnnot?)")


def classifier_outcome(ctx: Context, req: TrainRequest, kind: str, feats: np.ndarray, ok: np.ndarray,
                        features: dict, method: str, images: Images | None = None) -> Outcome:
    """Fit an SVM or linear probe on labelled features, save it, score every image."""
    X, y = labelled_xy(ctx.data, feats, ok, images)
    clf = _make_classifier(kind, req.options).fit(X, y, progress=ctx.progress, cancel=ctx.cancel)
    ctx.check()
    path = ctx.models_dir / f"{kind}-{req.backbone}-{uuid.uuid4().hex[:12]}.npz"
    clf.save(path)
    chosen = clf.describe() if hasattr(clf, "describe") else f"logistic probe C={clf.C_:g}"
    on = "fine-tuned" if "network" in features else "ImageNet"
    params = {**clf.params(), "classifier": kind, "n_train": int(len(y)),
              "summary": f"{chosen} on {on} {req.backbone} features",
              "predictor": {"kind": "classifier", "classifier": kind, "path": str(path), "features": features}}
    return Outcome(method, req.backbone, [int(c) for c in clf.classes_], clf.predict_proba(feats), ok, params,
                   checkpoint=str(path), extra_metrics={"cv_top1": clf.cv_top1_, "estimate": cv_estimate(clf)},
                   oof_scores=out_of_fold_scores(ctx.data, clf, ok, images))


def labelled_outcome(ctx: Context, req: TrainRequest, kind: str, feats: np.ndarray, ok: np.ndarray,
                      features: dict, method: str, default: str = "all") -> Outcome:
    """classifier_outcome on the label set the request names (option labels=all|curated)."""
    labels = req.options.get("labels") or default
    out = classifier_outcome(ctx, req, kind, feats, ok, features, method, ctx.data.label_rows(labels))
    out.params["labels"] = labels
    out.params["n_labels"] = {"human": len(ctx.data.curated()), "all": len(ctx.data.train)}
    return out


def cv_estimate(clf) -> dict | None:
    """A fitted classifier's cross-validated top-1 with its per-fold spread, as stored in metrics["estimate"]."""
    if getattr(clf, "cv_top1_", None) is None:
        return None
    return {"top1": float(clf.cv_top1_), "std": float(clf.cv_std_ or 0.0),
            "folds": [round(float(f), 4) for f in getattr(clf, "cv_folds_", [])], "kind": "cv"}


@_register("svm")
def method_svm(ctx: Context, req: TrainRequest) -> Outcome:
    """Lagunas & Garces "baseline + SVM": one-vs-rest SVM (kernel, C, gamma by CV) on ImageNet features."""
    feats, ok, features, req = ctx.features(req)
    return labelled_outcome(ctx, req, "svm", feats, ok, features, "svm")


@_register("linear")
def method_linear(ctx: Context, req: TrainRequest) -> Outcome:
    """Sabatelli et al. "off the shelf": a logistic-regression probe on frozen ImageNet features."""
    feats, ok, features, req = ctx.features(req)
    return labelled_outcome(ctx, req, "linear", feats, ok, features, "linear")


# -- networks ----------------------------------------------------------------------------------------------


def split_validation(data: TrainData, fraction: float, seed: int = 0) -> tuple[Images, Images]:
    """(fit, val): the curator's 'val' split if there is one, else a stratified hold-out of the train split.

    Classes with fewer than 3 training images stay whole in fit (they could not be learned otherwise).
    """
    if data.val:
        return data.train, data.val
    if fraction <= 0:
        return data.train, []
    rng = random.Random(seed)
    by_class: dict[int, Images] = {}
    for row in data.train:
        by_class.setdefault(row[3], []).append(row)
    fit_rows, val_rows = [], []
    for c in sorted(by_class):
        rows = sorted(by_class[c])
        rng.shuffle(rows)
        k = min(max(1, round(fraction * len(rows))), len(rows) - 2) if len(rows) >= 3 else 0
        val_rows += rows[:k]
        fit_rows += rows[k:]
    return sorted(fit_rows), sorted(val_rows)


def _config(req: TrainRequest, recipe: str, **overrides) -> FineTuneConfig:
    """Fine-tuning config: recipe defaults, then the request's options, then explicit overrides."""
    epochs = req.epochs or req.options.get("epochs") or DEFAULT_EPOCHS.get(req.method, 8)
    defaults = {k: v for k, v in DEFAULTS.get(recipe, {}).items() if k in ("optimizer", "weight_decay")}
    return FineTuneConfig.from_options({**defaults, **req.options}, epochs=int(epochs), **overrides)


def _samples(images: Images, class_ids: list[int]) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, class index) of the images of these classes, and their sha256s in the same order."""
    index = {c: k for k, c in enumerate(class_ids)}
    kept = [(path, sha, c) for _, path, sha, c in images if c in index]
    return [(path, index[c]) for path, _, c in kept], [sha for _, sha, _ in kept]


def fit_network(ctx: Context, req: TrainRequest, recipe: str, model: torch.nn.Module, class_ids: list[int],
                 fit_rows: Images, val_rows: Images, progress: Progress | None,
                 **overrides) -> tuple[FitResult, FineTuneConfig]:
    cfg = _config(req, recipe, **overrides)
    plan = layer_plan(model, recipe, req.options)
    train, train_sha = _samples(fit_rows, class_ids)
    val, val_sha = _samples(val_rows, class_ids)
    result = fit(model, train, val, cfg, ctx.runtime, plan, backbone=req.backbone, progress=progress,
                 cancel=ctx.cancel, decode_cache=decode_cache_for(ctx.cache_dir), hashes=train_sha + val_sha)
    return result, cfg


def run_name(method: str, backbone: str) -> str:
    """A unique name for a trained network: its checkpoint file and its feature-cache key."""
    return f"{method}-{backbone}-{uuid.uuid4().hex[:12]}"


def network_outcome(ctx: Context, req: TrainRequest, method: str, model: torch.nn.Module, cfg: FineTuneConfig,
                     result: FitResult, class_ids: list[int], extra: dict | None = None,
                     run: str | None = None) -> Outcome | None:
    """Save the network; predictions from its softmax, or (then_svm) from an SVM on its features.

    Its features are cached under the run's own name (never the backbone's), so they cannot mix with
    ImageNet features or another model's.
    """
    if dist_info()[1] != 0:
        return None  # one process stores the model
    run = run or run_name(method, req.backbone)
    ckpt = ctx.models_dir / f"{run}.pt"
    save_network(model, ckpt, {"backbone": req.backbone, "n_outputs": len(class_ids), "class_ids": class_ids,
                               "image_size": cfg.image_size, "method": method, "run": run})
    try:
        out = _score_network(ctx, req, method, model, cfg, result, class_ids, extra, run, ckpt)
    except BaseException:  # cancelled while scoring: the checkpoint would belong to no model
        ckpt.unlink(missing_ok=True)
        ckpt.with_suffix(".json").unlink(missing_ok=True)
        raise
    return out


def _score_network(ctx: Context, req: TrainRequest, method: str, model: torch.nn.Module, cfg: FineTuneConfig,
                   result: FitResult, class_ids: list[int], extra: dict | None, run: str, ckpt: Path) -> Outcome:
    cache = ctx.feature_cache()
    try:
        feats, ok = network_features(model, ctx.data.items, ctx.runtime, backbone=req.backbone,
                                     image_size=cfg.image_size, cache=cache, key=run, batch_size=cfg.batch_size,
                                     progress=ctx.progress, cancel=ctx.cancel)
    finally:
        cache.close()
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "deadline"}
    network = {"recipe": method, "checkpoint": str(ckpt), "plan": result.plan, "epochs_run": len(result.curves),
               "world_size": dist_info()[2], "best_epoch": result.best_epoch, "stopped": result.stopped,
               "images_per_s": round(result.images_per_s, 2), "config": config,
               "style_copies": int(req.options.get("style_augment") or 0), **(extra or {})}
    if req.then_svm:  # the network adapted on every label; the SVM on the curated ones when there are enough
        out = labelled_outcome(ctx, req, "svm", feats, ok, {"network": str(ckpt), "key": run,
                                                             "image_size": cfg.image_size}, method,
                                default="curated" if ctx.data.has_curated() else "all")
        out.params.update(network=network, then_svm=True, summary=f"{method} {req.backbone} + {out.params['summary']}")
        out.checkpoint = str(ckpt)
    else:
        params = {"network": network, "then_svm": False, "summary": f"{method} {req.backbone}: "
                  f"{len(result.curves)} epochs, best {result.best_epoch} ({result.stopped})",
                  "predictor": {"kind": "network", "path": str(ckpt)}}
        out = Outcome(method, req.backbone, class_ids, head_scores(model, feats), ok, params, checkpoint=str(ckpt))
    out.curves = result.curves
    return out


def _network_method(ctx: Context, req: TrainRequest, recipe: str) -> Outcome | None:
    class_ids = ctx.data.class_ids
    fit_rows, val_rows = split_validation(ctx.data, float(req.options.get("val_fraction", 0.15)))
    model = build_network(req.backbone, len(class_ids), weights_path=req.options.get("weights_path"))
    result, cfg = fit_network(ctx, req, recipe, model, class_ids, fit_rows, val_rows, ctx.progress)
    return network_outcome(ctx, req, req.method, model, cfg, result, class_ids,
                            {"n_fit": len(fit_rows), "n_val": len(val_rows)})


@_register("finetune")
def method_finetune(ctx: Context, req: TrainRequest) -> Outcome | None:
    """Full fine-tuning (Sabatelli, Gonthier "all layers"): new head, every layer trained, early stopping."""
    return _network_method(ctx, req, "finetune")


@_register("adaptive")
def method_adaptive(ctx: Context, req: TrainRequest) -> Outcome | None:
    """Lagunas & Garces adaptive layer-based optimization (add then_svm for "optimized + SVM"); option
    low_layers=N restarts single layers as published (N=10 on VGG19: conv1_1 ... conv4_2, see layer_plan)."""
    return _network_method(ctx, req, "adaptive")


@_register("frozen")
def method_frozen(ctx: Context, req: TrainRequest) -> Outcome | None:
    """Gonthier "frozen lower layers": the lowest `freeze` layer groups keep their ImageNet weights."""
    return _network_method(ctx, req, "frozen")


@_register("double")
def method_double(ctx: Context, req: TrainRequest) -> Outcome | None:
    """Double fine-tuning (Sabatelli, Gonthier): ImageNet -> an intermediate project -> this one."""
    from artannot.store.db import connect

    other = req.options.get("intermediate")
    if not other:
        raise ModelError("--method double needs --intermediate PROJECT (a project to fine-tune on first)")
    conn = connect(Path(other).expanduser())
    try:
        inter = gather(conn)
    finally:
        conn.close()
    inter_ids = inter.class_ids
    fit_rows, val_rows = split_validation(inter, float(req.options.get("val_fraction", 0.15)))
    model = build_network(req.backbone, len(inter_ids), weights_path=req.options.get("weights_path"))
    first, _ = fit_network(ctx, req, "finetune", model, inter_ids, fit_rows, val_rows,
                            ctx.staged("intermediate: "))
    ctx.check()
    class_ids = ctx.data.class_ids
    replace_head(model.cpu(), len(class_ids))
    fit_rows, val_rows = split_validation(ctx.data, float(req.options.get("val_fraction", 0.15)))
    second, cfg = fit_network(ctx, req, "finetune", model, class_ids, fit_rows, val_rows, ctx.progress)
    return network_outcome(ctx, req, "double", model, cfg, second, class_ids, {
        "intermediate": str(Path(other).expanduser().resolve()), "intermediate_classes": len(inter_ids),
        "intermediate_images": len(inter.train), "intermediate_curves": first.curves,
        "intermediate_stopped": first.stopped})


# -- ensembles and the ImageNet baseline ---------------------------------------------------------------------


def _model_ids(value) -> list[int]:
    try:
        ids = [int(v) for v in (value.split(",") if isinstance(value, str) else value or [])]
    except (TypeError, ValueError):
        raise ModelError(f"--models takes model ids separated by commas, not {value!r}") from None
    if len(ids) < 2:
        raise ModelError("--method ensemble needs --models with at least two model ids, e.g. --models 1,2")
    return ids


@_register("ensemble")
def method_ensemble(ctx: Context, req: TrainRequest) -> Outcome:
    """Gonthier ensembles: the average of the chosen models' class scores."""
    from artannot.ml.classify.ensemble import average_scores
    from artannot.store import repo

    ids = _model_ids(req.options.get("models"))
    rows = []
    for model_id in ids:
        row = repo.get_model(ctx.conn, model_id)
        if row is None:
            raise ModelError(f"no model with id {model_id} in this project")
        rows.append(row)
    members = []
    for row in rows:
        members.append(score_model(ctx.conn, ctx.cache_dir, row, ctx.data.items, ctx.runtime,
                                   progress=ctx.staged(f"model {row['id']}: "), cancel=ctx.cancel))
        ctx.check()
    weights = req.options.get("weights")
    scores, class_ids, ok = average_scores(members, weights)
    backbones = "+".join(dict.fromkeys(r["backbone"] for r in rows))
    params = {"members": ids, "weights": weights, "summary": f"average of models {', '.join(map(str, ids))}",
              "predictor": {"kind": "ensemble", "members": ids, "weights": weights}}
    return Outcome("ensemble", backbones, class_ids, scores, ok, params)


def _imagenet_proba(backbone: str, feats: np.ndarray) -> np.ndarray:
    """ImageNet class probabilities from the backbone's own head on its (cached) penultimate features."""
    model = load_backbone(backbone)
    with torch.inference_mode():
        return torch.softmax(model.forward_head(torch.from_numpy(feats)).float(), 1).numpy()


BASELINE_VARIANTS = ("imagenet", "renormalized")


def _baseline_variant(options: dict) -> str:
    variant = str(options.get("baseline") or "imagenet")
    if variant not in BASELINE_VARIANTS:
        raise ModelError(f"option baseline takes {' or '.join(BASELINE_VARIANTS)}, not {variant!r}")
    return variant


def baseline_scores(proba: np.ndarray, mapping: dict[int, list[int]], class_ids: list[int],
                    variant: str = "imagenet") -> np.ndarray:
    """Per-class scores of the ImageNet baseline.

    "imagenet" (Lagunas & Garces): a class scores the probability of its best ImageNet category, so the
    classes rank as their categories do among the 1000; "renormalized": the probability mass of its
    categories, renormalised over the project's classes (it ignores the unmapped categories' mass, which
    inflates top-k).
    """
    from artannot.ml.classify.baseline import mapped_scores

    if variant == "renormalized":
        return mapped_scores(proba, mapping, class_ids)
    scores = np.zeros((len(proba), len(class_ids)))
    for k, cid in enumerate(class_ids):
        if mapping.get(cid):
            scores[:, k] = proba[:, mapping[cid]].max(1)
    return scores


def imagenet_top_classes(proba: np.ndarray, mapping: dict[int, list[int]], k: int = 5) -> list[list[list[int]]]:
    """Per image, the project classes each of its top-k ImageNet categories maps to ([] for an unmapped one)."""
    owners: dict[int, list[int]] = {}
    for cid, cats in mapping.items():
        for cat in cats:
            owners.setdefault(int(cat), []).append(int(cid))
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return [[sorted(owners.get(int(j), [])) for j in row] for row in order]


def imagenet_topk(top: dict[int, list[list[int]]], truth: dict[int, int], names: dict[int, str]) -> dict:
    """Top-1/top-5 counted as Lagunas & Garces count the baseline: a hit at k when one of the image's k most
    probable ImageNet categories (over all 1000) maps to its class. `top`: image id -> imagenet_top_classes
    row; an image without one (unreadable) is a miss."""
    per: dict[int, list[int]] = {}
    hits1 = hits5 = 0
    for image_id, true in truth.items():
        row = top.get(image_id) or []
        h1 = bool(row) and true in row[0]
        h5 = any(true in cats for cats in row[:5])
        hits1, hits5 = hits1 + h1, hits5 + h5
        n, a, b = per.get(true, (0, 0, 0))
        per[true] = [n + 1, a + h1, b + h5]
    n = len(truth)
    return {"top1": hits1 / n if n else 0.0, "top5": hits5 / n if n else 0.0, "n": n,
            "per_class": {names.get(c, str(c)): {"top1": v[1] / v[0], "top5": v[2] / v[0], "n": v[0]}
                          for c, v in sorted(per.items())},
            "rule": "top-k over the 1000 ImageNet categories; a hit when one of them maps to the image's class"}


def baseline_evaluation(row: sqlite3.Row, truth: dict[int, int], names: dict[int, str]) -> dict | None:
    """A baseline model's top-1/top-5 counted as published (imagenet_topk) from the ImageNet top-5 it stored
    for the test images; None for another model, the renormalized variant, or images it stored none for."""
    if row["method"] != "baseline":
        return None
    stored = json.loads(row["metrics"] or "{}").get("imagenet_top5")
    if not stored or any(str(i) not in stored for i in truth):
        return None
    return imagenet_topk({i: stored[str(i)] for i in truth}, truth, names)


@_register("baseline")
def method_baseline(ctx: Context, req: TrainRequest) -> Outcome:
    """Lagunas & Garces baseline: the ImageNet classifier with its classes mapped to ours (no training).

    As published (default, option baseline=imagenet) top-k is counted over the 1000 ImageNet categories and
    stored in the model's metrics (top1, top5, per_class; the project-class ranking's own figures under
    "ranked"); option baseline=renormalized ranks the project's classes by renormalised mapped mass.
    """
    from artannot.ml.classify.baseline import read_mapping, resolve_mapping
    from artannot.ml.classify.training import evaluation_truth, ranked_rows
    from artannot.ml.metrics import evaluate_ranked

    if not req.options.get("mapping"):
        raise ModelError("--method baseline needs --mapping FILE (project class -> ImageNet categories)")
    variant = _baseline_variant(req.options)
    mapping = resolve_mapping(read_mapping(req.options["mapping"]), ctx.data.names)
    feats, ok = ctx.imagenet_features(req.backbone)
    ctx.check()
    class_ids = sorted(set(ctx.data.class_ids) | set(ctx.data.test.values()) | set(mapping))
    proba = _imagenet_proba(req.backbone, feats)
    scores = baseline_scores(proba, mapping, class_ids, variant)
    unmapped = [ctx.data.names[c] for c in class_ids if c not in mapping]
    params = {"mapping_file": str(req.options["mapping"]), "unmapped": unmapped, "baseline": variant,
              "summary": f"ImageNet {req.backbone} with {len(mapping)} mapped classes"
                         + (" (renormalized)" if variant == "renormalized" else ", top-k over ImageNet classes"),
              "predictor": {"kind": "baseline", "backbone": req.backbone, "variant": variant,
                            "mapping": {str(k): v for k, v in mapping.items()}}}
    extra: dict = {}
    truth = evaluation_truth(ctx.data)
    if variant == "imagenet" and truth:
        rows = {int(image_id): r for r, (image_id, _, _) in enumerate(ctx.data.everything)}
        wanted = [rows[i] for i in truth if i in rows and ok[rows[i]]]
        top = dict(zip((int(ctx.data.everything[r][0]) for r in wanted),
                       imagenet_top_classes(proba[wanted], mapping), strict=True))
        paper = imagenet_topk(top, truth, ctx.data.names)
        ranked, _ = ranked_rows(ctx.data.everything, scores, ok, class_ids)
        own = evaluate_ranked(truth, ranked, class_ids, ctx.data.names)
        extra = {"top1": paper["top1"], "top5": paper["top5"], "per_class": paper["per_class"],
                 "topk_rule": paper["rule"], "ranked": {"top1": own["top1"], "top5": own["top5"]},
                 "imagenet_top5": {str(i): v for i, v in top.items()}}
    return Outcome("baseline", req.backbone, class_ids, scores, ok, params, extra_metrics=extra)


# -- scoring images with a stored model ----------------------------------------------------------------------


def score_model(conn: sqlite3.Connection, cache_dir: Path, row: sqlite3.Row, items: Sequence[tuple[str, str]],
                runtime: Runtime, *, progress: Progress | None = None, cancel: threading.Event | None = None,
                within: tuple[int, ...] = ()) -> tuple[np.ndarray, list[int], np.ndarray]:
    """A stored model's (scores N×K, class ids, ok mask) for (path, sha256) items, cached features reused.

    `within`: the ensembles being scored that this model is a member of (a cycle among them is refused).
    """
    from artannot.store import repo

    pred = model_predictor(cache_dir, row)[1]  # its files, under this project's cache folder
    kind = pred["kind"]
    if kind == "tags":
        raise ModelError(f"model {row['id']} is a tag model: it scores tags (the Tags panel, `artannot tags`),"
                         " not classes")
    cache = FeatureCache(Path(cache_dir) / "features.sqlite")
    try:
        if kind == "ensemble":
            from artannot.ml.classify.ensemble import average_scores

            members = []
            chain = (*within, int(row["id"]))
            for model_id in pred["members"]:
                if model_id in chain:
                    raise ModelError(f"ensemble model {row['id']} contains itself through model {model_id}"
                                     f" ({' → '.join(map(str, (*chain, model_id)))}); train a new ensemble")
                member = repo.get_model(conn, model_id)
                if member is None:
                    raise ModelError(f"ensemble member model {model_id} no longer exists")
                members.append(score_model(conn, cache_dir, member, items, runtime, progress=progress, cancel=cancel,
                                           within=chain))
            return average_scores(members, pred.get("weights"))
        if kind == "baseline":
            feats, ok = extract_features(items, backbone=pred["backbone"], cache=cache, runtime=runtime,
                                         progress=progress, cancel=cancel)
            mapping = {int(k): v for k, v in pred["mapping"].items()}
            class_ids = json.loads(row["classes"])
            variant = pred.get("variant", "renormalized")  # models made before the published variant
            return (baseline_scores(_imagenet_proba(pred["backbone"], feats), mapping, class_ids, variant),
                    class_ids, ok)
        if kind == "network":
            model, meta = load_network(pred["path"])
            feats, ok = network_features(model, items, runtime, backbone=meta["backbone"],
                                         image_size=meta.get("image_size"), cache=cache, key=meta.get("run"),
                                         progress=progress, cancel=cancel)
            return head_scores(model, feats), [int(c) for c in meta["class_ids"]], ok
        if kind == "classifier":
            source = pred["features"]
            if "network" in source:
                model, meta = load_network(source["network"])
                feats, ok = network_features(model, items, runtime, backbone=meta["backbone"],
                                             image_size=source.get("image_size"), cache=cache, key=source["key"],
                                             progress=progress, cancel=cancel)
            else:
                feats, ok = extract_features(items, backbone=source["backbone"], cache=cache, runtime=runtime,
                                             progress=progress, cancel=cancel)
            clf = _classifier_class(pred["classifier"]).load(pred["path"])
            return clf.predict_proba(feats), [int(c) for c in clf.classes_], ok
    finally:
        cache.close()
    raise ModelError(f"model {row['id']} was made by a newer ArtAnnot (predictor {kind!r})")


@_register("auto")
def method_auto(ctx: Context, req: TrainRequest) -> Outcome | None:
    """The one-click default: SVM first, then adaptive + SVM when the time budget (or a GPU) allows."""
    from artannot.ml.classify.auto import run_auto

    return run_auto(ctx, req)
