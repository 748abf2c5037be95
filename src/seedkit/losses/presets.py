"""Defaults of the USAGE losses: per backbone family and per activation state.

All temperatures are in the scale-free form ``scale="std"`` (the default): each
map is standardised per image and class before the division by ``tau``, so ``A``
and ``c * A`` pool alike and a temperature means one *shape* on every backbone
and at every point of training. What a ``tau`` means, as the effective fraction
of positions ``N_eff / N`` of the pooling weights (1 is GAP), is tabulated on the
docs page *Method* and logged by the engine (``neff_fraction``); compute it for
your own maps with :func:`seedkit.losses.effective_fraction`.

Per family (``for_backbone``):

- CNN: ``tau = 2`` (``N_eff / N`` about 0.78 on Gaussian maps, 0.7-0.8 on
  trained CAMs). Chosen on the *selection* split of the seed-quality protocol
  (``benchmarks/seed_protocol.py``, docs page *Benchmarks*, results in
  ``docs/_static/seed_protocol.json``): ImageNet-pretrained
  ``tf_efficientnet_lite0/1`` fine-tuned on the procedural demo set and on a
  set of real photographs; a test checks the preset against those saved runs.
- ViT: ``tau = 1`` (``N_eff / N`` about 0.37 on Gaussian maps): **the paper's
  direction** (a Transformer's temperature below a CNN's), not selected by the
  protocol: no ImageNet ViT installs offline on the project's machines. One
  exploratory pair of runs on the benchmark's hybrid ViT (an ImageNet CNN stem,
  transformer blocks trained from scratch) agrees with it (docs page
  *Benchmarks*).

Per activation state (``for_activation``): ``"over"`` 1, ``"balanced"`` 2,
``"under"`` 8 (``N_eff / N`` about 0.98, near GAP). These follow the principle's
direction (sharpen over-activated CAMs, spread under-activated ones) and are
**not validated** by the benchmark; ``seedkit eval-seeds`` prints the activation
reading of a seed folder without recommending a temperature.

Consistency: student and teacher at the **same** temperature (the family's),
weight ``0`` (``CONSISTENCY_WEIGHT``: the term off). No setting of the term
helped on seedkit's earlier benchmarks (raw-logit temperatures, from-scratch
and pretrained CNNs, a from-scratch ViT): at weight 0.1 it cost 1.6 to 3.1
seed mIoU, and at weight 1 it collapsed training, because the EMA teacher of a
short run is much flatter than the student and the term's gradient is as large
as the classification loss's. Dividing the KL by ``log N`` (``normalize=True``)
avoids the collapse. Pass ``consistency_weight`` (e.g. 0.1) to train the full
objective; the docs page *Benchmarks* takes it apart (views alone, consistency
alone, both).
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
TEMPERATURE_PRESETS = MappingProxyType({"cnn": 2.0, "vit": 1.0})

#: The activation states of a CAM baseline and the temperature each calls for.
ACTIVATION_STATES: tuple[str, ...] = ("over", "balanced", "under")
ACTIVATION_PRESETS = MappingProxyType({"over": 1.0, "balanced": 2.0, "under": 8.0})
# FP / FN ratio beyond which a CAM baseline counts as over- (or, inverted, under-)
# activated.
ACTIVATION_RATIO = 2.0

# The weight of the consistency term in the presets: 0, the term off (see the module
# docstring); pass ``consistency_weight`` (e.g. 0.1) to train the full objective.
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
