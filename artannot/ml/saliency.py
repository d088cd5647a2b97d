"""Where a model looks: VisualBackProp and Grad-CAM for the bundled, torchvision and fine-tuned networks.

A stored model is resolved to a `ModelSource` (which network computes its features, which head scores
them); `load_explainer` turns it into a differentiable pipeline image -> stage maps -> features -> class
scores. For features + SVM models the head is the SVM's decision function recomputed in torch from its
stored support vectors (rbf, sigmoid and linear kernels are differentiable), so Grad-CAM explains the SVM
through the backbone. Maps cover the whole image (shorter side resized to the network's input size, no
crop), so they overlay the artwork the curator sees.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from artannot.errors import ModelError
from artannot.ml.backbones import BackboneSpec, get_spec, imagenet_categories, load_backbone
from artannot.store.model_files import model_predictor, project_cache_dir
from artannot.store.staged import READY

__all__ = [
    "COLORMAPS",
    "Explainer",
    "ModelSource",
    "SaliencyMap",
    "SALIENCY_SIDE",
    "SVMHead",
    "colorize",
    "colour_table",
    "explain",
    "grad_cam",
    "load_explainer",
    "model_source",
    "overlay",
    "prepare_image",
    "stage_outputs",
    "visual_backprop",
]

DEFAULT_BACKBONE = "efficientnet_lite0"
METHODS = ("gradcam", "vbp")


# -- which network and head a stored model uses --------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """How a stored model turns an image into class scores: a network's features, then a head."""

    model_id: int | None  # None: the ImageNet backbone itself, no trained model
    backbone: str
    feature_key: str  # FeatureCache key of its penultimate features (backbone name or fine-tuned run)
    head: str  # imagenet | svm | linear | network | baseline | tags
    network_path: str | None = None  # fine-tuned checkpoint (a plain state dict), None for ImageNet weights
    image_size: int | None = None  # input size the fine-tuned network was trained at
    head_path: str | None = None  # .npz of an SVM or linear probe
    class_ids: tuple[int, ...] = ()
    mapping: dict[int, list[int]] = field(default_factory=dict)  # baseline: class id -> ImageNet indices
    description: str = ""

    @property
    def fine_tuned(self) -> bool:
        return self.network_path is not None

    def spec(self) -> BackboneSpec:
        """Preprocessing of the network (at the size it was fine-tuned at)."""
        if self.image_size:
            from artannot.ml.networks import sized_spec

            return sized_spec(self.backbone, self.image_size)
        return get_spec(self.backbone)

    def load_network(self) -> nn.Module:
        """The network in eval mode on the CPU (fine-tuned checkpoint, or ImageNet weights)."""
        if self.network_path is not None:
            from artannot.ml.networks import load_network

            return load_network(self.network_path)[0]
        return load_backbone(self.backbone)


def _network_meta(path: str) -> dict:
    """The JSON sidecar of a fine-tuned checkpoint (backbone, run key, image size, class ids)."""
    try:
        return json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"network checkpoint {path} has no readable sidecar ({exc}); retrain the model") from None


def model_source(conn: sqlite3.Connection, model_id: int | None, backbone: str = DEFAULT_BACKBONE) -> ModelSource:
    """Resolve a stored model (None: the plain ImageNet backbone) to its network and head."""
    from artannot.store import repo

    if model_id is None:
        get_spec(backbone)
        return ModelSource(None, backbone, backbone, "imagenet", description=f"ImageNet {backbone}")
    row = repo.get_model(conn, model_id)
    if row is None:
        raise ModelError(f"no model with id {model_id} in this project")
    params, pred = model_predictor(project_cache_dir(conn), row)  # its files, under this project's cache folder
    kind = pred.get("kind")
    label = f"model {model_id}: {params.get('summary') or row['method']}"
    classes = tuple(int(c) for c in json.loads(row["classes"] or "[]"))
    if kind in ("classifier", "tags"):  # a head on a backbone's or a fine-tuned network's features
        src = pred.get("features") or {}
        head = pred["classifier"] if kind == "classifier" else "tags"
        if "network" in src:
            meta = _network_meta(src["network"])
            return ModelSource(model_id, meta["backbone"], src.get("key") or meta.get("run"), head,
                               network_path=src["network"], image_size=src.get("image_size"),
                               head_path=pred["path"], class_ids=classes, description=label)
        return ModelSource(model_id, src.get("backbone", row["backbone"]), src.get("backbone", row["backbone"]),
                           head, head_path=pred["path"], class_ids=classes, description=label)
    if kind == "network":
        meta = _network_meta(pred["path"])
        return ModelSource(model_id, meta["backbone"], meta.get("run") or Path(pred["path"]).stem, "network",
                           network_path=pred["path"], image_size=meta.get("image_size"),
                           class_ids=tuple(int(c) for c in meta.get("class_ids", classes)), description=label)
    if kind == "baseline":
        mapping = {int(k): [int(i) for i in v] for k, v in pred["mapping"].items()}
        return ModelSource(model_id, pred["backbone"], pred["backbone"], "baseline", class_ids=classes,
                           mapping=mapping, description=label)
    if kind == "ensemble":
        members = ", ".join(str(m) for m in pred.get("members", []))
        raise ModelError(f"model {model_id} is an ensemble: pick one of its members ({members}) to explain")
    raise ModelError(f"model {model_id} was made by a newer ArtAnnot (predictor {kind!r})")


