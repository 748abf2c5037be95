"""CAM inference: multi-scale + flip seeds for any seed model, written in psa format."""

from seedkit.cam.inference import DEFAULT_SCALES, cams_of, infer_cams
from seedkit.cam.writer import save_psa_maps, write_cams

__all__ = ["DEFAULT_SCALES", "cams_of", "infer_cams", "save_psa_maps", "write_cams"]
