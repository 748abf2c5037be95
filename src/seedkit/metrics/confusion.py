"""Confusion matrices, IoU and the false-positive / false-negative split."""

from __future__ import annotations

import numpy as np

from seedkit.checks import check_choice, check_num_labels
from seedkit.errors import InvalidValueError, ShapeError

__all__ = ["MEAN_OVER", "confusion_matrix", "fp_fn_rates", "iou_from_confusion"]

#: How an mIoU averages: ``"present"`` over the classes with pixels in the
#: prediction or the ground truth (IRN's ``nanmean``), ``"all"`` over every class,
#: an empty one counting 0 (SEAM's / MCTformer's ``evaluation.py``).
MEAN_OVER: tuple[str, ...] = ("present", "all")


def check_mean_over(mean_over: object) -> str:
    """Return ``mean_over`` if it is one of :data:`MEAN_OVER`, else raise."""
    return check_choice("mean_over", mean_over, MEAN_OVER)


def confusion_matrix(
    pred: np.ndarray,
    gt: np.ndarray,
    num_labels: int | None = None,
    ignore_index: int = 255,
    *,
    num_classes: int | None = None,
) -> np.ndarray:
    """Count ``(ground truth, prediction)`` pairs with one ``np.bincount``.

    Args:
        pred: predicted label per pixel, values in ``[0, num_labels)``.
        gt: ground-truth label per pixel; ``ignore_index`` pixels are skipped.
        num_labels: number of mask labels ``K``, background included (21 for VOC).
        ignore_index: ground-truth value that marks pixels to ignore.
        num_classes: deprecated name of ``num_labels`` (the same count).

    Returns:
        ``cm`` with ``cm[g, p]`` the number of pixels of class ``g`` predicted
        as ``p``, int64.

    Raises:
        ShapeError: ``pred`` and ``gt`` differ in shape.
        InvalidValueError: a value outside ``[0, num_labels)`` (other than
            ``ignore_index`` in ``gt``).

    Shape:
        - pred, gt: any shape, the same for both
        - output: :math:`(K, K)`

    Example:
        >>> import numpy as np
        >>> from seedkit.metrics import confusion_matrix
        >>> confusion_matrix(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 255]), 2).tolist()
        [[1, 1], [0, 1]]
    """
    num_labels = check_num_labels("seedkit.metrics.confusion_matrix", num_labels, num_classes)
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ShapeError("pred", f"the shape of gt {gt.shape}", pred.shape)
    valid = gt != ignore_index
    g = gt[valid].astype(np.int64, copy=False)
    p = pred[valid].astype(np.int64, copy=False)
    for name, values in (("gt", g), ("pred", p)):
        if values.size and (values.min() < 0 or values.max() >= num_labels):
            bad = values[(values < 0) | (values >= num_labels)][:3].tolist()
            raise InvalidValueError(
                name, f"class indices in [0, {num_labels}) or {ignore_index}", f"values {bad}"
            )
    counts = np.bincount(g * num_labels + p, minlength=num_labels * num_labels)
    return counts.reshape(num_labels, num_labels).astype(np.int64, copy=False)


def _check_cm(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ShapeError("cm", "(K, K)", cm.shape)
    return cm.astype(np.float64)


def iou_from_confusion(cm: np.ndarray, mean_over: str = "present") -> tuple[np.ndarray, float]:
    """Per-class IoU and their mean, over present classes or over all.

    ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``. A class whose union is empty
    (absent from both prediction and ground truth) has no IoU: with
    ``mean_over="present"`` it gets ``NaN`` and is left out of the mean (IRN's
    ``nanmean``); with ``"all"`` it counts 0 and the mean divides by ``K``
    (SEAM / MCTformer / psa). Values are fractions in ``[0, 1]``.

    Args:
        cm: confusion matrix ``cm[gt, pred]``.
        mean_over: ``"present"`` or ``"all"``.

    Returns:
        ``(iou, miou)``: per-class IoU (NaN for the classes left out of the
        mean) and their mean (NaN if every union is empty and
        ``mean_over="present"``).

    Shape:
        - cm: :math:`(K, K)`
        - iou: :math:`(K,)`

    Example:
        >>> import numpy as np
        >>> from seedkit.metrics import iou_from_confusion
        >>> iou, miou = iou_from_confusion(np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]]))
        >>> iou.round(3).tolist(), round(miou, 3)
        ([0.75, 0.667, nan], 0.708)
        >>> iou, miou = iou_from_confusion(np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]]), "all")
        >>> iou.round(3).tolist(), round(miou, 3)
        ([0.75, 0.667, 0.0], 0.472)
    """
    mean_over = check_mean_over(mean_over)
    cm = _check_cm(cm)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    counted = union > 0 if mean_over == "present" else np.ones(cm.shape[0], bool)
    iou = np.full(cm.shape[0], np.nan)
    iou[counted] = 0.0
    present = union > 0
    iou[present] = tp[present] / union[present]
    miou = float(iou[counted].mean()) if counted.any() else float("nan")
    return iou, miou


def fp_fn_rates(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ``1 - IoU`` of every class into its false-positive and false-negative parts.

    For class ``c`` with ``TP``, ``FP`` (pixels predicted ``c`` that are not
    ``c``: over-activation) and ``FN`` (pixels of ``c`` predicted as something
    else: under-activation)::

        fp_rate_c = FP / (TP + FP + FN)
        fn_rate_c = FN / (TP + FP + FN)

    so ``iou_c + fp_rate_c + fn_rate_c = 1`` for every class with a non-empty
    union (NaN otherwise). Over-activated CAMs (Transformers) have
    ``fp_rate > fn_rate`` on foreground classes, under-activated ones (CNNs)
    the opposite.

    Args:
        cm: confusion matrix ``cm[gt, pred]``.

    Returns:
        ``(fp_rate, fn_rate)``, fractions per class.

    Shape:
        - cm: :math:`(K, K)`
        - outputs: :math:`(K,)`

    Example:
        >>> import numpy as np
        >>> from seedkit.metrics import fp_fn_rates
        >>> fp, fn = fp_fn_rates(np.array([[3, 1], [0, 2]]))
        >>> fp.round(3).tolist(), fn.round(3).tolist()
        ([0.0, 0.333], [0.25, 0.0])
    """
    cm = _check_cm(cm)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    union = tp + fp + fn
    fp_rate = np.full(cm.shape[0], np.nan)
    fn_rate = np.full(cm.shape[0], np.nan)
    present = union > 0
    fp_rate[present] = fp[present] / union[present]
    fn_rate[present] = fn[present] / union[present]
    return fp_rate, fn_rate
