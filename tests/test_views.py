"""SelfAdaptiveView: identity at ratio 0, measured drop, no trace on the model, replay, DDP."""

from __future__ import annotations

import copy
import math
import os
import sys
import tempfile
from pathlib import Path

import pytest
import timm
import torch
import torch.distributed as dist
import torch.nn as nn
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

import seedkit
from seedkit.backbones import create_seed_model
from seedkit.errors import BackboneError, InvalidValueError, ShapeError
from seedkit.views import SelfAdaptiveView, find_adjustable_blocks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "dropin"))
import standins  # the drop-in recipes' stand-ins for psa / IRN / MCTformer models

VIT_KW = {"depth": 3, "img_size": 64}


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    # zero_init_last=False: timm otherwise zeroes every residual branch at init.
    return create_seed_model("resnet18", num_classes=3, zero_init_last=False).eval()


@pytest.fixture(scope="module")
def deit():
    torch.manual_seed(0)
    return create_seed_model("deit_tiny_patch16_224", num_classes=3, **VIT_KW).eval()


@pytest.mark.parametrize("which", ["resnet", "deit"])
def test_ratio_zero_is_the_model_and_model_is_untouched(which, request):
    model = request.getfixturevalue(which)
    x = torch.randn(2, 3, 64, 96)
    before = model(x).cams
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert torch.equal(SelfAdaptiveView(model, 0.0)(x).cams, before)
    strong = SelfAdaptiveView(model, 0.5, generator=torch.Generator().manual_seed(1))
    dropped = strong.view(x).cams
    assert not torch.allclose(dropped, before)  # eval mode still drops
    assert _no_hooks(model)
    assert torch.equal(model(x).cams, before)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert strong.family == model.family
    with pytest.raises(ShapeError):  # an exception inside the call removes the hooks too
        strong(torch.randn(1, 4, 64, 64))
    assert _no_hooks(model)


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "convnext_atto"])
def test_measured_drop_fraction_matches_ratio(name):
    """Block output minus block input is the (summed) residual branch: count its zero channels."""
    torch.manual_seed(0)
    kwargs = VIT_KW if name.startswith("deit") else {}
    model = create_seed_model(name, num_classes=3, **kwargs)
    ratio = 0.3
    view = SelfAdaptiveView(model, ratio, generator=torch.Generator().manual_seed(0))
    measured = {}

    def probe(block_name):
        def hook(_m, inputs, output):
            delta = output - inputs[0]
            channel_dim = 1 if view.family == "cnn" else delta.dim() - 1
            dims = tuple(i for i in range(delta.dim()) if i != channel_dim)
            zero = (delta.abs().amax(dim=dims) == 0).nonzero().flatten().tolist()
            measured[block_name] = (zero, delta.shape[channel_dim])

        return hook

    handles = [b.block.register_forward_hook(probe(b.name)) for b in view.blocks]
    try:
        view(torch.randn(2, 3, 64, 64))
    finally:
        for h in handles:
            h.remove()
    fractions = []
    for block in view.blocks:
        zero, channels = measured[block.name]
        if not zero:  # e.g. a ConvNeXt downsampling block whose shortcut is not identity
            continue
        segment = view.last_segments[block.name]
        assert zero == list(range(segment.start, segment.stop))  # contiguous, as recorded
        fractions.append(len(zero) / channels)
    assert len(fractions) >= 3
    assert all(abs(f - ratio) <= 0.01 for f in fractions)


def test_replay_determinism_and_sites(resnet):
    x = torch.randn(2, 3, 64, 64)
    a = SelfAdaptiveView(resnet, 0.3, generator=torch.Generator().manual_seed(5))
    b = SelfAdaptiveView(resnet, 0.3, generator=torch.Generator().manual_seed(5))
    out_a = a(x).cams
    assert torch.equal(out_a, b(x).cams)
    assert a.last_segments == b.last_segments and len(a.last_segments) == 8
    out_next = a(x).cams
    assert not torch.equal(out_a, out_next)  # a new draw
    replay = SelfAdaptiveView(resnet, 0.9)  # ratio irrelevant when replaying
    assert torch.equal(replay(x, segments=b.last_segments).cams, out_a)
    with torch.no_grad():  # the in-place path of gradient-free calls drops the same channels
        assert torch.allclose(replay(x, segments=b.last_segments).cams, out_a, atol=1e-6)
    for segment in a.last_segments.values():
        assert segment.stop - segment.start == a.segment_length(segment.channels)
        assert 0 <= segment.start < segment.stop <= segment.channels


