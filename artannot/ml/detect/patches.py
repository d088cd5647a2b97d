"""`--method patches`: a cold-start detector for a handful of boxes (the instrument study's own route).

Region proposals are a dense multi-scale grid of windows (sizes and aspect ratios spanning those of the
training boxes, a quarter-window stride). Each region is described by deep features of the ImageNet backbone
pooled over it from one pass over the whole image (RoIAlign on the stride-16 map, 2x2 cells, and on the
stride-32 head map, averaged; Fast R-CNN's trick, so thousands of windows cost one forward pass), plus its
shape. A softmax probe (ml/classify/linear.py LinearProbe, C by cross-validation, calibrated) separates the
classes' boxes (with windows over them, IoU >= 0.6) from mined background: random windows away from every box
(IoU < 0.3), windows over a part of a box (IoU < 0.3, 70% of the window inside it) and, in a second round, the background windows the first probe scored highest (hard negatives).
Detections are the windows whose class probability passes the threshold, after per-class NMS.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms, box_iou, roi_align

from artannot.errors import Cancelled, ImageLoadError, ModelError
from artannot.ml.backbones import get_spec, load_backbone
from artannot.ml.classify.linear import LinearProbe
from artannot.ml.detect.data import BoxImage, load_scaled, xyxy
from artannot.ml.detect.model import backbone_stages

BACKGROUND = -1  # the probe's label of mined background regions
POSITIVE_IOU = 0.6
NEGATIVE_IOU = 0.3
CHUNK = 4096  # windows scored at once
PROBE_CS = (0.001, 0.01, 0.1)  # strong regularisation: near-duplicate windows make CV favour overfitting


@dataclass
class PatchConfig:
    """How windows are laid and scored; saved in the probe's sidecar."""

    backbone: str = "efficientnet_lite0"
    class_ids: list[int] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    min_size: int = 384
    max_size: int = 640
    scales: list[float] = field(default_factory=lambda: [0.15, 0.25, 0.4, 0.6])  # window side / shorter side
    aspects: list[float] = field(default_factory=lambda: [1.0])  # width / height
    step: float = 0.25  # stride as a fraction of the window's side
    nms_iou: float = 0.3
    max_detections: int = 50

    @classmethod
    def from_json(cls, data: dict) -> PatchConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def fit_windows(images: list[BoxImage], cfg: PatchConfig) -> None:
    """Set cfg's window sizes and aspect ratios to span those of the training boxes."""
    rel, aspects = [], []
    for im in images:
        short = max(min(im.width, im.height), 1)
        for _, _, _, w, h in im.boxes:
            rel.append(math.sqrt(w * h) / short)
            aspects.append(w / h)
    if not rel:
        return
    lo, hi = max(min(rel) * 0.8, 0.03), min(max(rel) * 1.25, 1.2)
    n = max(1, math.ceil(math.log(hi / lo) / math.log(1.3)))
    cfg.scales = [float(lo * (hi / lo) ** (k / n)) for k in range(n + 1)] if n > 0 else [lo]
    la = np.log(aspects)
    grid = [0.25, 0.5, 1.0, 2.0, 4.0]
    cfg.aspects = [a for a in grid if la.min() - 0.45 <= math.log(a) <= la.max() + 0.45] or [1.0]


def windows(width: int, height: int, cfg: PatchConfig) -> torch.Tensor:
    """Every window (x0, y0, x1, y1) of the grid on a width x height tensor image, borders included."""
    short = min(width, height)
    out = []
    for s in cfg.scales:
        for a in cfg.aspects:
            w, h = s * short * math.sqrt(a), s * short / math.sqrt(a)
            w, h = min(w, width), min(h, height)
            if w < 4 or h < 4:
                continue
            xs = _positions(width, w, max(4.0, cfg.step * w))
            ys = _positions(height, h, max(4.0, cfg.step * h))
            gx, gy = torch.meshgrid(xs, ys, indexing="ij")
            gx, gy = gx.reshape(-1), gy.reshape(-1)
            out.append(torch.stack([gx, gy, gx + w, gy + h], 1))
    return torch.cat(out) if out else torch.zeros((0, 4))


