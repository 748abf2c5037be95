"""CAM inference: multi-scale + flip seeds for any seed model, written in psa or IRN format."""

from seedkit.cam.inference import DEFAULT_SCALES, cams_of, infer_cams
from seedkit.cam.writer import SEED_FORMATS, save_psa_maps, save_seeds, write_cams

__all__ = [
    "DEFAULT_SCALES",
    "SEED_FORMATS",
    "cams_of",
    "infer_cams",
    "save_psa_maps",
    "save_seeds",
    "write_cams",
]
