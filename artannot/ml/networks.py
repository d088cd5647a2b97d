"""Networks for fine-tuning: a backbone with a new head, its layer groups and the science notes' plans
for them (learning rate, re-initialization, freezing per group), and saving / using a trained network.

Networks are saved as plain state dicts with a JSON sidecar and read back with
`torch.load(weights_only=True)` only; their features are cached under the network's own name.
"""

from __future__ import annotations

import dataclasses
import io
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from artannot.errors import Cancelled, ModelError
from artannot.ml.backbones import BackboneSpec, get_spec, load_backbone
from artannot.ml.decode_cache import decode_cache_for
from artannot.ml.device import Runtime
from artannot.ml.efficientnet_lite import EfficientNetLite
from artannot.ml.features import FeatureCache, make_loader
from artannot.store.files import atomic_write_bytes

Progress = Callable[[int, int, str], None]
CHECKPOINT_FORMAT = "artannot-network/1"


# -- networks -----------------------------------------------------------------------------------------------


def _init_layer(m: nn.Module) -> None:
    """Fresh weights for a re-initialized layer (He for convolutions, small normal for linear layers)."""
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.01)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        m.reset_parameters()  # affine to identity and running statistics forgotten


def reinitialize(module: nn.Module) -> None:
    """Forget what a layer group learned on ImageNet."""
    for m in module.modules():
        _init_layer(m)


def replace_head(model: nn.Module, n_outputs: int) -> nn.Module:
    """Swap the ImageNet classifier for a fresh one with n_outputs (the new last layer group)."""
    dim = int(model.feature_dim)
    if isinstance(model, EfficientNetLite):
        model._fc = nn.Linear(dim, n_outputs)  # forward_head keeps the network's own dropout in front
        _init_layer(model._fc)
    elif hasattr(model, "classifier"):
        model.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(dim, n_outputs))
        _init_layer(model.classifier[1])
    else:
        raise ModelError(f"{type(model).__name__} has no classifier to replace")
    return model


def build_network(backbone: str, n_outputs: int, *, pretrained: bool = True,
                  weights_path: str | None = None) -> nn.Module:
    """A backbone with a new head of n_outputs; ImageNet weights unless pretrained=False (random init)."""
    if not pretrained:
        model: nn.Module = get_spec(backbone).untrained()
    else:  # torchvision networks are rebuilt from their ImageNet file, then overwritten by a checkpoint
        model = load_backbone(backbone, weights_path)
    return replace_head(model, n_outputs)


def group_names(model: nn.Module) -> list[str]:
    """Readable names of model.layer_groups(), for plans, reports and the Train dialog."""
    n = len(model.layer_groups())
    if isinstance(model, EfficientNetLite):
        return ["stem", *[f"stage{i + 1}" for i in range(n - 3)], "head conv", "classifier"]
    names = [f"stage{i}" for i in range(n - 1)] + ["classifier"]
    if n >= 2 and any(isinstance(m, nn.Linear) for m in model.layer_groups()[-2].modules()):
        names[-2] = "fc layers"
    stages = getattr(model, "stage_names", None)
    if stages and len(stages) <= n - 1:
        names[: len(stages)] = stages
    return names


WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)


def weight_layers(model: nn.Module) -> list[tuple[str, int, nn.ModuleList]]:
    """The network's single layers, input side first: (name, layer group index, modules).

    A layer is one convolution or fully connected layer (the papers' "1st to 10th layers" count these), with
    the normalization layers that follow it before the next one. VGG's are named as in the papers (conv1_1 ...
    conv5_4, fc6, fc7, fc8); others `group.convK` / `group.fcK` (K within the group), or the group's own name
    when it holds a single layer.
    """
    names = group_names(model)
    vgg = getattr(model, "layer_naming", "generic") == "vgg"
    seen: set[int] = set()
    out: list[tuple[str, int, list[nn.Module]]] = []
    n_fc = 0
    for g, group in enumerate(model.layer_groups()):
        units: list[tuple[str, list[nn.Module]]] = []
        pending: list[nn.Module] = []  # normalization met before the group's first weight layer
        counts = {"conv": 0, "fc": 0}
        for m in group.modules():
            if id(m) in seen or not any(True for _ in m.parameters(recurse=False)):
                continue
            seen.add(id(m))
            if isinstance(m, WEIGHT_LAYERS):
                kind = "conv" if isinstance(m, nn.Conv2d) else "fc"
                counts[kind] += 1
                if vgg:
                    n_fc += kind == "fc"
                    label = f"conv{g + 1}_{counts['conv']}" if kind == "conv" else f"fc{5 + n_fc}"
                else:
                    label = f"{names[g]}.{kind}{counts[kind]}"
                units.append((label, [*pending, m]))
                pending = []
            elif units:
                units[-1][1].append(m)
            else:
                pending.append(m)
        if pending and units:
            units[-1][1].extend(pending)
        elif pending:  # parameters but no weight layer: the group is one layer
            units.append((names[g], pending))
        if len(units) == 1 and not vgg:
            units = [(names[g], units[0][1])]
        out += [(label, g, modules) for label, modules in units]
    return [(label, g, nn.ModuleList(modules)) for label, g, modules in out]


