"""Plain reference implementations and file helpers shared by the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def voc_palette() -> list[int]:
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def save_palette_png(label: np.ndarray, path: Path) -> None:
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    image.putpalette(voc_palette())
    image.save(path)


def naive_predict(stack: np.ndarray, threshold: float) -> np.ndarray:
    """SEAM / MCTformer evaluation.py: float32 tensor, background plane = threshold, argmax."""
    tensor = np.zeros((stack.shape[0] + 1, *stack.shape[1:]), np.float32)
    tensor[1:] = stack
    tensor[0, :, :] = threshold
    return np.argmax(tensor, axis=0)


def plain_confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), np.int64)
    for g in np.unique(gt):
        if g == 255:
            continue
        in_g = gt == g
        for p in np.unique(pred[in_g]):
            cm[g, p] = int(np.sum(in_g & (pred == p)))
    return cm


def plain_miou(cm: np.ndarray) -> tuple[list[float], float]:
    ious = []
    kept = []
    for c in range(cm.shape[0]):
        tp = cm[c, c]
        union = cm[c, :].sum() + cm[:, c].sum() - tp
        if union > 0:
            ious.append(tp / union)
            kept.append(tp / union)
        else:
            ious.append(float("nan"))
    return ious, (float(sum(kept) / len(kept)) * 100.0 if kept else float("nan"))


def fixed_set_curve(confusions, mean_over: str = "present") -> np.ndarray:
    """mIoU per threshold over one class set for the whole sweep, empty unions counting 0:
    all classes ("all"), or those with a non-empty union at some threshold ("present")."""
    num_classes = confusions[0].shape[0]
    unions = [
        [cm[c, :].sum() + cm[:, c].sum() - cm[c, c] for c in range(num_classes)]
        for cm in confusions
    ]
    if mean_over == "all":
        counted = list(range(num_classes))
    else:
        counted = [c for c in range(num_classes) if any(u[c] > 0 for u in unions)]
    curve = []
    for cm, union in zip(confusions, unions, strict=True):
        ious = [cm[c, c] / union[c] if union[c] > 0 else 0.0 for c in counted]
        curve.append(100.0 * sum(ious) / len(ious))
    return np.array(curve)


def naive_sweep(stacks, gts, thresholds, num_classes):
    """Per-threshold loop like the reference codebases: returns (curve, confusions)."""
    curve, confusions = [], []
    for t in thresholds:
        cm = np.zeros((num_classes, num_classes), np.int64)
        for stack, gt in zip(stacks, gts, strict=True):
            cm += plain_confusion(naive_predict(stack, t), gt, num_classes)
        confusions.append(cm)
        curve.append(plain_miou(cm)[1])
    return np.array(curve), confusions