def _positions(length: float, side: float, step: float) -> torch.Tensor:
    n = max(1, math.floor((length - side) / step) + 1)
    pos = torch.arange(n, dtype=torch.float32) * step
    if pos[-1] + side < length - 1:  # one more window flush with the far border
        pos = torch.cat([pos, torch.tensor([length - side])])
    return pos


class RegionFeatures(nn.Module):
    """Backbone maps at strides 16 and 32 (the head conv on top for EfficientNet-Lite) of a whole image."""

    def __init__(self, backbone: str):
        super().__init__()
        net = load_backbone(backbone)
        stages = backbone_stages(net)
        with torch.no_grad():
            x, strides = torch.zeros(1, 3, 256, 256), []
            for stage in stages:
                x = stage(x)
                strides.append(256 // x.shape[-1])
        if 16 not in strides or 32 not in strides:
            raise ModelError(f"backbone {backbone} has no stages at strides 16 and 32 for region features")
        self.tap16 = max(k for k, s in enumerate(strides) if s == 16)
        self.tap32 = max(k for k, s in enumerate(strides) if s == 32)
        self.stages = nn.ModuleList(stages[: self.tap32 + 1])
        self.top = net.head if hasattr(net, "head") and hasattr(net, "blocks") else nn.Identity()
        spec = get_spec(backbone)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))
        self.eval()

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(stride-16 map, stride-32 map) of one 0-1 image (3, H, W), its sides padded to multiples of 32."""
        h, w = image.shape[-2:]
        x = torch.nn.functional.pad(image[None], (0, (-w) % 32, 0, (-h) % 32), value=0.5)
        x = (x - self.mean) / self.std
        a = None
        for k, stage in enumerate(self.stages):
            x = stage(x)
            if k == self.tap16:
                a = x
        return a, self.top(x)


def roi_align_few_cells(feature: torch.Tensor, rois: torch.Tensor, output: tuple[int, int], spatial_scale: float
                        ) -> torch.Tensor:
    """roi_align (adaptive sampling, aligned) of one image's map, flattened per region; when the map has fewer
    cells than channels (the deep stride-32 map: ~300 cells of 1280 channels) each region's bilinear weights
    over the cells are found by aligning a one-hot map of the cells, then applied to every channel at once
    with one matrix product: the same figures, three times faster on a CPU."""
    c, h, w = feature.shape[-3:]
    if h * w >= c:
        return roi_align(feature, rois, output, spatial_scale=spatial_scale, sampling_ratio=-1,
                         aligned=True).flatten(1)
    one_hot = torch.eye(h * w, dtype=feature.dtype, device=feature.device).reshape(1, h * w, h, w)
    weights = roi_align(one_hot, rois, output, spatial_scale=spatial_scale, sampling_ratio=-1, aligned=True)
    pooled = torch.einsum("nkb,ck->ncb", weights.flatten(2), feature.reshape(c, h * w))
    return pooled.flatten(1)


def region_features(maps: tuple[torch.Tensor, torch.Tensor], rois: torch.Tensor, size: tuple[int, int]
                    ) -> np.ndarray:
    """Features of (x0, y0, x1, y1) regions of one image: pooled deep features and the region's shape."""
    a, b = maps
    rois = rois.to(a.device, torch.float32)
    indexed = torch.cat([torch.zeros((len(rois), 1), device=a.device), rois], 1)
    fa = roi_align_few_cells(a.float(), indexed, (2, 2), 1 / 16)
    fb = roi_align_few_cells(b.float(), indexed, (1, 1), 1 / 32)
    w, h = (rois[:, 2] - rois[:, 0]).clamp(min=1), (rois[:, 3] - rois[:, 1]).clamp(min=1)
    short = float(min(size))
    shape = torch.stack([torch.log(w / h), torch.log(torch.sqrt(w * h) / short)], 1)
    return torch.cat([fa, fb, shape], 1).cpu().numpy()


def drop_parts(boxes: torch.Tensor, scores: torch.Tensor, index: torch.Tensor, inside: float = 0.7
               ) -> torch.Tensor:
    """index without the windows lying mostly (inside, of their own area) within a better-scoring kept window
    of any class: a window over part of an object is not another object (NMS keeps those, their IoU is low)."""
    order = torch.argsort(scores, descending=True)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept: list[int] = []
    for i in order.tolist():
        if kept:
            k = torch.tensor(kept)
            ix = (torch.minimum(boxes[k, 2], boxes[i, 2]) - torch.maximum(boxes[k, 0], boxes[i, 0])).clamp(min=0)
            iy = (torch.minimum(boxes[k, 3], boxes[i, 3]) - torch.maximum(boxes[k, 1], boxes[i, 1])).clamp(min=0)
            if bool(((ix * iy) >= inside * area[i]).any()):
                continue
        kept.append(i)
    return index[torch.tensor(kept, dtype=torch.long)] if kept else index[:0]


