"""Segmentation networks for stage 3: torchvision's DeepLabV3.

torchvision is already installed with timm (timm imports it), its DeepLabV3
implementations are maintained by the PyTorch team, load ImageNet backbone
weights through the same ``weights_backbone`` API everywhere, and need no extra
dependency; DeepLabV3-ResNet is the network the WSSS literature's
"DeepLab" numbers come closest to (the references use DeepLabV2/V3+ on
ResNet-101 or ResNet-38).

``"deeplabv3_timm"`` puts torchvision's DeepLabV3 head (ASPP) on any timm
encoder through :func:`seedkit.backbones.create_seed_model`, so the encoder can
start from timm weights or from a stage-1 seed model's checkpoint (the demo does
the latter: offline there are no ImageNet weights, and a from-scratch DeepLab did
not leave the all-background solution within the demo's budget).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seedkit.checks import check_num_labels
from seedkit.errors import BackboneError, InvalidValueError

__all__ = [
    "SEGMENTATION_ARCHITECTURES",
    "SegmentationNet",
    "TimmDeepLabV3",
    "create_segmentation_model",
]

#: The ``architecture`` names :func:`create_segmentation_model` builds.
SEGMENTATION_ARCHITECTURES = (
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large",
    "deeplabv3_timm",
)


class TimmDeepLabV3(nn.Module):
    """torchvision's DeepLabV3 head on the last feature map of a timm encoder.

    Args:
        backbone: a :class:`~seedkit.backbones.SeedModel` whose
            ``forward_features`` gives the ``(B, D, h, w)`` map (its CAM head is
            not used).
        num_labels: output channels: the mask labels, background included.

    Shape:
        - input: :math:`(B, 3, H, W)`
        - output: ``{"out": logits}`` with logits :math:`(B, K, H, W)`

    Example:
        >>> net = create_segmentation_model(
        ...     "deeplabv3_timm", num_labels=3, encoder="resnet18", output_stride=16
        ... )
        >>> type(net.network).__name__
        'TimmDeepLabV3'
        >>> with torch.no_grad():
        ...     tuple(net.eval()(torch.zeros(1, 3, 64, 48)).shape)
        (1, 3, 64, 48)
    """

    def __init__(self, backbone: nn.Module, num_labels: int) -> None:
        super().__init__()
        from torchvision.models.segmentation.deeplabv3 import DeepLabHead

        self.backbone = backbone
        self.classifier = DeepLabHead(int(backbone.out_channels), num_labels)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``{"out": logits}`` at the input resolution, like torchvision's models."""
        logits = self.classifier(self.backbone.forward_features(images))
        size = images.shape[-2:]
        return {"out": F.interpolate(logits, size=size, mode="bilinear", align_corners=False)}


def _timm_deeplab(
    encoder: str,
    num_labels: int,
    pretrained_backbone: bool,
    backbone_checkpoint: str | None,
    checkpoint_classes: int,
    output_stride: int | None,
    timm_kwargs: dict[str, Any],
) -> TimmDeepLabV3:
    from seedkit.backbones import create_seed_model, with_output_stride

    kwargs = with_output_stride(encoder, output_stride, **timm_kwargs)
    backbone = create_seed_model(
        encoder,
        num_classes=checkpoint_classes,
        pretrained=pretrained_backbone,
        checkpoint_path=backbone_checkpoint,
        **kwargs,
    )
    backbone.head = nn.Identity()  # only the features feed the segmentation head
    return TimmDeepLabV3(backbone, num_labels)


