"""Evaluate a directory of seed files against ground-truth masks."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from seedkit.checks import check_num_labels
from seedkit.errors import DataError, InvalidValueError, ShapeError
from seedkit.metrics.io import load_gt_mask, load_psa_maps
from seedkit.metrics.sweep import SweepResult, ThresholdSweep

__all__ = ["evaluate_seeds"]


def evaluate_seeds(
    cam_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    ids: Iterable[str],
    num_labels: int | None = None,
    max_threshold: float = 0.59,
    progress: bool = True,
    step: float = 0.01,
    thresholds: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    ignore_index: int = 255,
    mean_over: str = "present",
    *,
    num_classes: int | None = None,
) -> SweepResult:
    """Sweep the background threshold over a directory of psa- or IRN-format seeds.

    Reads ``cam_dir/<id>.npy`` (see :func:`seedkit.metrics.load_psa_maps`) and
    ``gt_dir/<id>.png`` for every id and feeds a :class:`ThresholdSweep`; all
    thresholds are scored in one pass over the files.

    Args:
        cam_dir: directory of ``<id>.npy`` seed files.
        gt_dir: directory of ``<id>.png`` ground-truth masks.
        ids: image ids to evaluate.
        num_labels: number of mask labels, background included (21 for VOC, the
            default): the ``--num-classes`` of ``seedkit eval-seeds``.
        max_threshold: last threshold of the default sweep.
        progress: show a progress bar.
        step: threshold spacing of the default sweep.
        thresholds: explicit thresholds (overrides ``max_threshold``/``step``).
        class_names: display names for the result.
        ignore_index: ground-truth value to ignore.
        mean_over: ``"present"`` (IRN) or ``"all"`` (SEAM / MCTformer / psa, what
            ``seedkit eval-seeds`` prints by default); see
            :class:`~seedkit.metrics.ThresholdSweep`.
        num_classes: deprecated name of ``num_labels`` (the same count).

    Returns:
        The :class:`SweepResult`.

    Raises:
        DataFileError: a seed or mask file is missing (the message names it).
        DataError: a file is corrupt, has the wrong size or unknown class ids.
    """
    num_labels = check_num_labels(
        "seedkit.metrics.evaluate_seeds", num_labels, num_classes, default=21
    )
    ids = list(ids)
    if not ids:
        raise InvalidValueError("ids", "at least one image id", "an empty list")
    sweep = ThresholdSweep(
        num_labels,
        thresholds=thresholds,
        max_threshold=max_threshold,
        step=step,
        ignore_index=ignore_index,
        class_names=class_names,
        mean_over=mean_over,
    )
    cam_dir, gt_dir = Path(cam_dir), Path(gt_dir)
    for image_id in tqdm(ids, desc="eval-seeds", unit="img", disable=not progress):
        gt_path = gt_dir / f"{image_id}.png"
        cam_path = cam_dir / f"{image_id}.npy"
        gt = load_gt_mask(gt_path, num_labels, ignore_index)
        maps = load_psa_maps(cam_path, num_labels - 1, shape=gt.shape)
        try:
            sweep.update_maps(maps, gt)
        except (ShapeError, InvalidValueError) as error:  # pragma: no cover - checked on load
            raise DataError(cam_path, "seeds matching the ground truth", str(error)) from error
    return sweep.result()