def test_resnet_without_drop_path_hooks_the_same_place_as_with_it():
    torch.manual_seed(0)
    plain = create_seed_model("resnet18", num_classes=2, zero_init_last=False).eval()
    with_dp = create_seed_model(
        "resnet18", num_classes=2, drop_path_rate=0.1, zero_init_last=False
    ).eval()
    with_dp.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    view = SelfAdaptiveView(plain, 0.4)
    out = view(x).cams
    assert torch.equal(SelfAdaptiveView(with_dp, 0.4)(x, segments=view.last_segments).cams, out)


def test_blocks_found_by_structure():
    effnet = timm.create_model("efficientnet_b0", pretrained=False, num_classes=0)
    blocks = find_adjustable_blocks(effnet)
    assert blocks and all(b.block.has_skip for b in blocks)
    skipless = [m for m in effnet.modules() if getattr(m, "has_skip", True) is False]
    assert skipless and not any(b.block is m for b in blocks for m in skipless)
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2, reg_tokens=4, num_classes=0
    )
    blocks = find_adjustable_blocks(vit)
    assert [len(b.branch_ends) for b in blocks] == [2, 2]
    out = SelfAdaptiveView(vit, 0.25)(torch.randn(1, 3, 32, 32))  # a raw timm model
    assert out.shape == (1, 32)


def test_bad_inputs():
    model = create_seed_model("resnet18", num_classes=2)
    for ratio in (-0.1, 1.0, 1.5, math.nan, "0.3", True):
        with pytest.raises(InvalidValueError, match="drop_ratio"):
            SelfAdaptiveView(model, ratio)
    with pytest.raises(BackboneError):
        SelfAdaptiveView(nn.Linear(3, 3), 0.3)
    with pytest.raises(BackboneError, match=r"no adjustable.*sites="):
        SelfAdaptiveView(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), 0.3)
    view = SelfAdaptiveView(model, 0.3)
    with pytest.raises(InvalidValueError):
        view.drop_ratio = 1.0


