"""CAM inference: multi-scale + flip seeds for any seed model, written in psa or IRN format.

Multi-class-token models (:class:`seedkit.backbones.MCTSeedModel`) give their
seeds through :class:`MCTLocalizationMaps` (class attention fused with patch
CAMs, refined by attention affinity); :func:`as_seed_map_model` picks it.
"""

from seedkit.cam.inference import DEFAULT_SCALES, cams_of, infer_cams
from seedkit.cam.mct import (
    MAP_KINDS,
    MCTLocalizationMaps,
    as_seed_map_model,
    fuse_attention_cams,
    localization_maps,
    refine_with_affinity,
)
from seedkit.cam.writer import SEED_FORMATS, save_psa_maps, save_seeds, write_cams

__all__ = [
    "DEFAULT_SCALES",
    "MAP_KINDS",
    "SEED_FORMATS",
    "MCTLocalizationMaps",
    "as_seed_map_model",
    "cams_of",
    "fuse_attention_cams",
    "infer_cams",
    "localization_maps",
    "refine_with_affinity",
    "save_psa_maps",
    "save_seeds",
    "write_cams",
]
