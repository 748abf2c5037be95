"""Pixel-affinity learning from confident seed regions (PSA / IRN style).

:func:`confident_labels` turns seed maps into a label map with three kinds of
pixels: confident foreground (a class's map above ``fg_threshold``, IRN's
``conf_fg_thres`` 0.30), confident background (every map below
``bg_threshold``, IRN's ``conf_bg_thres`` 0.05) and unsure (255).
:func:`affinity_labels` turns that map into pair labels for every pixel and
every offset of a local neighbourhood: same-class foreground pairs,
background-background pairs and different-class pairs; pairs that touch an
unsure pixel are ignored. :class:`AffinityNet` predicts
``a(p, q) = exp(-mean |f_p - f_q|)`` from timm backbone features (PSA's form),
and :func:`affinity_loss` is PSA's balanced loss
``L = L_bg / 4 + L_fg / 4 + L_neg / 2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seedkit.data.constants import IGNORE_INDEX
from seedkit.errors import BackboneError, InvalidValueError, ShapeError
from seedkit.refine.random_walk import local_offsets, shift2d

__all__ = [
    "IRN_BG_THRESHOLD",
    "IRN_FG_THRESHOLD",
    "AffinityLabels",
    "AffinityNet",
    "affinity_labels",
    "affinity_loss",
    "confident_labels",
    "pair_affinity",
]

#: IRN's confident foreground / background seed thresholds (``conf_fg_thres`` / ``conf_bg_thres``).
IRN_FG_THRESHOLD = 0.30
IRN_BG_THRESHOLD = 0.05


def confident_labels(
    seeds: torch.Tensor,
    fg_threshold: float = IRN_FG_THRESHOLD,
    bg_threshold: float = IRN_BG_THRESHOLD,
    keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """Label map of the confident seed regions.

    A pixel is foreground class ``argmax_c map_c`` (reported as ``key + 1``)
    when that maximum exceeds ``fg_threshold``, background (0) when it is below
    ``bg_threshold`` and 255 (unsure) otherwise, i.e. the argmax over
    ``[t, map_1, ...]`` at both thresholds as IRN computes it.

    Args:
        seeds: foreground maps in ``[0, 1]`` of the classes in the image.
        fg_threshold: confident-foreground threshold.
        bg_threshold: confident-background threshold (``<= fg_threshold``).
        keys: class index (0-based, no background) of each map; default ``0..C-1``.

    Returns:
        ``(H, W)`` int64 labels (0 background, ``key + 1``, 255 unsure).

    Shape:
        - seeds: :math:`(C, H, W)`

    Example:
        >>> seeds = torch.tensor([[[0.9, 0.2, 0.01]]])
        >>> confident_labels(seeds, keys=torch.tensor([4])).tolist()
        [[5, 255, 0]]
    """
    if seeds.dim() != 3:
        raise ShapeError("seeds", "(C, H, W)", tuple(seeds.shape))
    if not 0.0 <= bg_threshold <= fg_threshold:
        raise InvalidValueError(
            "bg_threshold", f"a value in [0, fg_threshold={fg_threshold}]", bg_threshold
        )
    height, width = seeds.shape[1:]
    labels = torch.full((height, width), IGNORE_INDEX, dtype=torch.long, device=seeds.device)
    if seeds.shape[0] == 0:
        labels[:] = 0
        return labels
    if keys is None:
        keys = torch.arange(seeds.shape[0], device=seeds.device)
    peak, index = seeds.max(dim=0)
    labels[peak > fg_threshold] = keys.to(seeds.device)[index[peak > fg_threshold]] + 1
    labels[peak < bg_threshold] = 0
    return labels


@dataclass
class AffinityLabels:
    """Pair labels for the ``K`` half-neighbourhood offsets, each ``(B, K, h, w)`` float {0, 1}."""

    bg: torch.Tensor
    fg: torch.Tensor
    neg: torch.Tensor


def affinity_labels(labels: torch.Tensor, radius: int = 5) -> AffinityLabels:
    """Pair labels between each pixel and its neighbours ``p + d`` (half offsets).

    Args:
        labels: label maps on the affinity grid (0 bg, class ids, 255 unsure).
        radius: neighbourhood radius (PSA / IRN 5).

    Returns:
        :class:`AffinityLabels`; a pair is in at most one of them and in none when
        either pixel is unsure or the neighbour is outside the grid.

    Shape:
        - labels: :math:`(B, h, w)`

    Example:
        >>> pairs = affinity_labels(torch.tensor([[[0, 0, 3, 255]]]), radius=2)
        >>> pairs.bg[0, 0, 0].tolist(), pairs.fg[0, 0, 0].tolist(), pairs.neg[0, 0, 0].tolist()
        ([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0])
    """
    if labels.dim() != 3:
        raise ShapeError("labels", "(B, h, w)", tuple(labels.shape))
    labels = labels.long()
    bg, fg, neg = [], [], []
    for dy, dx in local_offsets(radius, half=True):
        other = shift2d(labels, dy, dx, fill=IGNORE_INDEX)
        valid = (labels != IGNORE_INDEX) & (other != IGNORE_INDEX)
        same = valid & (labels == other)
        bg.append(same & (labels == 0))
        fg.append(same & (labels != 0))
        neg.append(valid & (labels != other))
    return AffinityLabels(*(torch.stack(t, dim=1).float() for t in (bg, fg, neg)))


def affinity_loss(affinity: torch.Tensor, pairs: AffinityLabels, eps: float = 1e-5) -> torch.Tensor:
    """PSA's balanced affinity loss ``L_bg / 4 + L_fg / 4 + L_neg / 2``.

    ``L_bg`` and ``L_fg`` are the mean ``-log a`` over positive pairs of each
    kind, ``L_neg`` the mean ``-log(1 - a)`` over different-class pairs; a kind
    with no pair contributes 0.

    Shape:
        - affinity: :math:`(B, K, h, w)` in ``[0, 1]``, half offsets

    Example:
        >>> pairs = affinity_labels(torch.tensor([[[0, 0, 3]]]), radius=2)
        >>> good = pairs.bg + pairs.fg
        >>> bool(affinity_loss(good, pairs) < affinity_loss(1 - good, pairs))
        True
    """
    if affinity.shape != pairs.bg.shape:
        raise ShapeError(
            "affinity", f"the pair labels' shape {tuple(pairs.bg.shape)}", tuple(affinity.shape)
        )

    def term(labels: torch.Tensor, log_values: torch.Tensor) -> torch.Tensor:
        return -(labels * log_values).sum() / (labels.sum() + eps)

    bg = term(pairs.bg, torch.log(affinity + eps))
    fg = term(pairs.fg, torch.log(affinity + eps))
    neg = term(pairs.neg, torch.log(1.0 + eps - affinity))
    return bg / 4 + fg / 4 + neg / 2


class AffinityNet(nn.Module):
    """Affinity network on a timm backbone: multi-level features -> one embedding at ``stride``.

    The backbone's feature levels (``features_only=True``) are each projected
    by a 1x1 convolution, resized to the stride-``stride`` grid and
    concatenated; a final 1x1 convolution gives the embedding ``f``. The
    affinity of two cells is ``exp(-mean_c |f_p - f_q|)`` (PSA), in ``(0, 1]``,
    symmetric, and 1 for a cell with itself.

    Args:
        backbone: a timm model name with ``features_only`` support (CNNs).
        pretrained: load timm weights.
        stride: output stride of the affinity grid (IRN 4, PSA 8).
        embed_dim: channels of the embedding.
        radius: neighbourhood radius of the pairs.
        checkpoint_path: local backbone weights for timm.

    Example:
        >>> net = AffinityNet("resnet18", stride=8, radius=2)
        >>> with torch.no_grad():
        ...     aff = net.affinity(torch.zeros(1, 3, 64, 64))
        >>> tuple(aff.shape), float(aff.max()) <= 1.0
        ((1, 4, 8, 8), True)
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        pretrained: bool = False,
        stride: int = 4,
        embed_dim: int = 128,
        radius: int = 5,
        checkpoint_path: str | None = None,
    ) -> None:
        super().__init__()
        import timm

        try:
            kwargs = {"checkpoint_path": checkpoint_path} if checkpoint_path else {}
            self.backbone = timm.create_model(
                backbone, pretrained=pretrained, features_only=True, **kwargs
            )
        except (RuntimeError, ValueError, TypeError) as error:
            raise BackboneError(
                f"cannot build a features_only timm backbone {backbone!r}: {error}"
            ) from error
        reductions = self.backbone.feature_info.reduction()
        channels = self.backbone.feature_info.channels()
        if stride not in (2, 4, 8, 16) or stride < min(reductions):
            raise InvalidValueError("stride", f"2, 4, 8 or 16 and >= {min(reductions)}", stride)
        self.levels = [i for i, r in enumerate(reductions) if r >= stride] or [len(reductions) - 1]
        self.stride = stride
        self.radius = radius
        self.backbone_name = backbone
        width = max(32, embed_dim // 2)
        self.projections = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels[i], width, 1, bias=False),
                nn.GroupNorm(4, width),
                nn.ReLU(inplace=True),
            )
            for i in self.levels
        )
        self.head = nn.Conv2d(width * len(self.levels), embed_dim, 1)

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """``(backbone parameters, new-layer parameters)``."""
        head = [*self.projections.parameters(), *self.head.parameters()]
        return list(self.backbone.parameters()), head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embedding ``(B, D, ceil(H / stride), ceil(W / stride))`` of normalised images."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ShapeError("images", "(B, 3, H, W)", tuple(images.shape))
        height, width = images.shape[-2:]
        grid = (-(-height // self.stride), -(-width // self.stride))
        multiple = max(self.backbone.feature_info.reduction())
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        padded = F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images
        features = self.backbone(padded)
        full = (-(-padded.shape[-2] // self.stride), -(-padded.shape[-1] // self.stride))
        parts = [
            F.interpolate(proj(features[i]), size=full, mode="bilinear", align_corners=False)
            for proj, i in zip(self.projections, self.levels, strict=True)
        ]
        embedding = self.head(torch.cat(parts, dim=1))
        return embedding[..., : grid[0], : grid[1]]

    def affinity(
        self, images: torch.Tensor, offsets: Sequence[tuple[int, int]] | None = None
    ) -> torch.Tensor:
        """Affinities ``(B, K, h, w)`` to the neighbours at ``offsets`` (default: half set).

        Neighbours outside the grid get affinity 0.
        """
        return pair_affinity(
            self(images), local_offsets(self.radius, half=True) if offsets is None else offsets
        )


def pair_affinity(embedding: torch.Tensor, offsets: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``exp(-mean_c |f_p - f_{p+d}|)`` for every offset ``d``; 0 outside the grid.

    Shape:
        - embedding: :math:`(B, D, h, w)`
        - output: :math:`(B, K, h, w)`
    """
    ones = torch.ones_like(embedding[:, 0])
    out = []
    for dy, dx in offsets:
        other = shift2d(embedding, dy, dx)
        inside = shift2d(ones, dy, dx)
        out.append(torch.exp(-(embedding - other).abs().mean(dim=1)) * inside)
    return torch.stack(out, dim=1)
