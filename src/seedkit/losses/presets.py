"""Defaults of the USAGE losses: per backbone family and per activation state.

All temperatures assume **raw logits of seedkit's own 1x1-conv CAM heads**.
Every value is the best point of the temperature sweep of the seed-quality
benchmark (``benchmarks/seed_quality.py``, ``docs/benchmarks.rst``): the
generation loss alone, no network-adjusted views, seed 0, tau in
0.05 / 0.3 / 2 / 5 / 20 against GAP (the CAM baseline), demo set, 112 px.
The sweep's numbers are kept in ``docs/_static/seed_quality_sweep.json`` and a
test checks that the presets below are its best points.

Per family (``for_backbone``), from the from-scratch networks:

- CNN (ResNet-18): ``tau = 2``, 34.1 seed mIoU against 30.6 for GAP. The
  pretrained CNN of the benchmark also gains with it (38.1 against 34.4).
- ViT (4-block, patch-8 DeiT-tiny): ``tau = 20``, 18.9 against 16.7. Every
  sharper temperature hurt it (9.3-13.3): this ViT's CAMs are
  *under*-activated (FN 58 %, FP 25 % at GAP), not over-activated as the
  USAGE paper's ViTs. The ViT of seedkit's first measurement, trained longer
  on real-photo composites, was over-activated and gained from ``tau = 2``;
  such a network is what ``for_activation`` is for.

The benchmark's finding is that the activation state of the CAM baseline, not
the family, orders the best temperatures (the *deterministic principle* in its
activation form): sharpen over-activated CAMs, spread under-activated ones.

Per activation state (``for_activation``), each from the sweep of the network
in that state:

- over-activated (FP well above FN; pretrained ``tf_efficientnet_lite0``,
  FP 58 %, FN 8 %): ``tau = 0.3``, 39.5 against 34.4 for GAP;
- balanced (ResNet-18 from scratch, FP 36 %, FN 33 %): ``tau = 2``;
- under-activated (FN well above FP; the from-scratch ViT): ``tau = 20``.

Consistency: student and teacher at the **same** temperature (the family's),
weight ``0`` (``CONSISTENCY_WEIGHT``: the term off). No setting of the term
helped on the benchmark: at weight 0.1 it cost the CNN 1.6 seed mIoU (32.8
against 34.4 for the generation term alone, seed 0), the ViT 3.1 (15.8 against
18.9, without views) and, with the views, the pretrained CNN 9.6 (27.2 against
36.8, 3 seeds); a teacher with constant momentum 0.9 cut the CNN's cost to 0.3.
The benchmark's diagnosis of the collapse at weight 1: the term destroyed the
CNN with a teacher temperature equal to the student's or twice it (student at 1:
9.4 and 9.3 mIoU), with a warm-up over half the run (10.0) and as a scale-free
KL (12.1-13.5), against 31.0 without it; dividing the KL by ``log N``
(``normalize=True``) avoids the collapse (27.4 at the CNN's tau 2). The EMA teacher of a short
from-scratch run is much flatter than the student (map contrast 0.2 against
1.0), and the term's gradient on the CAMs is as large as the classification
loss's, so it pins the student to the teacher's flat maps.
"""

from __future__ import annotations

from types import MappingProxyType

from seedkit.checks import check_choice, check_number
from seedkit.errors import InvalidValueError

__all__ = [
    "ACTIVATION_PRESETS",
    "ACTIVATION_RATIO",
    "ACTIVATION_STATES",
    "CONSISTENCY_PRESETS",
    "CONSISTENCY_WEIGHT",
    "TEMPERATURE_PRESETS",
    "activation_state",
    "activation_temperature",
]

#: Generation temperature per backbone family (``SeedGenerationLoss.for_backbone``).
TEMPERATURE_PRESETS = MappingProxyType({"cnn": 30.0, "vit": 0.3})

#: The activation states of a CAM baseline and the temperature each calls for.
ACTIVATION_STATES: tuple[str, ...] = ("over", "balanced", "under")
ACTIVATION_PRESETS = MappingProxyType({"over": 0.3, "balanced": 2.0, "under": 20.0})
# FP / FN ratio beyond which a CAM baseline counts as over- (or, inverted, under-)
# activated. The benchmark's three networks had ratios 7.5, 1.1 and 0.43.
ACTIVATION_RATIO = 2.0

# The weight of the consistency term in the presets: 0, the term off. On the
# seed-quality benchmark no setting of the term helped: at 0.1 it cost the CNN 1.6,
# the ViT 3.1 and the pretrained CNN more (with the views), at 1 it collapsed
# training; pass ``consistency_weight`` (e.g. 0.1) to train the full objective.
CONSISTENCY_WEIGHT = 0.0

# The consistency term's presets per family: ``temperature`` None follows the
# generation temperature (and the teacher's follows the student's), ``weight`` is
# ``lambda`` once ramped in, ``start`` / ``ramp`` the fractions of the run before the
# term starts and over which it ramps in (:func:`seedkit.losses.consistency_ramp`).
CONSISTENCY_PRESETS = MappingProxyType(
    {
        family: MappingProxyType(
            {"temperature": None, "weight": CONSISTENCY_WEIGHT, "start": 0.0, "ramp": 0.0}
        )
        for family in TEMPERATURE_PRESETS
    }
)


def activation_state(fp_rate: float, fn_rate: float) -> str:
    """Classify a CAM baseline as ``"over"``-, ``"under"``-activated or ``"balanced"``.

    Args:
        fp_rate: false-positive rate of its seeds at the best threshold (any unit,
            e.g. percent, as ``seedkit eval-seeds`` prints it).
        fn_rate: false-negative rate, in the same unit.

    Returns:
        ``"over"`` when ``fp_rate > ACTIVATION_RATIO * fn_rate``, ``"under"`` when
        ``fn_rate > ACTIVATION_RATIO * fp_rate``, ``"balanced"`` otherwise.

    Raises:
        InvalidValueError: a rate is negative or not finite, or both are 0.

    Example:
        >>> from seedkit.losses import activation_state
        >>> activation_state(57.8, 7.7), activation_state(36.4, 33.0), activation_state(24.8, 58.5)
        ('over', 'balanced', 'under')
    """
    fp_rate = check_number("fp_rate", fp_rate, 0)
    fn_rate = check_number("fn_rate", fn_rate, 0)
    if fp_rate == 0 and fn_rate == 0:
        raise InvalidValueError("fp_rate, fn_rate", "not both 0 (a perfect seed has no state)", 0)
    if fp_rate > ACTIVATION_RATIO * fn_rate:
        return "over"
    if fn_rate > ACTIVATION_RATIO * fp_rate:
        return "under"
    return "balanced"


def activation_temperature(state: str) -> float:
    """The preset temperature of an activation state (``"over"``, ``"balanced"``, ``"under"``)."""
    return ACTIVATION_PRESETS[check_choice("state", state, ACTIVATION_STATES)]
