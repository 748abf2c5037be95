"""Per-family defaults of the USAGE losses (the *deterministic principle*).

The temperature is chosen by backbone family, not tuned per dataset. Both
values assume **raw logits of seedkit's own 1x1-conv CAM heads**.

- CNN: ``tau = 5``. From the seed-quality benchmark (``benchmarks/seed_quality.py``,
  ``docs/benchmarks.rst``): ResNet-18 from scratch on the 160-image demo set,
  112 px, 100 steps, generation loss alone. Seed mIoU on seed 0 at
  ``tau = 0.05 / 0.3 / 2 / 5 / 20`` was 16.2 / 23.5 / 33.8 / 32.9 / 31.6
  against 30.6 for GAP (the CAM baseline); below ``tau = 1`` the CNN is
  under-activated (FN 58-71 % against FP 13-18 %). Over seeds, ``tau = 2``
  beat the CAM baseline by +2.9 (3 seeds) and ``tau = 5`` by +2.1 (2 seeds),
  each on every seed. ``tau = 5`` is chosen over 2 to keep the principle's
  order against the ViT preset until the ViT side is measured.
- ViT: ``tau = 2``, still the first measurement of DESIGN section 2 (DeiT-tiny,
  patch 8, 128 px, 500 steps: GAP 14.6 -> 22.9 mIoU). On the benchmark's
  budget a from-scratch DeiT-tiny/16 never left the "every class absent"
  plateau (9.3 mIoU, no positive activation, for every temperature tried), so
  the benchmark could not confirm or move it.

Consistency: student and teacher at the **same** temperature (the family's),
weight ``0.1``. The benchmark's diagnosis: at weight 1 the consistency term
destroyed the CNN with a teacher temperature equal to the student's or twice it
(student at 1: 9.4 and 9.3 mIoU), with a warm-up over half the run (10.0) and as a
scale-free KL (12.4), against 31.0 without it. The EMA teacher of a short
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