def n_head_groups(model: nn.Module) -> int:
    """How many trailing layer groups are fully connected (VGG: fc6/fc7 and the classifier; others: 1)."""
    count = 0
    for group in reversed(model.layer_groups()):
        if not any(isinstance(m, nn.Linear) for m in group.modules()):
            break
        count += 1
    return max(count, 1)


# -- layer plans (the science notes' recipes) --------------------------------------------------------------


@dataclass(frozen=True)
class GroupPlan:
    """What happens to one layer group during training."""

    name: str
    lr: float
    reinit: bool = False
    frozen: bool = False
    unit: str = "group"  # "group": one of model.layer_groups(); "layer": one of weight_layers(model)


def plan_modules(model: nn.Module, plan: Sequence[GroupPlan]) -> list[nn.Module]:
    """The module each plan entry applies to: the layer groups, or the single layers of a per-layer plan."""
    per_layer = bool(plan) and plan[0].unit == "layer"
    if any((p.unit == "layer") != per_layer for p in plan):
        raise ModelError("a layer plan mixes layer groups and single layers")
    modules = [m for *_, m in weight_layers(model)] if per_layer else list(model.layer_groups())
    if len(plan) != len(modules):
        raise ModelError(f"the layer plan has {len(plan)} entries, the network {len(modules)}"
                         f" {'layers' if per_layer else 'groups'}")
    return modules


RECIPES = ("finetune", "adaptive", "frozen")
DEFAULTS: dict[str, dict] = {
    # Sabatelli / Gonthier "all layers": pretrained body at a small LR, new head 10x faster.
    "finetune": {"optimizer": "adamw", "lr": 3e-4, "head_lr": 3e-3, "weight_decay": 0.01},
    # Lagunas & Garces adaptive layer-based optimization: re-initialized lowest layers and FC head at 1e-2,
    # the middle at 1e-4 (SGD with momentum, as in their Caffe setup). The app's default re-initializes only
    # the lowest layer group (small curated sets); the paper's "1st to 10th layers" is low_layers=10
    # (training/configs/lagunas_garces.json).
    "adaptive": {"optimizer": "sgd", "high_lr": 1e-2, "low_lr": 1e-4, "low_groups": 1, "reinit_low": True,
                 "weight_decay": 5e-4},
    # Gonthier "frozen lower layers": the lowest half of the convolutional groups keep ImageNet weights.
    "frozen": {"optimizer": "adamw", "lr": 3e-4, "head_lr": 3e-3, "weight_decay": 0.01, "freeze": None},
}


def layer_plan(model: nn.Module, recipe: str, options: dict | None = None) -> list[GroupPlan]:
    """Per-group LR / re-init / freeze for a recipe; options override the defaults (see DEFAULTS).

    `scratch` re-initializes every group (training from scratch); `scratch_top` (N) re-initializes the N
    layer groups just below the classifier (Gonthier's "end from scratch"); `group_lrs` (a list, one LR per
    group, 0 = frozen) replaces the recipe's LRs entirely. Adaptive with `low_layers` (N) plans single layers
    (weight_layers): the N lowest convolution layers and every fully connected layer re-initialized at
    high_lr, the layers between at low_lr (Lagunas & Garces: low_layers=10 on VGG19 is conv1_1 ... conv4_2).
    """
    if recipe not in DEFAULTS:
        raise ModelError(f"unknown fine-tuning recipe {recipe!r}; choose one of: {', '.join(DEFAULTS)}")
    o = {**DEFAULTS[recipe], **(options or {})}
    names = group_names(model)
    n = len(names)
    heads = n_head_groups(model)
    if recipe == "adaptive" and o.get("low_layers") is not None:
        return _layer_plan_adaptive(model, o, n - heads)
    if recipe == "adaptive":
        low = int(o["low_groups"])
        if not 0 <= low <= n - heads:
            raise ModelError(f"low_groups must be between 0 and {n - heads} for this backbone")
        plan = []
        for i, name in enumerate(names):
            if i >= n - heads:
                plan.append(GroupPlan(name, float(o["high_lr"]), reinit=True))
            elif i < low:
                plan.append(GroupPlan(name, float(o["high_lr"]), reinit=bool(o["reinit_low"])))
            else:
                plan.append(GroupPlan(name, float(o["low_lr"])))
    else:
        freeze = 0
        if recipe == "frozen":
            freeze = (n - heads) // 2 if o.get("freeze") is None else int(o["freeze"])
            if not 0 <= freeze <= n - 1:
                raise ModelError(f"freeze must be between 0 and {n - 1} layer groups for this backbone")
        plan = [GroupPlan(name, 0.0, frozen=True) if i < freeze else
                GroupPlan(name, float(o["head_lr"]) if i == n - 1 else float(o["lr"]), reinit=i == n - 1)
                for i, name in enumerate(names)]
    if o.get("scratch_top"):  # Gonthier "end from scratch": the upper groups start again from random weights
        top = int(o["scratch_top"])
        if not 0 <= top <= n - 1:
            raise ModelError(f"scratch_top must be between 0 and {n - 1} layer groups for this backbone")
        plan = [dataclasses.replace(p, reinit=True, frozen=False, lr=p.lr or float(o.get("lr", 3e-4)))
                if n - 1 - top <= i < n - 1 else p for i, p in enumerate(plan)]
    if o.get("scratch"):  # Gonthier "from scratch": every layer re-initialized, trained at the body's LR
        plan = [dataclasses.replace(p, reinit=True, frozen=False, lr=p.lr or float(o.get("lr", 3e-4)))
                for p in plan]
    if o.get("group_lrs") is not None:
        lrs = [float(v) for v in o["group_lrs"]]
        if len(lrs) != n:
            raise ModelError(f"group_lrs needs {n} values for this backbone ({', '.join(names)})")
        plan = [dataclasses.replace(p, lr=lr, frozen=lr == 0.0) for p, lr in zip(plan, lrs, strict=True)]
    return plan


