"""Training engine behind the example scripts: config, recipes, DDP, checkpoints, logs.

The pieces are usable on their own (:class:`ResumableShardSampler`,
:func:`save_checkpoint`, :class:`RunLogger`), and :func:`run_seed_stage` runs the
whole seed stage that ``examples/train_voc.py`` drives.
"""

from seedkit.engine.checkpoint import load_checkpoint, save_checkpoint
from seedkit.engine.config import RECIPES, SeedStageConfig, apply_recipe, load_config, save_config
from seedkit.engine.distributed import DistributedContext, init_distributed
from seedkit.engine.logger import RunLogger
from seedkit.engine.pseudo_mask_stage import (
    DEMO_PSEUDO_MASKS,
    AffinityDataset,
    PseudoMaskStageConfig,
    run_pseudo_mask_stage,
)
from seedkit.engine.sampler import ResumableShardSampler
from seedkit.engine.seed_stage import (
    SeedTrainingState,
    eval_dataset,
    evaluate_model_seeds,
    load_seed_model,
    run_seed_stage,
    token_classification_loss,
    train_seed_model,
    write_and_evaluate_seeds,
)
from seedkit.engine.segmentation_stage import (
    DEMO_SEGMENTATION,
    SegmentationStageConfig,
    run_segmentation_stage,
)

__all__ = [
    "DEMO_PSEUDO_MASKS",
    "DEMO_SEGMENTATION",
    "RECIPES",
    "AffinityDataset",
    "DistributedContext",
    "PseudoMaskStageConfig",
    "ResumableShardSampler",
    "RunLogger",
    "SeedStageConfig",
    "SeedTrainingState",
    "SegmentationStageConfig",
    "apply_recipe",
    "eval_dataset",
    "evaluate_model_seeds",
    "init_distributed",
    "load_checkpoint",
    "load_config",
    "load_seed_model",
    "run_pseudo_mask_stage",
    "run_seed_stage",
    "run_segmentation_stage",
    "save_checkpoint",
    "save_config",
    "token_classification_loss",
    "train_seed_model",
    "write_and_evaluate_seeds",
]
