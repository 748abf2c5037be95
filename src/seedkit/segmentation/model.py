"""Segmentation networks for stage 3: torchvision's DeepLabV3.

torchvision is already installed with timm (timm imports it), its DeepLabV3
implementations are maintained by the PyTorch team, load ImageNet backbone
weights through the same ``weights_backbone`` API everywhere, and need no extra
dependency; DeepLabV3-ResNet is the network the WSSS literature's
"DeepLab" numbers come closest to (the references use DeepLabV2/V3+ on
ResNet-101 or ResNet-38).
"""

from __future__ import annotations

import torch
from torch import nn

from seedkit.errors import BackboneError, InvalidValueError

__all__ = ["SEGMENTATION_ARCHITECTURES", "SegmentationNet", "create_segmentation_model"]

SEGMENTATION_ARCHITECTURES = (
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large",
)


class SegmentationNet(nn.Module):
    """A torchvision segmentation model whose ``model(x)`` returns logits ``(B, K, H, W)``."""

    def __init__(self, network: nn.Module, architecture: str, num_classes: int) -> None:
        super().__init__()
        self.network = network
        self.architecture = architecture
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits at the input resolution."""
        return self.network(images)["out"]

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """``(backbone parameters, head parameters)`` (the head usually takes 10x the lr)."""
        return list(self.network.backbone.parameters()), list(self.network.classifier.parameters())


def create_segmentation_model(
    architecture: str = "deeplabv3_resnet50",
    num_classes: int = 21,
    pretrained_backbone: bool = False,
    backbone_checkpoint: str | None = None,
) -> SegmentationNet:
    """Build a torchvision DeepLabV3 for ``num_classes`` classes (background included).

    Args:
        architecture: one of :data:`SEGMENTATION_ARCHITECTURES`.
        num_classes: classes including background (21 VOC, 81 COCO).
        pretrained_backbone: torchvision's ImageNet backbone weights (downloaded
            by torchvision on first use).
        backbone_checkpoint: a local state dict for the backbone instead
            (keys as torchvision's ``model.backbone``).

    Returns:
        A :class:`SegmentationNet`.

    Example:
        >>> model = create_segmentation_model("deeplabv3_mobilenet_v3_large", num_classes=3)
        >>> with torch.no_grad():
        ...     tuple(model.eval()(torch.zeros(1, 3, 64, 48)).shape)
        (1, 3, 64, 48)
    """
    if architecture not in SEGMENTATION_ARCHITECTURES:
        raise InvalidValueError(
            "architecture", "one of " + ", ".join(SEGMENTATION_ARCHITECTURES), architecture
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InvalidValueError("num_classes", "an integer >= 2", num_classes)
    from torchvision.models import segmentation

    builder = getattr(segmentation, architecture)
    weights_backbone = "DEFAULT" if pretrained_backbone else None
    try:
        network = builder(
            weights=None, weights_backbone=weights_backbone, num_classes=num_classes, aux_loss=False
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
    return SegmentationNet(network, architecture, num_classes)
