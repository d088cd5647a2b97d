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
from artannot.ml.backbones import BackboneSpec, build_transform, get_spec, load_backbone
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
    return names


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


RECIPES = ("finetune", "adaptive", "frozen")
DEFAULTS: dict[str, dict] = {
    # Sabatelli / Gonthier "all layers": pretrained body at a small LR, new head 10x faster.
    "finetune": {"optimizer": "adamw", "lr": 3e-4, "head_lr": 3e-3, "weight_decay": 0.01},
    # Lagunas & Garces adaptive layer-based optimization: re-initialized lowest layers and FC head at 1e-2,
    # the middle at 1e-4 (SGD with momentum, as in their Caffe setup).
    "adaptive": {"optimizer": "sgd", "high_lr": 1e-2, "low_lr": 1e-4, "low_groups": 1, "reinit_low": True,
                 "weight_decay": 5e-4},
    # Gonthier "frozen lower layers": the lowest half of the convolutional groups keep ImageNet weights.
    "frozen": {"optimizer": "adamw", "lr": 3e-4, "head_lr": 3e-3, "weight_decay": 0.01, "freeze": None},
}


def layer_plan(model: nn.Module, recipe: str, options: dict | None = None) -> list[GroupPlan]:
    """Per-group LR / re-init / freeze for a recipe; options override the defaults (see DEFAULTS).

    `scratch` re-initializes every group (training from scratch); `group_lrs` (a list, one LR per group,
    0 = frozen) replaces the recipe's LRs entirely.
    """
    if recipe not in DEFAULTS:
        raise ModelError(f"unknown fine-tuning recipe {recipe!r}; choose one of: {', '.join(DEFAULTS)}")
    o = {**DEFAULTS[recipe], **(options or {})}
    names = group_names(model)
    n = len(names)
    heads = n_head_groups(model)
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
    if o.get("scratch"):  # Gonthier "from scratch": every layer re-initialized, trained at the body's LR
        plan = [dataclasses.replace(p, reinit=True, frozen=False, lr=p.lr or float(o.get("lr", 3e-4)))
                for p in plan]
    if o.get("group_lrs") is not None:
        lrs = [float(v) for v in o["group_lrs"]]
        if len(lrs) != n:
            raise ModelError(f"group_lrs needs {n} values for this backbone ({', '.join(names)})")
        plan = [dataclasses.replace(p, lr=lr, frozen=lr == 0.0) for p, lr in zip(plan, lrs, strict=True)]
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
    loader = make_loader([items[i][0] for i in todo], build_transform(spec), spec.input_size, runtime, batch_size)
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
