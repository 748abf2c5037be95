"""Trivial seed baselines: what a model must beat before it can be said to localise.

Two seed makers that look at no pixel, scored through the same background-threshold
sweep as a model's seeds (see the Benchmarks page of the docs):

- ``"background"``: every seed map is zero, so every pixel is background;
- ``"blob"``: one centred Gaussian blob per labelled class,
  ``exp(-((y - H/2) / (H/3))^2 - ((x - W/2) / (W/3))^2)``: the image labels and a
  centre prior, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from seedkit.checks import check_int, check_num_labels
from seedkit.errors import InvalidValueError
from seedkit.metrics.sweep import SweepResult, ThresholdSweep

__all__ = ["TRIVIAL_BASELINES", "centred_blob", "trivial_baselines"]

#: The trivial seed makers of :func:`trivial_baselines`.
TRIVIAL_BASELINES: tuple[str, ...] = ("background", "blob")


def centred_blob(height: int, width: int) -> np.ndarray:
    """The centre prior ``exp(-((y - H/2) / (H/3))^2 - ((x - W/2) / (W/3))^2)``, float32.

    Args:
        height: map height.
        width: map width.

    Returns:
        The blob, 1 at the centre.

    Shape:
        - output: :math:`(H, W)`

    Example:
        >>> from seedkit.metrics import centred_blob
        >>> blob = centred_blob(3, 5)
        >>> blob.shape, round(float(blob.max()), 3)
        ((3, 5), 1.0)
    """
    height = check_int("height", height, 1)
    width = check_int("width", width, 1)
    y = (np.arange(height, dtype=np.float64)[:, None] + 0.5 - height / 2) / (height / 3)
    x = (np.arange(width, dtype=np.float64)[None, :] + 0.5 - width / 2) / (width / 3)
    return np.exp(-(y**2) - x**2).astype(np.float32)


def trivial_baselines(
    samples: Iterable[Mapping[str, Any]],
    num_labels: int | None = None,
    max_threshold: float = 0.59,
    mean_over: str = "present",
    *,
    num_classes: int | None = None,
) -> dict[str, SweepResult]:
    """Score the trivial seeds of every sample through the threshold sweep.

    Args:
        samples: items with ``"mask"`` (``(H, W)`` ground truth, 255 ignored) and
            ``"labels"`` (multi-hot foreground labels), numpy arrays or tensors,
            e.g. a :class:`seedkit.data.VOCSegmentation` built with ``with_masks=True``.
        num_labels: mask labels, background included (21 for VOC), as
            :class:`ThresholdSweep`.
        max_threshold: the sweep's largest background threshold.
        mean_over: ``"present"`` or ``"all"`` (see :class:`ThresholdSweep`).
        num_classes: deprecated name of ``num_labels`` (the same count).

    Returns:
        ``{"background": result, "blob": result}``.

    Example:
        >>> import numpy as np
        >>> from seedkit.metrics import trivial_baselines
        >>> mask = np.zeros((6, 6), np.uint8); mask[1:5, 1:5] = 1
        >>> scores = trivial_baselines([{"mask": mask, "labels": np.array([1.0])}], 2)
        >>> round(scores["background"].best_miou, 1), round(scores["blob"].best_miou, 1)
        (27.8, 100.0)
    """
    num_labels = check_num_labels("seedkit.metrics.trivial_baselines", num_labels, num_classes)
    sweeps = {
        kind: ThresholdSweep(num_labels, max_threshold=max_threshold, mean_over=mean_over)
        for kind in TRIVIAL_BASELINES
    }
    for sample in samples:
        mask = _array(sample["mask"])
        labels = _array(sample["labels"])
        if mask.ndim != 2:
            raise InvalidValueError("mask", "an (H, W) ground-truth mask", mask.shape)
        if labels.shape != (num_labels - 1,):
            raise InvalidValueError("labels", f"{num_labels - 1} foreground labels", labels.shape)
        height, width = mask.shape
        empty = np.zeros((num_labels - 1, height, width), np.float32)
        sweeps["background"].update(empty, mask)
        blob = centred_blob(height, width)
        sweeps["blob"].update_maps({int(c): blob for c in np.flatnonzero(labels > 0)}, mask)
    return {kind: sweep.result() for kind, sweep in sweeps.items()}


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)
