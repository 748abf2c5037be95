"""USAGE losses: activation distributions, temperature pooling, generation and consistency.

Each loss is a functional plus an ``nn.Module`` that calls it.
"""

from seedkit.losses.activation import (
    effective_fraction,
    global_average_pool,
    seeds_from_cams,
    spatial_activation_distribution,
    spatial_log_distribution,
    temperature_pool,
    temperature_pool_reference,
)
from seedkit.losses.consistency import ConsistencyLoss, consistency_loss, make_distance
from seedkit.losses.distances import JSDivergence, KLDivergence, MaxNormL1
from seedkit.losses.presets import (
    ACTIVATION_PRESETS,
    ACTIVATION_STATES,
    CONSISTENCY_PRESETS,
    CONSISTENCY_WEIGHT,
    TEMPERATURE_PRESETS,
    activation_state,
)
from seedkit.losses.seed_generation import SeedGenerationLoss, seed_generation_loss
from seedkit.losses.usage import USAGELoss, USAGELossOutput, consistency_ramp

__all__ = [
    "ACTIVATION_PRESETS",
    "ACTIVATION_STATES",
    "CONSISTENCY_PRESETS",
    "CONSISTENCY_WEIGHT",
    "TEMPERATURE_PRESETS",
    "ConsistencyLoss",
    "JSDivergence",
    "KLDivergence",
    "MaxNormL1",
    "SeedGenerationLoss",
    "USAGELoss",
    "USAGELossOutput",
    "activation_state",
    "consistency_loss",
    "consistency_ramp",
    "effective_fraction",
    "global_average_pool",
    "make_distance",
    "seed_generation_loss",
    "seeds_from_cams",
    "spatial_activation_distribution",
    "spatial_log_distribution",
    "temperature_pool",
    "temperature_pool_reference",
]
