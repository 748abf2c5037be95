"""Backbones: CAMs from any timm CNN or ViT.

:func:`create_seed_model` builds a :class:`SeedModel` (a timm encoder plus a
1x1-conv CAM classifier) whose output is a :class:`SeedModelOutput`.
:func:`detect_family` tells a CNN from a ViT by structure. timm is imported only
when a model is created.
"""

from seedkit.backbones.factory import create_seed_model, with_output_stride
from seedkit.backbones.family import detect_family, is_transformer_block, unwrap_model
from seedkit.backbones.seed_model import SeedModel, SeedModelOutput

__all__ = [
    "SeedModel",
    "SeedModelOutput",
    "create_seed_model",
    "detect_family",
    "is_transformer_block",
    "unwrap_model",
    "with_output_stride",
]
