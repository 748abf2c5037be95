"""Per-family defaults of the USAGE losses (the *deterministic principle*).

The temperature is chosen by backbone family, not tuned per dataset. Both
values assume **raw logits of seedkit's own 1x1-conv CAM heads**.

- CNN: ``tau = 5``. From the seed-quality benchmark (``benchmarks/seed_quality.py``,
  ``docs/benchmarks.rst``): ResNet-18 from scratch on the 160-image demo set,
  112 px, 100 steps, generation loss alone. Seed mIoU on seed 0 at
  ``tau = 0.05 / 0.3 / 2 / 5 / 20`` was 16.2 / 23.5 / 33.8 / 32.9 / 31.6
  against 30.6 for GAP (the CAM baseline); below ``tau = 1`` the CNN is
  under-activated (FN 58-71 % against FP 13-18 %). With the defaults USAGE
  beat the CAM baseline on 3 of 3 seeds (35.2 against 32.7). ``tau = 5`` is
  chosen over 2 to keep the principle's order against the ViT preset.
  Caveat from the same benchmark: a *pretrained* ``tf_efficientnet_lite0``,
  whose CAMs were over-activated there (FP 58 %, FN 8 %), lost 3.0 mIoU with
  this preset; set ``temperature`` yourself for such a network.
- ViT: ``tau = 2``, the first measurement of DESIGN section 2 (DeiT-tiny,
  patch 8, 128 px, 500 steps: GAP 14.6 -> 22.9 mIoU). The benchmark's
  from-scratch ViT (4 blocks, patch 8) is under-activated rather than
  over-activated (FN 58 %, FP 25 % at GAP) and no generation temperature helped
  it, so the benchmark cannot confirm or move this preset.

Consistency: student and teacher at the **same** temperature (the family's),
weight ``0.1``. The benchmark's diagnosis: at weight 1 the consistency term
destroyed the CNN with a teacher temperature equal to the student's or twice it
(student at 1: 9.4 and 9.3 mIoU), with a warm-up over half the run (10.0) and as a
scale-free KL (12.4-13.5), against 31.0 without it; dividing the KL by ``log N``
(``normalize=True``) avoids it (32.9). The EMA teacher of a short
from-scratch run is much flatter than the student (map contrast 0.2 against
1.0), and the term's gradient on the CAMs is as large as the classification
loss's, so it pins the student to the teacher's flat maps. At the CNN's
``tau = 5`` on raw logits the KL is small, so the term is weak by design.
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["CONSISTENCY_PRESETS", "TEMPERATURE_PRESETS"]

TEMPERATURE_PRESETS = MappingProxyType({"cnn": 5.0, "vit": 2.0})

# The consistency term compares student and teacher at the *same* temperature by
# default: a sharper (or smoother) teacher feeds its bias back through the EMA and
# drives the student to ever sharper (or flatter) maps, the collapse DESIGN
# section 2 records at lambda = 1 with mismatched temperatures.
CONSISTENCY_PRESETS = MappingProxyType(
    {
        "cnn": {"temperature": 5.0, "teacher_temperature": 5.0, "weight": 0.1},
        "vit": {"temperature": 2.0, "teacher_temperature": 2.0, "weight": 0.1},
    }
)