def test_autocast_and_gradients(deit):
    view = SelfAdaptiveView(deit, 0.3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = view(torch.randn(2, 3, 32, 64))
    assert out.cams.shape == (2, 3, 2, 4) and torch.isfinite(out.cams).all()
    deit.zero_grad()
    view(torch.randn(1, 3, 32, 32)).cams.sum().backward()
    assert all(p.grad is not None for p in deit.parameters())
    deit.zero_grad(set_to_none=True)


def test_ddp_wrapped_model_and_teacher():
    if not dist.is_initialized():
        store = os.path.join(tempfile.mkdtemp(), "store")
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    torch.manual_seed(0)
    model = create_seed_model("resnet18", num_classes=2, zero_init_last=False)
    ddp = nn.parallel.DistributedDataParallel(model)
    strong = seedkit.SelfAdaptiveView(ddp, 0.3, generator=torch.Generator().manual_seed(0))
    assert strong.family == "cnn" and len(strong.blocks) == 8
    x = torch.randn(2, 3, 64, 64)
    out = strong(x)
    out.cams.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # Segments are named as in the unwrapped model: they replay on it.
    assert all(not name.startswith("module.") for name in strong.last_segments)
    replayed = SelfAdaptiveView(model, 0.3)(x, segments=strong.last_segments).cams
    assert torch.allclose(replayed, out.cams, atol=1e-6)
    teacher = seedkit.EMATeacher(ddp, momentum=0.5)
    assert type(teacher.module) is type(model)
    teacher.update(ddp)
    weak = SelfAdaptiveView(teacher, 0.1)
    with torch.no_grad():
        assert weak(x).cams.shape == (2, 2, 2, 2)
    assert _no_hooks(model) and _no_hooks(teacher.module)


class _Residual(nn.Module):
    """A non-timm residual block: found because it has a drop_path module."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.conv(x))


@settings(max_examples=25, deadline=None)
@given(
    channels=st.integers(2, 48),
    ratio=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**16),
)
def test_segment_bounds_and_length_property(channels, ratio, seed):
    torch.manual_seed(seed)
    block = _Residual(channels)
    model = nn.Sequential(nn.Conv2d(3, channels, 1), block)
    view = SelfAdaptiveView(model, ratio, generator=torch.Generator().manual_seed(seed))
    x = torch.randn(2, 3, 4, 5)
    hidden = model[0](x)
    delta = view(x) - hidden
    zero = (delta.abs().amax(dim=(0, 2, 3)) == 0).nonzero().flatten().tolist()
    expected = 0 if ratio == 0 else min(channels - 1, max(1, round(ratio * channels)))
    assert len(zero) == expected
    if expected:
        segment = view.last_segments["1"]
        assert zero == list(range(segment.start, segment.stop))
        assert segment.channels == channels
    else:
        assert view.last_segments == {}


# --- models of the reference codebases: torchvision / IRN, psa / SEAM, MCTformer, sites= ---


def _changed_channels(full: torch.Tensor, dropped: torch.Tensor, dim: int) -> list[int]:
    dims = tuple(i for i in range(full.dim()) if i != dim % full.dim())
    return ((full - dropped).abs().amax(dim=dims) > 0).nonzero().flatten().tolist()


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.0  # train-mode forwards then leave the running stats as they are
    return model


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_torchvision_resnet50_changes_replays_and_leaves_the_model_bit_identical(mode, resnet50):
    model = copy.deepcopy(resnet50).train(mode == "train")
    twin = copy.deepcopy(model)
    x = torch.randn(2, 3, 32, 32)
    view = SelfAdaptiveView(model, drop_ratio=0.3)
    assert len(view.blocks) == 16 and view.family == "cnn"
    assert all(type(b.block).__name__ == "Bottleneck" for b in view.blocks)
    assert all(b.branch_ends == (b.block.bn3,) for b in view.blocks)
    out = view(x)
    plain = twin(x)  # the same number of forwards on a model that never saw a view
    assert not torch.allclose(out, plain)
    assert torch.equal(view(x, segments=view.last_segments), out)
    assert len(view.last_segments) == 16
    assert _no_hooks(model) and model.training == (mode == "train")
    twin(x)
    state, twin_state = model.state_dict(), twin.state_dict()
    assert all(torch.equal(state[k], twin_state[k]) for k in twin_state)  # bit-identical
    assert torch.equal(model(x), twin(x))


def test_torchvision_basic_block_drops_exactly_its_segment_of_the_branch():
    torch.manual_seed(0)
    block = torchvision.models.resnet18(weights=None).layer1[0].eval()
    x = torch.randn(1, 64, 8, 8)
    view = SelfAdaptiveView(block, 0.25)
    assert [b.name for b in view.blocks] == [""] and view.blocks[0].branch_ends == (block.bn2,)
    with torch.no_grad():
        dropped = view(x)
        full = block(x)
    segment = view.last_segments[""]
    assert segment.stop - segment.start == 16
    assert _changed_channels(full, dropped, 1) == list(range(segment.start, segment.stop))


def test_psa_resnet38_blocks_are_found_through_their_overridden_call():
    torch.manual_seed(0)
    model = standins.PsaClassifier()
    model.eval()  # psa's train() override returns None, as the real one does
    blocks = find_adjustable_blocks(model)
    # ResNet-38's block layout (the stand-in follows psa's names and its 4096-wide b7)
    assert [b.name for b in blocks] == [
        "b2", "b2_1", "b2_2", "b3", "b3_1", "b3_2", "b4", "b4_1", "b4_2", "b5", "b5_1", "b6", "b7",
    ]  # fmt: skip
    assert blocks[0].branch_ends == (model.b2.conv_branch2b1,)
    assert blocks[-2].branch_ends == (model.b6.conv_branch2b2,)
    assert blocks[-1].branch_ends == (model.b7.conv_branch2b2,)
    x = torch.randn(2, 3, 32, 32)
    view = SelfAdaptiveView(model, 0.3, generator=torch.Generator().manual_seed(0))
    out = view(x)
    assert not torch.allclose(out, model(x))
    assert torch.equal(view(x, segments=view.last_segments), out)
    assert {s.channels for s in view.last_segments.values()} == {32, 64, 512, 1024, 4096}
    assert _no_hooks(model)
    # One block: output minus the undropped output is the branch on the segment only.
    block = model.b2_1
    single = SelfAdaptiveView(nn.Sequential(block), 0.25)
    h = torch.randn(1, 32, 8, 8)
    with torch.no_grad():
        diff = _changed_channels(block(h), single(h), 1)
    segment = single.last_segments["0"]
    assert diff == list(range(segment.start, segment.stop))
    # A gradient step through the view reaches every trainable parameter.
    model.train()
    view(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("drop_path", [True, False])
def test_mctformer_blocks_tuple_attention_and_one_drop_path(drop_path):
    torch.manual_seed(0)
    model = standins.MCTformerV2(patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=20)
    model.eval()
    if not drop_path:  # a transformer block found by its attn and mlp children alone
        for block in model.blocks:
            del block.drop_path
            block.forward = _no_drop_path_forward.__get__(block)
    view = SelfAdaptiveView(model, 0.25, generator=torch.Generator().manual_seed(3))
    assert view.family == "vit" and [b.name for b in view.blocks] == ["blocks.0", "blocks.1"]
    expected_ends = 1 if drop_path else 2
    assert all(len(b.branch_ends) == expected_ends for b in view.blocks)
    x = torch.randn(2, 3, 32, 48)
    out = view(x)
    assert not torch.allclose(out[1], model(x)[1])
    assert torch.equal(view(x, segments=view.last_segments)[1], out[1])
    assert all(s.channels == 32 and s.stop - s.start == 8 for s in view.last_segments.values())
    # Both branches lose the same channels: block output minus input is zero there.
    deltas = {}

    def probe(_module, inputs, output):
        deltas["d"] = output[0] - inputs[0]

    handle = model.blocks[0].register_forward_hook(probe)
    try:
        with torch.no_grad():
            view(x)
    finally:
        handle.remove()
    segment = view.last_segments["blocks.0"]
    zero = (deltas["d"].abs().amax(dim=(0, 1)) == 0).nonzero().flatten().tolist()
    assert zero == list(range(segment.start, segment.stop))
    assert _no_hooks(model)


def _no_drop_path_forward(self, x):
    attended, weights = self.attn(self.norm1(x))
    x = x + attended
    return x + self.mlp(self.norm2(x)), weights


class _PlainResidual(nn.Module):
    """A residual block seedkit does not recognise: no drop_path, no known names."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.scale = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale(self.body(x))


def test_sites_by_name_and_by_predicate():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), _PlainResidual(8), _PlainResidual(8))
    with pytest.raises(BackboneError, match="sites="):
        SelfAdaptiveView(model, 0.3)
    x = torch.randn(1, 3, 6, 6)
    by_name = SelfAdaptiveView(model, 0.5, sites=["1.scale", "2.scale"])
    out = by_name(x)
    assert sorted(by_name.last_segments) == ["1.scale", "2.scale"]
    by_predicate = SelfAdaptiveView(
        model, 0.5, sites=lambda m: isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
    )
    assert [b.name for b in by_predicate.blocks] == ["0", "1.scale", "2.scale"]
    by_block = SelfAdaptiveView(model, 0.5, sites=lambda m: isinstance(m, _PlainResidual))
    assert [b.branch_ends for b in by_block.blocks] == [(model[1],), (model[2],)]
    segments = dict(by_name.last_segments)
    assert torch.equal(by_predicate(x, segments=segments), out)  # "0" is not replayed
    with pytest.raises(InvalidValueError, match=r"did you mean 1\.scale"):
        SelfAdaptiveView(model, 0.3, sites=["1.scael"])
    with pytest.raises(BackboneError, match="matched no module"):
        SelfAdaptiveView(model, 0.3, sites=lambda m: False)
    with pytest.raises(InvalidValueError, match="sites"):
        SelfAdaptiveView(model, 0.3, "1.scale")
    with pytest.raises(InvalidValueError, match="generator= by keyword"):
        SelfAdaptiveView(model, 0.3, torch.Generator())
    torchvision_sites = find_adjustable_blocks(
        torchvision.models.resnet18(weights=None), sites=["layer1.0"]
    )
    assert type(torchvision_sites[0].branch_ends[0]).__name__ == "BatchNorm2d"  # the branch
