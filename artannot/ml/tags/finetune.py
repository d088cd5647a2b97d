"""`train --method tags --finetune`: multi-label fine-tuning (Illustration2Vec, Gonthier's IconArt runs).

The network is fine-tuned on the curated tags with a sigmoid head and binary cross-entropy (multilabel.finetune_tags,
the shared loop of ml/finetune.py); with `--intermediate PROJECT` it is first fine-tuned on that project's classes
(softmax, as `--method double` does), then its head is replaced by the tags' sigmoid head: double fine-tuning.
The network's own head (a linear layer on its pooled features) is then written as a TagHead over the network's
features (mean 0, scale 1, its weights and biases), so the tag model is stored, scored, evaluated, explained and
exported like every other tag model. Each tag's threshold is the best F1 on the held-out validation images
(floored like TagHead's), 0.5 without any.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from artannot.errors import ModelError
from artannot.ml.metrics import mean_average_precision
from artannot.ml.tags.multilabel import TagHead, best_thresholds, finetune_tags

RECIPES = ("finetune", "adaptive", "frozen")
DEFAULT_EPOCHS = 8


@dataclass
class TunedTags:
    """A fine-tuned tag network and what train_tags stores of it."""

    head: TagHead
    head_path: Path
    checkpoint: Path
    features: np.ndarray  # the network's penultimate features of every project image
    ok: np.ndarray
    source: dict  # predictor["features"]: how to make those features again
    n_train: int
    params: dict = field(default_factory=dict)
    curves: list[dict] = field(default_factory=list)


def network_head(model: nn.Module) -> nn.Linear:
    """The linear layer of a network's head (its last layer group)."""
    linears = [m for m in model.layer_groups()[-1].modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"{type(model).__name__} has no linear head to read tag weights from")
    return linears[-1]


def head_as_tag_head(model: nn.Module, tags: list[str], thresholds: np.ndarray) -> TagHead:
    """The network's sigmoid head as a TagHead on its own features: the same probabilities, one file format."""
    fc = network_head(model)
    head = TagHead()
    head.tags_ = list(tags)
    W = fc.weight.detach().double().cpu().numpy()  # tags × features
    head.mean_, head.scale_ = np.zeros(W.shape[1]), np.ones(W.shape[1])
    head.coef_ = W.T.copy()
    head.intercept_ = (fc.bias.detach().double().cpu().numpy() if fc.bias is not None else np.zeros(W.shape[0]))
    head.thresholds_ = np.asarray(thresholds, dtype=np.float64)
    head.oof_map_ = None
    return head


def _split(samples: list, val_ids: set[int], fraction: float, seed: int) -> tuple[list, list]:
    """(fit, val): the tagged images of the val split when there are some, else a seeded hold-out."""
    if val_ids:
        return [s for s in samples if s[0] not in val_ids], [s for s in samples if s[0] in val_ids]
    k = round(fraction * len(samples)) if len(samples) >= 10 else 0
    order = list(samples)
    random.Random(seed).shuffle(order)
    return sorted(order[k:]), sorted(order[:k])


def _intermediate(ctx, req, model_cfg) -> tuple[nn.Module, dict]:
    """Fine-tune on another project's classes first (the first half of double fine-tuning)."""
    from artannot.ml.finetune import fit
    from artannot.ml.networks import build_network, layer_plan
    from artannot.store import repo
    from artannot.store.db import connect
    from artannot.store.labels import TRAINABLE_SOURCES

    other = Path(str(req.options["intermediate"])).expanduser()
    if not other.is_file():
        raise ModelError(f"--intermediate {other}: no such project file")
    conn = connect(other)
    try:
        train = repo.labelled_images(conn, "train", TRAINABLE_SOURCES)
        val = repo.labelled_images(conn, "val", TRAINABLE_SOURCES)
    finally:
        conn.close()
    class_ids = sorted({c for *_, c in train})
    if len(class_ids) < 2:
        raise ModelError(f"the intermediate project {other} needs labelled train images of at least two classes")
    index = {c: k for k, c in enumerate(class_ids)}
    model = build_network(req.backbone, len(class_ids), weights_path=req.options.get("weights_path"))
    cfg = model_cfg(multilabel=False)
    result = fit(model, [(p, index[c]) for _, p, _, c in train], [(p, index[c]) for _, p, _, c in val if c in index],
                 cfg, ctx.runtime, layer_plan(model, "finetune", req.options), backbone=req.backbone,
                 progress=ctx.staged("intermediate: "), cancel=ctx.cancel)
    ctx.check()
    return model, {"intermediate": str(other.resolve()), "intermediate_classes": len(class_ids),
                   "intermediate_images": len(train), "intermediate_curves": result.curves,
                   "intermediate_stopped": result.stopped}


