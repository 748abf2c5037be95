"""seedkit: USAGE seed generation for weakly supervised semantic segmentation.

The public face: the loss functionals and modules of :mod:`seedkit.losses`, the
network views and EMA teacher (:class:`SelfAdaptiveView`, :class:`EMATeacher`),
the typed errors of :mod:`seedkit.errors`, and the switch for value checks.
:mod:`seedkit.backbones` builds CAM models from timm. CAM inference, metrics,
data and kernels live in their own subpackages.

The names below are imported on first use, so ``import seedkit`` (and the
``seedkit`` command's argument parsing and ``--help``) does not import torch;
``seedkit.SeedGenerationLoss`` and ``from seedkit import EMATeacher`` work as
with eager imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: The version of the installed seedkit (distributed as ``seedkit-wsss``).
__version__ = "0.1.0.dev0"

#: Where each lazily imported public name lives (a module, or ``module:attribute``).
_LAZY: dict[str, str] = {
    "backbones": "seedkit.backbones",
    "errors": "seedkit.errors",
    "losses": "seedkit.losses",
    "flush_input_checks": "seedkit.checks:flush_input_checks",
    "input_checks": "seedkit.checks:input_checks",
    "input_checks_enabled": "seedkit.checks:input_checks_enabled",
    "set_input_checks": "seedkit.checks:set_input_checks",
    "ConsistencyLoss": "seedkit.losses:ConsistencyLoss",
    "SeedGenerationLoss": "seedkit.losses:SeedGenerationLoss",
    "USAGELoss": "seedkit.losses:USAGELoss",
    "USAGELossOutput": "seedkit.losses:USAGELossOutput",
    "consistency_loss": "seedkit.losses:consistency_loss",
    "seed_generation_loss": "seedkit.losses:seed_generation_loss",
    "seeds_from_cams": "seedkit.losses:seeds_from_cams",
    "spatial_activation_distribution": "seedkit.losses:spatial_activation_distribution",
    "temperature_pool": "seedkit.losses:temperature_pool",
    "EMATeacher": "seedkit.teacher:EMATeacher",
    "SelfAdaptiveView": "seedkit.views:SelfAdaptiveView",
}

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports
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


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562) and keep it as a module attribute."""
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'seedkit' has no attribute {name!r}")
    module_name, _, attribute = target.partition(":")
    value = importlib.import_module(module_name)
    if attribute:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