def _layer_plan_adaptive(model: nn.Module, o: dict, head_start: int) -> list[GroupPlan]:
    """Adaptive layer-based optimization over single layers (option low_layers)."""
    layers = weight_layers(model)
    body = sum(g < head_start for _, g, _ in layers)
    low = int(o["low_layers"])
    if not 0 <= low <= body:
        raise ModelError(f"low_layers must be between 0 and {body} layers for this backbone")
    if o.get("group_lrs") is not None or o.get("scratch_top"):
        raise ModelError("group_lrs and scratch_top apply to layer groups, not to a low_layers plan")
    high, rest = float(o["high_lr"]), float(o["low_lr"])
    plan = []
    for k, (name, g, _) in enumerate(layers):
        if g >= head_start:  # the fully connected layers: new, fast
            plan.append(GroupPlan(name, high, reinit=True, unit="layer"))
        elif k < low:
            plan.append(GroupPlan(name, high, reinit=bool(o["reinit_low"]), unit="layer"))
        else:
            plan.append(GroupPlan(name, rest, unit="layer"))
    if o.get("scratch"):
        plan = [dataclasses.replace(p, reinit=True) for p in plan]
    return plan


def sized_spec(backbone: str, image_size: int | None) -> BackboneSpec:
    """The backbone's preprocessing, at another input side if asked (the resize keeps its crop ratio)."""
    spec = get_spec(backbone)
    if image_size is None or image_size == spec.input_size:
        return spec
    return dataclasses.replace(spec, input_size=int(image_size),
                               resize_size=round(image_size * spec.resize_size / spec.input_size))


# -- using a trained network ----------------------------------------------------------------------------------


