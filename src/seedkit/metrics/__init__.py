"""Seed evaluation: confusion matrices, IoU, FP/FN rates and the one-pass threshold sweep.

The sweep reproduces the evaluation of psa / SEAM / MCTformer exactly (same
prediction rule, same float32 arithmetic) for all thresholds in one pass over
the data. See :doc:`/evaluation` for file formats and definitions.
"""

from seedkit.metrics.baselines import TRIVIAL_BASELINES, centred_blob, trivial_baselines
from seedkit.metrics.confusion import (
    MEAN_OVER,
    confusion_matrix,
    fp_fn_rates,
    iou_from_confusion,
)
from seedkit.metrics.evaluate import evaluate_seeds
from seedkit.metrics.io import load_gt_mask, load_psa_cam, load_psa_maps
from seedkit.metrics.sweep import (
    SweepResult,
    ThresholdSweep,
    as_seed_maps,
    default_thresholds,
    seed_labels,
)

__all__ = [
    "MEAN_OVER",
    "TRIVIAL_BASELINES",
    "SweepResult",
    "ThresholdSweep",
    "as_seed_maps",
    "centred_blob",
    "confusion_matrix",
    "default_thresholds",
    "evaluate_seeds",
    "fp_fn_rates",
    "iou_from_confusion",
    "load_gt_mask",
    "load_psa_cam",
    "load_psa_maps",
    "seed_labels",
    "trivial_baselines",
]
