"""Stage 2 of the pipeline: seeds -> pseudo masks.

Dense CRF with the reference parameters (extra ``seedkit-wsss[crf]``), pixel-affinity
learning from confident seed regions and random-walk propagation (PSA / IRN),
and a resumable writer of one index PNG per image.
"""

from seedkit.refine.affinity import (
    IRN_BG_THRESHOLD,
    IRN_FG_THRESHOLD,
    AffinityLabels,
    AffinityNet,
    affinity_labels,
    affinity_loss,
    confident_labels,
    pair_affinity,
)
from seedkit.refine.crf import crf_refine_seeds, dense_crf
from seedkit.refine.pseudo_masks import (
    RandomWalkSettings,
    evaluate_pseudo_masks,
    propagate_seeds,
    pseudo_mask_from_seeds,
    write_pseudo_masks,
)
from seedkit.refine.random_walk import (
    IRN_BETA,
    IRN_EXP_TIMES,
    PSA_BETA,
    PSA_LOGT,
    background_scores,
    dense_random_walk,
    dense_transition_matrix,
    local_offsets,
    local_transition,
    random_walk,
    shift2d,
)

__all__ = [
    "IRN_BETA",
    "IRN_BG_THRESHOLD",
    "IRN_EXP_TIMES",
    "IRN_FG_THRESHOLD",
    "PSA_BETA",
    "PSA_LOGT",
    "AffinityLabels",
    "AffinityNet",
    "RandomWalkSettings",
    "affinity_labels",
    "affinity_loss",
    "background_scores",
    "confident_labels",
    "crf_refine_seeds",
    "dense_crf",
    "dense_random_walk",
    "dense_transition_matrix",
    "evaluate_pseudo_masks",
    "local_offsets",
    "local_transition",
    "pair_affinity",
    "propagate_seeds",
    "pseudo_mask_from_seeds",
    "random_walk",
    "shift2d",
    "write_pseudo_masks",
]
