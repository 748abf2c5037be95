"""Stand-ins with the structure of the reference codebases' models, for the drop-in recipes.

The recipes of the docs page "Drop into your codebase" run in CI against these
modules. They are written for seedkit (no code of psa, SEAM, IRN, MCTformer or
ToCo is copied); each has the *structure* that matters to seedkit and is small
enough to run in milliseconds:

- :class:`ResNet38` / :class:`PsaClassifier`: psa / SEAM's ResNet-38, whose blocks
  use Caffe names (``conv_branch1`` shortcut, ``*branch2*`` residual branch) and
  override ``__call__`` (so hooks on the block itself never run), returning
  pooled logits as psa's ``resnet38_cls.Net`` does;
- :class:`IRNClassifier`: IRN's ``resnet50_cam.Net``: a torchvision ResNet-50
  with strides (2, 2, 2, 1), four stages and a 1x1 bias-free classifier after
  global average pooling;
- :class:`MCTformerV2`: MCTformer-V2: one class token per class, blocks whose
  attention returns ``(tokens, attention weights)`` and which call one
  ``drop_path`` module for both branches, a 3x3 conv head on the patch tokens
  pooled into patch logits;
- :class:`ToCoNet`: ToCo: a timm ViT encoder whose patch tokens go through
  global max pooling and a 1x1 bias-free classifier; ``forward`` returns the
  logits and the patch-token map (ToCo's ``cls`` and ``fmap``).

Widths and depths are tiny; the recipes never depend on them.
"""

from __future__ import annotations

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

NUM_CLASSES = 20


# --- psa / SEAM: ResNet-38 ---------------------------------------------------------------


class ResBlock(nn.Module):
    """Pre-activation residual block with Caffe names, shaped like psa's ``ResBlock``."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.same_shape = in_ch == out_ch and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, mid_ch, 3, stride, padding=1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid_ch)
        self.conv_branch2b1 = nn.Conv2d(mid_ch, out_ch, 3, padding=1, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor, get_x_bn_relu: bool = False):
        activated = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(activated)
        branch = F.relu(self.bn_branch2b1(self.conv_branch2a(activated)))
        out = shortcut + self.conv_branch2b1(branch)
        return (out, activated) if get_x_bn_relu else out

    def __call__(self, x: torch.Tensor, get_x_bn_relu: bool = False):
        # As in psa: nn.Module.__call__ is bypassed, so hooks on the block never run.
        return self.forward(x, get_x_bn_relu=get_x_bn_relu)


class ResBlockBottleneck(nn.Module):
    """Bottleneck block with Caffe names and dropout, shaped like psa's ``ResBlock_bot``."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, out_ch // 4, 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(out_ch // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(out_ch // 4, out_ch // 2, 3, padding=1, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(out_ch // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(out_ch // 2, out_ch, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor, get_x_bn_relu: bool = False):
        activated = F.relu(self.bn_branch2a(x))
        branch = self.conv_branch2a(activated)
        branch = self.dropout_2b1(F.relu(self.bn_branch2b1(branch)))
        branch = self.conv_branch2b1(branch)
        branch = self.dropout_2b2(F.relu(self.bn_branch2b2(branch)))
        out = self.conv_branch1(activated) + self.conv_branch2b2(branch)
        return (out, activated) if get_x_bn_relu else out

    def __call__(self, x: torch.Tensor, get_x_bn_relu: bool = False):
        return self.forward(x, get_x_bn_relu=get_x_bn_relu)


