"""Training engine behind the example scripts: config, recipes, DDP, checkpoints, logs.

The pieces are usable on their own (:class:`ResumableShardSampler`,
:func:`save_checkpoint`, :class:`RunLogger`), and :func:`run_seed_stage` runs the
whole seed stage that ``examples/train_voc.py`` drives.
"""

from seedkit.engine.checkpoint import load_checkpoint, save_checkpoint
from seedkit.engine.config import RECIPES, SeedStageConfig, apply_recipe, load_config, save_config
from seedkit.engine.distributed import DistributedContext, init_distributed
from seedkit.engine.logger import RunLogger
from seedkit.engine.sampler import ResumableShardSampler
from seedkit.engine.seed_stage import (
    SeedTrainingState,
    run_seed_stage,
    train_seed_model,
    write_and_evaluate_seeds,
)

__all__ = [
    "RECIPES",
    "DistributedContext",
    "ResumableShardSampler",
    "RunLogger",
    "SeedStageConfig",
    "SeedTrainingState",
    "apply_recipe",
    "init_distributed",
    "load_checkpoint",
    "load_config",
    "run_seed_stage",
    "save_checkpoint",
    "save_config",
    "train_seed_model",
    "write_and_evaluate_seeds",
]
