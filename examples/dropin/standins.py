"""Stand-ins with the interfaces of the reference codebases' models, for the drop-in recipes.

The recipes of the docs page "Drop into your codebase" run in CI against these
modules. They are written for seedkit (no code of psa, SEAM, IRN, MCTformer or
ToCo is copied) and follow the *interfaces* the recipes touch, so CI fails where a
user of the real code would: what ``forward`` / ``forward_features`` return and
in which layout, the attribute names, the feature widths the reference heads
hard-code, ``train()`` overrides that return ``None``, ``__call__`` overrides,
and ``torch.nn.utils.weight_norm`` heads. Depths and inner widths are smaller.

Each stand-in and the class it stands for (the recipes were run against those
classes, at the commits the recipes name; ``check_reference.py`` reruns them):

============================  ============================================================
stand-in                      reference class
============================  ============================================================
:class:`ResNet38`             psa / SEAM ``network/resnet38d.py``, ``Net``
:class:`PsaClassifier`        psa ``network/resnet38_cls.py``, ``Net``
:class:`SEAMNet`              SEAM ``network/resnet38_SEAM.py``, ``Net``
:class:`IRNClassifier`        IRN ``net/resnet50_cam.py``, ``Net``
:class:`MCTformerV2`          MCTformer ``models.py``, ``MCTformerV2`` (commit 9606597)
:class:`ToCoNet`              ToCo ``model/model_seg_neg.py``, ``network``
============================  ============================================================

- ResNet-38: pre-activation blocks with Caffe names (``conv_branch1`` shortcut,
  ``*branch2*`` residual branch) that override ``__call__`` (hooks on the block
  never run); ``forward`` returns the 4096-channel ``conv6`` features,
  ``forward_as_dict`` also ``conv4`` (512) and ``conv5`` (1024); ``train()``
  freezes ``not_training`` layers and every BatchNorm and returns ``None``.
- IRN: a torchvision ResNet-50 with strides (2, 2, 2, 1) and frozen batch norm,
  ``stage1..4``, a bias-free 1x1 ``classifier`` after global average pooling;
  ``train()`` neither calls ``nn.Module.train`` nor returns the module.
- MCTformer-V2: one class token per class; ``forward_features`` returns
  ``(class tokens (B, C, D), patch tokens (B, N, D), [attention weights])`` with
  no final norm; ``forward`` returns ``(class-token logits, patch logits)``, or
  ``(class-token logits, fused CAMs, patch attention)`` with ``return_att=True``;
  blocks whose attention returns ``(tokens, weights)`` and call one ``drop_path``.
- ToCo: an encoder whose ``forward_features`` returns ``(class token, patch
  tokens (B, N, D), auxiliary-layer patch tokens)``; ``forward`` returns
  ``(cls, seg, fmap, cls_aux)``: GMP logits, the segmentation output, the
  patch-token map ``(B, D, h, w)`` and the auxiliary logits; DINO-style
  projection heads whose last layer is a ``weight_norm`` linear layer.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

NUM_CLASSES = 20


# --- psa / SEAM: ResNet-38 ---------------------------------------------------------------


class ResBlock(nn.Module):
    """Pre-activation residual block with Caffe names, shaped like psa's ``ResBlock``."""

    def __init__(
        self,
        in_ch: int,
        mid_ch: int,
        out_ch: int,
        stride: int = 1,
        first_dilation: int | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.same_shape = in_ch == out_ch and stride == 1
        first = dilation if first_dilation is None else first_dilation
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(
            in_ch, mid_ch, 3, stride, padding=first, dilation=first, bias=False
        )
        self.bn_branch2b1 = nn.BatchNorm2d(mid_ch)
        self.conv_branch2b1 = nn.Conv2d(
            mid_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False
        )
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

    def __init__(
        self, in_ch: int, out_ch: int, mid_ch: int, dilation: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, mid_ch, 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid_ch)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(
            mid_ch, 2 * mid_ch, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn_branch2b2 = nn.BatchNorm2d(2 * mid_ch)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(2 * mid_ch, out_ch, 1, bias=False)
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
    """psa's ResNet-38 trunk (``network.resnet38d.Net``): output stride 8, ``conv6`` of 4096.

    The block names and the widths of ``conv4`` (512), ``conv5`` (1024) and
    ``conv6`` (4096) are the reference's, which its heads hard-code; the inner
    widths are small.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1a = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.b2 = ResBlock(16, 16, 32, stride=2)
        self.b2_1 = ResBlock(32, 16, 32)
        self.b2_2 = ResBlock(32, 16, 32)
        self.b3 = ResBlock(32, 16, 64, stride=2)
        self.b3_1 = ResBlock(64, 16, 64)
        self.b3_2 = ResBlock(64, 16, 64)
        self.b4 = ResBlock(64, 16, 512, stride=2)
        self.b4_1 = ResBlock(512, 8, 512)
        self.b4_2 = ResBlock(512, 8, 512)
        self.b5 = ResBlock(512, 8, 1024, first_dilation=1, dilation=2)
        self.b5_1 = ResBlock(1024, 8, 1024, dilation=2)
        self.b6 = ResBlockBottleneck(1024, 64, mid_ch=16, dilation=4, dropout=0.3)
        self.b7 = ResBlockBottleneck(64, 4096, mid_ch=16, dilation=4, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(4096)
        self.not_training: list[nn.Module] = [self.conv1a]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_as_dict(x)["conv6"]

    def forward_as_dict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.conv1a(x)
        for block in (self.b2, self.b2_1, self.b2_2, self.b3, self.b3_1, self.b3_2, self.b4):
            x = block(x)
        x, conv3 = self.b4_1(x, get_x_bn_relu=True)
        x = self.b4_2(x)
        x, conv4 = self.b5(x, get_x_bn_relu=True)  # (B, 512, h, w)
        x = self.b5_1(x)
        x, conv5 = self.b6(x, get_x_bn_relu=True)  # (B, 1024, h, w)
        conv6 = F.relu(self.bn7(self.b7(x)))  # (B, 4096, h, w)
        return {"conv3": conv3, "conv4": conv4, "conv5": conv5, "conv6": conv6}

    def train(self, mode: bool = True) -> None:  # type: ignore[override]
        """As psa: freeze ``not_training`` and every BatchNorm; returns ``None``."""
        super().train(mode)
        for layer in self.not_training:
            for parameter in layer.parameters():
                parameter.requires_grad = False
        for layer in self.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.eval()
                layer.weight.requires_grad = False
                layer.bias.requires_grad = False


class PsaClassifier(ResNet38):
    """psa's ``resnet38_cls.Net`` as it ships: average pooling, a 1x1 ``fc8``, logits."""

    def __init__(self) -> None:
        super().__init__()
        self.dropout7 = nn.Dropout2d(0.5)
        self.fc8 = nn.Conv2d(4096, NUM_CLASSES, 1, bias=False)
        nn.init.xavier_uniform_(self.fc8.weight)
        self.not_training = [self.conv1a, self.b2, self.b2_1, self.b2_2]
        self.from_scratch_layers = [self.fc8]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout7(super().forward(x))
        return self.fc8(F.adaptive_avg_pool2d(x, 1)).flatten(1)  # (B, 20) pooled logits

    def forward_cam(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.conv2d(super().forward(x), self.fc8.weight))

    def get_parameter_groups(self) -> tuple[list, list, list, list]:
        groups: tuple[list, list, list, list] = ([], [], [], [])
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module.weight.requires_grad:
                groups[2 if module in self.from_scratch_layers else 0].append(module.weight)
        return groups


class SEAMNet(ResNet38):
    """SEAM's ``resnet38_SEAM.Net``: ``(cam, cam_rv)``, 21 channels (background first).

    Both outputs are upsampled to the input size; ``cam_rv`` is the CAM refined
    by a pixel-correlation module on low-level features (``f8_3``, ``f8_4``,
    ``f9``), written here as a plain feature-affinity propagation.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dropout7 = nn.Dropout2d(0.5)
        self.fc8 = nn.Conv2d(4096, NUM_CLASSES + 1, 1, bias=False)
        self.f8_3 = nn.Conv2d(512, 64, 1, bias=False)
        self.f8_4 = nn.Conv2d(1024, 128, 1, bias=False)
        self.f9 = nn.Conv2d(192 + 3, 192, 1, bias=False)
        self.not_training = [self.conv1a, self.b2, self.b2_1, self.b2_2]
        self.from_scratch_layers = [self.f8_3, self.f8_4, self.f9, self.fc8]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.forward_as_dict(x)
        cam = self.fc8(self.dropout7(features["conv6"]))
        size = cam.shape[-2:]
        with torch.no_grad():  # max-normalised CAM with a background plane, as SEAM's input
            norm = F.relu(cam)
            norm = norm / (norm.flatten(2).amax(-1)[..., None, None] + 1e-5)
            norm[:, 0] = 1 - norm[:, 1:].amax(1)
        low = [
            F.interpolate(x, size, mode="bilinear", align_corners=True),
            F.relu(self.f8_3(features["conv4"].detach())),
            F.relu(self.f8_4(features["conv5"].detach())),
        ]
        f = self.f9(torch.cat(low, dim=1)).flatten(2)
        f = f / (f.norm(dim=1, keepdim=True) + 1e-5)
        affinity = F.relu(f.transpose(1, 2) @ f)
        affinity = affinity / (affinity.sum(1, keepdim=True) + 1e-5)
        cam_rv = (norm.flatten(2) @ affinity).view_as(norm)
        up = x.shape[-2:]
        return (
            F.interpolate(cam, up, mode="bilinear", align_corners=True),
            F.interpolate(cam_rv, up, mode="bilinear", align_corners=True),
        )


# --- IRN: torchvision ResNet-50 with strides (2, 2, 2, 1) ----------------------------------


class FixedBatchNorm(nn.BatchNorm2d):
    """Batch norm that always uses its running statistics, as IRN's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )


class IRNClassifier(nn.Module):
    """IRN's ``resnet50_cam.Net`` as it ships: stages 1-4, GAP, a 1x1 classifier, logits."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet50 = torchvision.models.resnet50(weights=None, norm_layer=FixedBatchNorm)
        # IRN's strides (2, 2, 2, 1): the last stage keeps the resolution (output stride 16).
        self.resnet50.layer4[0].conv2.stride = (1, 1)
        self.resnet50.layer4[0].downsample[0].stride = (1, 1)
        r = self.resnet50
        self.stage1 = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1)
        self.stage2 = nn.Sequential(r.layer2)
        self.stage3 = nn.Sequential(r.layer3)
        self.stage4 = nn.Sequential(r.layer4)
        self.classifier = nn.Conv2d(2048, NUM_CLASSES, 1, bias=False)
        self.backbone = nn.ModuleList([self.stage1, self.stage2, self.stage3, self.stage4])
        self.newly_added = nn.ModuleList([self.classifier])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(x)).detach()  # IRN does not train stages 1-2
        x = self.stage4(self.stage3(x))
        x = self.classifier(F.adaptive_avg_pool2d(x, 1))
        return x.view(-1, NUM_CLASSES)  # (B, 20) pooled logits

    def train(self, mode: bool = True) -> None:  # type: ignore[override]
        """As IRN: freeze the stem; neither switches modes nor returns the module."""
        for parameter in [*self.resnet50.conv1.parameters(), *self.resnet50.bn1.parameters()]:
            parameter.requires_grad = False

    def trainable_parameters(self) -> tuple[list, list]:
        return list(self.backbone.parameters()), list(self.newly_added.parameters())


# --- MCTformer-V2 and ToCo: ViT blocks whose attention returns its weights -----------------


class Attention(nn.Module):
    """Multi-head self-attention that also returns its weights, as MCTformer's and ToCo's."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) * self.scale).softmax(-1)
        out = (weights @ v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(out), weights


class Block(nn.Module):
    """Pre-norm transformer block calling one ``drop_path`` for both branches."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        norm_layer=nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.drop_path = nn.Identity()  # stochastic depth off
        self.norm2 = norm_layer(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.attn(self.norm1(x))
        x = x + self.drop_path(attended)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, weights


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens ``(B, N, D)``; ``patch_size`` is a pair."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = (patch_size, patch_size)
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def _grid_pos_embed(pos_embed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A square ``(1, n*n, D)`` position table resized to ``(1, height*width, D)``."""
    side = math.isqrt(pos_embed.shape[1])
    grid = pos_embed.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
    return grid.flatten(2).transpose(1, 2)


class MCTformerV2(nn.Module):
    """MCTformer-V2 as it ships (``models.MCTformerV2``), with its constructor's keywords.

    ``forward_features(x)`` returns ``(class tokens (B, C, D), patch tokens (B, N, D),
    [per-block attention (B, heads, C + N, C + N)])`` without a final norm;
    ``forward(x)`` returns ``(class-token logits (B, C), patch logits (B, C))``,
    and ``forward(x, return_att=True, n_layers=...)`` the class-token logits, the
    CAMs fused with the class-to-patch attention and the patch-to-patch attention.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        num_classes: int = 1000,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        norm_layer=nn.LayerNorm,
        **kwargs,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, num_classes, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + num_classes, embed_dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(kwargs.get("drop_rate", 0.0))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, norm_layer) for _ in range(depth)
        )
        self.norm = norm_layer(embed_dim)  # built, not used by forward_features (as MCTformer-V2)
        self.head = nn.Conv2d(embed_dim, num_classes, 3, padding=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def interpolate_pos_encoding(self, x: torch.Tensor, w: int, h: int) -> torch.Tensor:
        patch = self.patch_embed.patch_size[0]
        table = self.pos_embed[:, self.num_classes :]
        grid = _grid_pos_embed(table, w // patch, h // patch)
        return torch.cat([self.pos_embed[:, : self.num_classes], grid], dim=1)

    def forward_features(self, x: torch.Tensor, n: int = 12):
        batch, _, w, h = x.shape
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(batch, -1, -1), x], dim=1)
        x = self.pos_drop(x + self.interpolate_pos_encoding(x, w, h))
        attn_weights = []
        for block in self.blocks:
            x, weights = block(x)
            attn_weights.append(weights)
        return x[:, : self.num_classes], x[:, self.num_classes :], attn_weights

    def forward(self, x, return_att=False, n_layers=12, attention_type="fused"):
        patch = self.patch_embed.patch_size[0]
        height, width = x.shape[2] // patch, x.shape[3] // patch
        x_cls, x_patch, attn_weights = self.forward_features(x)
        x_patch = x_patch.transpose(1, 2).reshape(x.shape[0], -1, height, width)
        x_patch = self.head(x_patch)  # (B, C, h, w)
        x_cls_logits = x_cls.mean(-1)
        if not return_att:
            return x_cls_logits, self.avgpool(x_patch).flatten(1)
        attention = torch.stack(attn_weights).mean(2)  # (depth, B, C + N, C + N)
        c = self.num_classes
        class_to_patch = attention[-n_layers:].sum(0)[:, :c, c:].reshape_as(x_patch)
        cams = F.relu(x_patch.detach()) * class_to_patch
        return x_cls_logits, cams, attention[:, :, c:, c:]


class ViTEncoder(nn.Module):
    """ToCo's encoder: ``forward_features`` returns the class token, the patch tokens and
    the patch tokens of the auxiliary layer ``aux_layer``."""

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        img_size: int = 224,
        patch_size: int = 16,
        aux_layer: int = -3,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.aux_layer = aux_layer
        self.patch_embed = PatchEmbed(img_size, patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.pos_embed.requires_grad = False
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        norm = lambda dim: nn.LayerNorm(dim, eps=1e-6)  # noqa: E731
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, 4.0, True, norm) for _ in range(depth)
        )
        self.norm = norm(embed_dim)

    def forward_features(self, x: torch.Tensor):
        height, width = x.shape[2] // self.patch_size, x.shape[3] // self.patch_size
        x = self.patch_embed(x)
        grid = _grid_pos_embed(self.pos_embed[:, 1:], height, width)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + torch.cat([self.pos_embed[:, :1], grid], dim=1)
        embeds = []
        for block in self.blocks:
            x, _weights = block(x)
            embeds.append(x)
        x = self.norm(x)
        return x[:, 0], x[:, 1:], embeds[self.aux_layer][:, 1:]


#: ToCo's backbones by name: (embed_dim, depth, num_heads) of the DeiT / ViT it builds.
TOCO_BACKBONES = {
    "deit_tiny_patch16_224": (192, 12, 3),
    "deit_small_patch16_224": (384, 12, 6),
    "deit_base_patch16_224": (768, 12, 12),
    "vit_base_patch16_224": (768, 12, 12),
}


class ProjectionHead(nn.Module):
    """DINO's projection head as ToCo uses it: MLP, L2 norm, a ``weight_norm`` last layer."""

    def __init__(self, in_dim: int, out_dim: int = 4096, hidden_dim: int = 2048) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(), nn.Linear(hidden_dim, 256),
        )  # fmt: skip
        with warnings.catch_warnings():  # torch deprecates the hook-based weight_norm ToCo uses
            warnings.simplefilter("ignore", FutureWarning)
            self.last_layer = nn.utils.weight_norm(nn.Linear(256, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        self.last_layer.weight_g.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


class ToCoNet(nn.Module):
    """ToCo's ``network`` as it ships, with its constructor's arguments.

    ``num_classes`` counts the background (21 on VOC); the classifiers have one
    output per foreground class. ``forward(x)`` returns ``(cls, seg, fmap, cls_aux)``.
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int | None = None,
        pretrained: bool | None = None,
        init_momentum: float | None = None,
        aux_layer: int | None = None,
    ) -> None:
        super().__init__()
        if pretrained:
            raise ValueError("the stand-in has no pretrained weights")
        self.num_classes = num_classes
        self.init_momentum = init_momentum
        dim, depth, heads = TOCO_BACKBONES[backbone]
        self.encoder = ViTEncoder(dim, depth, heads, aux_layer=aux_layer)
        self.proj_head = ProjectionHead(dim, out_dim=1024)
        self.proj_head_t = ProjectionHead(dim, out_dim=1024)
        for student, teacher in zip(
            self.proj_head.parameters(), self.proj_head_t.parameters(), strict=True
        ):
            teacher.data.copy_(student.data)
            teacher.requires_grad = False
        self.pooling = F.adaptive_max_pool2d
        self.decoder = nn.Sequential(
            nn.Conv2d(dim, 64, 3, padding=5, dilation=5, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(64, num_classes, 1),
        )  # fmt: skip
        self.classifier = nn.Conv2d(dim, num_classes - 1, 1, bias=False)
        self.aux_classifier = nn.Conv2d(dim, num_classes - 1, 1, bias=False)

    @staticmethod
    def to_2D(x: torch.Tensor, h: int, w: int) -> torch.Tensor:  # noqa: N802 (ToCo's name)
        return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)

    def forward(self, x: torch.Tensor, cam_only: bool = False, crops=None, n_iter=None):
        _cls_token, tokens, aux_tokens = self.encoder.forward_features(x)
        h, w = x.shape[-2] // self.encoder.patch_size, x.shape[-1] // self.encoder.patch_size
        fmap = self.to_2D(tokens, h, w)
        fmap_aux = self.to_2D(aux_tokens, h, w)
        seg = self.decoder(fmap)
        if cam_only:
            cam = F.conv2d(fmap, self.classifier.weight).detach()
            cam_aux = F.conv2d(fmap_aux, self.aux_classifier.weight).detach()
            return cam_aux, cam
        cls_aux = self.aux_classifier(self.pooling(fmap_aux, (1, 1))).flatten(1)
        cls = self.classifier(self.pooling(fmap, (1, 1))).flatten(1)
        return cls, seg, fmap, cls_aux  # (B, 20), (B, 21, h, w), (B, D, h, w), (B, 20)
