"""The detector network: torchvision Faster R-CNN on a feature pyramid over a registry backbone.

    image (0-1 RGB) -> GeneralizedRCNNTransform (resize, normalize as the backbone was trained, sides padded to
    multiples of 32: EfficientNet-Lite's static TF-SAME padding is right only there)
    -> backbone stages, frozen BatchNorm, three taps at strides 8 / 16 / 32 -> FPN (+ max-pool level, /64)
    -> RPN (two anchor sizes per level, aspect ratios 0.25..4: long thin instruments too) -> RoIAlign 7x7
    -> two-layer box head -> class scores + box deltas

torchvision builds it with `weights=None, weights_backbone=None`: the backbone's ImageNet weights come from
our registry (ml/backbones.py), never from a download. Checkpoints are a plain state dict (`.pt`, read with
`weights_only=True`) and a JSON sidecar (`.json`) with everything needed to build the network again.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from artannot.errors import ModelError
from artannot.ml.backbones import get_spec, load_backbone

TAP_STRIDES = (8, 16, 32)
ASPECT_RATIOS = (0.25, 0.5, 1.0, 2.0, 4.0)  # height / width, as torchvision's AnchorGenerator reads them
SIZE_DIVISIBLE = 32


@dataclass
class DetectorConfig:
    """How a detector is built; saved in the checkpoint's sidecar (with the classes it detects)."""

    backbone: str = "efficientnet_lite0"
    class_ids: list[int] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    min_size: int = 448  # shorter image side the network sees (CPU default; CUDA runs may raise it)
    max_size: int = 768
    fpn_channels: int = 96
    head_dim: int = 256
    anchor_sizes: tuple[tuple[int, ...], ...] = ((16, 24), (32, 48), (64, 96), (128, 192), (256, 384))
    aspect_ratios: tuple[float, ...] = ASPECT_RATIOS
    rpn_pre_nms_train: int = 600
    rpn_post_nms_train: int = 300
    rpn_pre_nms_test: int = 300
    rpn_post_nms_test: int = 150
    rpn_batch: int = 128
    box_batch: int = 128
    detections_per_img: int = 50
    score_thresh: float = 0.01
    frozen_stages: int = 2  # stem + this many first stages keep their ImageNet weights

    @classmethod
    def from_json(cls, data: dict) -> DetectorConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("anchor_sizes",):
            if key in known:
                known[key] = tuple(tuple(int(s) for s in level) for level in known[key])
        if "aspect_ratios" in known:
            known["aspect_ratios"] = tuple(float(a) for a in known["aspect_ratios"])
        return cls(**known)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d under module by a FrozenBatchNorm2d with its statistics (in place)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def backbone_stages(net: nn.Module) -> list[nn.Module]:
    """The backbone as a chain of stages, input side first (EfficientNet-Lite: stem + 7 stages)."""
    if hasattr(net, "stem") and hasattr(net, "blocks"):
        return [net.stem, *net.blocks]
    if hasattr(net, "stages"):
        return list(net.stages)
    raise ModelError(f"backbone {type(net).__name__} has no stages to tap for a detector")


class TappedBody(nn.Module):
    """Backbone stages returning the last stage output at each stride in TAP_STRIDES, then an FPN."""

    def __init__(self, stages: list[nn.Module], fpn_channels: int, frozen_stages: int, probe_size: int = 256):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        with torch.no_grad():
            x = torch.zeros(1, 3, probe_size, probe_size)
            shapes = []
            for stage in self.stages:
                x = stage(x)
                shapes.append((probe_size // x.shape[-1], x.shape[1]))
        taps = []
        for stride in TAP_STRIDES:
            at = [k for k, (s, _) in enumerate(shapes) if s == stride]
            if not at:
                raise ModelError(f"the backbone has no stage at stride {stride}; it cannot carry a detector")
            taps.append(at[-1])
        self.taps = taps
        self.stages = self.stages[: taps[-1] + 1]
        for stage in self.stages[:frozen_stages + 1]:  # + 1: the stem
            stage.requires_grad_(False)
        self.fpn = FeaturePyramidNetwork([shapes[k][1] for k in taps], fpn_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = fpn_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = OrderedDict()
        for k, stage in enumerate(self.stages):
            x = stage(x)
            if k in self.taps:
                feats[str(self.taps.index(k))] = x
        return self.fpn(feats)


def build_detector(cfg: DetectorConfig, *, pretrained: bool = True) -> FasterRCNN:
    """Faster R-CNN for cfg's classes (+ background); pretrained: the registry's ImageNet backbone weights."""
    spec = get_spec(cfg.backbone)
    if pretrained:
        net = load_backbone(cfg.backbone)
    elif spec.untrained is not None:
        net = spec.untrained()
    else:
        net = load_backbone(cfg.backbone)
    freeze_batchnorm(net)
    body = TappedBody(backbone_stages(net), cfg.fpn_channels, cfg.frozen_stages)
    levels = len(TAP_STRIDES) + 1
    sizes = tuple(cfg.anchor_sizes[:levels])
    anchors = AnchorGenerator(sizes=sizes, aspect_ratios=(tuple(cfg.aspect_ratios),) * levels)
    pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2"], output_size=7, sampling_ratio=2)
    head = TwoMLPHead(cfg.fpn_channels * 7 * 7, cfg.head_dim)
    predictor = FastRCNNPredictor(cfg.head_dim, len(cfg.class_ids) + 1)
    model = FasterRCNN(
        body, num_classes=None, min_size=cfg.min_size, max_size=cfg.max_size, image_mean=list(spec.mean),
        image_std=list(spec.std), rpn_anchor_generator=anchors, box_roi_pool=pool, box_head=head,
        box_predictor=predictor, rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_train, rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_test, rpn_batch_size_per_image=cfg.rpn_batch,
        box_batch_size_per_image=cfg.box_batch, box_detections_per_img=cfg.detections_per_img,
        box_score_thresh=cfg.score_thresh)
    model.transform = GeneralizedRCNNTransform(cfg.min_size, cfg.max_size, list(spec.mean), list(spec.std),
                                               size_divisible=SIZE_DIVISIBLE)
    return model


def save_detector(model: nn.Module, cfg: DetectorConfig, path: Path, extra: dict | None = None) -> None:
    """The state dict to path (.pt) and cfg (+ extra) to its .json sidecar."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path)
    meta = {**asdict(cfg), **(extra or {})}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def load_detector(path: str | Path) -> tuple[FasterRCNN, DetectorConfig]:
    """A saved detector in eval mode (tensors read with weights_only=True: no pickled code runs)."""
    path = Path(path)
    try:
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the detector {path.name}: {exc}") from None
    except Exception:  # torch's unpickler raises many kinds
        raise ModelError(f"cannot read the detector {path.name}: damaged, or not a plain state dict") from None
    cfg = DetectorConfig.from_json(meta)
    model = build_detector(cfg, pretrained=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise ModelError(f"{path.name} does not fit a {cfg.backbone} detector of {len(cfg.class_ids)} classes")\
            from None
    return model.eval(), cfg
