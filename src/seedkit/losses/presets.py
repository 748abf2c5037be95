"""Per-family defaults of the USAGE losses (the *deterministic principle*).

The temperature is chosen by backbone family, not tuned per dataset. The values
below are **provisional**: they come from the first measurement recorded in
DESIGN section 2 (real-photo composites, 128 px, from scratch, raw logits):

- ViT (DeiT-tiny, patch 8): ``tau = 2`` raised seed mIoU from 14.6 (GAP) to
  22.9, so the ViT preset sharpens with ``tau = 2``.
- CNN (ResNet-18): ``tau = 2`` lowered seed mIoU from 39.8 to 32.0, while
  ``tau = 1000`` gave 39.2 (the GAP limit). Nothing sharper helped, so the CNN
  preset stays at the GAP end with ``tau = 1000``.

Both assume raw logits of seedkit's own 1x1-conv CAM heads. The seed-quality
benchmark (``benchmarks/seed_quality.py``) replaces them with swept values.
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["CONSISTENCY_PRESETS", "TEMPERATURE_PRESETS"]

TEMPERATURE_PRESETS = MappingProxyType({"cnn": 1000.0, "vit": 2.0})

# The consistency term compares student and teacher at the *same* temperature by
# default: a sharper (or smoother) teacher feeds its bias back through the EMA and
# drives the student to ever sharper (or flatter) maps, the collapse DESIGN
# section 2 records at lambda = 1 with mismatched temperatures.
CONSISTENCY_PRESETS = MappingProxyType(
    {
        "cnn": {"temperature": 1000.0, "teacher_temperature": 1000.0, "weight": 0.1},
        "vit": {"temperature": 2.0, "teacher_temperature": 2.0, "weight": 0.1},
    }
)
