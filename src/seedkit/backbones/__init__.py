"""Backbones: CAMs from any timm CNN or ViT.

:func:`create_seed_model` builds a :class:`SeedModel` (a timm encoder plus a
1x1-conv CAM classifier) whose output is a :class:`SeedModelOutput`; with
``head="mct"`` a :class:`MCTSeedModel` (one class token per class, MCTformer-V2).
:func:`detect_family` tells a CNN from a ViT by structure. timm is imported only
when a model is created.
"""

from seedkit.backbones.factory import HEADS, create_seed_model, with_output_stride
from seedkit.backbones.family import detect_family, is_transformer_block, unwrap_model
from seedkit.backbones.mct import MCT_ATTENTION_BLOCKS, MCTSeedModel, MCTSeedModelOutput
from seedkit.backbones.seed_model import SeedModel, SeedModelOutput
from seedkit.backbones.weights import LOCAL_WEIGHT_PACKAGES, local_pretrained_weights

__all__ = [
    "HEADS",
    "LOCAL_WEIGHT_PACKAGES",
    "MCT_ATTENTION_BLOCKS",
    "MCTSeedModel",
    "MCTSeedModelOutput",
    "SeedModel",
    "SeedModelOutput",
    "create_seed_model",
    "detect_family",
    "is_transformer_block",
    "local_pretrained_weights",
    "unwrap_model",
    "with_output_stride",
]