# -- heads in torch -----------------------------------------------------------------------------------------


class SVMHead(nn.Module):
    """A stored SVM's class scores in torch (one-vs-rest or one-vs-one), differentiable w.r.t. the features.

    The same function as SVMClassifier.decision_function, in float64: kernel against the support vectors,
    dual coefficients per head, then the heads combined into class scores. One-vs-one votes are steps, so
    their gradient is the summed pairwise margins' (the tie-breaking term).
    """

    def __init__(self, clf):
        super().__init__()
        members = getattr(clf, "members_", None) or [clf]
        self.members = None
        if len(members) > 1:  # several settings averaged: a head per setting, nothing of its own
            self.members = nn.ModuleList([SVMHead(m) for m in members])
            self.temperatures = [float(m.temperature_) for m in members]
            return
        self.kernel = clf.kernel_
        self.gamma = float(clf.gamma_)
        self.scheme = getattr(clf, "scheme_", "ovr")
        if self.kernel not in ("rbf", "sigmoid", "linear"):
            raise ModelError(f"saliency cannot differentiate an SVM with a {self.kernel} kernel")
        f64 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=torch.float64)  # noqa: E731
        self.register_buffer("mean", f64(clf.mean_))
        self.register_buffer("scale", f64(clf.scale_))
        self.register_buffer("intercept", f64(clf.intercept_))
        self.register_buffer("support", f64(clf.sv_))
        self.register_buffer("dual", f64(clf.dual_))
        combine = np.asarray(clf.combine_, dtype=np.float64)
        self.register_buffer("combine", f64(combine))
        self.register_buffer("positive", f64(combine > 0))
        self.register_buffer("negative", f64(combine < 0))

    def _kernel(self, x: torch.Tensor, sv: torch.Tensor) -> torch.Tensor:
        dot = x @ sv.T
        if self.kernel == "linear":
            return dot
        if self.kernel == "sigmoid":
            return torch.tanh(self.gamma * dot)  # coef0 = 0, as trained
        sq = (x * x).sum(1, keepdim=True) + (sv * sv).sum(1)[None, :] - 2.0 * dot
        return torch.exp(-self.gamma * sq.clamp_min(0.0))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Class scores (N, classes), as SVMClassifier.decision_function computes them."""
        if self.members is not None:
            p = torch.stack([torch.softmax(t * m(features), 1) for t, m in zip(self.temperatures, self.members,
                                                                             strict=True)]).mean(0)
            return torch.log(p.clamp_min(1e-300))
        x = (features.double() - self.mean) / self.scale
        margins = self._kernel(x, self.support) @ self.dual + self.intercept
        conf = margins @ self.combine
        if self.scheme == "ovr":
            return conf
        votes = (margins > 0).double() @ self.positive + (margins <= 0).double() @ self.negative
        return votes + conf / (3.0 * (conf.abs() + 1.0))


class LinearHead(nn.Module):
    """A stored linear probe's logits in torch."""

    def __init__(self, probe):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(probe.mean_), dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(np.asarray(probe.scale_), dtype=torch.float32))
        self.register_buffer("coef", torch.as_tensor(np.asarray(probe.coef_), dtype=torch.float32))
        self.register_buffer("bias", torch.as_tensor(np.asarray(probe.intercept_), dtype=torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return ((features.float() - self.mean) / self.scale) @ self.coef.T + self.bias


class BaselineHead(nn.Module):
    """ImageNet logits mapped to the collection's classes: log of the summed probabilities of each class's synsets."""

    def __init__(self, net: nn.Module, mapping: dict[int, list[int]], class_ids: tuple[int, ...]):
        super().__init__()
        self.net = net
        self.index = [mapping.get(c, []) for c in class_ids]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        proba = torch.softmax(self.net.forward_head(features).float(), 1)
        cols = [proba[:, idx].sum(1) if idx else proba.new_zeros(len(proba)) for idx in self.index]
        return torch.log(torch.stack(cols, 1).clamp_min(1e-12))


# -- the differentiable pipeline ---------------------------------------------------------------------------


@dataclass
class Explainer:
    """A loaded network and head: image tensor -> stage maps -> features -> class scores."""

    source: ModelSource
    net: nn.Module
    head: Callable[[torch.Tensor], torch.Tensor]
    class_names: list[str]
    proba: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda s: torch.softmax(s.float(), 1))
    baseline: torch.Tensor | None = None  # a classifier's training-mean features: Grad-CAM's reference point

    @property
    def spec(self) -> BackboneSpec:
        return self.source.spec()

    def to(self, device: torch.device | str) -> Explainer:
        self.net.to(device)
        if isinstance(self.head, nn.Module):
            self.head.to(device)
        if self.baseline is not None:
            self.baseline = self.baseline.to(device)
        return self


def stage_outputs(net: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(spatial maps input side first, penultimate features); the last map is the one Grad-CAM weighs.

    EfficientNet-Lite adds its head activation (1x1 conv to 1280 + BN + ReLU6) as the last map, whose
    global average is exactly its feature vector; torchvision networks pool their last stage (VGG: then fc6/fc7).
    """
    maps = list(net.feature_maps(x))
    if hasattr(net, "pool_features") and hasattr(net, "head"):
        top = net.head(maps[-1])
        return [*maps, top], top.mean(dim=(2, 3))
    if hasattr(net, "pre_logits"):
        return maps, net.pre_logits(maps[-1])
    raise ModelError(f"{type(net).__name__} has no feature maps to explain")


def load_explainer(conn: sqlite3.Connection, source: ModelSource, net: nn.Module | None = None) -> Explainer:
    """The network and a differentiable head for a resolved model (net: reuse an already loaded one)."""
    from artannot.store import repo

    net = (net if net is not None else source.load_network()).eval()
    names = repo.class_names(conn)
    if source.head == "imagenet":
        return Explainer(source, net, net.forward_head, imagenet_categories())
    if source.head == "network":
        return Explainer(source, net, net.forward_head, [names.get(c, str(c)) for c in source.class_ids])
    if source.head == "baseline":
        head = BaselineHead(net, source.mapping, source.class_ids)
        return Explainer(source, net, head, [names.get(c, str(c)) for c in source.class_ids],
                         proba=lambda s: torch.softmax(s.float(), 1))
    if source.head == "svm":
        from artannot.ml.classify.classifiers import SVMClassifier

        clf = SVMClassifier.load(source.head_path)
        t = float(clf.temperature_)
        return Explainer(source, net, SVMHead(clf), [names.get(int(c), str(c)) for c in clf.classes_],
                         proba=lambda s: torch.softmax(t * s.float(), 1),
                         baseline=torch.as_tensor(np.asarray(clf.mean_), dtype=torch.float32))
    if source.head == "linear":
        from artannot.ml.classify.linear import LinearProbe

        probe = LinearProbe.load(source.head_path)
        return Explainer(source, net, LinearHead(probe), [names.get(int(c), str(c)) for c in probe.classes_],
                         baseline=torch.as_tensor(np.asarray(probe.mean_), dtype=torch.float32))
    if source.head == "tags":  # where the model sees a tag: the sigmoid head's logit of that tag
        from artannot.ml.tags.multilabel import TagHead

        tags = TagHead.load(source.head_path)
        probe = SimpleNamespace(mean_=tags.mean_, scale_=tags.scale_, coef_=tags.coef_.T, intercept_=tags.intercept_)
        return Explainer(source, net, LinearHead(probe), list(tags.tags_), proba=lambda s: torch.sigmoid(s.float()),
                         baseline=torch.as_tensor(np.asarray(tags.mean_), dtype=torch.float32))
    raise ModelError(f"cannot explain a model with a {source.head!r} head")


SALIENCY_SIDE = 2048  # a huge scan is shrunk on load to this longest side: the map is drawn over it


def prepare_image(image: Image.Image, spec: BackboneSpec, max_ratio: float = 2.0) -> tuple[Image.Image, torch.Tensor]:
    """The whole image (no crop), shorter side at the network's input size; (resized RGB image, 1×3×H×W)."""
    from torchvision.transforms import functional as TF

    image = image.convert("RGB")
    w, h = image.size
    scale = spec.input_size / min(w, h)
    if max(w, h) * scale > max_ratio * spec.input_size:  # a long scroll: keep the tensor small
        scale = max_ratio * spec.input_size / max(w, h)
    size = (max(32, round(w * scale)), max(32, round(h * scale)))
    resample = Image.Resampling.BICUBIC if spec.interpolation == "bicubic" else Image.Resampling.BILINEAR
    shown = image.resize(size, resample)
    x = TF.normalize(TF.to_tensor(shown), spec.mean, spec.std)
    return shown, x[None]


def _normalize01(m: torch.Tensor) -> torch.Tensor:
    """Per-sample min-max scaling of N×1×H×W maps to [0, 1] (flat maps become zero)."""
    lo = m.amin(dim=(2, 3), keepdim=True)
    hi = m.amax(dim=(2, 3), keepdim=True)
    return (m - lo) / (hi - lo).clamp_min(1e-12)


def visual_backprop(maps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """VisualBackProp (Bojarski et al. 2016): channel-averaged maps, upscaled deep to shallow and multiplied.

    Stage outputs without a ReLU (EfficientNet's linear bottlenecks) are rectified first, so each averaged
    map says how strongly the layer fires where. Returns N×H×W in [0, 1].
    """
    avg = [_normalize01(F.relu(m.float()).mean(1, keepdim=True)) for m in maps]
    mask = avg[-1]
    for a in reversed(avg[:-1]):
        mask = F.interpolate(mask, size=a.shape[-2:], mode="bilinear", align_corners=False) * a
    mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
    return _normalize01(mask)[:, 0]


def grad_cam(target: torch.Tensor, score: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): ReLU of the gradient-weighted channel sum of `target`, N×H×W in [0, 1]."""
    (grads,) = torch.autograd.grad(score.sum(), target)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * target).sum(1, keepdim=True))
    cam = F.interpolate(cam.float(), size=size, mode="bilinear", align_corners=False)
    return _normalize01(cam)[:, 0]


def path_grad_cam(target: torch.Tensor, features: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
                  k: int, baseline: torch.Tensor, size: tuple[int, int], steps: int = 16) -> torch.Tensor:
    """Grad-CAM for a kernel head on pooled features, with gradients averaged from a baseline to the image.

    When features are the global average of `target` (EfficientNet, ResNet, Inception), position p adds
    (A(p) - b) / HW to the move from the baseline b (the classifier's training mean) to the image's features,
    and w̄ · (A(p) - b), w̄ the head's gradient averaged along that path, is p's share of S(f) - S(b). For a
    linear head this is CAM up to a constant; for an rbf SVM, whose plain gradient at a confident image only
    says "move towards the nearest support vector", it keeps the map on the evidence. N = 1.
    """
    f = features.detach()[0]
    b = baseline.to(f)
    ts = ((torch.arange(steps, dtype=f.dtype, device=f.device) + 0.5) / steps)[:, None]
    path = (b[None] + ts * (f - b)[None]).requires_grad_(True)
    (grads,) = torch.autograd.grad(head(path)[:, k].sum(), path)
    w = grads.float().mean(0)
    cam = torch.einsum("c,nchw->nhw", w, target.detach().float() - b.view(1, -1, 1, 1))[:, None]
    cam = F.interpolate(F.relu(cam), size=size, mode="bilinear", align_corners=False)
    return _normalize01(cam)[:, 0]


def _pools_target(target: torch.Tensor, features: torch.Tensor) -> bool:
    """True when the features are the global average of the target map (not VGG's fc7)."""
    return features.shape[1] == target.shape[1] and torch.allclose(
        features.detach(), target.detach().mean(dim=(2, 3)), rtol=1e-3, atol=1e-4)


@dataclass(frozen=True)
class SaliencyMap:
    """A heat map over an image (both at the same size) and what it explains."""

    heatmap: np.ndarray  # H×W float32 in [0, 1]
    image: Image.Image  # the RGB image the network saw (whole image, resized)
    method: str  # gradcam | vbp
    class_index: int  # index into class_names of the explained (or predicted) class
    class_name: str
    score: float  # the head's probability for that class
    top: list[tuple[str, float]]  # the head's top-5 (name, probability)
    description: str  # which model

    @property
    def title(self) -> str:
        what = "Grad-CAM" if self.method == "gradcam" else "VisualBackProp"
        return f"{what} · {self.class_name} ({self.score:.0%}) · {self.description}"


def explain(explainer: Explainer, image: Image.Image, *, method: str = "gradcam", class_index: int | None = None,
            device: str | torch.device = "cpu") -> SaliencyMap:
    """Saliency of one image for a class (None: the predicted one) by Grad-CAM or VisualBackProp."""
    if method not in METHODS:
        raise ModelError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    shown, x = prepare_image(image, explainer.spec)
    explainer.to(device)
    x = x.to(device)
    with torch.enable_grad():
        maps, features = stage_outputs(explainer.net, x)
        scores = explainer.head(features)
        proba = explainer.proba(scores.detach())[0].cpu()
        k = int(proba.argmax()) if class_index is None else int(class_index)
        if not 0 <= k < scores.shape[1]:
            raise ModelError(f"class index {k} out of range for {scores.shape[1]} classes")
        size = (x.shape[-2], x.shape[-1])
        if method == "gradcam" and explainer.baseline is not None and _pools_target(maps[-1], features):
            heat = path_grad_cam(maps[-1], features, explainer.head, k, explainer.baseline, size)
        elif method == "gradcam":
            heat = grad_cam(maps[-1], scores[:, k], size)
        else:
            heat = visual_backprop([m.detach() for m in maps], size)
    order = torch.argsort(proba, descending=True)[:5].tolist()
    top = [(explainer.class_names[i], float(proba[i])) for i in order]
    return SaliencyMap(heat[0].detach().cpu().numpy().astype(np.float32), shown, method, k,
                       explainer.class_names[k], float(proba[k]), top, explainer.source.description)


# -- colouring ----------------------------------------------------------------------------------------------

_ANCHORS = {
    # viridis / inferno at 9 evenly spaced points (matplotlib's tables), jet's classic ramp
    "viridis": ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"],
    "inferno": ["#000004", "#1f0c48", "#550f6d", "#88226a", "#ba3655", "#e35933", "#f98e09", "#f9cb35", "#fcffa4"],
    "jet": ["#00007f", "#0000ff", "#007fff", "#00ffff", "#7fff7f", "#ffff00", "#ff7f00", "#ff0000", "#7f0000"],
    "grey": ["#000000", "#ffffff"],
}
COLORMAPS = tuple(_ANCHORS)


def colour_table(name: str) -> np.ndarray:
    """256×3 uint8 colour table interpolated from the anchor colours."""
    if name not in _ANCHORS:
        raise ModelError(f"unknown colour map {name!r}; choose one of {', '.join(_ANCHORS)}")
    anchors = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in _ANCHORS[name]], dtype=np.float64)
    pos = np.linspace(0.0, 1.0, len(anchors))
    t = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(t, pos, anchors[:, j]) for j in range(3)], 1).round().astype(np.uint8)


def colorize(heatmap: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """H×W values in [0, 1] -> H×W×3 uint8 colours."""
    idx = np.clip(np.nan_to_num(heatmap) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return colour_table(cmap)[idx]


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """The image with the coloured heat map blended over it at opacity alpha (map resized to the image)."""
    image = image.convert("RGB")
    if heatmap.shape != (image.height, image.width):
        heat = Image.fromarray(heatmap.astype(np.float32), mode="F").resize(image.size, Image.Resampling.BILINEAR)
        heatmap = np.asarray(heat)
    colours = colorize(heatmap, cmap).astype(np.float32)
    base = np.asarray(image, dtype=np.float32)
    a = float(np.clip(alpha, 0.0, 1.0))
    return Image.fromarray(((1.0 - a) * base + a * colours).round().astype(np.uint8), mode="RGB")


def default_model(conn: sqlite3.Connection) -> int | None:
    """The newest stored class model that has one network to explain (ensembles, tag models skipped), or None."""
    for model_id, params in conn.execute(f"SELECT id, params FROM models WHERE {READY} ORDER BY id DESC"):
        kind = (json.loads(params or "{}").get("predictor") or {}).get("kind")
        if kind not in ("ensemble", "tags"):
            return int(model_id)
    return None
