"""Training engine behind the example scripts: settings, stages, the training loop, run folders.

Every setting is declared once in :data:`SETTINGS` (its kind, type, range, default,
help and stages); the stage configs (:class:`SeedStageConfig`,
:class:`PseudoMaskStageConfig`, :class:`SegmentationStageConfig`), their validation,
the example scripts' flags, the resume rules, the fingerprints and the docs' settings
table are derived from it. Each stage is a :class:`Stage` (what it reads, trains and
writes) run by :func:`run_stage` through the one training loop (:class:`Trainer`) and
the one run-folder logic (:class:`RunFolder`, records by content);
:func:`run_seed_stage`, :func:`run_pseudo_mask_stage` and
:func:`run_segmentation_stage` run the three stages of ``examples/train_voc.py``.
"""

from seedkit.engine.checkpoint import load_checkpoint, save_checkpoint
from seedkit.engine.config import (
    DEMO_PSEUDO_MASKS,
    DEMO_SEGMENTATION,
    KINDS,
    RECIPES,
    SETTINGS,
    STAGES,
    PseudoMaskStageConfig,
    SeedStageConfig,
    SegmentationStageConfig,
    Setting,
    StageConfig,
    apply_recipe,
    load_config,
    save_config,
)
from seedkit.engine.distributed import DistributedContext, init_distributed
from seedkit.engine.logger import RunLogger
from seedkit.engine.loop import (
    StepFunction,
    StepInfo,
    StepOutput,
    Trainer,
    build_optimizer,
    lr_schedule,
    total_steps,
    wrap_model,
)
from seedkit.engine.pseudo_mask_stage import (
    PSEUDO_MASK_STAGE,
    AffinityDataset,
    run_pseudo_mask_stage,
)
from seedkit.engine.run import RunFolder, RunPlan, fingerprint, has_run
from seedkit.engine.sampler import ResumableShardSampler
from seedkit.engine.seed_stage import (
    SEED_STAGE,
    STRONG_DROP,
    WEAK_DROP,
    SeedTrainingState,
    backbone_kwargs,
    cam_validity_mask,
    ensure_seeds,
    eval_dataset,
    evaluate_model_seeds,
    load_seed_model,
    pooling_fraction,
    run_seed_stage,
    token_classification_loss,
    train_seed_model,
    view_drops,
)
from seedkit.engine.segmentation_stage import SEGMENTATION_STAGE, run_segmentation_stage
from seedkit.engine.stages import (
    Stage,
    TrainingState,
    check_evaluation_list,
    class_names_for,
    current_results,
    gt_dir,
    load_stage_model,
    run_stage,
    train_stage,
)
from seedkit.files import ensure_writable_directory

__all__ = [
    "DEMO_PSEUDO_MASKS", "DEMO_SEGMENTATION", "KINDS", "PSEUDO_MASK_STAGE", "RECIPES", "SEED_STAGE",
    "SEGMENTATION_STAGE", "SETTINGS", "STAGES", "STRONG_DROP", "WEAK_DROP", "AffinityDataset",
    "DistributedContext", "PseudoMaskStageConfig", "ResumableShardSampler", "RunFolder",
    "RunLogger", "RunPlan", "SeedStageConfig", "SeedTrainingState", "SegmentationStageConfig",
    "Setting", "Stage", "StageConfig", "StepFunction", "StepInfo", "StepOutput", "Trainer",
    "TrainingState", "apply_recipe", "backbone_kwargs", "build_optimizer", "cam_validity_mask",
    "check_evaluation_list", "class_names_for", "current_results", "ensure_seeds",
    "ensure_writable_directory", "eval_dataset", "evaluate_model_seeds", "fingerprint", "gt_dir",
    "has_run", "init_distributed", "load_checkpoint", "load_config", "load_seed_model",
    "load_stage_model", "lr_schedule", "pooling_fraction", "run_pseudo_mask_stage",
    "run_seed_stage", "run_segmentation_stage", "run_stage", "save_checkpoint", "save_config",
    "token_classification_loss", "total_steps", "train_seed_model", "train_stage",
    "view_drops", "wrap_model",
]  # fmt: skip