class SegmentationNet(nn.Module):
    """A torchvision segmentation model whose ``model(x)`` returns logits ``(B, K, H, W)``.

    ``K = num_labels``: the mask labels, background included.
    """

    def __init__(self, network: nn.Module, architecture: str, num_labels: int) -> None:
        super().__init__()
        self.network = network
        self.architecture = architecture
        self.num_labels = num_labels

    @property
    def num_classes(self) -> int:
        """Deprecated name of :attr:`num_labels` (the same count, background included)."""
        warnings.warn(
            "SegmentationNet.num_classes is deprecated: it is num_labels (the same count, "
            "background included)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.num_labels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits at the input resolution."""
        return self.network(images)["out"]

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """``(backbone parameters, head parameters)`` (the head usually takes 10x the lr)."""
        return list(self.network.backbone.parameters()), list(self.network.classifier.parameters())


def create_segmentation_model(
    architecture: str = "deeplabv3_resnet50",
    num_labels: int | None = None,
    pretrained_backbone: bool = False,
    backbone_checkpoint: str | None = None,
    encoder: str = "resnet50",
    output_stride: int | None = 16,
    checkpoint_classes: int | None = None,
    *,
    num_classes: int | None = None,
    **timm_kwargs: Any,
) -> SegmentationNet:
    """Build a DeepLabV3 for ``num_labels`` mask labels (background included).

    Args:
        architecture: one of :data:`SEGMENTATION_ARCHITECTURES`.
        num_labels: mask labels, background included (21 VOC, the default; 81 COCO).
        pretrained_backbone: ImageNet backbone weights (torchvision's, or timm's
            for ``"deeplabv3_timm"``; downloaded on first use).
        backbone_checkpoint: a local state dict for the backbone instead: keys as
            torchvision's ``model.backbone``, or for ``"deeplabv3_timm"`` timm
            encoder weights or a whole seed-model checkpoint (``model.pt`` of
            stage 1).
        encoder: the timm model name of ``"deeplabv3_timm"`` (ignored otherwise).
        output_stride: output stride of a ``"deeplabv3_timm"`` CNN encoder.
        checkpoint_classes: the CAM (foreground) classes of a seed-model
            ``backbone_checkpoint`` (default ``num_labels - 1``).
        **timm_kwargs: more ``timm.create_model`` arguments of the
            ``"deeplabv3_timm"`` encoder (e.g. ``patch_size``); rejected for the
            torchvision architectures.
        num_classes: deprecated name of ``num_labels`` (the same count).

    Returns:
        A :class:`SegmentationNet`.

    Example:
        >>> model = create_segmentation_model("deeplabv3_mobilenet_v3_large", num_labels=3)
        >>> with torch.no_grad():
        ...     tuple(model.eval()(torch.zeros(1, 3, 64, 48)).shape)
        (1, 3, 64, 48)
    """
    if architecture not in SEGMENTATION_ARCHITECTURES:
        raise InvalidValueError(
            "architecture", "one of " + ", ".join(SEGMENTATION_ARCHITECTURES), architecture
        )
    num_labels = check_num_labels(
        "seedkit.segmentation.create_segmentation_model", num_labels, num_classes, default=21
    )
    if architecture == "deeplabv3_timm":
        network = _timm_deeplab(
            encoder,
            num_labels,
            pretrained_backbone,
            backbone_checkpoint,
            checkpoint_classes or num_labels - 1,
            output_stride,
            timm_kwargs,
        )
        return SegmentationNet(network, f"{architecture}:{encoder}", num_labels)
    if timm_kwargs:
        raise InvalidValueError(
            "timm_kwargs", f"none for the torchvision {architecture}", sorted(timm_kwargs)
        )
    from torchvision.models import segmentation

    builder = getattr(segmentation, architecture)
    weights_backbone = "DEFAULT" if pretrained_backbone else None
    try:
        network = builder(
            weights=None, weights_backbone=weights_backbone, num_classes=num_labels, aux_loss=False
        )
    except (RuntimeError, ValueError, OSError) as error:
        raise BackboneError(f"cannot build torchvision {architecture}: {error}") from error
    if backbone_checkpoint is not None:
        state = torch.load(backbone_checkpoint, map_location="cpu", weights_only=True)
        missing, unexpected = network.backbone.load_state_dict(state, strict=False)
        if unexpected or len(missing) == len(network.backbone.state_dict()):
            raise BackboneError(
                f"{backbone_checkpoint}: not a backbone state dict of {architecture} "
                f"({len(missing)} missing, {len(unexpected)} unexpected keys)"
            )
    return SegmentationNet(network, architecture, num_labels)
