"""SeedModel: a timm encoder plus a 1x1-conv CAM classifier."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
from einops import rearrange

from seedkit.backbones.family import Family, detect_family
from seedkit.checks import check_int
from seedkit.errors import BackboneError, InvalidValueError, ShapeError

__all__ = ["SeedModel", "SeedModelOutput"]


class SeedModelOutput(NamedTuple):
    """What :class:`SeedModel` returns.

    Attributes:
        cams: class activation maps (CAM logits), :math:`(B, K, h, w)`.
        features: the last spatial feature map, :math:`(B, D, h, w)`.
        logits: global average of ``cams`` over positions, :math:`(B, K)`: the
            plain CAM classifier's logits (``cams`` is linear in ``features``).
    """

    cams: torch.Tensor
    features: torch.Tensor
    logits: torch.Tensor


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)  # type: ignore[call-overload]


class SeedModel(nn.Module):
    """A timm CNN or ViT encoder with a 1x1-convolution CAM classifier.

    The encoder yields a spatial feature map :math:`(B, D, h, w)`: for a CNN its
    last stage (``forward_features``), for a ViT the patch-token grid of the last
    block after the final norm, prefix tokens (class, distillation, register)
    removed (``forward_intermediates``). A bias-free 1x1 convolution maps it to
    ``num_classes`` class activation maps.

    Build one with :func:`seedkit.backbones.create_seed_model`, or wrap a timm
    model you created yourself (with ``num_classes=0``).

    Input size: a CNN takes any ``H, W``. A ViT built by ``create_seed_model``
    has ``dynamic_img_size=True`` and takes any ``H, W`` that are multiples of
    the patch size; pass ``dynamic_img_pad=True`` to pad other sizes up to the
    next multiple (the grid is then ``ceil(H / patch)``).

    Args:
        encoder: the timm model (its classifier is not used).
        num_classes: number of foreground classes ``K``.
        family: ``"cnn"`` or ``"vit"``; detected from the structure if ``None``.
        out_channels: channels ``D`` of the feature map; read from the encoder's
            ``feature_info`` / ``num_features`` if ``None``.
        output_stride: input pixels per CAM cell; read from the encoder if ``None``.

    Shape:
        - Input: :math:`(B, 3, H, W)`.
        - Output: :class:`SeedModelOutput` with ``cams`` :math:`(B, K, h, w)`,
          ``features`` :math:`(B, D, h, w)`, ``logits`` :math:`(B, K)`.

    Example:
        >>> import torch
        >>> from seedkit.backbones import create_seed_model
        >>> model = create_seed_model("resnet18", num_classes=20)
        >>> out = model(torch.randn(2, 3, 64, 96))
        >>> model.family, tuple(out.cams.shape), model.output_stride
        ('cnn', (2, 20, 2, 3), 32)
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        family: Family | None = None,
        out_channels: int | None = None,
        output_stride: int | None = None,
    ) -> None:
        super().__init__()
        num_classes = check_int("num_classes", num_classes, 1)
        family = detect_family(encoder) if family is None else family
        if family not in ("cnn", "vit"):
            raise InvalidValueError("family", "'cnn' or 'vit'", family)
        self.encoder = encoder
        self.family: Family = family
        self.num_classes = num_classes
        self.out_channels = int(out_channels or self._infer_channels(encoder))
        self.output_stride = output_stride or self._infer_stride(encoder, family)
        # the channels the encoder's first convolution takes (3 for RGB models)
        self.in_channels = next(
            (m.in_channels for m in encoder.modules() if isinstance(m, nn.Conv2d)), None
        )
        self.head = nn.Conv2d(self.out_channels, num_classes, kernel_size=1, bias=False)

    @staticmethod
    def _infer_channels(encoder: nn.Module) -> int:
        info = getattr(encoder, "feature_info", None)
        if isinstance(info, (list, tuple)) and info and "num_chs" in info[-1]:
            return int(info[-1]["num_chs"])
        channels = getattr(encoder, "num_features", None)
        if isinstance(channels, int) and channels > 0:
            return channels
        raise BackboneError(
            f"encoder {type(encoder).__name__}: cannot tell its feature channels (no feature_info "
            "or num_features); pass out_channels="
        )

    @staticmethod
    def _infer_stride(encoder: nn.Module, family: Family) -> int | None:
        patch_embed = getattr(encoder, "patch_embed", None)
        if family == "vit" and patch_embed is not None and hasattr(patch_embed, "patch_size"):
            return _pair(patch_embed.patch_size)[0]
        info = getattr(encoder, "feature_info", None)
        if isinstance(info, (list, tuple)) and info and "reduction" in info[-1]:
            return int(info[-1]["reduction"])
        return None

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise InvalidValueError("x", "a torch.Tensor", type(x).__name__)
        if x.dim() != 4:
            raise ShapeError("x", "(B, 3, H, W)", tuple(x.shape), f"rank {x.dim()}")
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise ShapeError(
                "x", f"(B, {self.in_channels}, H, W)", tuple(x.shape), f"{x.shape[1]} channels"
            )
        if self.family != "vit":
            return
        patch_embed = getattr(self.encoder, "patch_embed", None)
        if patch_embed is None or not hasattr(patch_embed, "patch_size"):
            return
        height, width = x.shape[-2:]
        if not getattr(self.encoder, "dynamic_img_size", False):
            img_size = getattr(patch_embed, "img_size", None)
            if img_size is not None and tuple(_pair(img_size)) != (height, width):
                raise ShapeError(
                    "x",
                    f"(B, 3, {_pair(img_size)[0]}, {_pair(img_size)[1]})",
                    tuple(x.shape),
                    "this ViT has a fixed input size; build it with dynamic_img_size=True "
                    "(create_seed_model does) for any size",
                )
            return
        ph, pw = _pair(patch_embed.patch_size)
        if not getattr(patch_embed, "dynamic_img_pad", False) and (height % ph or width % pw):
            raise ShapeError(
                "x",
                f"(B, 3, H, W) with H a multiple of {ph} and W a multiple of {pw}",
                tuple(x.shape),
                "resize or crop the input, or build the model with dynamic_img_pad=True",
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the encoder's last spatial feature map :math:`(B, D, h, w)`."""
        encoder = self.encoder
        if self.family == "vit":
            if hasattr(encoder, "forward_intermediates"):
                return encoder.forward_intermediates(
                    x, indices=1, norm=True, output_fmt="NCHW", intermediates_only=True
                )[-1]
            return self._tokens_to_grid(encoder.forward_features(x), x)
        features = encoder.forward_features(x)
        if not isinstance(features, torch.Tensor) or features.dim() != 4:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
            raise BackboneError(
                f"encoder {type(encoder).__name__}: forward_features must return a (B, D, h, w) "
                f"map for a CNN, got {shape}"
            )
        return features

    def forward_features_checked(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward_features`, with batch norm's one-value error named as a shape error.

        In training mode batch norm needs more than one value per channel: a batch
        of one image whose feature map is 1x1 cannot train.
        """
        try:
            return self.forward_features(x)
        except ValueError as error:
            if "more than 1 value per channel" not in str(error):
                raise
            raise ShapeError(
                "x",
                "(B, 3, H, W) with B >= 2, or an image large enough for a feature map "
                "larger than 1x1 (batch norm in training mode)",
                tuple(x.shape),
            ) from None

    def _tokens_to_grid(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if tokens.dim() == 4:  # NHWC (e.g. Swin-style encoders)
            return rearrange(tokens, "b h w d -> b d h w")
        if tokens.dim() != 3:
            raise BackboneError(
                f"encoder {type(self.encoder).__name__}: forward_features returned "
                f"{tuple(tokens.shape)}, expected (B, N, D) tokens or (B, h, w, D)"
            )
        prefix = int(getattr(self.encoder, "num_prefix_tokens", 0))
        tokens = tokens[:, prefix:]
        patch_embed = self.encoder.patch_embed
        if hasattr(patch_embed, "dynamic_feat_size"):
            grid = patch_embed.dynamic_feat_size(tuple(x.shape[-2:]))
        else:
            ph, pw = _pair(patch_embed.patch_size)
            grid = (x.shape[-2] // ph, x.shape[-1] // pw)
        if grid[0] * grid[1] != tokens.shape[1]:
            raise BackboneError(
                f"encoder {type(self.encoder).__name__}: {tokens.shape[1]} patch tokens do not "
                f"form the expected {grid[0]}x{grid[1]} grid"
            )
        return rearrange(tokens, "b (h w) d -> b d h w", h=grid[0], w=grid[1])

    def forward(self, x: torch.Tensor) -> SeedModelOutput:
        """Compute the CAMs of a batch of images.

        Args:
            x: images, :math:`(B, 3, H, W)`.

        Returns:
            ``SeedModelOutput(cams, features, logits)``.
        """
        self._check_input(x)
        features = self.forward_features_checked(x)
        cams = self.head(features)
        if self.output_stride is None:
            self.output_stride = max(1, round(x.shape[-2] / cams.shape[-2]))
        return SeedModelOutput(cams, features, cams.mean(dim=(2, 3)))

    def param_groups(self) -> list[list[nn.Parameter]]:
        """Return ``[backbone parameters, head parameters]``.

        WSSS training loops commonly give the freshly initialised head a 10x
        learning rate.

        Example:
            >>> from seedkit.backbones import create_seed_model
            >>> backbone, head = create_seed_model("resnet18", num_classes=3).param_groups()
            >>> [p.shape for p in head]
            [torch.Size([3, 512, 1, 1])]
        """
        return [list(self.encoder.parameters()), list(self.head.parameters())]

    def extra_repr(self) -> str:
        """Summarise the configuration for ``repr``."""
        return (
            f"family={self.family!r}, num_classes={self.num_classes}, "
            f"out_channels={self.out_channels}, output_stride={self.output_stride}"
        )
