"""Stage 3 of the pipeline: a segmentation network trained on pseudo masks.

torchvision's DeepLabV3 (ResNet-50/101 for the reference runs, MobileNetV3), or
its head on any timm encoder (``"deeplabv3_timm"``, which the demo starts from
the stage-1 model), multi-scale + flip inference, optional dense CRF, and
per-class IoU with :mod:`seedkit.metrics`.
"""

from seedkit.segmentation.inference import SegmentationResult, evaluate_segmentation, predict_probs
from seedkit.segmentation.model import (
    SEGMENTATION_ARCHITECTURES,
    SegmentationNet,
    TimmDeepLabV3,
    create_segmentation_model,
)

__all__ = [
    "SEGMENTATION_ARCHITECTURES",
    "SegmentationNet",
    "SegmentationResult",
    "TimmDeepLabV3",
    "create_segmentation_model",
    "evaluate_segmentation",
    "predict_probs",
]
