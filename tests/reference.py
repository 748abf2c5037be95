"""Plain float64 reference implementations, written independently of seedkit's code."""

from __future__ import annotations

import math

import numpy as np


def softmax_rows(values: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Softmax over the last axis of a 1-D array, ignoring invalid positions."""
    out = np.zeros_like(values, dtype=np.float64)
    keep = np.ones(values.shape, bool) if valid is None else valid.astype(bool)
    kept = values[keep].astype(np.float64)
    kept = np.exp(kept - kept.max())
    out[keep] = kept / kept.sum()
    return out


def divisor(values: np.ndarray, valid: np.ndarray | None, scale: str) -> float:
    """What a map is divided by before the temperature: 1 (raw), max |A| or its spread."""
    kept = values if valid is None else values[valid.astype(bool)]
    if scale == "raw":
        return 1.0
    if scale == "max":
        return max(float(np.abs(kept).max()), 1e-6)
    spread = float(np.std(kept))
    return spread if spread > 0 else max(float(np.abs(kept).max()) * 2.0**-100, 1e-300)


def distribution(
    values: np.ndarray, temperature: float, valid: np.ndarray | None = None, scale: str = "std"
) -> np.ndarray:
    """Softmax of a flat map over its valid positions at a temperature in the given scale."""
    return softmax_rows(values / (divisor(values, valid, scale) * temperature), valid)


def pool(
    cams: np.ndarray, temperature: float, mask: np.ndarray | None = None, scale: str = "std"
) -> np.ndarray:
    batch, classes = cams.shape[:2]
    result = np.zeros((batch, classes))
    for b in range(batch):
        valid = None if mask is None else mask[b].reshape(-1)
        for c in range(classes):
            values = cams[b, c].reshape(-1).astype(np.float64)
            alpha = distribution(values, temperature, valid, scale)
            result[b, c] = float((alpha * values).sum())
    return result


def bce_with_logits(score: float, target: float) -> float:
    # log(1 + exp(-|x|)) formulation for stability
    return max(score, 0.0) - score * target + math.log1p(math.exp(-abs(score)))


def generation_loss(
    cams: np.ndarray, labels: np.ndarray, temperature: float, scale: str = "std"
) -> float:
    scores = pool(cams, temperature, scale=scale)
    per_image = [
        np.mean([bce_with_logits(scores[b, c], labels[b, c]) for c in range(labels.shape[1])])
        for b in range(labels.shape[0])
    ]
    return float(np.mean(per_image))


def kl_consistency(
    student: np.ndarray,
    teacher: np.ndarray,
    labels: np.ndarray,
    temperature: float,
    teacher_temperature: float,
    scale: str = "std",
) -> float:
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for c in range(student.shape[1]):
            if labels[b, c] == 0:
                continue
            p = distribution(student[b, c].reshape(-1), temperature, None, scale)
            q = distribution(teacher[b, c].reshape(-1), teacher_temperature, None, scale)
            terms = [
                qi * (math.log(qi) - math.log(pi)) for qi, pi in zip(q, p, strict=True) if qi > 0
            ]
            total += sum(terms)
            count += 1
    return total / max(count, 1)
