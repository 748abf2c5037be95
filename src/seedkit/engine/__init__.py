"""Training engine behind the example scripts: configs, the training loop, run folders.

The pieces are usable on their own: :class:`Trainer` (the one training loop, driven
by a step hook), :class:`RunFolder` (what a run folder holds and may reuse),
:class:`ResumableShardSampler`, :func:`save_checkpoint` / :func:`load_checkpoint`,
:class:`RunLogger`; :func:`run_seed_stage`, :func:`run_pseudo_mask_stage` and
:func:`run_segmentation_stage` run the stages that ``examples/train_voc.py`` drives.
"""

from seedkit.engine.checkpoint import load_checkpoint, save_checkpoint
from seedkit.engine.config import (
    RECIPES,
    DataFields,
    InputFields,
    ModelFields,
    OptimizationFields,
    RunFields,
    SeedStageConfig,
    StageConfig,
    apply_recipe,
    load_config,
    save_config,
)
from seedkit.engine.datasets import check_evaluation_list, class_names_for, gt_dir
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
    DEMO_PSEUDO_MASKS,
    AffinityDataset,
    PseudoMaskStageConfig,
    run_pseudo_mask_stage,
)
from seedkit.engine.run import RunFolder, RunPlan, fingerprint, has_run
from seedkit.engine.sampler import ResumableShardSampler
from seedkit.engine.seed_stage import (
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
    write_and_evaluate_seeds,
)
from seedkit.engine.segmentation_stage import (
    DEMO_SEGMENTATION,
    SegmentationStageConfig,
    run_segmentation_stage,
)
from seedkit.files import ensure_writable_directory

__all__ = [
    "DEMO_PSEUDO_MASKS",
    "DEMO_SEGMENTATION",
    "RECIPES",
    "STRONG_DROP",
    "WEAK_DROP",
    "AffinityDataset",
    "DataFields",
    "DistributedContext",
    "InputFields",
    "ModelFields",
    "OptimizationFields",
    "PseudoMaskStageConfig",
    "ResumableShardSampler",
    "RunFields",
    "RunFolder",
    "RunLogger",
    "RunPlan",
    "SeedStageConfig",
    "SeedTrainingState",
    "SegmentationStageConfig",
    "StageConfig",
    "StepFunction",
    "StepInfo",
    "StepOutput",
    "Trainer",
    "apply_recipe",
    "backbone_kwargs",
    "build_optimizer",
    "cam_validity_mask",
    "check_evaluation_list",
    "class_names_for",
    "ensure_seeds",
    "ensure_writable_directory",
    "eval_dataset",
    "evaluate_model_seeds",
    "fingerprint",
    "gt_dir",
    "has_run",
    "init_distributed",
    "load_checkpoint",
    "load_config",
    "load_seed_model",
    "lr_schedule",
    "pooling_fraction",
    "run_pseudo_mask_stage",
    "run_seed_stage",
    "run_segmentation_stage",
    "save_checkpoint",
    "save_config",
    "token_classification_loss",
    "total_steps",
    "train_seed_model",
    "view_drops",
    "wrap_model",
    "write_and_evaluate_seeds",
]
