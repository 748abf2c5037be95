"""Stage 3 of the pipeline: a segmentation network trained on pseudo masks.

torchvision's DeepLabV3 (ResNet-50/101 for the reference runs, MobileNetV3 for
the fast demo), multi-scale + flip inference, optional dense CRF, and per-class
IoU with :mod:`seedkit.metrics`.
"""

from seedkit.segmentation.inference import SegmentationResult, evaluate_segmentation, predict_probs
from seedkit.segmentation.model import (
    SEGMENTATION_ARCHITECTURES,
    SegmentationNet,
    create_segmentation_model,
)

__all__ = [
    "SEGMENTATION_ARCHITECTURES",
    "SegmentationNet",
    "SegmentationResult",
    "create_segmentation_model",
    "evaluate_segmentation",
    "predict_probs",
]
