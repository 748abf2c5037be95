"""MCTSeedModel (head="mct") and its localisation maps on tiny timm ViTs."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import seedkit
from seedkit.backbones import (
    MCTSeedModel,
    MCTSeedModelOutput,
    SeedModel,
    create_seed_model,
)
from seedkit.cam import (
    MCTLocalizationMaps,
    as_seed_map_model,
    fuse_attention_cams,
    infer_cams,
    localization_maps,
    refine_with_affinity,
)
from seedkit.errors import BackboneError, InvalidValueError, ShapeError

NAME = "deit_tiny_patch16_224"
VIT_KW = {"depth": 2, "img_size": 64}
# (name, timm kwargs, prefix tokens other than the class token, patch size)
SPECS = [
    ("deit_tiny_patch16_224", {}, 0, 16),
    ("deit_tiny_distilled_patch16_224", {}, 1, 16),
    ("vit_tiny_patch16_224", {"reg_tokens": 4}, 4, 16),
    ("deit3_small_patch16_224", {}, 0, 16),  # position embeddings on patches only
    ("deit_tiny_patch16_224", {"patch_size": 8}, 0, 8),
]
IDS = ["deit", "distilled", "registers", "deit3", "patch8"]


def _model(name: str = "deit_tiny_patch16_224", classes: int = 4, **kwargs) -> MCTSeedModel:
    torch.manual_seed(0)
    return create_seed_model(name, num_classes=classes, head="mct", **{**VIT_KW, **kwargs})


def _reference_attention(model: MCTSeedModel, x: torch.Tensor) -> list[torch.Tensor]:
    """Every block's full softmax attention (B, heads, T, T), read from timm's unfused path."""
    maps: list[torch.Tensor] = []
    handles = []
    for block in model.encoder.blocks:
        block.attn.fused_attn = False
        handles.append(
            block.attn.attn_drop.register_forward_hook(lambda _m, _i, out: maps.append(out))
        )
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        for block in model.encoder.blocks:
            block.attn.fused_attn = True
    return maps


@pytest.mark.parametrize(("name", "kwargs", "others", "patch"), SPECS, ids=IDS)
def test_shapes_at_non_square_sizes_and_every_parameter_gets_a_gradient(
    name, kwargs, others, patch
):
    model = _model(name, **kwargs)
    assert isinstance(model, SeedModel) and model.family == "vit"
    assert model.encoder.num_prefix_tokens == 4 + others
    assert model.output_stride == patch
    for height, width in ((64, 96), (96, 48)):
        out = model(torch.randn(2, 3, height, width), return_affinity=True)
        grid = (height // patch, width // patch)
        assert isinstance(out, MCTSeedModelOutput)
        assert out.cams.shape == out.class_attention.shape == (2, 4, *grid)
        assert out.features.shape == (2, model.out_channels, *grid)
        assert out.token_logits.shape == out.logits.shape == (2, 4)
        assert out.affinity.shape == (2, grid[0] * grid[1], grid[0] * grid[1])
        assert torch.allclose(out.logits, out.cams.mean((2, 3)))
    assert model(torch.randn(1, 3, 64, 96)).affinity is None  # only on request
    out = model(torch.randn(2, 3, 64, 96))
    (out.cams.square().mean() + out.token_logits.sum() + out.class_attention.sum()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert torch.any(model.encoder.cls_token.grad != 0)
    # The class tokens are trained apart: each class's score moves only its own token.
    model.zero_grad()
    model(torch.randn(1, 3, 64, 96)).token_logits[0, 1].backward()
    norms = model.encoder.cls_token.grad[0].norm(dim=-1)
    assert norms[1] > 0 and torch.all(norms[[0, 2, 3]] < norms[1])


@pytest.mark.parametrize(("name", "kwargs"), [SPECS[1][:2], SPECS[2][:2]], ids=IDS[1:3])
def test_attention_maps_match_timm_softmax_and_sum_as_documented(name, kwargs):
    model = _model(name, depth=3, **kwargs).eval()
    model.attention_blocks = 2
    x = torch.randn(2, 3, 48, 80)
    out = model(x, return_affinity=True)
    reference = _reference_attention(model, x)
    assert len(reference) == 3
    prefix = model.encoder.num_prefix_tokens
    head_mean = [a.mean(1) for a in reference]  # (B, T, T), rows sum to 1
    expected = sum(a[:, :4, prefix:] for a in head_mean[-2:]).reshape(out.class_attention.shape)
    torch.testing.assert_close(out.class_attention, expected, atol=1e-6, rtol=1e-5)
    expected_affinity = sum(a[:, prefix:, prefix:] for a in head_mean)
    torch.testing.assert_close(out.affinity, expected_affinity, atol=1e-6, rtol=1e-5)
    # Documented sums: per block, 1 minus the attention paid to the prefix tokens.
    to_prefix = sum(a[:, :4, :prefix].sum(-1) for a in head_mean[-2:])
    torch.testing.assert_close(out.class_attention.sum((2, 3)), 2.0 - to_prefix)
    assert torch.all(out.class_attention.sum((2, 3)) <= 2.0 + 1e-5)
    assert torch.all(out.affinity.sum(-1) <= 3.0 + 1e-5)


def test_block_counts_defaults_and_errors():
    model = _model(depth=4)
    assert model.attention_blocks == seedkit.backbones.MCT_ATTENTION_BLOCKS == 3
    assert model.affinity_blocks == 4
    assert _model(depth=2).attention_blocks == 2  # a shallower model: all its blocks
    model.attention_blocks = 1
    model.affinity_blocks = 2
    out = model(torch.randn(1, 3, 32, 48), return_affinity=True)
    assert float(out.class_attention.detach().sum((2, 3)).max()) <= 1.0 + 1e-5
    assert float(out.affinity.detach().sum(-1).max()) <= 2.0 + 1e-5
    for value in (0, 5, 1.5, True):
        with pytest.raises(InvalidValueError, match="attention_blocks"):
            model.attention_blocks = value
    with pytest.raises(InvalidValueError, match="affinity_blocks"):
        model.affinity_blocks = 0
    model.attention_blocks = None
    assert model.attention_blocks == 3


def test_class_token_initialisation():
    torch.manual_seed(0)
    encoder = timm.create_model("deit_tiny_patch16_224", num_classes=0, **VIT_KW)
    token = encoder.cls_token.detach().clone()
    class_pos = encoder.pos_embed[:, :1].detach().clone()
    patch_pos = encoder.pos_embed[:, 1:].detach().clone()
    model = MCTSeedModel(encoder, 3, class_token_init="copy")
    assert model.encoder is encoder and isinstance(encoder.norm, torch.nn.Identity)
    assert torch.equal(encoder.cls_token, token.expand(1, 3, -1))
    assert torch.equal(encoder.pos_embed[:, :3], class_pos.expand(1, 3, -1))
    assert torch.equal(encoder.pos_embed[:, 3:], patch_pos)
    random = _model(classes=3)  # no weights loaded: MCTformer's from-scratch init
    tokens = random.encoder.cls_token[0].detach()
    assert not torch.allclose(tokens[0], tokens[1])
    assert 0.005 < float(tokens.std()) < 0.05
    # Re-wrapping an adapted encoder keeps its tokens; another class count is an error.
    assert MCTSeedModel(encoder, 3).encoder.cls_token.shape == (1, 3, 192)
    with pytest.raises(InvalidValueError, match="num_classes"):
        MCTSeedModel(encoder, 5)
    with pytest.raises(InvalidValueError, match="class_token_init"):
        MCTSeedModel(timm.create_model(NAME, **VIT_KW), 3, class_token_init="0")


def test_checkpoints_encoder_weights_and_whole_model(tmp_path):
    torch.manual_seed(1)
    encoder = timm.create_model("deit_tiny_patch16_224", num_classes=0, **VIT_KW)
    path = tmp_path / "encoder.pth"
    torch.save(encoder.state_dict(), path)
    model = create_seed_model(
        "deit_tiny_patch16_224", 2, head="mct", checkpoint_path=path, **VIT_KW
    )
    # Encoder weights load before the class token becomes two, which start as copies of it.
    assert torch.equal(model.encoder.cls_token, encoder.cls_token.expand(1, 2, -1))
    assert torch.equal(model.encoder.blocks[1].mlp.fc2.weight, encoder.blocks[1].mlp.fc2.weight)
    whole = tmp_path / "model.pt"
    torch.save(model.state_dict(), whole)
    again = create_seed_model(
        "deit_tiny_patch16_224", 2, head="mct", checkpoint_path=whole, **VIT_KW
    )
    x = torch.randn(1, 3, 32, 64)
    model.eval(), again.eval()
    torch.testing.assert_close(again(x).token_logits, model(x).token_logits)
    with pytest.raises(BackboneError, match="checkpoint_path"):
        create_seed_model("deit_tiny_patch16_224", 2, checkpoint_path=whole, **VIT_KW)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: create_seed_model("resnet18", 3, head="mct"), BackboneError, "needs a ViT"),
        (lambda: create_seed_model("resnet18", 3, head="mca"), InvalidValueError, "head"),
        (
            lambda: create_seed_model("deit_tiny_patch16_224", 3, head="mct", patch_drop_rate=0.5),
            BackboneError,
            "patch dropout",
        ),
        (
            lambda: create_seed_model("eva02_tiny_patch14_224", 3, head="mct", depth=1),
            BackboneError,
            "timm.layers.Attention",
        ),
        (lambda: _model()(torch.randn(1, 3, 40, 64)), ShapeError, "multiple of 16"),
        (
            lambda: MCTLocalizationMaps(create_seed_model("resnet18", 2)),
            InvalidValueError,
            "MCTSeedModel",
        ),
        (
            lambda: localization_maps(_model()(torch.randn(1, 3, 32, 32))),
            InvalidValueError,
            "affinity",
        ),
        (
            lambda: localization_maps(torch.zeros(1, 2, 3, 3)),
            InvalidValueError,
            "MCTSeedModelOutput",
        ),
        (
            lambda: localization_maps(_model()(torch.randn(1, 3, 32, 32)), kind="cam"),
            InvalidValueError,
            "kind",
        ),
        (
            lambda: refine_with_affinity(torch.zeros(1, 2, 3, 4), torch.zeros(1, 12, 11)),
            ShapeError,
            r"affinity: expected shape \(1, 12, 12\)",
        ),
        (
            lambda: fuse_attention_cams(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 4, 3)),
            ShapeError,
            "cams",
        ),
    ],
    ids=[
        "cnn",
        "head",
        "patch-drop",
        "rope-attention",
        "size",
        "wrap-cnn",
        "no-affinity",
        "not-output",
        "kind",
        "affinity-shape",
        "fuse-shape",
    ],
)
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@given(
    st.integers(1, 2),
    st.integers(1, 3),
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(0, 2**16),
)
def test_refinement_with_identity_leaves_maps_unchanged(batch, classes, height, width, seed):
    generator = torch.Generator().manual_seed(seed)
    maps = torch.rand(batch, classes, height, width, generator=generator, dtype=torch.float64)
    identity = torch.eye(height * width, dtype=torch.float64).expand(batch, -1, -1)
    assert torch.equal(refine_with_affinity(maps, identity), maps)
    # and a general affinity is the documented sum over key patches
    affinity = torch.rand(batch, height * width, height * width, generator=generator).double()
    expected = torch.einsum("bij,bkj->bki", affinity, maps.flatten(2)).reshape(maps.shape)
    torch.testing.assert_close(refine_with_affinity(maps, affinity), expected)


def test_localization_maps_kinds_and_wrapper():
    model = _model().eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model(x, return_affinity=True)
        cells = 4 * 6
        attention = out.class_attention * cells
        fused = attention * F.relu(out.cams)
        torch.testing.assert_close(localization_maps(out, "fused", refine=False), fused)
        torch.testing.assert_close(
            localization_maps(out, "class_attention", refine=False), attention
        )
        torch.testing.assert_close(
            localization_maps(out, "patch_cam", refine=False), F.relu(out.cams)
        )
        torch.testing.assert_close(
            localization_maps(out), refine_with_affinity(fused, out.affinity)
        )
        wrapped = MCTLocalizationMaps(model, kind="class_attention", refine=False)
        assert not wrapped.training  # wrapping keeps the model's mode
        torch.testing.assert_close(wrapped(x).cams, attention)
        assert isinstance(as_seed_map_model(model), MCTLocalizationMaps)
        labels = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
        seeds = infer_cams(as_seed_map_model(model), x, labels, scales=(1.0, 0.5))
    assert seeds.shape == (2, 4, 64, 96)
    assert float(seeds[0, 1:3].abs().sum()) == 0.0 and float(seeds[1, 0].abs().sum()) == 0.0
    assert float(seeds.min()) >= 0.0 and float(seeds.max()) <= 1.0


def test_usage_parts_act_on_the_patch_cams():
    model = _model()
    view = seedkit.SelfAdaptiveView(
        model, drop_ratio=0.3, generator=torch.Generator().manual_seed(0)
    )
    teacher = seedkit.EMATeacher(model, momentum=0.9)
    x = torch.randn(2, 3, 32, 48)
    labels = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    student = view(x)
    assert isinstance(student, MCTSeedModelOutput) and len(view.last_segments) == 2
    replay = view(x, segments=view.last_segments)
    torch.testing.assert_close(replay.cams, student.cams)
    torch.testing.assert_close(replay.class_attention, student.class_attention)
    with torch.no_grad():
        target = seedkit.SelfAdaptiveView(teacher.module, drop_ratio=0.1)(x)
    assert isinstance(target, MCTSeedModelOutput)
    criterion = seedkit.USAGELoss.for_backbone(model, consistency_weight=0.1)
    loss = criterion(student.cams, target.cams, labels, progress=1.0).loss
    loss = loss + F.multilabel_soft_margin_loss(student.token_logits, labels)
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    teacher.update(model)
    assert isinstance(as_seed_map_model(teacher.module), MCTLocalizationMaps)