class ResNet38(nn.Module):
    """A shallow ResNet-38 trunk: ``forward`` returns the last features (psa's ``conv6``)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv1a = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.b2 = ResBlock(width, 2 * width, 2 * width, stride=2)
        self.b2_1 = ResBlock(2 * width, 2 * width, 2 * width)
        self.b3 = ResBlock(2 * width, 4 * width, 4 * width, stride=2)
        self.b3_1 = ResBlock(4 * width, 4 * width, 4 * width)
        self.b6 = ResBlockBottleneck(4 * width, 8 * width, dropout=0.3)
        self.bn7 = nn.BatchNorm2d(8 * width)
        self.feature_channels = 8 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1a(x)
        for block in (self.b2, self.b2_1, self.b3, self.b3_1, self.b6):
            x = block(x)
        return F.relu(self.bn7(x))


class PsaClassifier(ResNet38):
    """psa's ``resnet38_cls.Net`` as it ships: average pooling, a 1x1 ``fc8``, logits."""

    def __init__(self, width: int = 16) -> None:
        super().__init__(width)
        self.dropout7 = nn.Dropout2d(0.5)
        self.fc8 = nn.Conv2d(self.feature_channels, NUM_CLASSES, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout7(super().forward(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc8(x).flatten(1)  # (B, 20) pooled logits


# --- IRN: torchvision ResNet-50 with strides (2, 2, 2, 1) ----------------------------------


class IRNClassifier(nn.Module):
    """IRN's ``resnet50_cam.Net`` as it ships: stages 1-4, GAP, a 1x1 classifier, logits."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet50 = torchvision.models.resnet50(weights=None)
        # IRN's strides (2, 2, 2, 1): the last stage keeps the resolution (output stride 16).
        self.resnet50.layer4[0].conv2.stride = (1, 1)
        self.resnet50.layer4[0].downsample[0].stride = (1, 1)
        r = self.resnet50
        self.stage1 = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1)
        self.stage2 = nn.Sequential(r.layer2)
        self.stage3 = nn.Sequential(r.layer3)
        self.stage4 = nn.Sequential(r.layer4)
        self.classifier = nn.Conv2d(2048, NUM_CLASSES, 1, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(x)
        x = self.stage2(x).detach()  # IRN does not train stage 1-2
        return self.stage4(self.stage3(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(x).flatten(1)  # (B, 20) pooled logits


# --- MCTformer-V2: class tokens per class, attention that returns its weights --------------


class Attention(nn.Module):
    """Multi-head self-attention that also returns its weights, as MCTformer's does."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) * (dim // self.heads) ** -0.5).softmax(-1)
        out = (weights @ v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(out), weights


class Block(nn.Module):
    """Pre-norm transformer block calling one ``drop_path`` for both branches."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.drop_path = nn.Identity()  # stochastic depth off
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.attn(self.norm1(x))
        x = x + self.drop_path(attended)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, weights


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens."""

    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.patch_size = patch
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class MCTformerV2(nn.Module):
    """MCTformer-V2 as it ships: ``(class-token logits, patch logits)`` from ``forward``."""

    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 2, patch: int = 8) -> None:
        super().__init__()
        self.num_classes = NUM_CLASSES
        self.patch_embed = PatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, NUM_CLASSES, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Conv2d(dim, NUM_CLASSES, 3, padding=1)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = (s // self.patch_embed.patch_size for s in x.shape[-2:])
        tokens = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        for block in self.blocks:
            x, _weights = block(x)
        x = self.norm(x)
        patches = x[:, self.num_classes :].transpose(1, 2)
        return x[:, : self.num_classes], patches.reshape(x.shape[0], -1, height, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        class_tokens, patches = self.forward_features(x)
        patch_logits = F.adaptive_avg_pool2d(self.head(patches), 1).flatten(1)
        return class_tokens.mean(-1), patch_logits


# --- ToCo: timm ViT encoder, global max pooling, 1x1 classifier ----------------------------


class ToCoNet(nn.Module):
    """ToCo's classification branch as it ships: ``(logits, patch-token map)``."""

    def __init__(self, dim: int = 32, depth: int = 2, patch: int = 8) -> None:
        super().__init__()
        self.encoder = timm.models.vision_transformer.VisionTransformer(
            img_size=32, patch_size=patch, embed_dim=dim, depth=depth, num_heads=2,
            num_classes=0, dynamic_img_size=True,
        )  # fmt: skip
        self.patch_size = patch
        self.classifier = nn.Conv2d(dim, NUM_CLASSES, 1, bias=False)

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        height, width = (s // self.patch_size for s in x.shape[-2:])
        tokens = self.encoder.forward_features(x)[:, self.encoder.num_prefix_tokens :]
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, height, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.patch_features(x)
        pooled = F.adaptive_max_pool2d(fmap, 1)
        return self.classifier(pooled).flatten(1), fmap  # (B, 20) GMP logits, (B, D, h, w)
