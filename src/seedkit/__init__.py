"""seedkit: USAGE seed generation for weakly supervised semantic segmentation.

The public face: the loss functionals and modules of :mod:`seedkit.losses`, the
network views and EMA teacher (:class:`SelfAdaptiveView`, :class:`EMATeacher`),
the typed errors of :mod:`seedkit.errors`, and the switch for value checks.
:mod:`seedkit.backbones` builds CAM models from timm (imported on first use).
CAM inference, metrics, data and kernels live in their own subpackages.
"""

__version__ = "0.1.0.dev0"

from seedkit import backbones, errors, losses
from seedkit.checks import (
    flush_input_checks,
    input_checks,
    input_checks_enabled,
    set_input_checks,
)
from seedkit.losses import (
    ConsistencyLoss,
    SeedGenerationLoss,
    USAGELoss,
    USAGELossOutput,
    consistency_loss,
    seed_generation_loss,
    seeds_from_cams,
    spatial_activation_distribution,
    temperature_pool,
)
from seedkit.teacher import EMATeacher
from seedkit.views import SelfAdaptiveView

__all__ = [
    "ConsistencyLoss",
    "EMATeacher",
    "SeedGenerationLoss",
    "SelfAdaptiveView",
    "USAGELoss",
    "USAGELossOutput",
    "__version__",
    "backbones",
    "consistency_loss",
    "errors",
    "flush_input_checks",
    "input_checks",
    "input_checks_enabled",
    "losses",
    "seed_generation_loss",
    "seeds_from_cams",
    "set_input_checks",
    "spatial_activation_distribution",
    "temperature_pool",
]