class _KeyedCache:
    """A FeatureCache view under another key, so fine-tuned features never mix with ImageNet ones."""

    def __init__(self, cache: FeatureCache, key: str):
        self.cache, self.key = cache, key

    def get_many(self, _backbone: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        return self.cache.get_many(self.key, hashes)

    def put_many(self, _backbone: str, items: dict[str, np.ndarray]) -> None:
        self.cache.put_many(self.key, items)


@torch.inference_mode()
def network_features(model: nn.Module, items: Sequence[tuple[str, str]], runtime: Runtime, *, backbone: str,
                     image_size: int | None = None, cache: FeatureCache | None = None, key: str | None = None,
                     batch_size: int = 32, progress: Progress | None = None,
                     cancel: threading.Event | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features of a fine-tuned network for (path, sha256) items: (N×D, ok mask).

    Cached under `key` (the model's own name), never under the backbone's: the head's logits are
    `model.forward_head(features)`, so one cached pass serves both the SVM and the softmax.
    """
    spec = sized_spec(backbone, image_size)
    keyed = _KeyedCache(cache, key) if cache is not None and key else None
    hashes = [sha for _, sha in items]
    cached = keyed.get_many(key, hashes) if keyed is not None else {}
    feats = np.zeros((len(items), model.feature_dim), dtype=np.float32)
    ok = np.ones(len(items), dtype=bool)
    todo = [i for i, sha in enumerate(hashes) if sha not in cached]
    for i, sha in enumerate(hashes):
        if sha in cached:
            feats[i] = cached[sha]
    if progress is not None:
        progress(len(items) - len(todo), len(items), "features of the trained network")
    if not todo:
        return feats, ok
    model = runtime.prepare(model).eval()
    loader = make_loader([items[i][0] for i in todo], None, spec.input_size, runtime, batch_size, spec=spec,
                         hashes=[hashes[i] for i in todo],
                         decode_cache=decode_cache_for(cache.path.parent) if cache is not None else None)
    pos = 0
    for x, good in loader:
        if cancel is not None and cancel.is_set():
            raise Cancelled("training cancelled")
        with runtime.autocast():
            f = model.forward_features(runtime.batch(x)).float().cpu().numpy()
        idx = todo[pos: pos + len(f)]
        feats[idx], ok[idx] = f, good.numpy()
        if keyed is not None:
            keyed.put_many(key, {hashes[i]: feats[i] for i, g in zip(idx, good.tolist(), strict=True) if g})
        pos += len(f)
        if progress is not None:
            progress(len(items) - len(todo) + pos, len(items), "features of the trained network")
    return feats, ok


@torch.inference_mode()
def head_scores(model: nn.Module, features: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """Softmax (or sigmoid, for tags) of the network's head on its own penultimate features."""
    head_device = next(model.parameters()).device
    logits = model.eval().forward_head(torch.from_numpy(features).to(head_device)).float()
    return (torch.sigmoid(logits) if multilabel else torch.softmax(logits, 1)).cpu().numpy()


def model_network(conn, cache_dir: str | Path, source) -> tuple[Path, str]:
    """(checkpoint, label) of the trained network behind a stored model, for option from_model.

    `source` is a model id of this project, or `PROJECT.artannot#ID` for a model of another project (the
    large noisy set a network adapted on, an intermediate collection): its features are then computed by
    that network here, and the other project must stay where it is for this model to score new images.
    """
    from artannot.store.model_files import cache_dir_for, model_predictor

    text = str(source).strip()
    other = None
    if "#" in text:
        where, _, text = text.rpartition("#")
        other = Path(where).expanduser()
        if not other.is_file():
            raise ModelError(f"from_model {source!r}: there is no project file {other}")
    try:
        model_id = int(text)
    except ValueError:
        raise ModelError(f"from_model takes a model id or PROJECT.artannot#ID, not {source!r}") from None
    if other is None:
        row = conn.execute("SELECT * FROM models WHERE id = ?", (model_id,)).fetchone()
        label = str(model_id)
    else:
        from artannot.store.db import connect

        other_conn = connect(other)
        try:
            row = other_conn.execute("SELECT * FROM models WHERE id = ?", (model_id,)).fetchone()
        finally:
            other_conn.close()
        cache_dir, label = cache_dir_for(other.resolve()), f"{other.resolve()}#{model_id}"
    if row is None:
        raise ModelError(f"no model {model_id} in {other or 'this project'}")
    pred = model_predictor(cache_dir, row)[1]
    path = pred.get("path") if pred.get("kind") == "network" else pred.get("features", {}).get("network")
    if not path:
        raise ModelError(f"model {label} has no trained network whose features could be used")
    return Path(path), label


# -- checkpoints ---------------------------------------------------------------------------------------------


def save_network(model: nn.Module, path: Path, meta: dict) -> None:
    """A plain state dict (CPU tensors only) and a JSON sidecar, each written atomically."""
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    sidecar = {"format": CHECKPOINT_FORMAT, "feature_dim": int(model.feature_dim), **meta}
    atomic_write_bytes(Path(path).with_suffix(".json"), json.dumps(sidecar, indent=1).encode())
    atomic_write_bytes(Path(path), buf.getvalue())  # last: a checkpoint without its sidecar never exists


def load_network(path: str | Path) -> tuple[nn.Module, dict]:
    """A network written by save_network, read without executing pickled code; (model in eval mode, meta)."""
    path = Path(path)
    foreign = ModelError(f"model file {path} is not a checkpoint ArtAnnot wrote; retrain or delete the model")
    if not path.is_file():
        raise ModelError(f"network checkpoint {path} is missing; retrain or delete the model")
    try:
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not an ArtAnnot sidecar")
        backbone, n_outputs = str(meta["backbone"]), int(meta["n_outputs"])
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        raise foreign from None
    try:
        # weights_only: tensors and plain containers, never pickled code. Torch's own message for a file it
        # refuses suggests the unsafe load; it is deliberately not shown.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # pickle, zip, EOF and runtime errors alike for a damaged or foreign file
        raise foreign from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise foreign
    model = build_network(backbone, n_outputs, pretrained=False)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{path} does not fit a {backbone} network ({first[:120]}); retrain or delete the model"
                         ) from None
    return model.eval(), meta