def finetune_tag_model(ctx, req, train: dict[int, set[int]], tag_ids: list[int], tags: list[str],
                       everything: list[tuple[int, str, str]]) -> TunedTags:
    """Fine-tune a network on the tagged train images, save it, and score every image with its sigmoid head."""
    import dataclasses

    from artannot.ml.finetune import FineTuneConfig
    from artannot.ml.networks import DEFAULTS, network_features, replace_head, save_network
    from artannot.store import tags as tag_store

    recipe = str(req.options.get("recipe") or "finetune")
    if recipe not in RECIPES:
        raise ModelError(f"tags --finetune takes recipe={' | '.join(RECIPES)}, not {recipe!r}")
    epochs = int(req.epochs or req.options.get("epochs") or DEFAULT_EPOCHS)
    defaults = {k: v for k, v in DEFAULTS[recipe].items() if k in ("optimizer", "weight_decay")}

    def model_cfg(multilabel: bool = True) -> FineTuneConfig:
        return FineTuneConfig.from_options({**defaults, **req.options}, epochs=epochs, multilabel=multilabel)

    cfg = model_cfg()
    paths = {image_id: p for image_id, p, _ in everything}
    samples = [(image_id, paths[image_id], np.array([t in train[image_id] for t in tag_ids], dtype=np.float32))
               for image_id in sorted(train) if image_id in paths]
    if len(samples) < 2:
        raise ModelError("tag at least two train-split images before fine-tuning a tag network")
    val_ids = set(tag_store.tagged_images(ctx.conn, "val"))
    fit_rows, val_rows = _split(samples, val_ids, float(req.options.get("val_fraction", 0.15)), cfg.seed)
    if not fit_rows:
        raise ModelError("every tagged image is in the val split: tag some train-split images to fine-tune on")
    model, extra = None, {}
    if req.options.get("intermediate"):
        model, extra = _intermediate(ctx, req, model_cfg)
        replace_head(model.cpu(), len(tag_ids))
    model, result = finetune_tags(req.backbone, [(p, y) for _, p, y in fit_rows], [(p, y) for _, p, y in val_rows],
                                  cfg, ctx.runtime, recipe=recipe, options=req.options, progress=ctx.progress,
                                  cancel=ctx.cancel, model=model)
    ctx.check()
    run = f"tags-{'double' if extra else recipe}-{req.backbone}-{uuid.uuid4().hex[:12]}"
    ckpt = ctx.models_dir / f"{run}.pt"
    save_network(model, ckpt, {"backbone": req.backbone, "n_outputs": len(tag_ids), "class_ids": tag_ids,
                               "image_size": cfg.image_size, "method": "tags", "run": run, "multilabel": True,
                               "seed": cfg.seed})
    head_path = ctx.models_dir / f"{run}.npz"
    try:
        cache = ctx.feature_cache()
        try:
            feats, ok = network_features(model, [(p, sha) for _, p, sha in everything], ctx.runtime,
                                         backbone=req.backbone, image_size=cfg.image_size, cache=cache, key=run,
                                         batch_size=cfg.batch_size, progress=ctx.progress, cancel=ctx.cancel)
        finally:
            cache.close()
        row_of = {image_id: k for k, (image_id, _, _) in enumerate(everything)}
        thresholds = np.full(len(tag_ids), 0.5)
        val_map = None
        head = head_as_tag_head(model, tags, thresholds)
        val_good = [(row_of[i], y) for i, _, y in val_rows if ok[row_of[i]]]
        if val_good:
            rows, Y = [r for r, _ in val_good], np.stack([y for _, y in val_good])
            val_scores = head.predict_proba(feats[rows])
            if Y.any():
                head.thresholds_ = np.maximum(best_thresholds(Y, val_scores), TagHead().min_threshold)
            val_map = mean_average_precision(Y, val_scores, tags)["map"]
        head.oof_map_ = val_map
        head.save(head_path)
    except BaseException:
        for f in (ckpt, ckpt.with_suffix(".json"), head_path):
            f.unlink(missing_ok=True)
        raise
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "deadline"}
    how = "double fine-tuned" if extra else f"{recipe} fine-tuned"
    network = {"recipe": "double" if extra else recipe, "checkpoint": str(ckpt), "plan": result.plan,
               "epochs_run": len(result.curves), "best_epoch": result.best_epoch, "stopped": result.stopped,
               "images_per_s": round(result.images_per_s, 2), "config": config, "n_fit": len(fit_rows),
               "n_val": len(val_rows), "val_map": val_map, **extra}
    params = {"network": network, "finetune": True,
              "summary": f"{len(tags)} tags, {how} {req.backbone} with a sigmoid head (BCE): "
                         f"{len(result.curves)} epochs, best {result.best_epoch} ({result.stopped})"}
    source = {"network": str(ckpt), "key": run, "image_size": cfg.image_size}
    return TunedTags(head, head_path, ckpt, feats, ok, source, len(fit_rows), params, result.curves)


def same_scores(model: nn.Module, head: TagHead, feats: np.ndarray) -> bool:
    """Whether the stored TagHead gives the network's own sigmoid outputs on its features (a self-check)."""
    from artannot.ml.networks import head_scores

    with torch.inference_mode():
        return bool(np.allclose(head.predict_proba(feats), head_scores(model, feats.astype(np.float32),
                                                                       multilabel=True), atol=1e-4))