@dataclass
class PatchDetector:
    """A fitted patches detector: window grid + region features + probe."""

    cfg: PatchConfig
    probe: LinearProbe
    extractor: RegionFeatures | None = None

    def _extractor(self) -> RegionFeatures:
        if self.extractor is None:
            self.extractor = RegionFeatures(self.cfg.backbone)
        return self.extractor

    def detect(self, image: torch.Tensor, scale: float, threshold: float) -> list[tuple[int, float, float, float,
                                                                                          float, float]]:
        """(class id, x, y, w, h, score) in image pixels of one 0-1 image tensor scaled by `scale`."""
        h, w = image.shape[-2:]
        maps = self._extractor()(image)
        rois = windows(w, h, self.cfg)
        cols = [k for k, c in enumerate(self.probe.classes_) if c != BACKGROUND]
        labels = self.probe.classes_[cols]
        boxes, scores, classes = [], [], []
        for start in range(0, len(rois), CHUNK):
            part = rois[start : start + CHUNK]
            proba = self.probe.predict_proba(region_features(maps, part, (w, h)))[:, cols]
            r, k = np.nonzero(proba >= threshold)
            boxes.append(part[torch.from_numpy(r)])
            scores.append(torch.from_numpy(proba[r, k]).float())
            classes.append(torch.from_numpy(k))
        if not boxes or not sum(len(s) for s in scores):
            return []
        boxes_t, scores_t, classes_t = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
        keep = batched_nms(boxes_t, scores_t, classes_t, self.cfg.nms_iou)
        keep = drop_parts(boxes_t[keep], scores_t[keep], keep)[: self.cfg.max_detections]
        out = []
        for i in keep.tolist():
            x0, y0, x1, y1 = (float(v) / scale for v in boxes_t[i])
            out.append((int(labels[int(classes_t[i])]), x0, y0, x1 - x0, y1 - y0, float(scores_t[i])))
        return out

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.probe.save(path)
        path.with_suffix(".json").write_text(json.dumps(asdict(self.cfg), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> PatchDetector:
        path = Path(path)
        try:
            cfg = PatchConfig.from_json(json.loads(path.with_suffix(".json").read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read the patches detector {path.name}: {exc}") from None
        return cls(cfg, LinearProbe.load(path))


def with_negative_background(conn, images: list[BoxImage], splits) -> list[BoxImage]:
    """The training images plus every image of splits labelled with a negative class ("no instrument",
    store/classes.py) and without boxes, as an empty image: all its windows are background (for the patch
    probe, and negatives for Faster R-CNN). Boxes of a negative class are no object and are dropped."""
    from artannot.ml.detect.data import box_images
    from artannot.store.classes import negative_class_ids

    negative = negative_class_ids(conn)
    if not negative:
        return images
    for im in images:
        im.boxes = [b for b in im.boxes if b[0] not in negative]
    marks = ",".join("?" * len(negative))
    labelled = {int(r[0]) for r in conn.execute(
        f"SELECT image_id FROM labels WHERE active = 1 AND class_id IN ({marks})", sorted(negative))}
    have = {im.image_id for im in images}
    extra = [im for im in box_images(conn, splits, negatives=True)
             if im.image_id in labelled and im.image_id not in have and not im.boxes]
    return list(images) + extra


def _sample(rng: np.random.Generator, idx: np.ndarray, n: int) -> np.ndarray:
    return idx if len(idx) <= n else rng.choice(idx, n, replace=False)


def train_patches(images: list[BoxImage], cfg: PatchConfig, *, progress: Callable[[int, int, str], None] | None,
                  cancel: threading.Event | None, negatives_per_image: int = 24, hard_per_image: int = 16,
                  positives_per_box: int = 4, seed: int = 0, device: torch.device | str = "cpu"
                  ) -> tuple[PatchDetector, dict]:
    """Fit the probe on box regions vs mined background regions (two rounds); returns it and its figures."""
    rng = np.random.default_rng(seed)
    fit_windows(images, cfg)
    extractor = RegionFeatures(cfg.backbone).to(device)
    X, y, pools = [], [], []
    total = 2 * len(images)
    for n, im in enumerate(images):
        if cancel is not None and cancel.is_set():
            raise Cancelled("training cancelled")
        try:
            tensor, scale = load_scaled(im.path, cfg.min_size, cfg.max_size)
        except ImageLoadError:  # an unreadable image is skipped, as in every other training
            pools.append(None)
            continue
        h, w = tensor.shape[-2:]
        maps = extractor(tensor.to(device))
        grid = windows(w, h, cfg)
        gt = xyxy(im.boxes, scale)
        labels = np.array([b[0] for b in im.boxes], dtype=np.int64)
        parts = np.zeros(0, dtype=np.int64)
        if len(gt):
            ious = box_iou(grid, gt)
            best, which = ious.max(1)
            best, which = best.numpy(), which.numpy()
            area_w = ((grid[:, 2] - grid[:, 0]) * (grid[:, 3] - grid[:, 1]))[:, None]
            area_g = ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))[None, :]
            inside = (ious * (area_w + area_g) / (1 + ious) / area_w).max(1).values.numpy()
            parts = np.flatnonzero((best < NEGATIVE_IOU) & (inside >= 0.7))  # a part of an object is background
        else:
            best, which = np.zeros(len(grid)), np.zeros(len(grid), dtype=np.int64)
        chosen = [gt] if len(gt) else []
        chosen_y = [labels] if len(gt) else []
        for j in range(len(gt)):
            near = np.flatnonzero((which == j) & (best >= POSITIVE_IOU))
            pick = _sample(rng, near, positives_per_box)
            chosen.append(grid[pick])
            chosen_y.append(np.full(len(pick), labels[j]))
        background = np.flatnonzero(best < NEGATIVE_IOU)
        pick = np.union1d(_sample(rng, background, negatives_per_image), _sample(rng, parts, 4 * len(gt)))
        chosen.append(grid[pick])
        chosen_y.append(np.full(len(pick), BACKGROUND))
        rois = torch.cat(chosen)
        X.append(region_features(maps, rois, (w, h)))
        y.append(np.concatenate(chosen_y))
        pools.append((maps, grid[background], (w, h)))
        if progress is not None:
            progress(n + 1, total, "region features")
    if not X:
        raise ModelError("none of the boxed images could be read")
    Xa, ya = np.concatenate(X), np.concatenate(y)
    probe = LinearProbe(Cs=PROBE_CS, folds=3, max_iter=500).fit(Xa, ya, cancel=cancel)
    hard_X = []
    bg_col = list(probe.classes_).index(BACKGROUND)
    for n, pool in enumerate(pools):
        if cancel is not None and cancel.is_set():
            raise Cancelled("training cancelled")
        if pool is None:
            continue
        maps, bg, size = pool
        best_scores, best_feats = [], []
        for start in range(0, len(bg), CHUNK):
            f = region_features(maps, bg[start : start + CHUNK], size)
            s = 1.0 - probe.predict_proba(f)[:, bg_col]
            top = np.argsort(-s)[:hard_per_image]
            best_scores.append(s[top])
            best_feats.append(f[top])
        if best_scores:
            s, f = np.concatenate(best_scores), np.concatenate(best_feats)
            hard_X.append(f[np.argsort(-s)[:hard_per_image]])
        if progress is not None:
            progress(len(images) + n + 1, total, "mining hard background")
    if hard_X:
        Xa = np.concatenate([Xa, *hard_X])
        ya = np.concatenate([ya, np.full(sum(len(h) for h in hard_X), BACKGROUND)])
        probe = LinearProbe(Cs=PROBE_CS, folds=3, max_iter=500).fit(Xa, ya, cancel=cancel)
    counts = {str(int(c)): int((ya == c).sum()) for c in np.unique(ya)}
    info = {"regions": counts, "C": probe.C_, "cv_top1": probe.cv_top1_, "windows": {
        "scales": cfg.scales, "aspects": cfg.aspects, "step": cfg.step}}
    return PatchDetector(cfg, probe, extractor), info
